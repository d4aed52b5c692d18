"""The single-writer loader: corpora, models and inference result parts → DuckDB.

Workers (local processes, Ray tasks) never open the store; they write Parquet parts, and
these functions — called from one process — load them. Every load is idempotent
(INSERT OR REPLACE on the table's key), so a re-run after a crash never duplicates rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from asr_eval.shards import INDEX_FILE, read_index, read_metadata

# Derived slice: duration buckets (upper bounds in seconds, label).
DURATION_BUCKETS: tuple[tuple[float, str], ...] = (
    (2.0, "0-2s"), (5.0, "2-5s"), (10.0, "5-10s"), (20.0, "10-20s"), (30.0, "20-30s"), (float("inf"), ">30s"),
)


def duration_bucket(seconds: float) -> str:
    for upper, label in DURATION_BUCKETS:
        if seconds < upper:
            return label
    return DURATION_BUCKETS[-1][1]


def corpus_id_for(corpus_dir: str | Path) -> str:
    idx_bytes = (Path(corpus_dir) / INDEX_FILE).read_bytes()
    idx = json.loads(idx_bytes)
    return f"{idx['corpus']}@{hashlib.sha256(idx_bytes).hexdigest()[:10]}"


def load_corpus(con: duckdb.DuckDBPyConnection, corpus_dir: str | Path) -> str:
    """Load a corpus's utterances and slice attributes (once per index version)."""
    corpus_dir = Path(corpus_dir).resolve()
    idx = read_index(corpus_dir)
    cid = corpus_id_for(corpus_dir)
    if con.execute("SELECT 1 FROM corpora WHERE corpus_id = ?", [cid]).fetchall():
        return cid
    meta = read_metadata(corpus_dir)
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
    })
    attrs = list(idx["slice_columns"])
    con.execute("BEGIN")
    con.register("_utt", utt)
    con.execute("INSERT OR REPLACE INTO utterances SELECT * FROM _utt")
    con.unregister("_utt")
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
    long["attr"] += ["duration_bucket"] * n
    long["value"] += [duration_bucket(d) for d in meta.column("duration_s").to_pylist()]
    con.register("_attrs", pa.table(long))
    con.execute("INSERT OR REPLACE INTO utterance_attrs SELECT * FROM _attrs")
    con.unregister("_attrs")
    con.execute(
        "INSERT OR REPLACE INTO corpora (corpus_id, name, path, index_sha256, n_utts, hours, splits, slice_columns, source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [cid, idx["corpus"], str(corpus_dir), cid.split("@")[1], idx["n_utterances"], idx["hours"],
         json.dumps(idx["splits"]), json.dumps(attrs + ["duration_bucket"]), json.dumps(idx["source"])],
    )
    con.execute("COMMIT")
    return cid


def register_model(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> str:
    """Insert or update a ``models`` row (keys as in the schema); returns model_id."""
    cols = ["model_id", "name", "source", "path", "revision", "num_mel_bins", "n_params", "config",
            "base_model_id", "corpus_id", "training_run_id", "step"]
    vals = [json.dumps(row[c]) if c == "config" and row.get(c) is not None else row.get(c) for c in cols]
    existing = con.execute("SELECT base_model_id, corpus_id, training_run_id, step FROM models WHERE model_id = ?",
                           [row["model_id"]]).fetchall()
    if existing:  # keep lineage recorded at training time when scoring registers the same weights
        for i, c in enumerate(["base_model_id", "corpus_id", "training_run_id", "step"]):
            j = cols.index(c)
            if vals[j] is None:
                vals[j] = existing[0][i]
    con.execute(f"INSERT OR REPLACE INTO models ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
    return row["model_id"]


def load_hypotheses(con: duckdb.DuckDBPyConnection, run_id: str, parts: list[Path]) -> int:
    """Load a run's hypothesis parts (Parquet: utt_id, hyp_raw, n_tokens, shard)."""
    if not parts:
        return 0
    files = [str(p) for p in parts]
    con.execute("BEGIN")
    con.execute(
        "INSERT OR REPLACE INTO hypotheses SELECT ? AS run_id, utt_id, hyp_raw, n_tokens, shard "
        "FROM read_parquet(?)", [run_id, files],
    )
    con.execute("COMMIT")
    return con.execute("SELECT count(*) FROM hypotheses WHERE run_id = ?", [run_id]).fetchall()[0][0]


def upsert_eval_run(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    cols = ["run_id", "corpus_id", "split", "model_id", "status", "started_at", "finished_at", "device", "dtype",
            "batch_size", "decode_params", "versions", "n_utts", "audio_s", "proc_s", "rtfx", "peak_gpu_mem_bytes"]
    vals = [json.dumps(row.get(c)) if c in ("decode_params", "versions") else row.get(c) for c in cols]
    con.execute(f"INSERT OR REPLACE INTO eval_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
