"""Inference → Parquet hypothesis parts, one per (run, shard), resumable.

``run_shard`` is THE per-shard path (skip a finished part / transcribe / write the part / read its
stats); the CLI (``transcribe_corpus``), the Prefect flow and the Ray tasks (``transcribe_shard_part``)
all call it. A run is identified by everything that decides its hypotheses (``RunSpec`` + model +
corpus + split), so two runs of the same weights under different engines, compute types,
preprocessing or recipes never share parts.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from asr_eval.audio import decode_flac
from asr_eval.corpus_handle import Corpus, open_corpus
from asr_eval.engines.recipes import Recipe, get_recipe, recipe_from_dict
from asr_eval.errors import AsrEvalError
from asr_eval import storage
from asr_eval.integrity import file_sha256
from asr_eval.models.record import model_row
from asr_eval.progress import Progress, heartbeat
from asr_eval.provenance import stable_hash
from asr_eval.scoring.parity import REFERENCE
from asr_eval.storage import IntegrityError, Location, location

SHA_SUFFIX = ".sha256"


@dataclass(frozen=True)
class RunSpec:
    """How a model is run: the engine axes that are part of the run id, plus how to run it."""

    model: str  # as the user named it (hub id, folder, bundled:…, ct2:…)
    engine: str = "transformers"
    compute_type: str = "auto"
    preprocessing: str = "pad-audio"
    recipe: dict[str, Any] = field(default_factory=lambda: get_recipe("greedy").to_dict())
    strategy: str = "short"  # long-form strategy for recordings > 30 s ('short': none; such items are an error)
    strategy_params: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] | None = None  # streaming axis (asr_eval.streaming.run.stream_axis): policy, chunk_s, params
    engine_options: dict[str, Any] = field(default_factory=dict)  # engines.options, canonical (defaults dropped)
    device: str = "auto"
    batch_size: int | None = None
    threads: int = 0

    @classmethod
    def make(cls, model: str, recipe: Recipe | str = "greedy", **kw: Any) -> RunSpec:
        r = get_recipe(recipe) if isinstance(recipe, str) else recipe
        return cls(model=model, recipe=r.to_dict(), **kw)

    @property
    def recipe_obj(self) -> Recipe:
        return recipe_from_dict(self.recipe)

    def strategy_obj(self):
        """The long-form strategy object, or None for 'short'."""
        if self.strategy == "short":
            return None
        from asr_eval.longform import make_strategy

        return make_strategy(self.strategy, **self.strategy_params)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_batch_size(self, batch_size: int | None, engine: Any) -> int:
        """The batch size: the batch_size engine option (part of the run id), else the knob, else the engine's."""
        return (self.engine_options.get("batch_size") or batch_size or self.batch_size
                or engine.suggest_batch_size(self.recipe_obj))


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def expand_specs(models: list[str], engines: str = "transformers", compute_types: str = "auto",
                 preprocessing: str = "pad-audio", recipes: str = "greedy", device: str = "auto",
                 batch_size: int | None = None, threads: int = 0, strategies: str = "short",
                 strategy_params: dict[str, Any] | None = None, engine_options: Sequence[str] = (),
                 **options: Any) -> list[RunSpec]:
    """Every model × engine × compute type × preprocessing × recipe × long-form strategy × engine
    option values (comma-separated lists), in that order; recipe ``options`` (max_new_tokens, …)
    apply to every recipe, ``strategy_params`` to each strategy that has them, ``engine_options``
    (``KEY=V1,V2``, ``engines.options``) to each engine that has them. Fails before any inference."""
    from asr_eval.engines.base import engine_entry
    from asr_eval.engines.options import canonical, expand, for_engine
    from asr_eval.engines.preprocessing import check_mode

    for p in _csv(preprocessing):
        check_mode(p)
    for e in _csv(engines):
        engine_entry(e)
    own = for_engine(_csv(engines), engine_options)
    recs = [get_recipe(r, **options) for r in _csv(recipes)]
    strats = _strategies(_csv(strategies) or ["short"], strategy_params or {})
    return [RunSpec(model=m, engine=e, compute_type=c, preprocessing=p, recipe=r.to_dict(), strategy=st,
                    strategy_params=sp, engine_options=canonical(e, o, r), device=device, batch_size=batch_size,
                    threads=threads)
            for m, e, c, p, r, (st, sp) in itertools.product(models, _csv(engines), _csv(compute_types),
                                                             _csv(preprocessing), recs, strats)
            for o in expand(e, own[e])]


def with_baselines(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """``specs`` plus, just before each one with output-preserving engine options, the same run
    without them (unless listed already): what verifies that those options leave the transcripts
    as they were."""
    from asr_eval.engines.options import baseline

    out: list[RunSpec] = []
    for s in specs:
        base = replace(s, engine_options=baseline(s.engine, s.engine_options))
        for x in (base, s) if base != s else (s,):
            if x not in out:
                out.append(x)
    return out


def needs_reference(spec: RunSpec) -> bool:
    """The run is on another engine or compute type than the reference (``auto`` on transformers is
    float32 on the CPU)."""
    return not (spec.engine == REFERENCE[0] and spec.compute_type in ("auto", REFERENCE[1]))


def with_reference(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """``specs`` plus, just before each one on another engine or compute type, the reference run:
    transformers float32 on the same weights, features, recipe and strategy (unless listed already) —
    what the engine-parity verdict compares it with."""
    out: list[RunSpec] = []
    for s in specs:
        ref = replace(s, engine=REFERENCE[0], compute_type=REFERENCE[1], engine_options={}, batch_size=None)
        for x in (ref, s) if needs_reference(s) else (s,):
            if x not in out:
                out.append(x)
    return out


def _strategies(names: list[str], params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, its parameters) for each strategy; a parameter no chosen strategy has is an error."""
    from dataclasses import fields

    from asr_eval.longform import STRATEGIES, make_strategy

    out, used = [], set()
    for n in names:
        if n == "short":
            out.append(("short", {}))
            continue
        make_strategy(n)  # registers the built-ins, validates the name
        own = {f.name for f in fields(STRATEGIES[n])} & set(params)
        used |= own
        out.append((n, make_strategy(n, **{k: params[k] for k in own}).params()))
    if set(params) - used:
        raise AsrEvalError(f"strategy parameter(s) {sorted(set(params) - used)}: no chosen strategy has them "
                           f"(strategies: {', '.join(names)})")
    return out


@dataclass
class RunInfo:
    """One run's inference outcome, as the writer records it."""

    run_id: str
    model_id: str
    corpus_id: str
    split: str | None
    parts_dir: str  # a local folder or a URL (``storage``)
    engine: dict[str, Any] = field(default_factory=dict)  # name, version, compute_type, device, identity
    preprocessing: str = "pad-audio"
    recipe: dict[str, Any] = field(default_factory=dict)
    strategy: str = "short"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 0
    n_utts: int = 0
    audio_s: float = 0.0
    proc_s: float = 0.0
    shards_done: int = 0
    shards_skipped: int = 0
    peak_mem: int | None = None
    model: dict[str, Any] = field(default_factory=dict)  # the models row
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rtfx(self) -> float:
        return self.audio_s / self.proc_s if self.proc_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunInfo:
        return cls(**d)


def make_run_id(model_id: str, corpus_id: str, split: str | None, engine: str, engine_version: str,
                compute_type: str, preprocessing: str, recipe: dict, strategy: str = "short",
                strategy_params: dict | None = None, stream: dict | None = None,
                engine_options: dict | None = None) -> str:
    """Deterministic, so a restarted run finds its own finished parts; every axis that changes the
    hypotheses — or claims not to (engine options) — is in it (a long-form strategy or a streaming
    policy also names the readable prefix). Axes at their defaults add nothing: ids stay stable."""
    short = model_id.split("@")[0].rstrip("/").split("/")[-1].replace(":", "-")
    key = [model_id, corpus_id, split, engine, engine_version, compute_type, preprocessing, recipe, strategy]
    if strategy != "short":
        key.append(strategy_params or {})
        short = f"{short}-{strategy}"
    if stream:
        key.append({"stream": stream})
        short = f"{short}-{stream['policy']}-{stream['chunk_s']:g}s"
    if engine_options:
        key.append({"engine_options": engine_options})
    return f"{short}-{stable_hash(key, 10)}"


def part_path(parts_dir: str | Location, shard: str) -> Location:
    return location(parts_dir) / f"part-{Path(shard).stem}.parquet"


def write_part(dest: Location, table: pa.Table, stats: dict) -> None:
    """Atomically write a part and its SHA-256 sidecar (the sidecar last: a part without one is
    unfinished) — locally by rename, on an object store by one upload each."""
    tmp = storage.staging_file(dest)
    table = table.replace_schema_metadata({b"asr_eval_stats": json.dumps(stats).encode()})
    pq.write_table(table, tmp)
    digest = file_sha256(tmp)
    storage.put_file(tmp, dest)
    storage.write_bytes(_sidecar(dest), (digest + "\n").encode())


def _sidecar(part: Location) -> Location:
    return part.parent / (part.name + SHA_SUFFIX)


def verified_part(part: Location) -> Path | None:
    """A finished part as a local file with the bytes its sidecar names (the part itself, or a
    checked copy of the object); None when it is missing, unfinished or corrupt (it is redone)."""
    try:
        side = storage.read_text(_sidecar(part)).strip() if storage.stat(_sidecar(part)) is not None else None
        if side is None or storage.stat(part) is None:
            return None
        return storage.verified_copy(part, side)
    except IntegrityError:
        return None


def verified_parts(parts_dir: str | Location) -> list[Path]:
    """A run's parts as verified local files; a part that does not match its hash is an error,
    never loaded."""
    root = location(parts_dir)
    names = [n for n in storage.listdir(root) if n.startswith("part-") and n.endswith(".parquet")]
    files = {n: verified_part(root / n) for n in names}
    bad = [storage.redact(root / n) for n, f in files.items() if f is None]
    if bad:
        raise AsrEvalError(f"hypothesis part(s) {', '.join(bad[:5])} do not match their .sha256 "
                           "(corrupt or half-written); delete them and re-run `asr-eval score` to transcribe those shards again")
    return [files[n] for n in sorted(files)]


def part_stats(path: str | Path) -> dict:
    md = pq.read_schema(path).metadata or {}
    return json.loads(md.get(b"asr_eval_stats", b"{}"))


def transcribe_rows(engine, rows, spec: RunSpec, batch_size: int, window: int = 256,
                    on_batch: Callable[[int, float], None] | None = None) -> tuple[pa.Table, float, float]:
    """Transcribe shard rows (utt_id, audio, duration_s) in windows; returns (part table, audio_s, proc_s)."""
    from asr_eval.audio import MAX_DURATION_S

    if spec.stream:
        from asr_eval.streaming.run import stream_rows

        return stream_rows(engine, rows, spec, on_batch)
    recipe = spec.recipe_obj
    strategy = spec.strategy_obj()
    cols: dict[str, list] = {k: [] for k in ("utt_id", "hyp_raw", "n_tokens", "avg_logprob", "n_fallbacks",
                                              "temperature", "cut_off", "segments")}
    audio_s = proc_s = 0.0
    if strategy is not None:
        window = min(window, 8)  # long-form rows carry minutes of FLAC each
    it = iter(rows)
    while chunk := list(itertools.islice(it, window)):
        long = [r for r in chunk if r["duration_s"] > MAX_DURATION_S]
        if long and strategy is None:
            raise AsrEvalError(f"{len(long)} recording(s) over 30 s (e.g. {long[0]['utt_id']!r}, "
                               f"{long[0]['duration_s']:.0f} s): score them with a long-form strategy, "
                               "--strategy sequential | chunked | vad")
        utts = [r for r in chunk if r["duration_s"] <= MAX_DURATION_S]
        res = engine.transcribe([decode_flac(r["audio"]) for r in utts], recipe, spec.preprocessing, batch_size,
                                on_batch=on_batch)
        cols["utt_id"] += [r["utt_id"] for r in utts]
        cols["hyp_raw"] += res.texts
        cols["n_tokens"] += res.n_tokens
        cols["avg_logprob"] += res.avg_logprob
        cols["n_fallbacks"] += res.n_fallbacks
        cols["temperature"] += res.temperatures
        cols["cut_off"] += res.cut_off
        cols["segments"] += [None] * len(utts)
        proc_s += res.proc_s
        if long:
            from asr_eval.longform import short_transcriber

            short = short_transcriber(engine, recipe, spec.preprocessing, batch_size,
                                      getattr(strategy, "piece_max_new_tokens", None))
            for r in long:
                # one recording is one opaque call of minutes: say it is alive when nobody watches a terminal
                with heartbeat(f"long-form {spec.strategy}: {r['utt_id']} ({r['duration_s']:.0f} s of audio)",
                               spinner=False):
                    out = strategy.transcribe(engine, decode_flac(r["audio"]), recipe, short)
                cols["utt_id"].append(r["utt_id"])
                cols["hyp_raw"].append(out.text)
                cols["n_tokens"].append(out.n_tokens)
                cols["avg_logprob"].append(None)
                cols["n_fallbacks"].append(0)
                cols["temperature"].append(None)
                cols["cut_off"].append(False)
                cols["segments"].append(json.dumps(out.segments, ensure_ascii=False))
                proc_s += out.proc_s
                if on_batch:
                    on_batch(1, r["duration_s"])
        audio_s += sum(r["duration_s"] for r in chunk)
    types = {"utt_id": pa.string(), "hyp_raw": pa.string(), "n_tokens": pa.int32(), "avg_logprob": pa.float64(),
             "n_fallbacks": pa.int32(), "temperature": pa.float64(), "cut_off": pa.bool_(), "segments": pa.string()}
    return pa.table({k: pa.array(v, types[k]) for k, v in cols.items()}), audio_s, proc_s


def finished_part(parts_dir: str | Location, shard: str) -> dict | None:
    """The stats of ``shard``'s finished (hash-checked) part, or None when it must be transcribed."""
    local = verified_part(part_path(parts_dir, shard))
    return part_stats(local) if local is not None else None


def worker_identity() -> dict[str, Any]:
    """Where a part was made: the Ray node (when inside a Ray worker) or the host, the process, and
    how many engines this process has loaded so far (one per worker process is the design)."""
    import socket

    node = None
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return {"node": node or socket.gethostname(), "pid": os.getpid(), "engine_loads": _ENGINE_LOADS[0]}


def run_shard(engine, corpus: Corpus, shard: str, split: str | None, spec: RunSpec, parts_dir: str | Location,
              batch_size: int, on_batch: Callable[[int, float], None] | None = None) -> tuple[dict, bool]:
    """THE per-shard path: skip a finished (hash-checked) part, else transcribe the shard's rows of
    ``split`` (read through the corpus handle: verified, from a folder or a bucket) and write the
    part (to a folder or a bucket). Returns (part stats, skipped)."""
    shard = Path(shard).name
    if (done := finished_part(parts_dir, shard)) is not None:
        return done, True
    part = part_path(parts_dir, shard)
    rows = corpus.iter_rows(shard, split, columns=["utt_id", "split", "audio", "duration_s"], batch_rows=256)
    table, audio_s, proc_s = transcribe_rows(engine, rows, spec, batch_size, on_batch=on_batch)
    table = table.append_column("shard", pa.array([shard] * table.num_rows, pa.string()))
    stats = {"audio_s": audio_s, "proc_s": proc_s, "n": table.num_rows, **worker_identity()}
    write_part(part, table, stats)
    return stats, False


# ───────────────────────── engines per process ─────────────────────────

_ENGINE_CACHE: dict[tuple, Any] = {}
_ENGINE_LOADS = [0]  # engines created by ``cached_engine`` in this process


ENGINES_PER_WORKER = 2  # an A/B comparison's two models stay loaded; large checkpoints are GBs each


def cached_engine(spec: RunSpec):
    """Load an engine once per worker process (Ray workers run many shard tasks, of several runs
    interleaved); the ``ENGINES_PER_WORKER`` most recently used stay loaded."""
    from asr_eval.engines import create_engine

    key = (spec.model, spec.engine, spec.compute_type, spec.device, spec.threads,
           tuple(sorted(spec.engine_options.items())))
    if key in _ENGINE_CACHE:
        _ENGINE_CACHE[key] = _ENGINE_CACHE.pop(key)  # most recently used last
    else:
        while len(_ENGINE_CACHE) >= ENGINES_PER_WORKER:
            _ENGINE_CACHE.pop(next(iter(_ENGINE_CACHE)))
        _ENGINE_LOADS[0] += 1
        _ENGINE_CACHE[key] = create_engine(spec.engine, spec.model, spec.device, spec.compute_type, spec.threads,
                                           spec.engine_options)
    return _ENGINE_CACHE[key]


def start_run(engine, corpus: Corpus, split: str | None, spec: RunSpec, parts_root: str | Path) -> RunInfo:
    """The run record of ``engine`` on ``corpus``/``split`` (its id, parts folder, provenance)."""
    recipe = spec.recipe_obj.to_dict()
    run_id = make_run_id(engine.files.model_id, corpus.corpus_id, split, engine.name, engine.version,
                         engine.compute_type, spec.preprocessing, recipe, spec.strategy, spec.strategy_params,
                         spec.stream, spec.engine_options)
    parts_dir = location(parts_root) / run_id
    storage.makedirs(parts_dir)
    eng = {"name": engine.name, "version": engine.version, "compute_type": engine.compute_type,
           "device": engine.device, "identity": engine.identity()}
    return RunInfo(run_id, engine.files.model_id, corpus.corpus_id, split, parts_dir.url, engine=eng,
                   preprocessing=spec.preprocessing, recipe=recipe, strategy=spec.strategy,
                   strategy_params=dict(spec.strategy_params), stream=spec.stream,
                   engine_options=dict(spec.engine_options), model=model_row(engine.files))


def transcribe_corpus(engine, corpus: Corpus | str | Path, split: str | None, spec: RunSpec,
                      parts_root: str | Path, batch_size: int | None = None, progress: bool = True) -> RunInfo:
    """Decode every shard of ``split`` into ``parts_root/RUN_ID/part-*.parquet`` (the CLI path)."""
    corpus = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
    info = start_run(engine, corpus, split, spec, parts_root)
    bs = spec.run_batch_size(batch_size, engine)
    info.batch_size = bs
    shards = corpus.shards_for(split)
    with Progress(_label(engine, info), sum(s.n(split) for s in shards), _unit(spec), enabled=progress) as bar:
        for s in shards:
            stats, skipped = run_shard(engine, corpus, s.name, split, spec, info.parts_dir, bs, on_batch=bar.advance)
            if skipped:
                bar.advance(s.n(split))
            _add(info, stats, skipped)
    info.peak_mem = engine.peak_memory_bytes()
    return info


def _add(info: RunInfo, stats: dict, skipped: bool) -> None:
    info.audio_s += stats.get("audio_s", 0.0)
    info.proc_s += stats.get("proc_s", 0.0)
    info.n_utts += stats.get("n", 0)
    info.shards_skipped += skipped
    info.shards_done += not skipped


def transcribe_shard_part(spec: RunSpec | dict, corpus_dir: str, shard_file: str, split: str | None,
                          parts_root: str, progress: bool = True) -> dict:
    """The Prefect/Ray task: one (run, shard) through ``run_shard``; returns JSON-able run info
    for ``writer.finalize_runs``."""
    spec = spec if isinstance(spec, RunSpec) else RunSpec(**spec)
    corpus = open_corpus(corpus_dir)
    engine = cached_engine(spec)
    info = start_run(engine, corpus, split, spec, parts_root)
    info.batch_size = spec.run_batch_size(None, engine)
    stats, skipped = finished_part(info.parts_dir, shard_file), True
    if stats is None:  # a finished part is reused as it is: nothing to transcribe, no progress to show
        n = corpus.shard(shard_file).n(split)
        with Progress(f"{_label(engine, info)} · {shard_file}", n, _unit(spec), enabled=progress) as bar:
            stats, skipped = run_shard(engine, corpus, shard_file, split, spec, info.parts_dir, info.batch_size,
                                       on_batch=bar.advance)
    _add(info, stats, skipped)
    info.peak_mem = engine.peak_memory_bytes()
    return info.to_json()


def shards_for_split(corpus_dir: str | Path, split: str | None) -> list[str]:
    """Shard files that hold rows of ``split`` (all shards when split is None)."""
    return [s.name for s in open_corpus(corpus_dir).shards_for(split)]


def default_split(corpus_dir: str | Path) -> str | None:
    return open_corpus(corpus_dir).default_split()


def _label(engine, info: RunInfo) -> str:
    strategy = f" · {info.strategy}" if info.strategy != "short" else ""
    if info.stream:
        strategy = f" · streaming {info.stream['policy']} {info.stream['chunk_s']:g}s"
    if info.engine_options:
        from asr_eval.engines.options import describe

        strategy += f" · {describe(info.engine_options)}"
    return (f"transcribing {engine.files.spec.name} · {engine.name} {engine.compute_type} · "
            f"{info.recipe['name']}{strategy}")


def _unit(spec: RunSpec) -> str:
    return "utterances" if spec.strategy == "short" and not spec.stream else "recordings"
