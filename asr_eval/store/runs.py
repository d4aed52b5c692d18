"""The stored eval runs, and THE resolver of run references — one for every command.

A run reference (``score``/``rescore --run``, ``errors --run``, ``gate --baseline/--candidate``,
``report``/``export --runs``, ``import-stream --offline``, the Prefect flows, the web app) is, in
this order:

1. a full run id;
2. a model — the name it was scored under (hub id, path, ``bundled:whisper-base``), its display
   name (as the tables show it) or its model id: its latest finished run, on the caller's
   corpus/split when it gives them (``resolve_run``), or every run of the model where a command
   selects a set (``resolve_runs``);
3. the short id ``asr-eval runs`` prints (a *suffix* of the run id, ``short_ids``) or a prefix of
   the run id — whichever it is, it must name exactly one run.

A reference that names several runs raises ``AsrEvalError`` listing them (id, model,
strategy/policy, corpus, when) and how to name one; an unknown one says so and points to
``asr-eval runs``. ``stored_runs`` is also what ``asr-eval runs`` lists: every axis that
distinguishes runs (kind, engine, compute type, options, recipe, long-form strategy or streaming
policy with its parameters), typed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import duckdb

from asr_eval.errors import AsrEvalError

SHORT_LEN = 10  # the hash that ends every run id (scoring.parts.make_run_id, importing.import_run_id)
KINDS = ("model", "streaming", "imported")
MAX_LISTED = 8  # candidates named in an ambiguity error


@dataclass(frozen=True)
class StoredRun:
    """One ``eval_runs`` row with its model, as listed and resolved (JSON-ready via ``as_json``)."""

    run_id: str
    short_id: str
    kind: str  # 'model' | 'streaming' | 'imported' (an imported streaming log: 'imported' with a stream_policy)
    model: str  # display name (store.labels.model_display)
    model_name: str | None  # what the user typed when scoring (hub id, path, bundled:…)
    display_name: str | None
    model_id: str
    corpus_id: str
    corpus_name: str | None
    corpus_path: str | None
    split: str | None
    status: str
    engine: str | None
    engine_version: str | None
    compute_type: str | None
    device: str | None
    preprocessing: str | None
    recipe: str | None
    strategy: str  # long-form strategy; 'short' for utterances ≤ 30 s (streaming runs too)
    strategy_params: dict[str, Any] = field(default_factory=dict)
    stream_policy: str | None = None
    stream_params: dict[str, Any] = field(default_factory=dict)
    engine_options: dict[str, Any] = field(default_factory=dict)
    n_utts: int | None = None
    n_missing: int | None = None
    audio_s: float | None = None
    proc_s: float | None = None
    rtfx: float | None = None
    cer: float | None = None  # whole run, under ``cer_normalizer`` (None: not scored with it)
    cer_normalizer: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def streaming(self) -> bool:
        return self.stream_policy is not None

    @property
    def mode(self) -> str:
        """The long-form strategy or the streaming policy, with the parameters that differ from its
        defaults: ``short``, ``chunked stride_s=4``, ``streaming local-agreement 1s n=3``."""
        if self.stream_policy:
            p = dict(self.stream_params)
            if self.stream_policy == "import":
                return f"streaming log ({p.get('format', '?')})"
            chunk = p.pop("chunk_s", None)
            head = f"streaming {self.stream_policy}" + (f" {chunk:g}s" if isinstance(chunk, (int, float)) else "")
            return " ".join([head, *_changed(p, _policy_defaults(self.stream_policy))])
        if self.strategy == "short":
            return "short"
        return " ".join([self.strategy, *_changed(self.strategy_params, _strategy_defaults(self.strategy))])

    @property
    def when(self) -> datetime | None:
        return self.finished_at or self.started_at

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"] = self.mode
        for k in ("started_at", "finished_at"):
            d[k] = d[k].isoformat(sep=" ") if d[k] is not None else None
        return d


def _changed(params: dict[str, Any], defaults: dict[str, Any] | None) -> list[str]:
    """``name=value`` for each parameter not at its default (all of them when defaults are unknown)."""
    return [f"{k}={_value(v)}" for k, v in sorted(params.items())
            if defaults is None or k not in defaults or defaults[k] != v]


def _value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


@cache
def _strategy_defaults(name: str) -> dict[str, Any] | None:
    from asr_eval.longform import make_strategy

    try:
        return make_strategy(name).params()
    except AsrEvalError:  # a plugin strategy not registered in this process: show every parameter
        return None


@cache
def _policy_defaults(name: str) -> dict[str, Any] | None:
    from asr_eval.streaming.base import make_policy

    try:
        return make_policy(name).params()
    except AsrEvalError:
        return None


def _json(v: Any) -> dict[str, Any]:
    parsed = json.loads(v) if isinstance(v, str) else v
    return parsed if isinstance(parsed, dict) else {}


_RUNS_SQL = """
SELECT r.run_id, coalesce(r.kind, 'model') AS kind, m.name AS model_name, m.source, m.display_name, m.step,
       r.model_id, r.corpus_id, r.split, coalesce(r.status, 'done') AS status, r.engine, r.engine_version,
       coalesce(r.compute_type, r.dtype) AS compute_type, r.device, r.preprocessing, r.recipe,
       coalesce(r.strategy, 'short') AS strategy, r.strategy_params::VARCHAR AS strategy_params, r.stream_policy,
       r.stream_params::VARCHAR AS stream_params, r.engine_options::VARCHAR AS engine_options, r.n_utts, r.n_missing,
       r.audio_s, r.proc_s, r.rtfx, s.cer, r.started_at, r.finished_at, c.name AS corpus_name, c.path AS corpus_path
FROM eval_runs r
LEFT JOIN models m USING (model_id)
LEFT JOIN corpora c ON c.corpus_id = r.corpus_id
LEFT JOIN slice_metrics s ON s.run_id = r.run_id AND s.slice_attr = '_all' AND s.normalizer = $norm
ORDER BY r.finished_at DESC NULLS LAST, r.started_at DESC NULLS LAST, r.run_id
"""


def stored_runs(con: duckdb.DuckDBPyConnection, normalizer: str = "zh-v1", finished_only: bool = False
                ) -> list[StoredRun]:
    """Every eval run, newest first (``finished_only``: status 'done'), with the whole-run CER under
    ``normalizer`` and the short id ``asr-eval runs`` prints."""
    from asr_eval.store.labels import model_display

    cur = con.execute(_RUNS_SQL, {"norm": normalizer})
    cols = [d[0] for d in cur.description]
    raw = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    for r in raw:
        r["model"] = model_display(r["model_name"] or r["model_id"], r["source"], r["display_name"], r["step"])
    models = {x for r in raw for x in (r["model"], r["model_name"], r["display_name"], r["model_id"]) if x}
    shorts = short_ids([r["run_id"] for r in raw], avoid=models)
    out = []
    for r in raw:
        if finished_only and r["status"] != "done":
            continue
        kind = "imported" if r["kind"] == "import" else "streaming" if r["stream_policy"] else "model"
        out.append(StoredRun(
            run_id=r["run_id"], short_id=shorts[r["run_id"]], kind=kind,
            model=r["model"],
            model_name=r["model_name"], display_name=r["display_name"], model_id=r["model_id"],
            corpus_id=r["corpus_id"], corpus_name=r["corpus_name"], corpus_path=r["corpus_path"], split=r["split"],
            status=r["status"], engine=r["engine"],
            engine_version=r["engine_version"], compute_type=r["compute_type"], device=r["device"],
            preprocessing=r["preprocessing"], recipe=r["recipe"], strategy=r["strategy"],
            strategy_params=_json(r["strategy_params"]), stream_policy=r["stream_policy"],
            stream_params=_json(r["stream_params"]), engine_options=_json(r["engine_options"]), n_utts=r["n_utts"],
            n_missing=r["n_missing"], audio_s=r["audio_s"], proc_s=r["proc_s"], rtfx=r["rtfx"], cer=r["cer"],
            cer_normalizer=normalizer if r["cer"] is not None else None, started_at=r["started_at"],
            finished_at=r["finished_at"]))
    return out


def short_ids(run_ids: Iterable[str], avoid: Iterable[str] = ()) -> dict[str, str]:
    """run id → the shortest suffix of at least ``SHORT_LEN`` characters that ends no other run id, is
    no model reference in ``avoid`` and starts with a letter or digit (never read as an option): what
    ``asr-eval runs`` prints, accepted back everywhere."""
    ids = list(dict.fromkeys(run_ids))
    taken = set(avoid)
    out = {}
    for rid in ids:
        n = min(SHORT_LEN, len(rid))
        while n < len(rid) and (rid[-n:] in taken or not rid[-n].isalnum()
                                or any(o != rid and o.endswith(rid[-n:]) for o in ids)):
            n += 1
        out[rid] = rid[-n:]
    return out


def filter_runs(runs: Iterable[StoredRun], corpora: Sequence[str] = (), models: Sequence[str] = (),
                kinds: Sequence[str] = ()) -> list[StoredRun]:
    """The runs on any of ``corpora`` (corpus id, its name before '@', or its shard dir), of any of
    ``models`` (a model reference, as ``match`` takes it) and of any of ``kinds`` (``KINDS``; 'streaming'
    also takes imported streaming logs)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise AsrEvalError(f"--kind {bad[0]!r}: choose one of {', '.join(KINDS)}")

    def on(r: StoredRun) -> bool:
        return any(c in (r.corpus_id, r.corpus_id.split("@")[0], r.corpus_name, r.corpus_path) for c in corpora)

    def of_kind(r: StoredRun) -> bool:
        return r.kind in kinds or ("streaming" in kinds and r.streaming)

    return [r for r in runs if (not corpora or on(r)) and (not models or any(_is_model(r, m) for m in models))
            and (not kinds or of_kind(r))]


# ───────────────────────── references ─────────────────────────


def _is_model(run: StoredRun, ref: str) -> bool:
    return ref in (run.model_name, run.display_name, run.model_id, run.model)


def _describe(run: StoredRun) -> str:
    what = " · ".join(x for x in (run.model, run.engine or run.kind, run.mode if run.mode != "short" else "") if x)
    when = [run.status] if run.status != "done" else [run.when.strftime("%Y-%m-%d %H:%M")] if run.when else []
    where = f"{run.corpus_id}/{run.split or 'all'}"
    return f"  {run.run_id}  ({'; '.join([what, where, *when])})"


def _ambiguous(ref: str, found: Sequence[StoredRun]) -> AsrEvalError:
    listed = "\n".join(_describe(r) for r in found[:MAX_LISTED])
    more = f"\n  … and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
    return AsrEvalError(f"run reference {ref!r} matches {len(found)} runs:\n{listed}{more}\n"
                        "name one by its full id or by the short id `asr-eval runs` prints (or give more characters)")


def _unknown(ref: str, finished_only: bool) -> AsrEvalError:
    which = "finished run" if finished_only else "run"
    return AsrEvalError(f"unknown run {ref!r}: no {which} in the store has that id, short id or id prefix, and no "
                        "model has that name; `asr-eval runs` lists the runs with their short ids")


def match(runs: Sequence[StoredRun], ref: str, finished_only: bool = True) -> tuple[str, list[StoredRun]]:
    """How ``ref`` names ``runs``: ('run', [run]) for a full id, a short id (suffix) or a prefix that
    is unique; ('model', its runs newest first) for a model name, display name or model id."""
    ref = ref.strip()
    exact = [r for r in runs if r.run_id == ref]
    if exact:
        return "run", exact
    by_model = [r for r in runs if _is_model(r, ref)]
    if by_model:
        return "model", by_model
    partial = [r for r in runs if ref and (r.run_id.endswith(ref) or r.run_id.startswith(ref))]
    if len(partial) > 1:
        raise _ambiguous(ref, partial)
    if not partial:
        raise _unknown(ref, finished_only)
    return "run", partial


def resolve_run(con: duckdb.DuckDBPyConnection, ref: str, corpus_id: str | None = None,
                split: str | None | bool = False, finished_only: bool = True) -> str:
    """A run reference → one run id. A model resolves to its latest finished run, on ``corpus_id``/
    ``split`` when given (split False: any split)."""
    kind, found = match(stored_runs(con, finished_only=finished_only), ref, finished_only)
    if kind == "model":
        found = [r for r in found if (corpus_id is None or r.corpus_id == corpus_id)
                 and (split is False or r.split == split)]
        if not found:
            raise AsrEvalError(f"model {ref!r} has no finished run on corpus {corpus_id} split {split or 'all'}; "
                               f"score it there first (`asr-eval score`) or name a run (`asr-eval runs`)")
    return found[0].run_id


def resolve_pair(con: duckdb.DuckDBPyConnection, baseline: str, candidate: str) -> tuple[str, str]:
    """Resolve both sides so that they are on the same corpus and split: a model name takes its
    latest run where the other side is (both model names: where the baseline ran last)."""
    runs = stored_runs(con, finished_only=True)
    info = {r.run_id: r for r in runs}
    (ka, fa), (kb, fb) = match(runs, baseline), match(runs, candidate)
    if ka == "run" or kb != "run":
        a = fa[0].run_id
        b = resolve_run(con, candidate, info[a].corpus_id, info[a].split) if kb == "model" else fb[0].run_id
    else:
        b = fb[0].run_id
        a = resolve_run(con, baseline, info[b].corpus_id, info[b].split)
    ra, rb = info[a], info[b]
    if (ra.corpus_id, ra.split) != (rb.corpus_id, rb.split):
        raise AsrEvalError(f"baseline run {a} is on {ra.corpus_id} split {ra.split or 'all'} but candidate run {b} "
                           f"is on {rb.corpus_id} split {rb.split or 'all'}: a paired comparison needs the same "
                           "utterances; score both on one corpus split")
    if a == b:
        raise AsrEvalError(f"baseline and candidate are the same run ({a}); name two different runs or models")
    return a, b


def resolve_runs(con: duckdb.DuckDBPyConnection, refs: Iterable[str], finished_only: bool = False) -> list[str]:
    """A selection (``report``/``export --runs``): each reference → its run, a model → every run of
    the model; in the order given, without repeats (no references: none)."""
    refs = list(refs)
    if not refs:
        return []
    runs = stored_runs(con, finished_only=finished_only)
    out: dict[str, None] = {}
    for ref in refs:
        _, found = match(runs, ref, finished_only)
        out.update(dict.fromkeys(r.run_id for r in found))
    return list(out)
