"""The single-writer loader: corpora, models and inference result parts → DuckDB.

Workers (local processes, Ray tasks) never open the store; they write Parquet parts, and
these functions — called from one process — load them. Every load is idempotent
(INSERT OR REPLACE on the table's key), so a re-run after a crash never duplicates rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from asr_eval.corpus_handle import Corpus, open_corpus
from asr_eval.slices import DURATION_ATTR, DURATION_BUCKETS, duration_bucket  # noqa: F401  (the one slice definition)
from asr_eval.store.tx import insert_arrow, transaction


def corpus_id_for(corpus_dir: str | Path | Corpus) -> str:
    return open_corpus(corpus_dir).corpus_id


def _segments_json(meta: pa.Table) -> list[str | None]:
    """Reference segments as JSON ``[[start, end, text], ...]`` (schema-1 shards have none)."""
    if "segments" not in meta.column_names:
        return [None] * meta.num_rows
    return [None if not v else json.dumps([[s["start"], s["end"], s["text"]] for s in v], ensure_ascii=False)
            for v in meta.column("segments").to_pylist()]


def load_corpus(con: duckdb.DuckDBPyConnection, corpus_dir: str | Path | Corpus) -> str:
    """Load a corpus's utterances and slice attributes (once per index version); its location
    (folder or URL, never credentials) is recorded in ``corpora.path``."""
    corpus = open_corpus(corpus_dir)
    idx, cid = corpus.index, corpus.corpus_id
    if con.execute("SELECT 1 FROM corpora WHERE corpus_id = ?", [cid]).fetchall():
        return cid
    meta = corpus.read_metadata()
    n = meta.num_rows
    utt = pa.table({
        "corpus_id": pa.array([cid] * n, pa.string()),
        "utt_id": meta.column("utt_id"),
        "split": meta.column("split"),
        "duration_s": meta.column("duration_s"),
        "speaker": meta.column("speaker"),
        "text": meta.column("text"),
        "source_path": meta.column("source_path"),
        "audio_sha256": meta.column("audio_sha256"),
        "segments": pa.array(_segments_json(meta), pa.string()),
    })
    attrs = list(idx["slice_columns"])
    long = {"corpus_id": [], "utt_id": [], "attr": [], "value": []}
    ids = meta.column("utt_id").to_pylist()
    for attr in attrs:
        vals = meta.column(attr).to_pylist()
        long["corpus_id"] += [cid] * n
        long["utt_id"] += ids
        long["attr"] += [attr] * n
        long["value"] += vals
    long["corpus_id"] += [cid] * n
    long["utt_id"] += ids
    long["attr"] += [DURATION_ATTR] * n
    long["value"] += [duration_bucket(d) for d in meta.column("duration_s").to_pylist()]
    with transaction(con):
        insert_arrow(con, "utterances", utt, "INSERT OR REPLACE")
        insert_arrow(con, "utterance_attrs", pa.table(long), "INSERT OR REPLACE")
        con.execute(
            "INSERT OR REPLACE INTO corpora (corpus_id, name, path, index_sha256, n_utts, hours, splits, slice_columns,"
            " source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [cid, idx["corpus"], corpus.url, cid.split("@")[1], idx["n_utterances"], idx["hours"],
             json.dumps(idx["splits"]), json.dumps(attrs + [DURATION_ATTR]), json.dumps(idx["source"])],
        )
    return cid


def register_model(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> str:
    """Insert or update a ``models`` row (keys as in the schema); returns model_id."""
    cols = ["model_id", "name", "source", "path", "revision", "num_mel_bins", "n_params", "config",
            "base_model_id", "corpus_id", "training_run_id", "step", "display_name", "train_preprocessing",
            "selection_split"]
    vals = [json.dumps(row[c]) if c == "config" and row.get(c) is not None else row.get(c) for c in cols]
    kept = ["base_model_id", "corpus_id", "training_run_id", "step", "display_name", "train_preprocessing",
            "selection_split"]
    existing = con.execute(f"SELECT {', '.join(kept)} FROM models WHERE model_id = ?", [row["model_id"]]).fetchall()
    if existing:  # keep lineage recorded at training time when scoring registers the same weights
        for i, c in enumerate(kept):
            j = cols.index(c)
            if vals[j] is None:
                vals[j] = existing[0][i]
    with transaction(con):
        con.execute(f"INSERT OR REPLACE INTO models ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
    return row["model_id"]


# Columns a hypothesis part may carry besides utt_id (parts written before v2 lack the optional ones).
HYP_PART_COLUMNS = ("hyp_raw", "n_tokens", "shard", "avg_logprob", "n_fallbacks", "temperature", "cut_off", "segments")


def load_hypotheses(con: duckdb.DuckDBPyConnection, run_id: str, parts: list[Path] | pa.Table) -> int:
    """Replace a run's hypotheses with its parts (Parquet files, or one Arrow table) in one
    transaction: utt_id, hyp_raw and any of ``HYP_PART_COLUMNS``."""
    with transaction(con):
        con.execute("DELETE FROM hypotheses WHERE run_id = ?", [run_id])
        if isinstance(parts, pa.Table):
            t = parts
        elif parts:
            import pyarrow.parquet as pq

            t = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive")
        else:
            t = None
        if t is not None and t.num_rows:
            cols = [c for c in HYP_PART_COLUMNS if c in t.column_names]
            if "segments" in cols and not pa.types.is_string(t.schema.field("segments").type):
                t = t.set_column(t.column_names.index("segments"), "segments",
                                 pa.array([None if v is None else json.dumps(v) for v in t.column("segments").to_pylist()],
                                          pa.string()))
            data = t.select(["utt_id", *cols])
            data = data.add_column(0, "run_id", pa.array([run_id] * data.num_rows, pa.string()))
            insert_arrow(con, "hypotheses", data)
    return con.execute("SELECT count(*) FROM hypotheses WHERE run_id = ?", [run_id]).fetchall()[0][0]


def upsert_eval_run(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Insert or replace an ``eval_runs`` row; keys as in the schema (JSON columns take dicts)."""
    cols = [c for c in EVAL_RUN_COLUMNS if c in row or c in _EVAL_RUN_DEFAULTS]
    vals = [json.dumps(row.get(c)) if c in _JSON_COLS and row.get(c) is not None
            else row.get(c, _EVAL_RUN_DEFAULTS.get(c)) for c in cols]
    with transaction(con):
        con.execute(f"INSERT OR REPLACE INTO eval_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)


EVAL_RUN_COLUMNS = (
    "run_id", "corpus_id", "split", "model_id", "status", "started_at", "finished_at", "device", "dtype",
    "batch_size", "decode_params", "versions", "n_utts", "audio_s", "proc_s", "rtfx", "peak_gpu_mem_bytes",
    "kind", "engine", "engine_version", "compute_type", "preprocessing", "recipe", "strategy", "strategy_params",
    "provenance", "n_missing", "stream_policy", "stream_params", "engine_options")
_JSON_COLS = {"decode_params", "versions", "strategy_params", "provenance", "stream_params", "engine_options"}
_EVAL_RUN_DEFAULTS = {"kind": "model", "engine": "transformers", "preprocessing": "pad-audio", "recipe": "greedy",
                      "strategy": "short"}
