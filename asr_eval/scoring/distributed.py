"""Scoring on a Ray cluster whose nodes share no filesystem.

Each task receives only strings — the run spec, the corpus URL, one shard name, the split and the
parts root URL — and goes through THE per-shard path (``parts.transcribe_shard_part``): it reads
its shard from object storage (checked against the index), transcribes it with the engine its
worker process loaded once (``parts.cached_engine``: Ray reuses a worker process for later tasks,
so a node loads a model once per worker, not once per shard), and writes its part (one upload,
then the hash sidecar). Parts are idempotent: a task retried on another node after its node died
finds a finished part and skips it, or writes the same bytes again. The single DuckDB writer on
the driver then loads the parts from the store (``writer.finalize_runs``).

Credentials never travel as task arguments (Ray and Prefect record those): workers read the
standard environment/instance-role credentials of their node, and this process's
``--storage-option`` values reach them through the job's runtime environment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from asr_eval import storage
from asr_eval.corpus_handle import Corpus
from asr_eval.errors import AsrEvalError
from asr_eval.progress import Progress
from asr_eval.scoring.parts import RunSpec, transcribe_shard_part

# Environment a worker needs to behave like the driver (offline hub, quiet tokenizers, cache).
_FORWARD_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM",
                "HF_HOME", "HF_HUB_CACHE", storage.CACHE_ENV, "ASR_EVAL_CACHE_MAX_GB", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "ASR_EVAL_PLUGINS")
MAX_RETRIES = 3  # a task whose node dies is re-run elsewhere up to this many times


def _shard_task(spec: dict, corpus: str, shard: str, split: str | None, parts_root: str) -> dict:
    return transcribe_shard_part(spec, corpus, shard, split, parts_root, progress=False)


def connect(address: str | None) -> Any:
    """Join (or start, for 'local') a Ray cluster; workers get the forwarded environment."""
    try:
        import ray
    except ImportError:
        raise AsrEvalError("scoring on Ray needs the ray extra: pip install 'asr-eval[ray]'") from None
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _FORWARD_ENV if os.environ.get(k)}
        env.update(storage.exported_options())
        try:
            ray.init(address=None if address in (None, "local") else address, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": env} if env else None)
        except ConnectionError as e:
            raise AsrEvalError(f"cannot reach the Ray cluster at {address!r} ({e}); start it with `ray start --head` "
                               "or pass --ray-address local for a cluster on this machine") from None
    return ray


def check_reachable(corpus: Corpus, parts_root: str, ray: Any) -> None:
    """On a cluster of several nodes the corpus and the parts root must be where every node can
    read them: a URL, or a path the user asserts is shared (``ASR_EVAL_SHARED_FS=1``)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2 or os.environ.get("ASR_EVAL_SHARED_FS") == "1":
        return
    local = [w for w, loc in (("corpus", corpus.location), ("parts root", storage.location(parts_root)))
             if loc.is_local]
    if local:
        raise AsrEvalError(f"the Ray cluster has {len(nodes)} nodes but the {' and '.join(local)} "
                           f"{'is a local path' if len(local) == 1 else 'are local paths'}: other nodes cannot see "
                           "them. Put them in object storage (--corpus s3://…, --parts s3://…), or set "
                           "ASR_EVAL_SHARED_FS=1 when the path is on a filesystem every node mounts")


def transcribe_on_ray(corpus: Corpus, split: str | None, specs: Sequence[RunSpec], parts_root: str,
                      address: str | None = "auto", progress: bool = True, num_gpus: float | None = None,
                      ) -> list[dict]:
    """One Ray task per (run spec, shard); returns each task's JSON-able run info for
    ``writer.finalize_runs``. Tasks spread over the nodes; one GPU per task where the cluster has
    GPUs (``num_gpus`` overrides), else one CPU."""
    ray = connect(address)
    check_reachable(corpus, parts_root, ray)
    gpus = num_gpus if num_gpus is not None else (1 if ray.cluster_resources().get("GPU") else 0)
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES, scheduling_strategy="SPREAD")(_shard_task)
    shards = corpus.shards_for(split)
    refs = [task.remote(s.to_dict(), corpus.url, sh.name, split, str(parts_root)) for s in specs for sh in shards]
    results: dict[Any, dict] = {}
    pending = list(refs)
    with Progress(f"scoring on Ray · {len(specs)} run(s) × {len(shards)} shard(s)", len(refs), "shards",
                  enabled=progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    results[ref] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # a user error in a task: its own message, no remote traceback
                    if isinstance(e.cause, AsrEvalError):
                        raise AsrEvalError(str(e.cause)) from None
                    raise
                bar.advance(1)
    return [results[r] for r in refs]
