"""Flow `ingest`: a corpus source → Parquet shards (library: asr_eval.shards.ingest)."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from asr_eval.audio import dominant_reason
from asr_eval.corpus import open_source
from asr_eval.shards import IngestOptions, ingest, parse_split_map
from flows._common import DEMO_CORPUS, DEMO_SOURCE


@task(retries=2, retry_delay_seconds=5)  # sources on network filesystems fail transiently
def ingest_task(source: str, out: str, layout: str | None, split: str | None, split_map: list[str],
                keep_long: bool, max_rows: int, workers: int, name: str | None,
                confine_to_root: bool = False, long_form: bool = False) -> dict:
    reader = open_source(source, layout, split=split, confine_to_root=confine_to_root)
    opts = IngestOptions(max_rows=max_rows, keep_long=keep_long, split_map=parse_split_map(split_map),
                         workers=workers, corpus_name=name, long_form=long_form)
    return asdict(ingest(reader, out, opts, progress=True))


@flow(name="ingest", log_prints=True)
def ingest_flow(source: str = DEMO_SOURCE, out: str = DEMO_CORPUS, layout: str | None = None,
                split: str | None = None, split_map: list[str] | None = None, keep_long: bool = False,
                max_rows: int = 2000, workers: int = 0, name: str | None = None,
                confine_to_root: bool = False, long_form: bool = False) -> dict:
    """Ingest SOURCE (manifest, Kaldi, audiofolder, Common Voice, HF dataset) into OUT; ``long_form``
    keeps recordings over 30 s as long-form items (as ``asr-eval ingest --long-form``)."""
    s = ingest_task(source, out, layout, split, split_map or [], keep_long, max_rows, workers, name,
                    confine_to_root, long_form)
    create_table_artifact(
        key="ingest-summary",
        table=[{"corpus": s["corpus"], "ingested": s["n_ingested"], "quarantined": s["n_quarantined"],
                "hours": round(s["hours"], 3), "splits": str(s["by_split"]),
                "reasons": str(s["quarantine_by_reason"])}],
        description=f"Ingest of {source} → {out}",
    )
    print(f"ingested {s['n_ingested']} utterances ({s['hours']:.3f} h) into {out}; "
          f"{s['n_quarantined']} quarantined {s['quarantine_by_reason']}")
    top = dominant_reason(s["quarantine_by_reason"], s["n_items"])
    hint = f"; most items ({top[1]} of {s['n_items']}) were quarantined as {top[0]}: {top[2]}" if top else ""
    if top and s["n_ingested"]:
        print(f"warning{hint}")
    if s["n_ingested"] == 0:
        raise RuntimeError(f"nothing could be ingested from {source}{hint}")
    return s
