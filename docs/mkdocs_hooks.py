"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml); nothing here is hand-copied.

- ``docs/index.md`` shows README.md (the front door), its links rewritten for the site;
- ``docs/cli.md`` gets the CLI reference, generated from the typer app itself (every command,
  its help, its arguments and options with types and defaults);
- ``docs/schema.md`` gets the DuckDB schema reference, generated from ``asr_eval/store/schema.py``
  (every table after all migrations: columns, types, keys, the comments written beside them and
  the schema version that added each column);
- the topic pages were written as sections of one long README (``## Title``, ``### Part``): a page
  whose top heading is ``##`` has its headings raised one level, so each page has one title.

The generators are plain functions (``cli_reference()``, ``schema_reference()``), tested in
``tests/test_docs_site.py``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_MARKER = "<!-- include: README.md -->"
CLI_MARKER = "<!-- generated: cli reference -->"
SCHEMA_MARKER = "<!-- generated: schema reference -->"
_FENCE = re.compile(r"^\s*(```|~~~)")


# ───────────────────────── headings ─────────────────────────


def _outside_fences(lines: list[str]):
    """Indices of the lines that are not inside a fenced code block."""
    fence = None
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif line.strip().startswith(fence):
                fence = None
            continue
        if fence is None:
            yield i


def raise_headings(markdown: str) -> str:
    """``## Title`` / ``### Part`` → ``# Title`` / ``## Part`` when the page has no ``#`` heading
    (code blocks untouched: shell comments start with ``#`` too)."""
    lines = markdown.split("\n")
    heads = [i for i in _outside_fences(lines) if re.match(r"#{1,6} ", lines[i])]
    if not heads or min(len(lines[i].split(" ", 1)[0]) for i in heads) < 2:
        return markdown
    for i in heads:
        lines[i] = lines[i][1:]
    return "\n".join(lines)


# ───────────────────────── README as the home page ─────────────────────────


def readme_for_site(readme: str) -> str:
    """README.md with its links made relative to docs/: ``docs/score.md`` → ``score.md``."""
    return re.sub(r"\]\(docs/", "](", readme)


# ───────────────────────── CLI reference ─────────────────────────


def _cell(text: object) -> str:
    """One markdown table cell: pipes escaped, newlines folded, HTML brackets escaped."""
    s = " ".join(str(text).split())
    return s.replace("|", r"\|").replace("<", "&lt;").replace(">", "&gt;")


def _type(param, ctx) -> str:
    """The type as the CLI's --help shows it (typer ≥ 0.2x: ``<int>``; older click: ``INTEGER``)."""
    display = getattr(param, "display_type", None)
    if callable(display):
        try:
            text = display(ctx) if inspect.signature(display).parameters else display()
            return text.strip("<>")
        except (TypeError, ValueError):
            pass
    kind = getattr(param, "type", None)
    return getattr(kind, "name", "") or ""


def _default(param) -> str:
    if getattr(param, "required", False):
        return "required"
    default = param.default
    if callable(default):
        default = None
    if getattr(param, "secondary_opts", None) and isinstance(default, bool):  # --flag / --no-flag
        return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
    if default is False and getattr(param, "is_flag", False):
        return "off"
    if default is None or default == () or default == []:
        return "—"
    if isinstance(default, (list, tuple)):
        default = ",".join(map(str, default))
    return f"`{default}`"


def _command_section(name: str, cmd, parent_ctx) -> list[str]:
    ctx = cmd.make_context(name, [], parent=parent_ctx, resilient_parsing=True)
    pieces = " ".join(cmd.collect_usage_pieces(ctx))
    out = [f"## `asr-eval {name}`", "", f"```text\nasr-eval {name} {pieces}\n```", ""]
    out += [inspect.cleandoc(cmd.help or ""), ""]
    rows = []
    for p in cmd.params:
        if getattr(p, "hidden", False) or p.name == "help":
            continue
        if p.param_type_name == "argument":
            names = p.name.upper()
        else:
            names = ", ".join(f"`{o}`" for o in p.opts)
            if p.secondary_opts:
                names += " / " + ", ".join(f"`{o}`" for o in p.secondary_opts)
        rows.append(f"| {names} | {_cell(_type(p, ctx))} | {_default(p)} | {_cell(getattr(p, 'help', '') or '')} |")
    if rows:
        out += ["| argument / option | type | default | what |", "|---|---|---|---|", *rows, ""]
    return out


def cli_reference() -> str:
    """Markdown for every ``asr-eval`` command, from the typer app (``asr_eval.cli.app``)."""
    import typer

    from asr_eval import cli

    cli._register_commands()
    group = typer.main.get_command(cli.app)
    root = group.make_context("asr-eval", [], resilient_parsing=True)
    names = sorted(n for n, c in group.commands.items() if not getattr(c, "hidden", False))
    out = [inspect.cleandoc(group.help or ""), "",
           "| command | what |", "|---|---|"]
    out += [f"| [`{n}`](#asr-eval-{n}) | {_cell(group.commands[n].get_short_help_str(limit=120))} |" for n in names]
    out.append("")
    for n in names:
        out += _command_section(n, group.commands[n], root)
    return "\n".join(out)


# ───────────────────────── schema reference ─────────────────────────

_COMMENT = re.compile(r"^(?P<code>.*?)\s*--\s*(?P<comment>.*)$")
_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)", re.I)
_ALTER = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", re.I)
_COLUMN = re.compile(r"(?:^|,)\s*(\w+)\s+[A-Z]")
_SQL_WORDS = {"PRIMARY", "KEY", "NOT", "NULL", "DEFAULT"}


def _sql_notes(migrations: list[str]) -> tuple[dict, dict]:
    """(table, column) → (the comment beside it in the SQL, the schema version that added it)."""
    comments: dict[tuple[str, str], str] = {}
    since: dict[tuple[str, str], int] = {}
    for version, sql in enumerate(migrations, start=1):
        table = None
        for line in sql.splitlines():
            m = _COMMENT.match(line)
            code, comment = (m.group("code"), m.group("comment").strip()) if m else (line, "")
            if c := _CREATE.search(code):
                table = c.group(1)
                continue
            if a := _ALTER.search(code):
                key = (a.group(1), a.group(2))
                since[key] = version
                if comment:
                    comments[key] = comment
                continue
            if table is None or code.strip().startswith(")"):
                table = None if code.strip().startswith(")") else table
                continue
            cols = [c for c in _COLUMN.findall(code) if c.upper() not in _SQL_WORDS]
            for col in cols:
                since.setdefault((table, col), version)
                if comment:  # a comment on a line of several columns is about all of them
                    comments[(table, col)] = comment if len(cols) == 1 else f"{', '.join(cols)}: {comment}"
    return comments, since


def _table_notes(doc: str) -> dict[str, str]:
    """The table list in schema.py's docstring: ``name  [keys]  what it holds`` (continued lines)."""
    notes: dict[str, str] = {}
    current = None
    for line in (doc or "").splitlines():
        m = re.match(r"^(\w+)\s+\[[^\]]*\]\s*(.*)$", line)
        if m:
            current = m.group(1)
            notes[current] = m.group(2).strip()
        elif current and line.startswith(" ") and line.strip():
            notes[current] += " " + line.strip()
        else:
            current = None
    return notes


def schema_reference() -> str:
    """Markdown for every table of the store, from ``asr_eval.store.schema`` (its migrations run
    on an in-memory DuckDB, so types and column order are what a store really has)."""
    import duckdb

    from asr_eval.store import schema

    con = duckdb.connect(":memory:")
    for sql in schema.MIGRATIONS:
        con.execute(sql)
    comments, since = _sql_notes(schema.MIGRATIONS)
    notes = _table_notes(schema.__doc__ or "")
    keys: dict[str, list[str]] = {}
    for table, cols in con.execute("SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                                   "WHERE constraint_type = 'PRIMARY KEY'").fetchall():
        keys[table] = list(cols)
    tables = [t for t in schema.TABLES
              if con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = ?", [t]).fetchone()]
    out = [f"Schema version **{schema.SCHEMA_VERSION}**: a store written by an older release is migrated on "
           "open (`asr_eval.store.db.migrate`), one step per version.", "",
           "| table | key | what it holds |", "|---|---|---|"]
    out += [f"| [`{t}`](#{t}) | {_cell(', '.join(keys.get(t, [])) or '—')} | {_cell(notes.get(t, ''))} |" for t in tables]
    out.append("")
    for t in tables:
        out += [f"## `{t}`", ""]
        if notes.get(t):
            out += [notes[t], ""]
        if keys.get(t):
            out += ["Primary key: " + ", ".join(f"`{k}`" for k in keys[t]), ""]
        out += ["| column | type | since | notes |", "|---|---|---:|---|"]
        for col, typ in con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                    "WHERE table_name = ? ORDER BY ordinal_position", [t]).fetchall():
            out.append(f"| `{col}` | {_cell(typ)} | v{since.get((t, col), 1)} | {_cell(comments.get((t, col), ''))} |")
        out.append("")
    con.close()
    return "\n".join(out)


# ───────────────────────── the hook ─────────────────────────


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.src_uri
    if src == "index.md" and README_MARKER in markdown:
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        markdown = markdown.replace(README_MARKER, readme_for_site(readme))
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if SCHEMA_MARKER in markdown:
        markdown = markdown.replace(SCHEMA_MARKER, schema_reference())
    return raise_headings(markdown)
