"""Scale-out benchmark, one run, same machine: the same scoring job on 1 Ray node vs 2 Ray nodes
(1 CPU each), shards only in an S3 server, bundled whisper-base on ctranslate2 fp32, one thread
per task.

    .venv/bin/python bench/bench_scale.py [--n 64] [--rows-per-shard 4] [--engine ctranslate2|fake]
        [--fake-delay-s 1.0] [--control-n 16] [--json out.json]

- The S3 server is moto's (``moto_server``, a separate process on 127.0.0.1) — or the endpoint in
  ``AWS_ENDPOINT_URL`` when ``--endpoint existing`` (a MinIO).
- The corpus is the first ``--n`` test utterances of the bundled demo corpus, ingested straight to
  ``s3://bench/corpus`` (``--rows-per-shard`` 4 → 16 shards for 64 utterances); nothing of it is on
  a local disk the workers read, except each worker's own verified copy of the shard it scores.
- Each configuration is a fresh Ray cluster (``ray.cluster_utils.Cluster``: a head that runs no
  task + N nodes with 1 CPU) and a fresh parts root; the local object cache is emptied between them.
- Reported: the start-up (each node imports the libraries and loads the engine once, timed apart
  by a warm-up task pinned to it), wall time of inference (Ray tasks) and of the single writer (loads parts from S3 into
  DuckDB, scores, slices), throughput ratio 2 nodes / 1 node (target ≥ 1.7×), the writer's share of
  the wall time, bytes read from the store per audio hour (shards by the workers, shards' metadata
  and parts by the writer), model loads per node (from the parts: node id, pid, engine loads).
- ``--engine fake``: the test suite's plugin engine (``tests/fake_engine.py``: known output, no
  CPU work) sleeping ``--fake-delay-s`` per batch — an accelerator-bound engine, as on one GPU per
  node. What is left is the pipeline's own cost: scheduling, S3 reads and writes, the writer.
- The control: the same engine work (``--control-n`` utterances, one thread) in one plain process,
  then in two at once — no Ray, no S3. Its ratio is what this machine's two cores give two
  single-threaded CTranslate2 processes; the pipeline's own efficiency is the Ray ratio over it.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # raylets on 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def _demo_subset(dest: Path, n: int) -> Path:
    demo = ROOT / "datasets_local" / "demo_zh"
    rows = [r for r in csv.DictReader((demo / "metadata.csv").open(encoding="utf-8")) if r["split"] == "test"][:n]
    for r in rows:
        (dest / r["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo / r["file_name"], dest / r["file_name"])
    with (dest / "metadata.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dest


def _cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in (cache / "objects").glob("*") if p.is_file() and not p.suffix)


def run_config(nodes: int, corpus: str, spec, parts: str, db: Path, cache: Path) -> dict:
    import pyarrow.parquet as pq
    import ray
    from ray.cluster_utils import Cluster

    from asr_eval import storage
    from asr_eval.corpus_handle import open_corpus
    from asr_eval.scoring import finalize_runs
    from asr_eval.scoring.distributed import connect, transcribe_on_ray
    from asr_eval.scoring.parts import verified_part
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    shutil.rmtree(cache, ignore_errors=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        c = open_corpus(corpus)
        connect(cluster.address)

        def warm(spec_dict: dict) -> str:  # import the libraries, load the engine: start-up, timed apart
            from asr_eval.scoring.parts import RunSpec, cached_engine

            cached_engine(RunSpec(**spec_dict))
            return ray.get_runtime_context().get_node_id()

        t_start = time.perf_counter()
        task = ray.remote(num_cpus=1)(warm)
        ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False))
                 .remote(spec.to_dict()) for n in cluster.worker_nodes])
        t_warm = time.perf_counter() - t_start
        t0 = time.perf_counter()
        results = transcribe_on_ray(c, "test", [spec], parts, cluster.address, progress=False)
        t_infer = time.perf_counter() - t0
        worker_bytes = _cache_bytes(cache)  # one shared cache dir on this machine: each shard read once
        shutil.rmtree(cache / "objects", ignore_errors=True)
        t1 = time.perf_counter()
        finalize_runs(c, db, results, n_boot=200)
        t_writer = time.perf_counter() - t1
        writer_bytes = _cache_bytes(cache)
    finally:
        ray.shutdown()
        cluster.shutdown()
    run_dir = storage.location(parts) / results[0]["run_id"]
    stats = []
    for name in storage.listdir(run_dir):
        if name.endswith(".parquet"):
            local = verified_part(run_dir / name)
            stats.append(json.loads(pq.read_schema(local).metadata[b"asr_eval_stats"]))
    per_node = collections.defaultdict(set)
    for s in stats:
        per_node[s["node"]].add((s["pid"], s["engine_loads"]))
    audio_s = sum(r["audio_s"] for r in results)
    return {"nodes": nodes, "shards": len(results), "audio_s": round(audio_s, 1), "startup_s": round(t_warm, 1),
            "infer_s": round(t_infer, 1),
            "writer_s": round(t_writer, 1), "wall_s": round(t_infer + t_writer, 1),
            "writer_share": round(t_writer / (t_infer + t_writer), 3),
            "audio_s_per_s": round(audio_s / (t_infer + t_writer), 2),
            "worker_mb_read_per_audio_h": round(worker_bytes / 2**20 / (audio_s / 3600), 1),
            "writer_mb_read_per_audio_h": round(writer_bytes / 2**20 / (audio_s / 3600), 1),
            "model_loads_per_node": {n[:8]: max(loads for _, loads in v) * len({p for p, _ in v})
                                     for n, v in per_node.items()},
            "parts_per_node": dict(collections.Counter(s["node"][:8] for s in stats))}


def _control_worker(n: int, out) -> None:
    import soundfile as sf

    from asr_eval.audio import to_mono_16k
    from asr_eval.engines import create_engine, get_recipe

    demo = ROOT / "datasets_local" / "demo_zh"
    rows = [r for r in csv.DictReader((demo / "metadata.csv").open(encoding="utf-8")) if r["split"] == "test"][:n]
    audios = []
    for r in rows:
        data, sr = sf.read(demo / r["file_name"], dtype="float32", always_2d=True)
        audios.append(to_mono_16k(data, sr))
    engine = create_engine("ctranslate2", "bundled:whisper-base", "cpu", "float32", threads=1)
    engine.transcribe(audios[:1], get_recipe("greedy"), batch_size=4)  # warm
    t0 = time.perf_counter()
    engine.transcribe(audios, get_recipe("greedy"), batch_size=4)
    out.put(time.perf_counter() - t0)


def control(n: int) -> dict:
    """Seconds for ``n`` utterances in one process alone, then in each of two concurrent processes."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    res = {}
    for k in (1, 2):
        q = ctx.Queue()
        procs = [ctx.Process(target=_control_worker, args=(n, q)) for _ in range(k)]
        for p in procs:
            p.start()
        times = [q.get() for _ in procs]
        for p in procs:
            p.join()
        res[k] = max(times)
    return {"utterances_per_process": n, "one_process_s": round(res[1], 1), "two_processes_s": round(res[2], 1),
            "throughput_ratio_2_vs_1": round(2 * res[1] / res[2], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--rows-per-shard", type=int, default=4)
    ap.add_argument("--endpoint", default="moto", help="moto (start moto_server) or existing (AWS_ENDPOINT_URL)")
    ap.add_argument("--engine", default="ctranslate2", choices=["ctranslate2", "fake"])
    ap.add_argument("--fake-delay-s", type=float, default=1.0)
    ap.add_argument("--control-n", type=int, default=16, help="utterances per process in the control (0: skip)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from machine import cpu_info

    proc = None
    if args.endpoint == "moto":
        proc, url = _start_moto()
        os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_DEFAULT_REGION="us-east-1")
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    cache = tmp / "cache"
    os.environ["ASR_EVAL_CACHE_DIR"] = str(cache)
    try:
        import s3fs

        from asr_eval.corpus import open_source
        from asr_eval.scoring import RunSpec
        from asr_eval.shards import IngestOptions, ingest

        bucket = f"bench-{os.getpid()}"
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        corpus = f"s3://{bucket}/corpus"
        s = ingest(open_source(str(_demo_subset(tmp / "src", args.n))), corpus,
                   IngestOptions(max_rows=args.rows_per_shard, workers=1), progress=False)
        if args.engine == "fake":
            os.environ.update(ASR_EVAL_PLUGINS="fake_engine", FAKE_ENGINE_DELAY_S=str(args.fake_delay_s),
                              PYTHONPATH=str(ROOT / "tests"))
            sys.path.insert(0, str(ROOT / "tests"))
            spec = RunSpec.make("bundled:whisper-base", engine="fake", compute_type="float32", device="cpu")
            what = f"fake engine (tests/fake_engine.py), {args.fake_delay_s:g} s per batch of 3, no CPU work"
            args.control_n = 0
        else:
            spec = RunSpec.make("bundled:whisper-base", engine="ctranslate2", compute_type="float32", device="cpu",
                                threads=1)
            what = "bundled:whisper-base ctranslate2 float32, 1 thread per task"
        out = {"machine": cpu_info(), "utterances": s.n_ingested, "shards": s.shards,
               "audio_h": round(s.hours, 4), "model": what}
        runs = [run_config(n, corpus, spec, f"s3://{bucket}/parts-{n}node", tmp / f"n{n}.duckdb", cache)
                for n in (1, 2)]
        out["runs"] = runs
        out["throughput_ratio_2_vs_1"] = round(runs[1]["audio_s_per_s"] / runs[0]["audio_s_per_s"], 2)
        out["inference_ratio_2_vs_1"] = round(runs[0]["infer_s"] / runs[1]["infer_s"], 2)
        out["target"] = "throughput ratio >= 1.7"
        if args.control_n:
            out["control_plain_processes"] = c = control(args.control_n)
            out["pipeline_efficiency"] = round(out["throughput_ratio_2_vs_1"] / c["throughput_ratio_2_vs_1"], 2)
    finally:
        if proc is not None:
            proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(out, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
