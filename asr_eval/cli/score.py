"""`asr-eval score` and `asr-eval rescore`: per-slice CER/MER with 95% CIs and paired A/B tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from asr_eval.cli import StorageOptions, app, console, print_table, use_storage
from asr_eval.store import DEFAULT_DB, connect
from asr_eval.store.labels import run_labels


def _pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.2f}"


def _pts(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:+.2f}"


def _rate_cell(cer: float | None, lo: float | None, hi: float | None, reliable: bool | None) -> str:
    if reliable is False:  # the point estimate only: an interval on so little data is not evidence
        return f"{_pct(cer)} [dim]†[/]"
    return f"{_pct(cer)} [{_pct(lo)}–{_pct(hi)}]"


def _diff_cells(delta: float | None, lo: float | None, hi: float | None, reliable: bool | None) -> tuple[str, str]:
    """(Δ, interval) of a paired difference: a thin one shows Δ with † and no interval."""
    if reliable is False:
        return f"{_pts(delta)} [dim]†[/]", ""
    return _pts(delta), f"{_pts(lo)} … {_pts(hi)}"


def run_missing(con, run_ids: list[str]) -> dict[str, int]:
    """Utterances of each run's split without a hypothesis (scored as full deletions, counted in n)."""
    if not run_ids:
        return {}
    return {r: int(m or 0) for r, m in con.execute(
        "SELECT run_id, n_missing FROM eval_runs WHERE run_id IN (SELECT unnest(?))", [list(run_ids)]).fetchall()}


def selection_flags(con, run_ids: list[str]) -> dict[str, str]:
    """Runs scored on the split their checkpoint was selected on (models.selection_split)."""
    found = con.execute(
        f"""SELECT r.run_id, m.selection_split FROM eval_runs r JOIN models m USING (model_id)
            WHERE r.run_id IN ({', '.join('?' * len(run_ids))}) AND m.selection_split IS NOT NULL
              AND m.selection_split = coalesce(r.split, 'all')""", run_ids).fetchall()
    return {r: f"selected on this split ({split}): optimistic" for r, split in found}


def print_results(db: Path, run_ids: list[str], normalizer: str, slices: list[str] | None = None,
                  all_slices: bool = False) -> None:
    """Terminal tables: one per slice attribute (n, hours, CER ± CI per model; † marks slices with
    insufficient data: the point estimate alone, no interval, not the best cell) + paired A/B deltas
    with multiplicity-adjusted verdicts and the smallest detectable difference. Only slices that
    differ after correction are listed unless ``all_slices``. ``n`` counts every utterance a number
    is computed over; when a run has utterances without a hypothesis (scored as full deletions),
    the whole-run table says how many (``missing``)."""
    from asr_eval.metrics.stats import ADJUSTMENTS, star_keys
    from asr_eval.slices import ALL_ATTR, stored_comparisons, stored_slice_metrics, value_key

    con = connect(db, read_only=True)
    try:
        names = run_labels(con, run_ids)
        rows = stored_slice_metrics(con, run_ids, normalizer)
        cmps = stored_comparisons(con, run_ids, normalizer, metric="cer")
        flags = selection_flags(con, run_ids)
        missing = run_missing(con, run_ids)
    finally:
        con.close()
    for r, words in flags.items():
        console.print(f"[bold yellow]note:[/] {names.get(r, r)} (run {r}) was {words} — its score on this split is "
                      "biased downwards; compare on a split it was not selected on")
    by_attr: dict[str, dict[str, dict]] = {}
    methods: dict[str, set[str]] = {}
    thin = 0
    for row in rows:
        cell = by_attr.setdefault(row["slice_attr"], {}).setdefault(row["slice_value"], {"n": row["n"], "hours": row["hours"]})
        cell[row["run_id"]] = row
        methods.setdefault(row["slice_attr"], set()).add(row["ci_method"] or "utterance")
        thin += row["reliable"] is False
    order = [ALL_ATTR] + sorted(a for a in by_attr if a != ALL_ATTR)
    for attr in order:
        if attr not in by_attr or (slices and attr != ALL_ATTR and attr not in slices):
            continue
        how = ", ".join(sorted(methods.get(attr, ())))
        title = (f"all utterances — normalizer {normalizer}" if attr == ALL_ATTR else f"by {attr}") + f" ({how} resampling)"
        t = Table(title=title, title_justify="left", header_style="bold")
        t.add_column(attr if attr != ALL_ATTR else "", style="cyan")
        t.add_column("n", justify="right")
        t.add_column("hours", justify="right")
        for r in run_ids:
            t.add_column(f"{names.get(r, r)}{' (selected here)' if r in flags else ''}\nCER % [95% CI]", justify="right")
        show_missing = attr == ALL_ATTR and any(missing.get(r) for r in run_ids)
        if attr == ALL_ATTR:
            for r in run_ids:
                t.add_column(f"{names.get(r, r)}\nMER %", justify="right")
            if show_missing:
                for r in run_ids:
                    t.add_column(f"{names.get(r, r)}\nn_missing", justify="right")
        for value in sorted(by_attr[attr], key=value_key):
            cell = by_attr[attr][value]
            stars = star_keys({r: (cell[r]["cer"], cell[r]["reliable"] is not False) for r in run_ids if r in cell})
            line = [value if attr != ALL_ATTR else "all", str(cell["n"]), f"{cell['hours'] or 0:.3f}"]
            for r in run_ids:
                if r not in cell:
                    line.append("—")
                    continue
                c = cell[r]
                txt = _rate_cell(c["cer"], c["cer_lo"], c["cer_hi"], c["reliable"])
                line.append(f"[bold green]{txt}[/]" if r in stars else txt)
            if attr == ALL_ATTR:
                line += [_rate_cell(cell[r]["mer"], cell[r]["mer_lo"], cell[r]["mer_hi"], cell[r]["reliable"])
                         if r in cell else "—" for r in run_ids]
                if show_missing:
                    line += [str(missing.get(r, 0)) for r in run_ids]
            t.add_row(*line)
        print_table(t)
    if thin:
        console.print("[dim]† insufficient data (fewer than the minimum utterances or reference characters): the point "
                      "estimate is shown without an interval (it would not be evidence) and it gets no verdict[/]")
    if len(run_ids) > 1 and cmps:
        _print_pairs(cmps, names, slices, all_slices, ADJUSTMENTS)


def _print_pairs(cmps: list[dict], names: dict, slices: list[str] | None, all_slices: bool, adjustments: dict) -> None:
    from asr_eval.metrics.stats import mde_text
    from asr_eval.slices import ALL_ATTR, slice_label

    t = Table(title="paired A/B on CER (B − A, points; paired bootstrap 95% CI; p adjusted per slice column)",
              title_justify="left", header_style="bold")
    for c in ("A", "B", "slice", "n", "Δ CER", "95% CI", "not detectable under", "p adj.", "verdict"):
        t.add_column(c, justify="right" if c in ("n", "Δ CER", "95% CI", "not detectable under", "p adj.") else "left")
    tested = differ = raw_hits = thin = hidden = 0
    families: set[tuple] = set()
    methods: set[str] = set()
    for c in cmps:
        attr = c["slice_attr"]
        if slices and attr != ALL_ATTR and attr not in slices:
            continue
        reliable = c["reliable"] is not False
        is_tested = reliable and c["p_adj"] is not None
        sig = is_tested and c["p_adj"] < 0.05 and (c["delta_lo"] > 0 or c["delta_hi"] < 0)
        if c["adj_method"]:
            methods.add(c["adj_method"])
        if attr != ALL_ATTR:
            families.add((c["run_a"], c["run_b"], attr))
            tested += is_tested
            differ += sig
            raw_hits += is_tested and c["p_raw"] is not None and c["p_raw"] < 0.05
            thin += not reliable
            if not (all_slices or sig):
                hidden += 1
                continue
        style = "" if not sig else ("green" if c["delta_hi"] < 0 else "red")
        d, ci = _diff_cells(c["delta"], c["delta_lo"], c["delta_hi"], reliable)
        t.add_row(names.get(c["run_a"], c["run_a"]), names.get(c["run_b"], c["run_b"]),
                  slice_label(attr, c["slice_value"]), str(c["n"]), f"[{style}]{d}[/]" if style else d,
                  ci, _pct(c["mde"]) if reliable else "—",
                  "—" if c["p_adj"] is None or not reliable else f"{c['p_adj']:.3g}", c["verdict"] or "")
    print_table(t)
    for c in cmps:
        if c["slice_attr"] == ALL_ATTR and c["mde"] is not None and c["reliable"] is not False:
            console.print(f"{names.get(c['run_a'], c['run_a'])} vs {names.get(c['run_b'], c['run_b'])}, all utterances: "
                          f"{mde_text(c['mde'])} ({c['ci_method'] or 'utterance'} resampling)")
    how = " / ".join(adjustments[m][1] for m in sorted(methods) if m in adjustments) or "Holm"
    console.print(f"{tested} slice comparison{'s' if tested != 1 else ''} tested in {len(families)} famil"
                  f"{'ies' if len(families) != 1 else 'y'} ({how} correction per pair × slice column): "
                  f"[bold]{differ}[/] differ after correction ({raw_hits} at p < 0.05 before)"
                  + (f"; {thin} with insufficient data not tested" if thin else "") + ".")
    if hidden:
        console.print(f"[dim]{hidden} per-slice comparisons without a difference after correction not shown — "
                      "`--all-slices` lists them all (they are in the comparisons table and the report)[/]")


@app.command("score")
def score_cmd(
    corpus: Annotated[str, typer.Option(help="Ingested corpus folder or URL (from `asr-eval ingest`)")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Hub id, local checkpoint dir, "
                                             "bundled:whisper-base or ct2:DIR (repeat to compare)")],
    engine: Annotated[str, typer.Option(help="Inference engine(s), comma-separated: transformers, ctranslate2, "
                                             "openvino, whispercpp (see `asr-eval engines`)")] = "transformers",
    compute_type: Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16/fp16 on GPU) or e.g. float32, int8, "
                                                   "int8_float32, float16, int8_float16, bfloat16, int4, q8_0, q5_0 (per engine: `asr-eval engines`); comma-separated")] = "auto",
    preprocessing: Annotated[str, typer.Option(help="pad-audio (transformers/HF fine-tuning) or pad-features "
                                                    "(openai-whisper/faster-whisper); comma-separated")] = "pad-audio",
    recipe: Annotated[str, typer.Option(help="Decode recipe(s): greedy, beam5, fallback, beam5-fallback, "
                                             "prompt-simplified; comma-separated")] = "greedy",
    split: Annotated[str, typer.Option(help="Split to score ('auto': test if present, else all; 'all')")] = "auto",
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns (default: every column "
                                                    "with ≤50 values, plus duration_bucket)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: the engine's suggestion (device memory)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for the engine (0: all cores)")] = 0,
    normalizer: Annotated[str, typer.Option(help="Normalizer profile")] = "zh-v1",
    max_new_tokens: Annotated[int | None, typer.Option(help="Generation cap (recipe default 128; guards loops)")] = None,
    no_repeat_ngram_size: Annotated[int | None, typer.Option(help="Forbid repeating n-grams of this size")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="> 1 penalizes repeated tokens")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    ci_method: Annotated[str, typer.Option(help="auto: resample speakers where speakers are known for ≥ 50% of a "
                                                "slice (≥ 10 blocks), else utterances | utterance")] = "auto",
    min_utts: Annotated[int, typer.Option(help="Slices with fewer utterances get no verdict")] = 20,
    min_ref_chars: Annotated[int, typer.Option(help="Slices with fewer reference characters get no verdict")] = 200,
    adjust: Annotated[str, typer.Option(help="Multiplicity adjustment per pair × slice column: holm | bh")] = "holm",
    all_slices: Annotated[bool, typer.Option("--all-slices", help="List every slice comparison, not only "
                                                                   "those that differ after correction")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
    parts: Annotated[str | None, typer.Option(help="Where inference parts go, a folder or URL (default: beside the DB)")] = None,
    strategy: Annotated[str, typer.Option(help="Long-form strategy for recordings over 30 s: sequential, chunked, "
                                               "vad; comma-separated to compare")] = "short",
    strategy_param: Annotated[list[str] | None, typer.Option(help="Strategy parameter name=value, e.g. stride_s=4 "
                                                                  "(repeatable; applies to each strategy that has it)")] = None,
    engine_option: Annotated[list[str] | None, typer.Option(
        "--engine-option", "-O", help="Engine speed option KEY=VALUE[,VALUE…], e.g. cache=static, compile=true, "
        "inter_threads=2 (repeatable; a value list is an axis; `asr-eval engines` lists them)")] = None,
    verify_options: Annotated[bool, typer.Option(help="Also score each configuration without its engine options and "
                                                      "report whether the transcripts are identical")] = True,
    parity: Annotated[bool, typer.Option(help="Also score each configuration on another engine or compute type "
                                              "with transformers float32 (same weights, features, recipe; reused "
                                              "if stored) and print the fidelity verdict")] = False,
    ray_address: Annotated[str | None, typer.Option(
        help="Transcribe on a Ray cluster: auto (the cluster `ray start` joined), ray://HOST:10001, or local (a "
             "cluster on this machine). With several nodes, --corpus and --parts must be URLs (or a shared "
             "filesystem: ASR_EVAL_SHARED_FS=1)")] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Transcribe a corpus split with models × engines × recipes (× long-form strategies × engine options) and
    score it per slice."""
    use_storage(storage_option)
    from asr_eval.longform import parse_params
    from asr_eval.scoring import expand_specs, score_models
    from asr_eval.scoring.parts import needs_reference, with_baselines, with_reference

    specs = expand_specs(model, engine, compute_type, preprocessing, recipe, device, batch_size, threads,
                         strategies=strategy, strategy_params=parse_params(strategy_param or []),
                         engine_options=engine_option or (), max_new_tokens=max_new_tokens,
                         no_repeat_ngram_size=no_repeat_ngram_size, repetition_penalty=repetition_penalty)
    if verify_options:
        specs = with_baselines(specs)
    if parity:
        specs = with_reference(specs)
    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    run_ids = score_models(corpus, specs, db, split=split, slices=sl, normalizer=normalizer, parts_root=parts,
                           n_boot=n_boot, ci_method=ci_method, min_utts=min_utts, min_ref_chars=min_ref_chars,
                           adjust=adjust, ray_address=ray_address)
    print_results(db, run_ids, normalizer, sl, all_slices)
    checked = print_parity(db, run_ids, normalizer)
    if not parity and any(map(needs_reference, specs)) and not any(p.reference_check for p in checked):
        console.print("[dim]engine parity: not checked against transformers float32 (add --parity)[/]")
    print_preprocessing_notes(db, run_ids)
    console.print(f"store: [bold]{db}[/]  runs: {', '.join(run_ids)}")


@app.command("rescore")
def rescore_cmd(
    normalizer: Annotated[str, typer.Option(help="Normalizer profile to rescore with")] = "zh-v1",
    run: Annotated[list[str] | None, typer.Option("--run", help="Runs to rescore: full or short ids as `asr-eval runs` prints them, unique prefixes, or model names (their latest run); repeatable (default: every run)")] = None,
    slices: Annotated[str | None, typer.Option(help="Comma-separated slice columns")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates")] = 1000,
    all_slices: Annotated[bool, typer.Option("--all-slices", help="List every slice comparison")] = False,
    db: Annotated[Path, typer.Option(help="DuckDB store")] = DEFAULT_DB,
) -> None:
    """Re-normalize and rescore stored hypotheses with another normalizer — no inference. Each run keeps the
    interval method (speaker-block / utterance) it was scored with."""
    from asr_eval.scoring import rescore

    sl = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    con = connect(db)
    try:
        ids = rescore(con, normalizer, run, sl, n_boot)
    finally:
        con.close()
    print_results(db, ids, normalizer, sl, all_slices)


def print_preprocessing_notes(db: Path, run_ids: list[str]) -> None:
    from asr_eval.scoring.parity import preprocessing_mismatches

    con = connect(db, read_only=True)
    try:
        rows = preprocessing_mismatches(con, run_ids)
        names = run_labels(con, run_ids)
    finally:
        con.close()
    for run_id, trained, scored in rows:
        console.print(f"[yellow]note:[/] {names.get(run_id, run_id)} was fine-tuned with {trained} preprocessing and "
                      f"scored with {scored} — what a deployment using {scored} sees, not what it was trained on")


def print_parity(db: Path, run_ids: list[str], normalizer: str) -> list:
    """Engine parity: for runs of the same weights that differ in engine/compute/preprocessing/recipe/
    engine options, % identical raw transcripts and the paired CER difference; then the verdict on each
    engine-options check."""
    from asr_eval.scoring.parity import parity_pairs

    con = connect(db, read_only=True)
    try:
        pairs = parity_pairs(con, run_ids, normalizer)
        names = run_labels(con, run_ids)
    finally:
        con.close()
    if not pairs:
        return []
    t = Table(title="engine parity (same weights; B vs A)", title_justify="left", header_style="bold")
    for c in ("A", "B", "n", "identical", "Δ CER (B − A)", "95% CI"):
        t.add_column(c, justify="right" if c not in ("A", "B") else "left")
    for p in pairs:
        thin = not p.delta_reliable
        t.add_row(names.get(p.run_a, p.run_a), names.get(p.run_b, p.run_b), str(p.n),
                  f"{p.n_identical}/{p.n} ({100 * p.identical:.1f} %)",
                  (_pct(p.delta).replace("-", "−") + (" [dim]†[/]" if thin else "")) if p.delta is not None else "—",
                  f"{_pct(p.delta_lo)} … {_pct(p.delta_hi)}" if p.delta_lo is not None and not thin else "—")
    print_table(t)
    print_option_verdicts(pairs, names)
    return pairs


def print_option_verdicts(pairs, names: dict[str, str]) -> None:
    """One line per reference pair: the other engine / compute type is faithful to transformers float32
    (identical transcripts), shows no measurable loss, or is worse (``ParityPair.fidelity``). Then one line
    per engine-options pair: the speed option is output-preserving here (identical on
    N/N), or it is not — then the utterances that differ, raw transcripts side by side."""
    colour = {"✔": "green", "✘": "red", "?": "yellow"}
    for p in (p for p in pairs if p.reference_check):
        a, b = names.get(p.run_a, p.run_a), names.get(p.run_b, p.run_b)
        (status, said), mark = p.fidelity, p.fidelity_mark
        console.print(f"[{colour[mark]}]{mark} parity[/] {b} vs {a}: [bold]{status}[/] — {said}")
        for d in p.divergent[:3] if p.n_identical < p.n else []:
            console.print(f"   {d.utt_id}: A {d.hyp_a!r}\n   {' ' * len(d.utt_id)}  B {d.hyp_b!r}")
    for p in (p for p in pairs if p.options_only):
        a, b = names.get(p.run_a, p.run_a), names.get(p.run_b, p.run_b)
        if p.n and p.n_identical == p.n:
            console.print(f"[green]✔ engine options[/] {b} vs {a}: transcripts [bold]{p.verdict}[/] — output-preserving here")
            continue
        console.print(f"[red]✘ engine options[/] {b} vs {a}: transcripts [bold]{p.verdict}[/] — NOT output-preserving "
                      "on this model, data and machine:")
        for d in p.divergent:
            console.print(f"   {d.utt_id}: A {d.hyp_a!r}\n   {' ' * len(d.utt_id)}  B {d.hyp_b!r}")
        if (more := p.n - p.n_identical - len(p.divergent)) > 0:
            console.print(f"   … and {more} more (the report's engine section lists them by CER change)")
