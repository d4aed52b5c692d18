"""README.md's tour runs as written.

Every fenced block after a ``<!-- tour -->`` marker is run command by command (typer's CliRunner,
in this process, so the imports are paid once), in a temporary folder that holds a 2-utterance
sample of the bundled demo corpus at the README's path (``datasets_local/demo_zh``), with the real
bundled whisper-base, into the README's default store (``reports/asr_eval.duckdb`` there).
The README shows excerpts of the same commands on the whole demo corpus; run ids depend on the
corpus, so the ids the README's ``gate`` line names (read from its score excerpt's ``runs:`` line,
in the order the score command lists them) are replaced by this run's ids in the same order.
``asr-eval ui`` starts a server, so it runs with ``--help`` and every flag the tour gives it must
be one the command has. What is checked is what the next step relies on: exit codes, the runs
each step leaves in the store (and their ids, used by the gate), counts, and a transcript.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import duckdb
import pytest

from conftest import DEMO_CORPUS, REPO

README = REPO / "README.md"
TOUR_BLOCK = re.compile(r"<!-- tour -->\s*\n```[a-z]*\n(.*?)\n```", re.S)
RUN_ID = re.compile(r"\b[a-z0-9][a-z0-9.-]*-[0-9a-f]{10}\b")
SAMPLE = ("demo_test_0081", "demo_test_0100")  # the neural voice, 1.4 s each: clean, pink noise at 10 dB


def tour_commands(readme: str) -> list[list[str]]:
    """The tour's commands as argv lists (comments and line continuations handled like a shell)."""
    cmds = []
    for block in TOUR_BLOCK.findall(readme):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                cmds.append(argv)
    return cmds


def listed_run_ids(text: str) -> list[str]:
    """Run ids of a score command's closing ``runs: A, B`` line, in order."""
    tail = text.split("runs:", 1)[1] if "runs:" in text else ""
    return RUN_ID.findall(tail.split("\n\n")[0])


def test_tour_is_marked_and_every_command_is_asr_eval():
    cmds = tour_commands(README.read_text(encoding="utf-8"))
    assert [c[:2] for c in cmds] == [["asr-eval", "ingest"], ["asr-eval", "score"], ["asr-eval", "runs"],
                                     ["asr-eval", "report"], ["asr-eval", "gate"], ["asr-eval", "stream"],
                                     ["asr-eval", "ui"]]


def _sample_corpus(root: Path) -> None:
    """``root/datasets_local/demo_zh``: the demo corpus's metadata.csv cut to SAMPLE, audio paths
    absolute (into the bundled corpus)."""
    with (DEMO_CORPUS / "metadata.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), [r for r in reader if r["utt_id"] in SAMPLE]
    out = root / "datasets_local" / "demo_zh"
    out.mkdir(parents=True)
    with (out / "metadata.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "file_name": str(DEMO_CORPUS / r["file_name"])})


@pytest.mark.integration
def test_readme_tour_runs_on_a_sample_of_the_demo_corpus(tmp_path, monkeypatch):
    if not (DEMO_CORPUS / "metadata.csv").exists():
        pytest.skip("bundled demo corpus not generated yet")
    import typer
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app

    _register_commands()
    readme = README.read_text(encoding="utf-8")
    readme_ids = listed_run_ids(readme)
    assert len(readme_ids) == 2, "the score excerpt's `runs:` line names the two runs the gate compares"
    _sample_corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASR_EVAL_PROGRESS", "off")
    runner = CliRunner()
    ids: dict[str, str] = {}
    db = tmp_path / "reports" / "asr_eval.duckdb"

    def store(sql: str, *args):
        con = duckdb.connect(str(db), read_only=True)
        try:
            return con.execute(sql, list(args)).fetchall()
        finally:
            con.close()

    for argv in tour_commands(readme):
        cmd = argv[1]
        args = [ids.get(a, a) for a in argv[1:]]
        if cmd == "ui":  # a server: its flags must exist; starting it is tests/test_ui.py's job
            res = runner.invoke(app, ["ui", "--help"])
            assert res.exit_code == 0, res.output
            ui = typer.main.get_command(app).commands["ui"]
            flags = {o for p in ui.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
            assert {a.split("=")[0] for a in args if a.startswith("-")} <= flags, (args, flags)
            continue
        res = runner.invoke(app, args)
        expect = 3 if cmd == "gate" else 0  # 3 = INCONCLUSIVE: 2 utterances are too few to decide
        assert res.exit_code == expect, f"{' '.join(argv)} → exit {res.exit_code}\n{res.output}\n{res.exception!r}"

        if cmd == "ingest":
            index = json.loads((tmp_path / "reports" / "corpora" / "demo_zh" / "index.json").read_text())
            assert (index["n_utterances"], index["n_quarantined"], index["splits"]) == (2, 0, {"test": 2})
        elif cmd == "score":
            ours = listed_run_ids(res.output)
            runs = dict(store("SELECT run_id, compute_type FROM eval_runs"))
            assert sorted(ours) == sorted(runs) and len(ours) == 2, (ours, runs)
            for theirs, mine in zip(readme_ids, ours, strict=True):  # the gate's ids: ours, same order
                ids[theirs] = mine
                ids[theirs.rsplit("-", 1)[1]] = mine.rsplit("-", 1)[1]  # the short form `asr-eval runs` shows
            assert sorted(runs.values()) == ["float32", "int8"]
            assert store("SELECT count(*) FROM hypotheses GROUP BY run_id") == [(2,), (2,)]
            fp32 = next(r for r, t in runs.items() if t == "float32")
            clean = store("SELECT hyp_norm FROM utterance_scores WHERE run_id = ? AND utt_id = 'demo_test_0081'", fp32)
            assert clean == [("街头有很多人",)]  # clean neural speech, transcribed exactly
        elif cmd == "runs":
            assert all(r.rsplit("-", 1)[1] in res.output for r in ours)
        elif cmd == "report":
            html = (tmp_path / "reports" / "report.html").read_text(encoding="utf-8")
            assert "demo_zh" in html and "int8" in html and "ctranslate2" in html
        elif cmd == "gate":
            assert "INCONCLUSIVE" in res.output
            full = {r.rsplit("-", 1)[1]: r for r in ours} | {r: r for r in ours}
            base, cand = (full[args[args.index(o) + 1]] for o in ("--baseline", "--candidate"))
            assert (runs[base], runs[cand]) == ("float32", "int8")  # what the README says it gates
            assert store("SELECT baseline_run, candidate_run, decision FROM gates") == [
                (base, cand, "INCONCLUSIVE")]
        elif cmd == "stream":
            rows = store("SELECT n_utts, stream_params->>'chunk_s' FROM eval_runs WHERE stream_policy = 'local-agreement'")
            assert rows == [(2, "1.0")], rows
            assert store("SELECT count(*) FROM stream_scores") == [(2,)]
