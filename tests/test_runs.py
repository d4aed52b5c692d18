"""Run references (issue 28): one resolver for every command — full id, the short id `asr-eval runs`
prints, a unique prefix, a model — and an `asr-eval runs` that shows what distinguishes runs."""

from __future__ import annotations

import json

import pytest
from stat_fixtures import make_store
from typer.testing import CliRunner

from asr_eval.errors import AsrEvalError
from asr_eval.store.runs import resolve_pair, resolve_run, resolve_runs, short_ids

# The demo's long-form runs on one recording, as `score --strategy` and `stream` name them, plus an import.
SEQ, CHUNKED = "whisper-base-sequential-42a8d979c5", "whisper-base-chunked-0c1d2e3f4a"
VAD_HF, VAD_CT2 = "whisper-base-vad-5b6c7d8e9f", "whisper-base-vad-a1b2c3d4e5"
STREAM, IMPORT = "whisper-base-local-agreement-1s-f6a7b8c9d0", "import-sensevoice-small-1234567890"
MODEL = "bundled:whisper-base"
UTTS = [{"utt_id": f"u{i:02d}", "speaker": f"s{i % 6}"} for i in range(24)]
AXES = {  # run -> eval_runs columns (what `score`/`stream`/`import-hyps` record)
    SEQ: {"strategy": "sequential", "strategy_params": {"condition_on_prev": True, "fallback": True, "seed": 0}},
    CHUNKED: {"strategy": "chunked", "strategy_params": {"chunk_s": 30.0, "stride_s": 4.0}},  # stride_s not the default
    VAD_HF: {"strategy": "vad", "strategy_params": {"threshold": 0.5}},
    VAD_CT2: {"strategy": "vad", "strategy_params": {"threshold": 0.5}, "engine": "ctranslate2", "compute_type": "int8",
              "engine_options": {"inter_threads": 2}},
    STREAM: {"stream_policy": "local-agreement", "stream_params": {"chunk_s": 1.0, "n": 3, "buffer_trim_s": 15.0}},
    IMPORT: {"kind": "import", "engine": None, "recipe": None},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("runs") / "r.duckdb"
    errors = {SEQ: 2, CHUNKED: 1, VAD_HF: 0, VAD_CT2: 1, STREAM: 3, IMPORT: 2}
    con = make_store(db, UTTS, {r: {u["utt_id"]: (k if i % 3 == 0 else 0) for i, u in enumerate(UTTS)}
                                for r, k in errors.items()},
                     corpus_id="demo_long@94f81c96e9", models={r: MODEL for r in AXES} | {IMPORT: "sensevoice-small"})
    for run, cols in AXES.items():
        cols = {"engine": "transformers", "compute_type": "float32", "recipe": "greedy", "n_utts": 24, "rtfx": 12.5,
                "device": "cpu"} | cols
        sets = ", ".join(f"{k} = ?" for k in cols)
        con.execute(f"UPDATE eval_runs SET {sets} WHERE run_id = ?",
                    [json.dumps(v) if isinstance(v, dict) else v for v in cols.values()] + [run])
    con.execute("""INSERT INTO slice_metrics (run_id, normalizer, slice_attr, slice_value, n, cer)
                   SELECT run_id, normalizer, '_all', 'all', count(*), sum(cer_s + cer_d + cer_i) / sum(cer_n)
                   FROM utterance_scores GROUP BY ALL""")  # the whole-run CER `runs` shows (pooled)
    con.close()
    return db


def _con(db, read_only=True):
    from asr_eval.store import connect

    return connect(db, read_only=read_only)


@pytest.mark.parametrize("ref, want", [
    (STREAM, STREAM),                        # the full id
    ("42a8d979c5", SEQ),                     # the short id `asr-eval runs` prints (a suffix)
    ("e5", VAD_CT2),                         # any unique suffix
    ("whisper-base-chunked", CHUNKED),       # a unique prefix
    (MODEL, STREAM),                         # a model name → its latest finished run
    ("sensevoice-small", IMPORT),
])
def test_resolve_run(store, ref, want):
    con = _con(store)
    assert resolve_run(con, ref) == want
    con.close()


@pytest.mark.parametrize("ref, words", [
    ("whisper-base-vad", [(f"'whisper-base-vad' matches 2 runs:\n  {VAD_CT2}  (bundled:whisper-base · ctranslate2 · "
                           f"vad; demo_long@94f81c96e9/test; 2026-01-01 00:00)\n  {VAD_HF}"),
                          "short id `asr-eval runs` prints"]),
    ("0", ["'0' matches 2 runs", STREAM, IMPORT]),
    ("nope", ["unknown run 'nope': no finished run", "`asr-eval runs` lists the runs"]),
])
def test_bad_references_say_what_to_do(store, ref, words):
    con = _con(store)
    with pytest.raises(AsrEvalError) as err:
        resolve_run(con, ref)
    con.close()
    for w in words:
        assert w in str(err.value)


def test_model_on_a_corpus_pairs_and_selections(store):
    con = _con(store)
    with pytest.raises(AsrEvalError, match="has no finished run on corpus other"):
        resolve_run(con, MODEL, corpus_id="other")
    assert resolve_pair(con, "9c5", MODEL) == (SEQ, STREAM)  # the model where the baseline is
    assert resolve_runs(con, [MODEL, "42a8d979c5", IMPORT]) == [STREAM, VAD_CT2, VAD_HF, CHUNKED, SEQ, IMPORT]
    con.close()
    con = _con(store, read_only=False)
    con.execute("UPDATE eval_runs SET status = 'running' WHERE run_id = ?", [STREAM])
    try:  # an unfinished run: not gated or analysed, but a selection (report, browse) may name it
        assert resolve_run(con, MODEL) == VAD_CT2
        assert resolve_runs(con, ["f6a7b8c9d0"]) == [STREAM]
        with pytest.raises(AsrEvalError, match="unknown run 'f6a7b8c9d0'"):
            resolve_run(con, "f6a7b8c9d0")
    finally:
        con.execute("UPDATE eval_runs SET status = 'done' WHERE run_id = ?", [STREAM])
        con.close()


def test_short_ids_grow_until_unique():
    ids = ["a-x0123456789", "b-y0123456789", "c-9999999999"]
    assert short_ids(ids) == {"a-x0123456789": "x0123456789", "b-y0123456789": "y0123456789",
                              "c-9999999999": "9999999999"}
    assert short_ids(["m-0000000000"], avoid=["0000000000"]) == {"m-0000000000": "m-0000000000"}


def test_cli_runs_shows_what_differs_and_its_short_ids_work_everywhere(store):
    from asr_eval.cli import _register_commands, app

    _register_commands()
    cli = CliRunner()
    res = cli.invoke(app, ["runs", "--json", "--db", str(store)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["run_id"], r["short_id"], r["kind"], r["mode"]) for r in rows] == [
        (SEQ, "42a8d979c5", "model", "sequential"),
        (CHUNKED, "0c1d2e3f4a", "model", "chunked stride_s=4"),
        (VAD_HF, "5b6c7d8e9f", "model", "vad"),
        (VAD_CT2, "a1b2c3d4e5", "model", "vad"),
        (STREAM, "f6a7b8c9d0", "streaming", "streaming local-agreement 1s n=3"),
        (IMPORT, "1234567890", "imported", "short")]
    ct2 = rows[3]
    assert (ct2["engine"], ct2["compute_type"], ct2["engine_options"], ct2["rtfx"], ct2["n_utts"]) == (
        "ctranslate2", "int8", {"inter_threads": 2}, 12.5, 24)
    assert rows[0]["cer"] == pytest.approx(16 / 240) and rows[0]["corpus_id"] == "demo_long@94f81c96e9"
    assert rows[4]["stream_params"] == {"chunk_s": 1.0, "n": 3, "buffer_trim_s": 15.0}
    res = cli.invoke(app, ["runs", "--json", "--kind", "streaming", "--model", MODEL, "--corpus", "demo_long",
                           "--db", str(store)])
    assert [r["run_id"] for r in json.loads(res.output)] == [STREAM]

    res = cli.invoke(app, ["runs", "--db", str(store)], env={"COLUMNS": None})  # piped: as wide as it needs
    assert res.exit_code == 0, res.output
    lines = [ln.strip() for ln in res.output.splitlines()]
    assert lines[0] == "runs on demo_long (test)" and "…" not in res.output
    header = lines[2].split()
    assert header == ["run", "kind", "model", "engine", "options", "recipe", "strategy", "/", "policy", "n", "CER",
                      "%", "RTFx", "when"]
    row = next(ln for ln in lines if ln.startswith("f6a7b8c9d0"))
    assert row.split()[:8] == ["f6a7b8c9d0", "streaming", MODEL, "transformers", "fp32", "defaults", "greedy",
                               "streaming"] and "local-agreement 1s n=3" in row
    assert "ctranslate2 int8" in res.output and "inter_threads=2" in res.output and max(map(len, lines)) > 120
    from asr_eval.cli import console

    own_width = console._width  # None unless COLUMNS was set when it was made
    narrow = cli.invoke(app, ["runs", "--width", "80", "--db", str(store)], env={"COLUMNS": "200"}).output  # wraps
    assert max(map(len, narrow.splitlines())) <= 80 and narrow.count("12.5") == 6 and "…" not in narrow
    assert console._width == own_width  # a table leaves the shared console as it was: later lines follow COLUMNS

    res = cli.invoke(app, ["errors", "--run", "a1b2c3d4e5", "--json", "--db", str(store)])  # short ids back in
    assert res.exit_code == 0, res.output
    assert [(r["run_id"], r["errors"]) for r in json.loads(res.output)["runs"]] == [(VAD_CT2, 8)]
    res = cli.invoke(app, ["gate", "--baseline", "5b6c7d8e9f", "--candidate", "0c1d2e3f4a", "--margin", "50",
                           "--n-boot", "200", "--db", str(store)])
    assert res.exit_code == 0, res.output
    assert f"candidate {CHUNKED} vs baseline {VAD_HF}" in " ".join(res.output.split())
    res = cli.invoke(app, ["errors", "--run", "whisper-base-vad", "--db", str(store)])
    assert res.exit_code != 0 and "matches 2 runs" in str(res.exception)
