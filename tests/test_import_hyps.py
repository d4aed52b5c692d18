"""`asr-eval import-hyps`: every format onto a tiny ingested corpus, hand-computed CERs, the
errors a user can cause (unknown / duplicate ids, bad lines), missing vs empty hypotheses,
paired comparisons against other runs, the CLI's exit codes and output. No model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import write_audio

from asr_eval.corpus import open_source
from asr_eval.errors import AsrEvalError
from asr_eval.importing import import_hypotheses, read_hyp_file
from asr_eval.shards import IngestOptions, ingest

N_BOOT = 100

# Test split of the corpus below: u00 今天天气很好 (south), u02 我们去北京 (north),
# u04 你好世界 (north), u06 这是一个测试 (south), u08 今天天气很好 (north), u10 我们去北京 (north).
# Reference characters: 6 + 5 + 4 + 6 + 6 + 5 = 32 (south 12, north 20).
REFS = {"u00": "今天天气很好", "u02": "我们去北京", "u04": "你好世界", "u06": "这是一个测试",
        "u08": "今天天气很好", "u10": "我们去北京"}
# Errors: u00 1 sub (很→不; 。 dropped by the normalizer), u02 1 sub (北→东; 東→东 by t2s),
# u10 1 insertion (吧) → 3 errors when u04 is right.
HYPS = {"u00": "今天天气不好。", "u02": "我们去東京", "u04": "你好世界", "u06": "这是一个测试",
        "u08": "今天天气很好", "u10": "我们去北京吧"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12 utterances (6 test, 6 train) of an audiofolder source, ingested into 3 shards."""
    tmp = tmp_path_factory.mktemp("imp")
    src = tmp / "src"
    lines = ["file_name,text,split,accent"]
    texts = ["今天天气很好", "我们去北京", "你好世界", "这是一个测试"]
    for i in range(12):
        write_audio(src / f"u{i:02d}.wav", 0.6 + 0.2 * (i % 4), 16000, seed=i)
        lines.append(f"u{i:02d}.wav,{texts[(i // 2) % 4]},{'test' if i % 2 == 0 else 'train'},"
                     f"{'north' if i % 3 else 'south'}")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n")
    out = tmp / "corpus"
    ingest(open_source(str(src)), out, IngestOptions(workers=1, max_rows=4), progress=False)
    return out


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _cer(db: Path, run_id: str, slice_: str = "_all=all") -> float:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = dict(con.execute("SELECT slice_attr || '=' || slice_value, cer FROM slice_metrics WHERE run_id = ?",
                                [run_id]).fetchall())
    finally:
        con.close()
    return rows[slice_]


def _q(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


# ───────────── formats → hand-computed CER ─────────────


def test_jsonl_missing_ids_are_full_deletions_and_recorded(corpus, tmp_path):
    hyps = {k: v for k, v in HYPS.items() if k != "u04"}  # u04 missing → 4 deletions
    f = _jsonl(tmp_path / "sys.jsonl", [{"utt_id": k, "text": v} for k, v in hyps.items()])
    db = tmp_path / "s.duckdb"
    r = import_hypotheses(corpus, f, "sys-b", db, split="test", engine_notes="api v2, 2025-06", n_boot=N_BOOT)
    assert (r.format, r.n_rows, r.n_matched, r.n_missing, r.n_empty) == ("jsonl", 5, 5, 1, 0)
    assert _cer(db, r.run_id) == pytest.approx(7 / 32)
    assert _cer(db, r.run_id, "accent=south") == pytest.approx(1 / 12)  # u00, u06
    assert _cer(db, r.run_id, "accent=north") == pytest.approx(6 / 20)
    assert _q(db, "SELECT cer_d FROM utterance_scores WHERE run_id = ? AND utt_id = 'u04'", [r.run_id]) == [(4,)]
    (kind, engine, ev, ct, pre, rec, n_utts, n_missing, model_id, prov), = _q(
        db, "SELECT kind, engine, engine_version, compute_type, preprocessing, recipe, n_utts, n_missing, model_id, "
            "provenance FROM eval_runs")
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    assert (kind, engine, ev, ct, pre, rec, n_utts, n_missing) == ("import", "import", None, None, None, None, 5, 1)
    assert model_id == f"import:sys-b@{sha[:12]}" == r.model_id
    prov = json.loads(prov)
    assert prov["source_sha256"] == sha and prov["format"] == "jsonl" and prov["engine_notes"] == "api v2, 2025-06"
    assert prov["source_file"] == str(f.resolve()) and prov["imported_at"].startswith("20")
    assert _q(db, "SELECT name, source, revision FROM models") == [("sys-b", "import", sha)]


def test_empty_text_is_an_empty_hypothesis_not_a_missing_one(corpus, tmp_path):
    rows = [{"utt_id": k, "pred_text": "" if k == "u04" else v, "text": REFS[k]} for k, v in HYPS.items()]
    f = _jsonl(tmp_path / "sys.jsonl", rows)  # pred_text wins over text (the reference)
    db = tmp_path / "s.duckdb"
    r = import_hypotheses(corpus, f, "sys", db, split="test", n_boot=N_BOOT)
    assert (r.n_matched, r.n_missing, r.n_empty) == (6, 0, 1)
    assert _q(db, "SELECT hyp_raw FROM hypotheses WHERE utt_id = 'u04'") == [("",)]
    assert _q(db, "SELECT n_missing FROM eval_runs") == [(0,)]
    assert _cer(db, r.run_id) == pytest.approx(7 / 32)


def test_tsv_with_header_and_empty_hypothesis(corpus, tmp_path):
    body = "utt_id\ttext\n" + "".join(f"{k}\t{'' if k == 'u04' else v}\n" for k, v in HYPS.items())
    f = tmp_path / "sys.tsv"
    f.write_text(body, encoding="utf-8")
    db = tmp_path / "s.duckdb"
    r = import_hypotheses(corpus, f, "sys", db, split="test", n_boot=N_BOOT)
    assert (r.format, r.n_matched, r.n_missing, r.n_empty) == ("tsv", 6, 0, 1)
    assert _cer(db, r.run_id) == pytest.approx(7 / 32)


def test_nemo_manifest_matched_by_absolute_and_relative_path(corpus, tmp_path):
    src = corpus.parent / "src"
    # absolute paths, the manifest elsewhere (u04 right: 3 errors / 32)
    f = _jsonl(tmp_path / "pred_manifest.json",
               [{"audio_filepath": str(src / f"{k}.wav"), "duration": 1.0, "text": REFS[k], "pred_text": v}
                for k, v in HYPS.items()])
    db = tmp_path / "s.duckdb"
    r = import_hypotheses(corpus, f, "nemo-abs", db, split="test", n_boot=N_BOOT)
    assert (r.format, r.n_matched, r.n_missing) == ("nemo", 6, 0)
    assert _cer(db, r.run_id) == pytest.approx(3 / 32)
    assert json.loads(_q(db, "SELECT provenance FROM eval_runs")[0][0])["matched_by"] == {"absolute path": 6}
    # relative to the manifest's folder: ../src/u00.wav resolves to the source audio
    rel = tmp_path / "sub"
    rel.mkdir()
    g = _jsonl(rel / "m.json", [{"audio_filepath": f"../../{src.parent.name}/src/{k}.wav", "pred_text": v}
                                for k, v in HYPS.items() if k != "u08"])
    assert Path(rel, f"../../{src.parent.name}/src/u00.wav").resolve() == (src / "u00.wav").resolve()
    r2 = import_hypotheses(corpus, g, "nemo-rel", db, split="test", n_boot=N_BOOT)
    assert (r2.n_matched, r2.n_missing) == (5, 1)  # u08 missing: 6 deletions → 9 / 32
    assert _cer(db, r2.run_id) == pytest.approx(9 / 32)
    # the path as written in the source ("u02.wav"), from a manifest in an unrelated folder
    h = _jsonl(tmp_path / "sub" / "w.json", [{"audio_filepath": f"{k}.wav", "pred_text": REFS[k]} for k in REFS])
    r3 = import_hypotheses(corpus, h, "nemo-src", db, split="test", n_boot=N_BOOT)
    assert (r3.n_matched, _cer(db, r3.run_id)) == (6, 0.0)
    assert json.loads(_q(db, "SELECT provenance FROM eval_runs WHERE run_id = ?", [r3.run_id])[0][0])["matched_by"] \
        == {"relative path": 6}


def test_open_asr_leaderboard_jsonl_with_timing_and_chunks(corpus, tmp_path):
    src = corpus.parent / "src"
    rows = [{"audio_filepath": str(src / f"{k}.wav"), "duration": 2.0, "time": 0.5, "text": REFS[k], "pred_text": v}
            for k, v in HYPS.items() if k != "u10"]
    # u10 as two chunks, out of order in the file: joined in chunk order → 我们去北京吧 (1 insertion)
    rows += [{"parent_id": str(src / "u10.wav"), "chunk_index": 1, "audio_filepath": "c1", "duration": 1.0,
              "time": 0.25, "text": "", "pred_text": "北京吧"},
             {"parent_id": str(src / "u10.wav"), "chunk_index": 0, "audio_filepath": "c0", "duration": 1.0,
              "time": 0.25, "text": "", "pred_text": "我们去"}]
    f = _jsonl(tmp_path / "MODEL_acme-asr_DATASET_demo_test.jsonl", rows)
    assert read_hyp_file(f).format == "leaderboard"
    db = tmp_path / "s.duckdb"
    r = import_hypotheses(corpus, f, "acme", db, split="test", n_boot=N_BOOT)
    assert (r.format, r.n_rows, r.n_matched, r.n_missing) == ("leaderboard", 6, 6, 0)
    assert _cer(db, r.run_id) == pytest.approx(3 / 32)
    # RTFx from the file: 12 s of audio in 3 s
    assert _q(db, "SELECT audio_s, proc_s, rtfx FROM eval_runs") == [(12.0, 3.0, 4.0)]
    # leaderboard rows without audio paths (sample_N) cannot be matched: the error says why
    g = _jsonl(tmp_path / "MODEL_x_DATASET_y_test.jsonl",
               [{"audio_filepath": f"sample_{i}", "duration": 1, "time": 1, "text": "", "pred_text": "x"} for i in range(3)])
    with pytest.raises(AsrEvalError, match="sample_N paths mean the leaderboard had no audio paths"):
        import_hypotheses(corpus, g, "x", db, split="test", n_boot=N_BOOT)


# ───────────── errors a user can cause ─────────────


def test_unknown_ids_one_error_listing_the_first_ten(corpus, tmp_path):
    rows = [{"utt_id": f"zz{i:02d}", "text": "你好"} for i in range(12)] + [{"utt_id": "u01", "text": "x"},
                                                                          {"utt_id": "u00", "text": "x"}]
    f = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(AsrEvalError) as e:
        import_hypotheses(corpus, f, "bad", tmp_path / "s.duckdb", split="test", n_boot=N_BOOT)
    msg = str(e.value)
    assert "13 hypothesis(es) name no utterance of split 'test'" in msg
    assert all(f"'zz{i:02d}' (line {i + 1})" in msg for i in range(10))
    assert "zz10" not in msg and "…" in msg
    assert "1 of them are utterances of another split" in msg  # u01 is in train
    assert not (tmp_path / "s.duckdb").exists()  # nothing written


def test_duplicate_ids_name_the_ids_and_lines(corpus, tmp_path):
    f = tmp_path / "dup.tsv"
    f.write_text("u00\ta\nu02\tb\nu00\tc\nu02\td\nu04\te\n", encoding="utf-8")
    with pytest.raises(AsrEvalError, match=r"2 utterance\(s\) have more than one hypothesis: u00 \(lines 1, 3\); "
                                           r"u02 \(lines 2, 4\)"):
        import_hypotheses(corpus, f, "dup", tmp_path / "s.duckdb", split="test", n_boot=N_BOOT)
    # two NeMo rows naming the same audio file are duplicates too
    src = corpus.parent / "src"
    g = _jsonl(tmp_path / "m.json", [{"audio_filepath": str(src / "u00.wav"), "pred_text": "a"},
                                     {"audio_filepath": "u00.wav", "pred_text": "b"}])
    with pytest.raises(AsrEvalError, match=r"u00 \(lines 1, 2\)"):
        import_hypotheses(corpus, g, "dup", tmp_path / "s.duckdb", split="test", n_boot=N_BOOT)


def test_bad_lines_name_file_line_and_fix(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text('{"utt_id": "u00", "text": "a"}\n\n{"utt_id": "u02", "text": "b"\n{"utt_id": "u04"}\n'
                 '{"utt_id": "u06", "text": null}\n', encoding="utf-8")
    with pytest.raises(AsrEvalError) as e:
        read_hyp_file(f)
    msg = str(e.value)
    assert "3 bad line(s)" in msg
    assert f"{f}:3: not valid JSON" in msg
    assert f"{f}:4: no 'pred_text' or 'text' field (keys: utt_id)" in msg
    assert f"{f}:5: 'text' is null" in msg and 'write "" for an empty hypothesis' in msg
    assert 'Fix: each line must be one JSON object like {"utt_id"' in msg
    t = tmp_path / "b.tsv"
    t.write_text("u00\ta\nu02 b\n", encoding="utf-8")
    with pytest.raises(AsrEvalError, match=rf"(?s){t}:2: no TAB.*Fix: write one `utt_id<TAB>text`"):
        read_hyp_file(t, "tsv")
    with pytest.raises(AsrEvalError, match="unknown hypothesis format 'csv'"):
        read_hyp_file(t, "csv")
    u = tmp_path / "what.txt"
    u.write_text("u00 a\n", encoding="utf-8")
    with pytest.raises(AsrEvalError, match="(?s)cannot tell the format.*pass --format"):
        read_hyp_file(u)


# ───────────── comparisons, re-import, labels ─────────────


def test_paired_comparison_between_two_imports_and_reimport_replaces(corpus, tmp_path):
    from asr_eval.store import connect
    from asr_eval.store.labels import run_labels

    db = tmp_path / "s.duckdb"
    a = _jsonl(tmp_path / "a.jsonl", [{"utt_id": k, "text": v} for k, v in REFS.items()])  # perfect
    b = _jsonl(tmp_path / "b.jsonl", [{"utt_id": k, "text": v} for k, v in HYPS.items()])  # 3 / 32
    ra = import_hypotheses(corpus, a, "ref-sys", db, split="test", n_boot=N_BOOT)
    rb = import_hypotheses(corpus, b, "sys-b", db, split="test", n_boot=N_BOOT)
    assert rb.compared_with == (ra.run_id,)
    (delta, lo, hi, ra_, rb_), = _q(db, "SELECT delta, delta_lo, delta_hi, rate_a, rate_b FROM comparisons WHERE "
                                        "run_a = ? AND run_b = ? AND metric = 'cer' AND slice_attr = '_all'",
                                    [ra.run_id, rb.run_id])
    assert (ra_, rb_) == (0.0, pytest.approx(3 / 32)) and delta == pytest.approx(3 / 32) and lo <= delta <= hi
    # re-importing the same file replaces its run: same id, no second row, the comparison kept
    again = import_hypotheses(corpus, b, "sys-b", db, split="test", n_boot=N_BOOT)
    assert again.run_id == rb.run_id
    assert _q(db, "SELECT count(*) FROM eval_runs") == [(2,)]
    assert _q(db, "SELECT count(*) FROM hypotheses WHERE run_id = ?", [rb.run_id]) == [(6,)]
    assert _q(db, "SELECT count(*) FROM slice_metrics WHERE run_id = ? AND slice_attr = '_all'", [ra.run_id]) == [(1,)]
    con = connect(db, read_only=True)
    try:
        assert run_labels(con, [ra.run_id, rb.run_id]) == {ra.run_id: "ref-sys (imported)",
                                                           rb.run_id: "sys-b (imported)"}
    finally:
        con.close()


# ───────────── CLI ─────────────


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "asr_eval", "import-hyps", *args], check=False,
                          capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_prints_run_counts_and_table_and_exits_2_on_errors(corpus, tmp_path):
    db = tmp_path / "s.duckdb"
    f = _jsonl(tmp_path / "sys.jsonl", [{"utt_id": k, "text": v} for k, v in HYPS.items() if k != "u04"])
    r = _cli(str(f), "--corpus", str(corpus), "--split", "test", "--name", "cloud-x", "--db", str(db),
             "--n-boot", str(N_BOOT), "--engine-notes", "v3 API")
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = _q(db, "SELECT run_id FROM eval_runs")[0][0]
    assert f"as run {run_id}" in r.stdout
    assert "matched 5 of 6 utterances of split test" in r.stdout
    assert "missing 1: utterances without a hypothesis, scored as full deletions" in r.stdout
    assert "cloud-x (imported)" in r.stdout and "21.88" in r.stdout  # 7 / 32
    bad = tmp_path / "bad.tsv"
    bad.write_text("nope\tx\n", encoding="utf-8")
    r = _cli(str(bad), "--corpus", str(corpus), "--split", "test", "--name", "n", "--db", str(db))
    assert r.returncode == 2
    assert "error:" in r.stderr and "'nope' (line 1)" in r.stderr and "Traceback" not in r.stderr
    r = _cli(str(f), "--corpus", str(corpus), "--split", "nosuch", "--name", "n", "--db", str(db))
    assert r.returncode == 2 and "no split 'nosuch'" in r.stderr


def test_cli_json_and_table_count_the_missing(corpus, tmp_path):
    """n counts every utterance the CER is computed over (the missing one scored as full deletions);
    n_missing says how many had no hypothesis — in --json and in the score table. Six utterances are
    below the minimum evidence: the CER is a point estimate (†), its interval null."""
    from typer.testing import CliRunner

    from asr_eval.cli import _register_commands, app, console

    _register_commands()
    db = tmp_path / "s.duckdb"
    f = _jsonl(tmp_path / "sys.jsonl", [{"utt_id": k, "text": v} for k, v in HYPS.items() if k != "u04"])
    args = ["import-hyps", str(f), "--corpus", str(corpus), "--split", "test", "--name", "cloud-x", "--db", str(db),
            "--n-boot", str(N_BOOT)]
    js = CliRunner().invoke(app, [*args, "--json"])
    assert js.exit_code == 0, js.output
    r = json.loads(js.output)
    assert (r["n"], r["n_matched"], r["n_missing"], r["n_empty"]) == (6, 5, 1, 0)
    assert r["cer"] == pytest.approx(7 / 32) and r["reliable"] is False and (r["cer_lo"], r["cer_hi"]) == (None, None)
    width, console.width = console.width, 200
    try:
        table = CliRunner().invoke(app, args)
    finally:
        console.width = width
    head = next(ln for ln in table.output.splitlines() if "n_missing" in ln)
    row = next(ln for ln in table.output.splitlines() if ln.startswith("│ all"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert "n_missing" in head and cells[1] == "6" and cells[3:] == ["21.88 †", "21.88 †", "1"]  # CER, MER, n_missing


def test_segments_of_one_audio_file_are_told_apart_by_offset(tmp_path):
    """Manifest ingest names a segment `<id>_<offset ms>`; NeMo rows with `offset` pick it."""
    from asr_eval.importing import HypFile, HypRow, SplitUtterances, match_hypotheses

    utts = SplitUtterances("c@x", "test", ("long_00000000", "long_00002500"), {"long_00000000": "test",
                           "long_00002500": "test"}, {}, {"long.wav": ("long_00000000", "long_00002500")})
    hf = HypFile(tmp_path / "m.json", "nemo", "audio_filepath", "0" * 64,
                 (HypRow(1, "long.wav", "甲", offset_s=2.5), HypRow(2, "long.wav", "乙", offset_s=0.0)))
    m = match_hypotheses(hf, utts)
    assert m.texts == {"long_00002500": "甲", "long_00000000": "乙"} and m.missing == []
    no_offset = HypFile(hf.path, "nemo", "audio_filepath", "0" * 64, (HypRow(1, "long.wav", "甲"),))
    with pytest.raises(AsrEvalError, match="'long.wav' is the audio of 2 utterances"):
        match_hypotheses(no_offset, utts)
