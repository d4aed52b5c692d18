"""The documentation site's generated pages (docs/mkdocs_hooks.py) and its shape: the CLI reference
comes from the typer app, the schema reference from asr_eval/store/schema.py, every page is in the
navigation, and the README stays a front door. `make test` then builds the site with --strict."""

from __future__ import annotations

import importlib.util
import re

from conftest import REPO


def _hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", REPO / "docs" / "mkdocs_hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hooks = _hooks()


def test_cli_reference_has_every_command_with_its_options_and_defaults():
    import typer

    from asr_eval import cli

    cli._register_commands()
    commands = set(typer.main.get_command(cli.app).commands)
    md = hooks.cli_reference()
    assert set(re.findall(r"^## `asr-eval ([a-z-]+)`$", md, re.M)) == commands
    assert "score" in commands and "gate" in commands and len(commands) >= 20
    gate = md.split("## `asr-eval gate`")[1].split("\n## ")[0]
    assert "| `--margin` | float | `0.5` | Non-inferiority margin in points (0.5 = half a point of CER) |" in gate
    assert "| `--metric` | str | `cer` | cer \\| mer |" in gate  # a pipe in a help text stays in its cell
    assert re.search(r"\| `--baseline` \| str \| required \|", gate)
    ingest = md.split("## `asr-eval ingest`")[1].split("\n## ")[0]
    assert "| SOURCE | str | required |" in ingest
    assert "| `--keep-long` / `--no-keep-long` | bool | `--no-keep-long` |" in ingest
    assert "| `--out`, `-o` | str | required |" in ingest or "| `-o`, `--out` | str | required |" in ingest
    assert "allow-outside-root" not in ingest  # hidden options stay hidden
    score = md.split("## `asr-eval score`")[1].split("\n## ")[0]
    assert "| `--compute-type` | str | `auto` |" in score and "| `--n-boot` | int | `1000` |" in score


def test_schema_reference_has_every_table_column_type_key_and_comment():
    from asr_eval.store import schema

    md = hooks.schema_reference()
    assert re.findall(r"^## `(\w+)`$", md, re.M) == list(schema.TABLES)
    assert f"Schema version **{schema.SCHEMA_VERSION}**" in md
    runs = md.split("## `eval_runs`")[1].split("\n## ")[0]
    assert "Primary key: `run_id`" in runs
    assert "| `rtfx` | DOUBLE | v1 | audio_s / proc_s |" in runs
    assert "| `compute_type` | VARCHAR | v2 | float32 \\| int8 \\| float16 \\| ... |" in runs  # added by ALTER TABLE
    assert "| `stream_params` | JSON | v3 |" in runs and "| `engine_options` | JSON | v5 |" in runs
    scores = md.split("## `utterance_scores`")[1].split("\n## ")[0]
    assert "| `cer_s` | INTEGER | v1 | cer_n, cer_s, cer_d, cer_i: n = reference length |" in scores
    assert "| `flags` | VARCHAR[] | v1 | pathology flags: repetition, hallucination, ... |" in scores
    comparisons = md.split("## `comparisons`")[1].split("\n## ")[0]
    assert ("Primary key: `run_a`, `run_b`, `normalizer`, `metric`, `slice_attr`, `slice_value`" in comparisons)
    assert "paired bootstrap difference (b - a)" in comparisons  # the docstring's table line


def test_topic_pages_get_one_title_and_code_blocks_are_left_alone():
    page = "## Scoring\n\ntext\n\n```bash\n# a shell comment\n## another\n```\n\n### Verdicts\n"
    assert hooks.raise_headings(page) == "# Scoring\n\ntext\n\n```bash\n# a shell comment\n## another\n```\n\n## Verdicts\n"
    titled = "# Title\n\n## Part\n"
    assert hooks.raise_headings(titled) == titled
    assert hooks.readme_for_site("[Scoring](docs/score.md#x) ![ui](docs/img/a.png) [b](bench/x)") == \
        "[Scoring](score.md#x) ![ui](img/a.png) [b](bench/x)"


def test_every_page_is_in_the_navigation_and_the_readme_is_a_front_door():
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:", 1)[1]
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", nav, re.M))
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert listed == pages, (pages - listed, listed - pages)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", readme))
    assert linked <= pages and {"get-started.md", "score.md", "cli.md", "schema.md"} <= linked
