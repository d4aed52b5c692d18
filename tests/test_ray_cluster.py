"""Scoring on two Ray nodes that share no filesystem: corpus, model and parts only in an S3 server
(moto's, in this process); one node killed in the middle of the job."""

from __future__ import annotations

import collections
import threading
import time

import pytest
from conftest import REPO, write_audio

from asr_eval import storage
from asr_eval.corpus import open_source
from asr_eval.shards import IngestOptions, ingest

pytestmark = pytest.mark.slow


def _parts(root: str) -> dict[str, dict]:
    """Every finished part under ``root`` (any run) → its stats (node, pid, engine loads)."""
    import pyarrow.parquet as pq

    from asr_eval.scoring.parts import verified_part

    fs = storage.filesystem(storage.location(root))
    out = {}
    for key in fs.find(root.removeprefix("s3://")):
        if key.endswith(".parquet") and fs.exists(key + ".sha256"):
            local = verified_part(storage.location(f"s3://{key}"))
            if local is not None:
                out[key] = __import__("json").loads(pq.read_schema(local).metadata[b"asr_eval_stats"])
    return out


def test_two_nodes_no_shared_fs_equal_one_process_and_survive_a_lost_node(bucket, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from asr_eval.models import build_tiny_whisper
    from asr_eval.scoring import expand_specs, score_models

    monkeypatch.setenv("ASR_EVAL_PLUGINS", "fake_engine")
    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests"))
    monkeypatch.setenv("FAKE_ENGINE_DELAY_S", "0.4")
    # corpus and model exist only in the bucket
    src = tmp_path / "src"
    lines = ["file_name,text,split"] + [f"f{i}.wav,测试句子{i},test" for i in range(8)]
    for i in range(8):
        write_audio(src / f"f{i}.wav", 0.6 + 0.05 * i, 16000, seed=i)
    (src / "metadata.csv").write_text("\n".join(lines) + "\n")
    corpus = f"{bucket}/corpus"
    ingest(open_source(str(src)), corpus, IngestOptions(workers=1, max_rows=1), progress=False)  # 8 shards
    tiny = build_tiny_whisper(tmp_path / "tiny", num_mel_bins=80, seed=0)
    storage.filesystem(storage.location(bucket)).put(str(tiny) + "/", f"{bucket[5:]}/models/tiny/", recursive=True)
    model = f"{bucket}/models/tiny"
    specs = expand_specs([model], "transformers,fake", device="cpu", batch_size=2, max_new_tokens=6)

    one = score_models(corpus, specs, tmp_path / "one.duckdb", n_boot=50, progress=False,
                       parts_root=f"{bucket}/parts-one")  # one process, the reference

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node runs no task
    keep = cluster.add_node(num_cpus=1)
    lose = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    killed: dict = {}
    done = threading.Event()

    def kill_when_both_nodes_made_parts() -> None:
        while not done.is_set():
            parts = _parts(f"{bucket}/parts-two")
            if {keep.node_id, lose.node_id} <= {p["node"] for p in parts.values()}:
                killed["parts_before"] = len(parts)
                cluster.remove_node(lose)  # its raylet and workers die; Ray retries their tasks on `keep`
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_when_both_nodes_made_parts, daemon=True)
    watcher.start()
    try:
        two = score_models(corpus, specs, tmp_path / "two.duckdb", n_boot=50, progress=False,
                           parts_root=f"{bucket}/parts-two", ray_address=cluster.address)
        watcher.join(timeout=10)
    finally:
        done.set()
        ray.shutdown()
        cluster.shutdown()

    parts = _parts(f"{bucket}/parts-two")
    assert 2 <= killed.get("parts_before", 99) < 16, killed  # the node was lost in the middle of the job
    assert len(parts) == 16 and {p["node"] for p in parts.values()} == {keep.node_id, lose.node_id}
    # a worker process loads a model once and keeps it across shards (two runs here: at most two loads)
    per_worker = collections.Counter((p["node"], p["pid"]) for p in parts.values())
    assert max(p["engine_loads"] for p in parts.values()) <= len(specs) < max(per_worker.values())
    assert two == one
    import duckdb

    q = ["SELECT run_id, utt_id, hyp_raw, n_tokens, shard FROM hypotheses ORDER BY ALL",
         "SELECT run_id, utt_id, normalizer, ref_norm, hyp_norm, cer_n, cer_s, cer_d, cer_i FROM utterance_scores ORDER BY ALL",
         "SELECT run_id, slice_attr, slice_value, n, cer, cer_lo, cer_hi FROM slice_metrics ORDER BY ALL",
         "SELECT run_id, n_utts, n_missing FROM eval_runs ORDER BY ALL"]
    got = {}
    for name in ("one", "two"):
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"), read_only=True)
        got[name] = [con.execute(s).fetchall() for s in q]
        con.close()
    assert got["two"] == got["one"] and len(got["one"][0]) == 16
