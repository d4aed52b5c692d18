"""Flow `stream`: Whisper as a streaming recognizer on a corpus — one offline run and one streaming
run per policy × chunk size, scored by the single writer (CER per slice, ΔCER against offline,
latency on both clocks, flicker, real time); the same library call as `asr-eval stream`."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from asr_eval.progress import fmt_pct
from asr_eval.streaming.store import DEFAULT_ALIGN_MODEL
from flows._common import BUNDLED, DEFAULT_DB, DEMO_LONG_CORPUS


def stream_line(row: dict, label: str) -> str:
    """'label: CER 12.30 % (Δ vs offline +1.20 pts [−0.4, +2.8]) latency median 2.10 s / p90 3.40 s
    (aware 2.30 / 3.90), flicker 4.1 %, real time yes, 0 characters committed over 12.0 s of silence
    (0 inserted as repeats)' (the silence part only with reference segment times). A number with
    insufficient data (the row's ``*_reliable`` flags: too few recordings) is its point estimate
    with †, no interval."""
    def s(x):
        return "—" if x is None else f"{x:.2f}"

    thin = " † (insufficient data: no interval)"
    delta = ("" if row["delta_cer"] is None else
             f" (Δ vs offline {100 * row['delta_cer']:+.2f} pts"
             + (f" [{100 * row['delta_cer_lo']:+.2f}, {100 * row['delta_cer_hi']:+.2f}])"
                if row.get("delta_reliable", True) else f"{thin}, n = {row.get('n')})"))
    lat, p90 = row["latency_median_s"], row["latency_p90_s"]
    rt = {True: "yes", False: "no", None: "unknown"}[row["real_time"]]
    cer = fmt_pct(row["cer"]) + ("" if row.get("cer_reliable", True) else " †")
    silence = ("" if row.get("inserted_in_silence") is None else
               f", {row['inserted_in_silence']} characters committed over {row['silence_s']:.1f} s of silence "
               f"({row['repeated_insertions']} inserted as repeats)")
    return (f"{label}: CER {cer}{delta} latency median {s(lat['unaware'])} s / p90 {s(p90['unaware'])} s "
            f"(aware {s(lat['aware'])} / {s(p90['aware'])}), flicker {100 * (row['flicker'] or 0):.1f} %, "
            f"real time {rt}{silence}")


@task
def stream_task(corpus: str, models: list[str], policies: list[str], chunk_sizes: list[float], params: dict,
                engine: str, compute_type: str, preprocessing: str, recipe: str, offline_strategy: str, split: str,
                db: str, normalizer: str, n_boot: int, device: str, align_model: str | None) -> dict:
    from asr_eval.scoring import expand_specs
    from asr_eval.streaming.evaluate import stream_models
    from asr_eval.streaming.run import expand_axes

    axes = expand_axes(policies, chunk_sizes, params)
    bases = expand_specs(models, engine, compute_type, preprocessing, recipe, device)
    runs = stream_models(corpus, bases, axes, db, offline_strategy, split, normalizer, n_boot=n_boot,
                         align_model=align_model)
    return {"streams": runs.streams, "offline_of": runs.offline_of}


@flow(name="stream", log_prints=True)
def stream_flow(corpus: str = DEMO_LONG_CORPUS, models: list[str] | None = None,
                policies: list[str] | None = None, chunk_sizes: list[float] | None = None,
                params: dict | None = None, engine: str = "ctranslate2", compute_type: str = "auto",
                preprocessing: str = "pad-audio", recipe: str = "greedy", offline_strategy: str = "vad",
                split: str = "auto", db: str = DEFAULT_DB, normalizer: str = "zh-v1", n_boot: int = 1000,
                device: str = "auto", align_model: str | None = DEFAULT_ALIGN_MODEL) -> dict:
    """Stream CORPUS through POLICIES × CHUNK_SIZES with MODELS (default: local-agreement at 1 s with
    bundled:whisper-base on ctranslate2, on the long-form demo corpus) and compare with offline."""
    from asr_eval.store import connect
    from asr_eval.store.labels import run_labels
    from asr_eval.streaming.evaluate import stream_summary

    res = stream_task(corpus, models or [BUNDLED], policies or ["local-agreement"], chunk_sizes or [1.0],
                      params or {}, engine, compute_type, preprocessing, recipe, offline_strategy, split, db,
                      normalizer, n_boot, device, align_model)
    con = connect(db, read_only=True)
    try:
        rows = stream_summary(con, res["streams"], normalizer, res["offline_of"])
        labels = run_labels(con, [*res["streams"], *res["offline_of"].values()])
    finally:
        con.close()
    table = [{"run": labels.get(r["run_id"], r["run_id"]), "run_id": r["run_id"],
              "CER %": None if r["cer"] is None else round(100 * r["cer"], 2),
              "ΔCER vs offline (pts)": None if r["delta_cer"] is None else round(100 * r["delta_cer"], 2),
              "latency median s": r["latency_median_s"]["unaware"], "latency p90 s": r["latency_p90_s"]["unaware"],
              "latency median s (aware)": r["latency_median_s"]["aware"],
              "flicker %": round(100 * (r["flicker"] or 0), 2), "real time": r["real_time"],
              "inserted in silence": r.get("inserted_in_silence"), "repeated insertions": r.get("repeated_insertions")}
             for r in rows]
    create_table_artifact(key="stream-headline", table=table, description=f"{corpus}, {normalizer}")
    for r in rows:
        print(stream_line(r, labels.get(r["run_id"], r["run_id"])))
    return res
