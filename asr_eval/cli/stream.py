"""`asr-eval stream` and `asr-eval import-stream`: Whisper as a streaming recognizer — CER against
offline decoding, latency on both clocks, flicker, real time — for our policies and for other
systems' streaming logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from asr_eval.cli import app, console, print_table
from asr_eval.store import DEFAULT_DB, connect
from asr_eval.store.labels import run_labels
from asr_eval.streaming.store import DEFAULT_ALIGN_MODEL


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _interval(x: float | None, lo: float | None, hi: float | None, pts: bool = False, reliable: bool = True) -> str:
    """'12.34 [10.00, 14.00]'; a thin number (``reliable`` false) is its point estimate alone: '12.34 †'."""
    if x is None:
        return "—"
    sign = "+" if pts else ""
    head = f"{100 * x:{sign}.2f}".replace("-", "−")
    if not reliable:
        return f"{head} †"
    return head if lo is None else f"{head} [{100 * lo:{sign}.2f}, {100 * hi:{sign}.2f}]".replace("-", "−")


THIN_INTERVALS = {"cer_reliable": ("cer_lo", "cer_hi"), "delta_reliable": ("delta_cer_lo", "delta_cer_hi"),
                  "latency_reliable": ("latency_median_lo", "latency_median_hi")}


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row as ``--json`` prints it: a thin number keeps its point estimate and its
    ``*_reliable: false`` flag, and its interval is null (it would not be evidence)."""
    out = dict(row)
    for flag, keys in THIN_INTERVALS.items():
        if out.get(flag) is False:
            for k in keys:
                out[k] = {c: None for c in out[k]} if isinstance(out.get(k), dict) else None
    return out


def summaries(db: Path, run_ids: list[str], normalizer: str, offline_of: dict[str, str] | None = None,
              checks_of: list[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, str], list]:
    """The streaming runs' summary rows, their labels, and the engine-options checks among
    ``checks_of`` (``scoring.parity.option_checks``; none when not given), in one read."""
    from asr_eval.scoring.parity import option_checks
    from asr_eval.streaming.evaluate import stream_summary

    con = connect(db, read_only=True)
    try:
        rows = stream_summary(con, run_ids, normalizer, offline_of)
        names = run_labels(con, list(dict.fromkeys([*run_ids, *(offline_of or {}).values(), *(checks_of or [])])))
        checks = option_checks(con, checks_of, normalizer) if checks_of else []
    finally:
        con.close()
    return rows, names, checks


def print_stream_table(rows: list[dict[str, Any]], names: dict[str, str], normalizer: str) -> None:
    """One row per streaming run: CER, ΔCER vs offline, latency median/p90 on both clocks, first
    emission, flicker, commits/min, compute per audio second, real time, and the characters
    inserted over the reference's silence / inserted as repeats (``asr_eval.metrics.hallucination``)."""
    t = Table(title=f"streaming — normalizer {normalizer}; latency = emission − reference character end (s); "
                    "unaware: the policy's own latency; aware: with this machine's compute",
              title_justify="left", header_style="bold")
    for c in ("run", "n", "n_missing", "CER % [95% CI]", "Δ CER vs offline (pts) [95% CI]", "latency med / p90\nunaware",
              "latency med / p90\naware", "first emission\nmed unaware", "flicker %", "commits\n/min",
              "compute\ns per s", "real time", "in silence\n/ repeats"):
        t.add_column(c, justify="left" if c == "run" else "right")
    for r in rows:
        lat = r["latency_median_s"]
        p90 = r["latency_p90_s"]
        rt = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[r["real_time"]]
        lat_dag = "" if r["latency_reliable"] else " †"
        t.add_row(names.get(r["run_id"], r["run_id"]), str(r["n"]), str(r["n_missing"]),
                  _interval(r["cer"], r["cer_lo"], r["cer_hi"], reliable=r["cer_reliable"]),
                  _interval(r["delta_cer"], r["delta_cer_lo"], r["delta_cer_hi"], pts=True, reliable=r["delta_reliable"]),
                  f"{_s(lat['unaware'])} / {_s(p90['unaware'])}{lat_dag}", f"{_s(lat['aware'])} / {_s(p90['aware'])}{lat_dag}",
                  _s(r["first_emission_median_s"]["unaware"]), _pct(r["flicker"]), f"{r['commits_per_minute']:.1f}",
                  _s(r["compute_per_audio_s"]), rt, _hallucination(r))
    print_table(t)
    if any(r["n_missing"] for r in rows):
        console.print("[dim]n: recordings CER is computed over; n_missing: those without a log, scored as full "
                      "deletions (latency and flicker are over the recordings with a log)[/]")
    if not all(r["cer_reliable"] and r["latency_reliable"] and r["delta_reliable"] is not False for r in rows):
        console.print("[dim]† insufficient data (fewer than 20 recordings or 200 reference characters): the point "
                      "estimate alone, no interval and no verdict[/]")
    if any(r.get("silence_s") is not None for r in rows):
        console.print("[dim]in silence / repeats: characters inserted where the reference has no speech (gaps ≥ 1 s "
                      "between its segments, emitted after the gap began) / inserted as repeats of earlier text; "
                      "— : no reference segments[/]")
    methods = sorted({r["timing_method"] for r in rows if r["timing_method"]})
    if methods:
        console.print(f"[dim]reference timing: {'; '.join(methods)}[/]")
    for r in rows:
        if r["offline_run"] and r["delta_verdict"]:
            console.print(f"{names.get(r['run_id'], r['run_id'])} vs offline "
                          f"({names.get(r['offline_run'], r['offline_run'])}): {r['delta_verdict']}")


def _hallucination(r: dict[str, Any]) -> str:
    """'7 / 4' (inserted in silence / repeated insertions); '—' without reference segments."""
    if r.get("inserted_in_silence") is None:
        return "—"
    n = r["inserted_in_silence"]
    return f"{'[red]' if n else ''}{n}{'[/]' if n else ''} / {r['repeated_insertions']}"


def _json_rows(rows: list[dict[str, Any]]) -> str:
    return json.dumps([json_row(r) for r in rows], ensure_ascii=False, indent=1)


@app.command("stream")
def stream_cmd(
    corpus: Annotated[str, typer.Option(help="Ingested corpus folder or URL (recordings or utterances)")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Hub id, local checkpoint dir, "
                                             "bundled:whisper-base or ct2:DIR (repeat to compare)")],
    policy: Annotated[str, typer.Option(help="Streaming policy(ies), comma-separated: local-agreement, "
                                             "vad-segment, hold-k")] = "local-agreement",
    chunk_s: Annotated[str, typer.Option(help="Chunk size(s) in seconds, comma-separated (one run per policy × "
                                              "chunk size)")] = "1",
    param: Annotated[list[str] | None, typer.Option(help="Policy parameter name=value, e.g. n=3, "
                                                         "buffer_trim_s=10, or a guard: vad_gate=false, "
                                                         "no_speech_threshold=none (repeatable)")] = None,
    engine: Annotated[str, typer.Option(help="transformers, ctranslate2, openvino, whispercpp (comma-separated to "
                                             "compare; `asr-eval engines`)")] = "transformers",
    compute_type: Annotated[str, typer.Option(help="auto, float32, int8, … (comma-separated)")] = "auto",
    preprocessing: Annotated[str, typer.Option(help="pad-audio or pad-features")] = "pad-audio",
    recipe: Annotated[str, typer.Option(help="Decode recipe(s), comma-separated")] = "greedy",
    offline_strategy: Annotated[str, typer.Option(help="Long-form strategy of the offline run each streaming run is "
                                                       "compared with (vad, chunked, sequential; none: no offline run)")] = "vad",
    split: Annotated[str, typer.Option(help="Split ('auto': test if present, else all; 'all')")] = "auto",
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns")] = None,
    align_model: Annotated[str, typer.Option(help="Model whose cross-attention aligns the reference characters in "
                                                  "time ('none': spread evenly inside each segment)")] = DEFAULT_ALIGN_MODEL,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for the engine (0: all cores)")] = 0,
    normalizer: Annotated[str, typer.Option(help="Normalizer profile")] = "zh-v1",
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per streaming run instead of tables")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
    parts: Annotated[str | None, typer.Option(help="Where inference parts go, a folder or URL (default: beside the DB)")] = None,
    engine_option: Annotated[list[str] | None, typer.Option(
        "--engine-option", "-O", help="Engine speed option KEY=VALUE[,VALUE…] (see `asr-eval engines`); each "
        "configuration is also run without it and the transcripts compared")] = None,
) -> None:
    """Stream a corpus through policies × chunk sizes: CER vs offline, latency on both clocks, flicker, real time."""
    from asr_eval.longform import parse_params
    from asr_eval.scoring import expand_specs
    from asr_eval.scoring.parts import with_baselines
    from asr_eval.streaming.evaluate import stream_models
    from asr_eval.streaming.run import expand_axes

    axes = expand_axes([p.strip() for p in policy.split(",") if p.strip()],
                       [_float(c) for c in chunk_s.split(",") if c.strip()], parse_params(param or []))
    bases = with_baselines(expand_specs(model, engine, compute_type, preprocessing, recipe, device, None, threads,
                                        engine_options=engine_option or ()))
    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    runs = stream_models(corpus, bases, axes, db, offline_strategy, split, normalizer, sl, parts, n_boot,
                         progress=not as_json, align_model=align_model)
    rows, names, checks = summaries(db, runs.streams, normalizer, runs.offline_of,
                                    checks_of=[*runs.offline, *runs.streams] if engine_option else None)
    if as_json:
        if engine_option:  # each streaming run with options: its verdict against the same run without them
            verdicts = {p.run_b: p.verdict for p in checks}
            for r in rows:
                r["engine_options_verdict"] = verdicts.get(r["run_id"])
        typer.echo(_json_rows(rows))
        return
    print_stream_table(rows, names, normalizer)
    from asr_eval.cli.score import print_option_verdicts

    print_option_verdicts(checks, names)
    console.print(f"store: [bold]{db}[/]  runs: {', '.join([*runs.offline, *runs.streams])}")


def _float(v: str) -> float:
    from asr_eval.errors import AsrEvalError

    try:
        return float(v)
    except ValueError:
        raise AsrEvalError(f"--chunk-s {v!r} is not a number of seconds (e.g. --chunk-s 0.5,1,2)") from None


def _offline_run(db: Path, ref: str, run_id: str | None = None) -> str:
    """The offline run ``ref`` names (``asr_eval.store.runs``); with ``run_id``, on its corpus split —
    a model name takes its latest run there that is not itself a streaming run."""
    from asr_eval.errors import AsrEvalError
    from asr_eval.store.runs import match, resolve_pair, stored_runs

    con = connect(db, read_only=True)
    try:
        runs = stored_runs(con, finished_only=True)
        kind, found = match(runs, ref)
        if kind == "run":
            return resolve_pair(con, ref, run_id)[0] if run_id else found[0].run_id
        target = next((r for r in runs if r.run_id == run_id), None)
        found = [r for r in found if not r.streaming
                 and (target is None or (r.corpus_id, r.split) == (target.corpus_id, target.split))]
        if not found:
            where = f" on {target.corpus_id} split {target.split or 'all'}" if target else ""
            raise AsrEvalError(f"model {ref!r} has no finished offline run{where} (only streaming runs or none); "
                               "score it there first (`asr-eval score --strategy vad`) or name a run (`asr-eval runs`)")
        return found[0].run_id
    finally:
        con.close()


@app.command("import-stream")
def import_stream_cmd(
    path: Annotated[Path, typer.Argument(help="A folder of whisper_streaming logs (one per recording, named after "
                                              "its utt_id or audio stem) or a JSONL streaming log")],
    corpus: Annotated[str, typer.Option(help="Ingested corpus folder or URL")],
    name: Annotated[str, typer.Option(help="Name of the system that produced the log")],
    split: Annotated[str, typer.Option(help="Split the log is for ('auto': test if present, else all)")] = "auto",
    offline: Annotated[str | None, typer.Option(help="Run to compute Δ CER against: full or short id (`asr-eval "
                                                     "runs`), unique id prefix, or model name (its latest run on this "
                                                     "corpus split); default: none")] = None,
    engine_notes: Annotated[str | None, typer.Option(help="Free text kept in the run's provenance")] = None,
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns")] = None,
    align_model: Annotated[str, typer.Option(help="Model that aligns the reference in time ('none': "
                                                  "uniform)")] = DEFAULT_ALIGN_MODEL,
    normalizer: Annotated[str, typer.Option(help="Normalizer profile")] = "zh-v1",
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's metrics as JSON")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """Import another system's streaming output (whisper_streaming or JSONL) and score it like our streaming runs."""
    from asr_eval.streaming.evaluate import import_stream

    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    if offline and db.exists():  # an unknown or ambiguous reference fails before the import, not after
        _offline_run(db, offline)
    r = import_stream(corpus, path, name, db, split, normalizer, sl, n_boot, engine_notes, align_model)
    rows, names, _ = summaries(db, [r.run_id], normalizer, {r.run_id: _offline_run(db, offline, r.run_id)}
                               if offline else None)
    if as_json:
        typer.echo(_json_rows(rows))
        return
    console.print(f"imported [bold]{name}[/] ({r.format}) as run [bold]{r.run_id}[/]: {r.n} recording"
                  f"{'s' if r.n != 1 else ''} of split {r.split or 'all'}, {r.n_matched} with a log"
                  + (f", [yellow]{r.n_missing} without[/] (scored as full deletions)" if r.n_missing else ""))
    print_stream_table(rows, names, normalizer)
    console.print(f"store: [bold]{db}[/]  run: {r.run_id}")
