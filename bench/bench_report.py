"""Benchmark: build the HTML report over a store of N utterances × M models (default 1,000,000 × 3).

The store is generated in DuckDB SQL (range() + hash-based pseudo-randomness), not Python loops:
utterances with five slice columns, hypotheses, utterance scores whose CER counts agree with
their alignment JSON, pathology flags, stored slice metrics and comparisons for all but one slice
column (so the report's own SQL fallback runs too), a 20,000-step training run with a baseline and
alerts. Then ``build_report`` is timed, per stage and end to end, with file size and peak RSS.

    .venv/bin/python bench/bench_report.py                  # 1M × 3 (store cached in bench/out/)
    .venv/bin/python bench/bench_report.py --n 100000 --fresh

Target (issue 7): under 60 s on the 2-core dev machine; the file size stays bounded.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path

from asr_eval.report import ReportOptions, build_report
from asr_eval.report import build as B
from asr_eval.report import queries as Q
from asr_eval.report.queries import ratio_sql, sums_sql
from asr_eval.report.select import select
from asr_eval.store import connect

OUT = Path(__file__).resolve().parent / "out"
CORPUS = "bench_zh@0000000000"
CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"


def _ms(t0: float) -> float:
    return round(time.perf_counter() - t0, 2)


def generate(db: Path, n: int, models: int, seed: int = 7) -> dict[str, float]:
    """Fill ``db`` with a synthetic scored store; returns seconds per step."""
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    con = connect(db)
    con.execute(f"SELECT setseed({seed / 100})")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    con.execute("INSERT INTO corpora (corpus_id, name, path, index_sha256, n_utts, hours, splits, slice_columns) "
                "VALUES (?, 'bench_zh', ?, '0000000000', ?, NULL, '{}', '[]')", [CORPUS, str(db.parent / "no-shards"), n])
    # Text: 6–25 characters from a 1,000-character pool, chosen by hash (deterministic, fast).
    con.execute(f"""
        CREATE TEMP TABLE u AS
        SELECT i, 'u' || lpad(i::VARCHAR, 8, '0') AS utt_id, (6 + hash(i, 'len') % 20)::BIGINT AS len,
               1.0 + (hash(i, 'dur') % 14000) / 1000.0 AS dur
        FROM range({n}) t(i)""")
    con.execute("""
        INSERT INTO utterances (corpus_id, utt_id, split, duration_s, speaker, text, source_path, audio_sha256)
        SELECT ?, utt_id, 'test', dur, 'spk' || (i % 2000), array_to_string(list_transform(range(len),
               lambda x: substr(?, 1 + (hash(i, x) % 1000)::INTEGER, 1)), '') || '。', NULL, NULL FROM u""", [CORPUS, CHARS])
    con.execute(f"""
        INSERT INTO utterance_attrs
        SELECT '{CORPUS}', utt_id, a.attr, CASE a.attr
            WHEN 'hsk_level' THEN (1 + i % 6)::VARCHAR
            WHEN 'voice' THEN CASE WHEN i % 4 = 3 THEN 'robotic' ELSE 'neural' END
            WHEN 'noise' THEN ['clean', 'snr20', 'snr5'][1 + i % 3]
            WHEN 'region' THEN 'region-' || (hash(i, 'r') % 40)
            ELSE CASE WHEN dur < 2 THEN '0-2s' WHEN dur < 5 THEN '2-5s' WHEN dur < 10 THEN '5-10s' ELSE '10-20s' END
          END
        FROM u, (VALUES ('hsk_level'), ('voice'), ('noise'), ('region'), ('duration_bucket')) a(attr)""")
    times["utterances + attrs"] = _ms(t0)
    for m in range(models):
        t0 = time.perf_counter()
        run, mid = f"run-m{m}", f"org/whisper-bench-{m}@rev{m}"
        con.execute("INSERT INTO models (model_id, name, source, revision, base_model_id, training_run_id, step) "
                    "VALUES (?, ?, 'hub', ?, ?, ?, ?)",
                    [mid, f"org/whisper-bench-{m}", f"rev{m}", "org/whisper-bench-1@rev1" if m == 2 else None,
                     "tr-big" if m == 2 else None, 20000 if m == 2 else None])
        con.execute("INSERT INTO eval_runs (run_id, corpus_id, split, model_id, status, started_at, finished_at, device, dtype, batch_size, decode_params, versions, n_utts, audio_s, proc_s, rtfx, peak_gpu_mem_bytes) VALUES (?, ?, 'test', ?, 'done', now(), now(), 'cuda:0', 'float16', 32, "
                    "'{\"language\": \"zh\", \"num_beams\": 1}', '{\"torch\": \"2.13.0\"}', ?, ?, ?, ?, NULL)",
                    [run, CORPUS, mid, n, n * 7.5, n * 7.5 / (60 + 10 * m), 60 + 10 * m])
        # Per character: '=' or an error with probability (6 - m)% × noise factor; ops S/D/I 60/25/15.
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE a AS
            SELECT u.i, u.utt_id, list_transform(range(u.len), lambda x: CASE
                WHEN hash(u.i, x, {m}) % 1000 >= (60 - 10 * {m}) * (1 + u.i % 3) THEN '='
                WHEN hash(u.i, x, {m}, 'op') % 100 < 60 THEN 'S'
                WHEN hash(u.i, x, {m}, 'op') % 100 < 85 THEN 'D' ELSE 'I' END) AS ops,
                   list_transform(range(u.len), lambda x: substr($chars, 1 + (hash(u.i, x) % 1000)::INTEGER, 1)) AS ref,
                   list_transform(range(u.len), lambda x: substr($chars, 1 + (hash(u.i, x, {m}, 's') % 1000)::INTEGER, 1))
                     AS sub
            FROM u""", {"chars": CHARS})
        con.execute("""
            CREATE OR REPLACE TEMP TABLE al AS
            SELECT i, utt_id, ref,
                   list_transform(range(len(ops)), lambda k: CASE ops[k + 1]
                       WHEN '=' THEN [ '=', ref[k + 1], ref[k + 1] ]
                       WHEN 'S' THEN [ 'S', ref[k + 1], sub[k + 1] ]
                       WHEN 'D' THEN [ 'D', ref[k + 1], NULL ]
                       ELSE [ 'I', NULL, sub[k + 1] ] END) AS al
            FROM a""")
        con.execute(f"""
            INSERT INTO hypotheses (run_id, utt_id, hyp_raw, n_tokens, shard)
            SELECT '{run}', utt_id, array_to_string(list_transform(list_filter(al, lambda x: x[1] <> 'D'), lambda x: x[3]), ''),
                   len(al), 'shard-0'
            FROM al""")
        con.execute(f"""
            INSERT INTO utterance_scores
            SELECT '{run}', utt_id, 'zh-v1', 'h4sh', array_to_string(ref, ''),
                   array_to_string(list_transform(list_filter(al, lambda x: x[1] <> 'D'), lambda x: x[3]), ''),
                   n, s, d, ins, n, s, d, ins, 1, (s + d + ins > 0)::INT, 0, 0,
                   n, s + d + ins, 0, 0, 0, 0, 0, 0, to_json(al),
                   CASE WHEN i % 53 = {m} THEN ['repetition'] WHEN i % 97 = {m} THEN ['hallucination', 'wrong_script']
                        WHEN i % 211 = 0 THEN ['empty'] ELSE [] END::VARCHAR[], false
            FROM (SELECT *, len(list_filter(al, lambda x: x[1] <> 'I')) AS n, len(list_filter(al, lambda x: x[1] = 'S')) AS s,
                         len(list_filter(al, lambda x: x[1] = 'D')) AS d, len(list_filter(al, lambda x: x[1] = 'I')) AS ins
                  FROM al)""")
        times[f"model {m}: hypotheses + scores"] = _ms(t0)
    t0 = time.perf_counter()
    _stored_aggregates(con, models)
    times["slice_metrics + comparisons"] = _ms(t0)
    t0 = time.perf_counter()
    _training(con)
    times["training log"] = _ms(t0)
    con.execute("CHECKPOINT")
    con.close()
    return times


def _stored_aggregates(con, models: int) -> None:
    """What the scorer would store, computed in SQL (normal-approximation intervals; bench only).
    'region' is left out on purpose: the report must compute that slice itself."""
    sl = """(SELECT utt_id, attr, value FROM utterance_attrs WHERE attr <> 'region'
             UNION ALL SELECT utt_id, '_all', 'all' FROM utterances)"""
    con.execute(f"""
        INSERT INTO slice_metrics (run_id, normalizer, normalizer_hash, slice_attr, slice_value, n, hours, cer, cer_lo, cer_hi, mer, mer_lo, mer_hi, wer, cer_s, cer_d, cer_i, cer_n, n_boot, ci_method)
        SELECT run_id, 'zh-v1', 'h4sh', attr, value, cnt, hours, cer, cer_lo, cer_hi, cer, cer_lo, cer_hi, 0.9,
               s, d, i, cer_n, 1000, 'utterance'
        FROM (SELECT *, {ratio_sql('cer')} FROM (
            SELECT run_id, attr, value, count(*) AS cnt, sum(u.duration_s) / 3600 AS hours,
                   {sums_sql('cer', 'cer_s + cer_d + cer_i', 'cer_n')}, sum(cer_s) AS s, sum(cer_d) AS d,
                   sum(cer_i) AS i
            FROM utterance_scores JOIN {sl} a USING (utt_id) JOIN utterances u USING (utt_id)
            GROUP BY run_id, attr, value))""")
    for a in range(models):
        for b in range(a + 1, models):
            con.execute(f"""
                INSERT INTO comparisons (run_a, run_b, normalizer, metric, slice_attr, slice_value, n, rate_a, rate_b, delta, delta_lo, delta_hi, p_b_better, sign_test_p, verdict)
                SELECT 'run-m{a}', 'run-m{b}', 'zh-v1', 'cer', attr, value, cnt, ea / d_n, eb / d_n, d, d_lo, d_hi,
                       NULL, NULL, 'bench'
                FROM (SELECT *, {ratio_sql('d', clamp=False)} FROM (
                    SELECT attr, value, count(*) AS cnt, sum(ea) AS ea, sum(eb) AS eb, {sums_sql('d', 'eb - ea', 'n')}
                    FROM (SELECT x.utt_id, x.cer_n AS n, x.cer_s + x.cer_d + x.cer_i AS ea,
                                 y.cer_s + y.cer_d + y.cer_i AS eb
                          FROM utterance_scores x
                          JOIN utterance_scores y ON y.utt_id = x.utt_id AND y.run_id = 'run-m{b}'
                          WHERE x.run_id = 'run-m{a}') p
                    JOIN {sl} a USING (utt_id) GROUP BY attr, value))""")


def _training(con) -> None:
    for tid, base in (("tr-base", None), ("tr-big", "tr-base")):
        con.execute("INSERT INTO training_runs (training_run_id, name, source, base_model_id, corpus_id, "
                    "baseline_run_id, status) VALUES (?, ?, 'asr-eval', 'org/whisper-bench-1@rev1', ?, ?, 'finished')",
                    [tid, tid, CORPUS, base])
        spike = "CASE WHEN step BETWEEN 12000 AND 12040 THEN 8 ELSE 1 END" if base else "1"
        con.execute(f"""
            INSERT INTO training_log
            SELECT ?, step, 'train', step / 1000, CASE WHEN step = 15000 AND ? THEN 'nan'::DOUBLE
                   ELSE (2 * exp(-step / 4000) + 0.3 + (hash(step, ?) % 100) / 2000) * {spike} END,
                   1 + (hash(step) % 100) / 100 * {spike}, 1e-5, NULL, NULL, NULL, NULL, NULL, step
            FROM range(1, 20001) t(step)""", [tid, base is not None, tid])
        con.execute("""
            INSERT INTO training_log SELECT ?, step, 'eval', step / 1000, 0.5, NULL, NULL,
                   0.1 + 0.1 * exp(-step / 5000) + CASE WHEN ? THEN 0.01 ELSE 0 END, 1, 1, 1, 100, step
            FROM range(500, 20001, 500) t(step)""", [tid, base is not None])
    con.execute("INSERT INTO alerts (alert_id, training_run_id, baseline_run_id, rule, severity, step, metric, value, "
                "threshold, message) VALUES ('b1', 'tr-big', NULL, 'loss_spike', 'warning', 12000, 'loss', 8, 2, "
                "'loss 8x rolling mean'), ('b2', 'tr-big', NULL, 'non_finite', 'critical', 15000, 'loss', 'nan', NULL, "
                "'loss is NaN'), ('b3', 'tr-big', 'tr-base', 'baseline_cer', 'regression', 20000, 'cer', 0.11, 0.1, "
                "'final CER worse than baseline')")


def ensure_shards(db: Path, seconds: float = 8.0, rows_per_shard: int = 2000) -> None:
    """Give the bench corpus shards with audio, laid out like ingest's (2,000 rows per file, sorted ids).
    Storing 1M real clips would take hundreds of GB, so the 50 worst candidates of every run carry a real
    8 s FLAC clip (long enough that the report's audio cap is reached) and every other row a stub."""
    shard_dir = db.parent / f"{db.stem}-shards"
    if not any(shard_dir.glob("shard-*.parquet")):
        import io

        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq
        import soundfile as sf

        t = np.arange(int(seconds * 16000)) / 16000
        x = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t)))
        buf = io.BytesIO()
        sf.write(buf, x.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
        clip, stub = buf.getvalue(), b"fLaC" + bytes(60)
        con = connect(db, read_only=True)
        ids = [r[0] for r in con.execute("SELECT utt_id FROM utterances ORDER BY utt_id").fetchall()]
        worst = {r[0] for r in con.execute("""
            SELECT utt_id FROM utterance_scores
            QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY (cer_s + cer_d + cer_i) / greatest(cer_n, 1) DESC,
                                       cer_s + cer_d + cer_i DESC, utt_id) <= 50""").fetchall()}
        con.close()
        shard_dir.mkdir(parents=True, exist_ok=True)
        for k in range(0, len(ids), rows_per_shard):
            chunk = ids[k:k + rows_per_shard]
            pq.write_table(pa.table({"utt_id": chunk, "audio": pa.array([clip if u in worst else stub for u in chunk],
                                                                          pa.binary())}),
                           shard_dir / f"shard-{k // rows_per_shard:05d}.parquet")
        print(f"shards with audio: {shard_dir} ({len(ids) // rows_per_shard} files, clip {len(clip) / 1024:.0f} KiB)")
    con = connect(db)
    con.execute("UPDATE corpora SET path = ? WHERE corpus_id = ?", [str(shard_dir), CORPUS])
    con.close()


def stages(db: Path) -> dict[str, float]:
    """Seconds per report query stage, on their own (the full build repeats them)."""
    con = connect(db, read_only=True)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    sel = select(con)
    out["select runs + normalizer"] = _ms(t0)
    t0 = time.perf_counter()
    totals = Q.run_totals(con, sel)
    out["run totals (headline, S/D/I, classes, WER CI)"] = _ms(t0)
    t0 = time.perf_counter()
    attrs = Q.slice_attrs(con, sel)
    rows = Q.slice_rows(con, sel, attrs)
    out[f"slice rows ({len(rows)}; 'region' computed in SQL)"] = _ms(t0)
    t0 = time.perf_counter()
    diffs = Q.pair_diffs(con, sel, attrs)
    out[f"paired diffs ({len(diffs)}; 'region' computed in SQL)"] = _ms(t0)
    t0 = time.perf_counter()
    Q.flag_counts(con, sel)
    out["pathology flags per slice"] = _ms(t0)
    cap = ReportOptions().confusion_utts
    stride = {r: math.ceil(t.n_err_utts / cap) for r, t in totals.items() if t.n_err_utts > cap}
    t0 = time.perf_counter()
    Q.confusions(con, sel, 15, stride)
    out[f"top confusions (alignment JSON unnest, 1-in-{max(stride.values(), default=1)})"] = _ms(t0)
    t0 = time.perf_counter()
    Q.confusions(con, sel, 15)
    out["  (the same over every utterance, for comparison)"] = _ms(t0)
    t0 = time.perf_counter()
    Q.worst_utterances(con, sel, 10)
    out["worst utterances"] = _ms(t0)
    t0 = time.perf_counter()
    B._training(con, sel, ReportOptions())
    out["training curves + alerts"] = _ms(t0)
    con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--fresh", action="store_true", help="regenerate the store even if cached")
    args = ap.parse_args()
    db = OUT / f"report_bench_{args.n}x{args.models}.duckdb"
    if args.fresh or not db.exists():
        t0 = time.perf_counter()
        gen = generate(db, args.n, args.models)
        print(f"generated {db} ({db.stat().st_size / 2**30:.2f} GiB) in {_ms(t0)} s")
        for k, v in gen.items():
            print(f"  {k:<45} {v:7.2f} s")
    ensure_shards(db)
    # The full build first, so it does not profit from the stage runs' warm caches.
    out = OUT / f"report_bench_{args.n}x{args.models}.html"
    cpu0 = time.process_time()
    res = build_report(db, out)
    cpu = time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"build_report: {res.elapsed_s:.2f} s wall ({cpu:.1f} s CPU, load average {load}); "
          f"{res.size_bytes / 2**20:.2f} MiB HTML; "
          f"{res.n_runs} runs, {res.n_training_runs} training runs; audio {res.audio_embedded} clips "
          f"{res.audio_bytes / 2**20:.2f} MiB embedded, {res.audio_left_out} left out by the cap; peak RSS {rss:.2f} GiB")
    print("report stages, each on its own (for where the time goes):")
    for k, v in stages(db).items():
        print(f"  {k:<55} {v:7.2f} s")
    print(res.headline_markdown)


if __name__ == "__main__":
    main()
