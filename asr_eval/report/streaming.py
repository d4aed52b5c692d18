"""Report view of streaming runs (issue 19): how late the text appears and what that costs in CER.

``stream_view`` reads what the streaming scorer stored (``asr_eval.streaming.store``: emission
logs, per-recording and per-slice latency, flicker, compute) and lays it out for
``templates/_streaming.html.j2``:

- the summary per streaming run (``asr_eval.streaming.evaluate.stream_summary``, against its
  offline counterpart from ``offline_runs``), labelled with ``run_labels``;
- the latency–CER trade-off, one chart per clock: a point per streaming run at (median character
  latency, CER) with the median's recording-bootstrap interval as a horizontal bar and the CER
  interval as a vertical bar (intervals only with enough evidence, like every other section), and
  each offline run's CER as a dashed horizontal reference line;
- the per-slice table (``stream_slices`` rows, the whole run left to the summary);
- a timeline of one recording (the first streaming run's longest, ties: most reference
  segments): reference characters at their end times above each emission as a viewer saw it —
  the committed increment ending at its emission time, its tentative tail greyed after it.

Geometry only — no markup is produced here (as in ``charts``): the template draws these objects,
so every label passes through autoescaping. ``None`` when no selected run is a streaming run or
the store predates the streaming tables (the section is then left out).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import duckdb

from asr_eval.metrics.stats import stored_reliable
from asr_eval.report.charts import Tick, clip, fmt_num, nice_ticks, text_width
from asr_eval.slices import ALL_ATTR, ALL_VALUE, value_key
from asr_eval.store.labels import run_labels
from asr_eval.store.schema import STREAM_TABLES
from asr_eval.streaming.base import CLOCKS, Emission
from asr_eval.streaming.metrics import ReferenceTiming
from asr_eval.streaming.store import stored_logs

PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626")
OFFLINE_COLOR = "#475569"
CLOCK_NAMES = {"unaware": "computation-unaware clock", "aware": "computation-aware clock"}

TIMELINE_MAX_S = 240.0  # longer recordings: the first 4 minutes are drawn (and the caption says so)
PX_PER_S = 60.0  # timeline scale; the figure scrolls horizontally
TL_FONT = 13.0
TL_LEFT = 12.0
MAX_LANES = 10  # emission rows; beyond this, emissions share the row that frees up first
MAX_TENTATIVE = 24  # characters of a tentative tail drawn (the whole tail is in the tooltip)


# ───────────────────────────── formatting ─────────────────────────────


def secs(v: float | None) -> str:
    """'1.23 s' (latencies, compute); '—' when unknown."""
    return "—" if v is None or not math.isfinite(v) else f"{v:.2f} s"


def secs_ci(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f"[{lo:.2f}, {hi:.2f}]"


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


# ───────────────────────────── view model ─────────────────────────────


@dataclass(frozen=True)
class TradePoint:
    """One streaming run on the trade-off chart (pixels, plus the plotted values for the tooltip)."""

    run_id: str
    label: str  # "policy chunk", e.g. "local-agreement 1s"
    name: str  # the run's label (run_labels)
    color: str
    x: float
    y: float
    x_lo: float | None  # latency median interval (recording bootstrap)
    x_hi: float | None
    y_lo: float | None  # CER interval (only when the CER has enough evidence)
    y_hi: float | None
    latency_s: float
    cer: float
    reliable: bool
    text: str
    label_x: float = 0.0  # the label beside the point, kept inside the plot
    label_y: float = 0.0
    label_anchor: str = "start"


@dataclass(frozen=True)
class RefLine:
    """An offline run's CER as a horizontal reference line."""

    run_id: str
    label: str
    y: float
    cer: float
    text: str


@dataclass(frozen=True)
class TradeoffPlot:
    title: str
    clock: str
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x0: float  # data domain drawn between left and right (seconds)
    x1: float
    y0: float  # and between bottom and top (CER, a fraction)
    y1: float
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    points: list[TradePoint]
    lines: list[RefLine]
    x_label: str
    empty: str = ""

    def sx(self, v: float) -> float:
        return round(self.left + (v - self.x0) / ((self.x1 - self.x0) or 1) * (self.right - self.left), 1)

    def sy(self, v: float) -> float:
        return round(self.bottom - (v - self.y0) / ((self.y1 - self.y0) or 1) * (self.bottom - self.top), 1)


def tradeoff_plot(rows: Sequence[Mapping[str, Any]], offline: Sequence[Mapping[str, Any]], clock: str,
                  width: int = 560, height: int = 300) -> TradeoffPlot:
    """Latency (x, seconds, on ``clock``) against CER (y, percent from 0) per streaming run, each
    offline run's CER a reference line. ``rows``: summary rows (``stream_summary``, with its
    ``cer_reliable`` / ``latency_reliable`` flags: a thin number is drawn without its bar) with
    ``label``/``short``/``color`` added; ``offline``: ``{"run_id", "label", "cer"}``."""
    left, top, right, bottom = 56.0, 26.0, width - 16.0, height - 40.0
    title = f"Latency vs CER — {CLOCK_NAMES[clock]}"
    x_label = f"median character latency, s ({CLOCK_NAMES[clock]})"
    have = [r for r in rows if _finite(r["latency_median_s"][clock]) and _finite(r["cer"])]
    lines_in = [o for o in offline if _finite(o["cer"])]
    if not have:
        return TradeoffPlot(title, clock, width, height, left, top, right, bottom, 0.0, 1.0, 0.0, 1.0, [], [], [],
                            [], x_label, "no latency and CER to plot")

    def ci_of(r: Mapping[str, Any]) -> tuple[float | None, float | None]:
        lo, hi = r["latency_median_lo"][clock], r["latency_median_hi"][clock]
        return (lo, hi) if r.get("latency_reliable", True) and _finite(lo) and _finite(hi) else (None, None)

    def cer_ci(r: Mapping[str, Any]) -> tuple[float | None, float | None]:
        lo, hi = r["cer_lo"], r["cer_hi"]
        return (lo, hi) if r["cer_reliable"] and _finite(lo) and _finite(hi) else (None, None)

    xs = [v for r in have for v in (r["latency_median_s"][clock], *ci_of(r)) if v is not None]
    ys = [v for r in have for v in (r["cer"], *cer_ci(r)) if v is not None] + [o["cer"] for o in lines_in]
    xt = nice_ticks(min(0.0, min(xs)), max(xs), 6)
    yt = nice_ticks(0.0, max(ys) or 0.01, 5)
    plot = TradeoffPlot(title, clock, width, height, left, top, right, bottom, xt[0], xt[-1], yt[0], yt[-1],
                        [], [], [], [], x_label)
    plot.x_ticks.extend(Tick(plot.sx(t), fmt_num(t)) for t in xt)
    plot.y_ticks.extend(Tick(plot.sy(t), f"{100 * t:g}%") for t in yt)
    for o in lines_in:
        plot.lines.append(RefLine(o["run_id"], clip(f"offline: {o['label']} {100 * o['cer']:.2f}%", right - left - 8,
                                                    11.0), plot.sy(o["cer"]), o["cer"], o["label"]))
    for r in have:
        lat, cer = r["latency_median_s"][clock], r["cer"]
        (xl, xh), (yl, yh) = ci_of(r), cer_ci(r)
        text = (f"{r['label']}: median latency {secs(lat)} "
                + (secs_ci(xl, xh) if r.get("latency_reliable", True) else "† (insufficient data for an interval)")
                + f", CER {100 * cer:.2f}%"
                + (f" [{100 * yl:.2f}, {100 * yh:.2f}]" if yl is not None else " † (insufficient data for an interval)"))
        label = clip(r["short"] + ("" if r["cer_reliable"] and r.get("latency_reliable", True) else " †"), 170, 12.0)
        x, y = plot.sx(lat), plot.sy(cer)
        right_side = x + 7 + text_width(label) <= width - 2
        plot.points.append(TradePoint(
            r["run_id"], label, r["label"], r["color"], x, y, None if xl is None else plot.sx(xl),
            None if xh is None else plot.sx(xh), None if yl is None else plot.sy(yl),
            None if yh is None else plot.sy(yh), lat, cer, r["cer_reliable"], text,
            x + 7 if right_side else x - 7, y - 7 if y - 7 > top + 4 else y + 16, "start" if right_side else "end"))
    return plot


@dataclass(frozen=True)
class TlChar:
    x: float  # the character's end time, in pixels (the glyph ends there)
    y: float
    ch: str
    t: float
    matched: bool  # the committed text has this character (aligned equal)


@dataclass(frozen=True)
class TlEmission:
    x: float  # emission time on the computation-unaware clock, in pixels
    y: float
    committed: str  # drawn ending at x, in full colour
    tentative: str  # drawn after x, greyed (clipped to MAX_TENTATIVE characters)
    tentative_full: str
    t: float
    t_aware: float
    final: bool
    seq: int


@dataclass(frozen=True)
class Timeline:
    run_id: str
    label: str
    utt_id: str
    duration_s: float
    shown_s: float
    width: int
    height: int
    ref_top: float
    ref_bottom: float  # the reference rows end here (segment bands span ref_top − 18 … ref_bottom)
    em_top: float
    axis_y: float
    ticks: list[Tick]
    segments: list[tuple[float, float]]  # reference segments, pixels
    chars: list[TlChar]
    emissions: list[TlEmission]
    timing_method: str  # as stored in stream_scores
    timing_source: str  # "given" | "uniform" | "cache" | "stored" | "uniform-mismatch" (``reference_times``)
    n_emissions: int
    n_segments: int

    @property
    def truncated(self) -> bool:
        return self.shown_s < self.duration_s


@dataclass
class StreamView:
    runs: list[dict[str, Any]]  # stream_summary rows + label, short, color, offline label/CER, device, display strings
    offline: list[dict[str, Any]]  # {"run_id", "label", "cer", "cer_lo", "cer_hi", "reliable"}
    plots: list[TradeoffPlot]  # one per clock: unaware, aware
    slices: list[dict[str, Any]]  # per slice attribute: {"attr", "rows": [...], "n_values"}
    timeline: Timeline | None
    unscored: list[tuple[str, str]] = field(default_factory=list)  # streaming runs without streaming scores
    normalizer: str = "zh-v1"

    @property
    def any_realtime_known(self) -> bool:
        return any(r["real_time"] is not None for r in self.runs)


def _has_stream_tables(con: duckdb.DuckDBPyConnection) -> bool:
    have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    cols = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'eval_runs'").fetchall()}
    return all(t in have for t in STREAM_TABLES) and "stream_policy" in cols


def _cer_rows(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str) -> dict[str, dict[str, Any]]:
    if not run_ids:
        return {}
    cur = con.execute("SELECT run_id, cer, cer_lo, cer_hi, reliable, n, coalesce(ref_chars, cer_n) FROM slice_metrics "
                      "WHERE normalizer = ? AND "
                      "slice_attr = ? AND slice_value = ? AND run_id IN (SELECT unnest(?))",
                      [normalizer, ALL_ATTR, ALL_VALUE, list(run_ids)])
    return {r[0]: {"cer": r[1], "cer_lo": r[2], "cer_hi": r[3], "n": r[5],
                   "reliable": stored_reliable(r[4], r[5], r[6])} for r in cur.fetchall()}


def _short(policy: str | None, chunk_s: float | None) -> str:
    """'local-agreement 1s' — the point label of the trade-off chart."""
    return (policy or "stream") + (f" {chunk_s:g}s" if _finite(chunk_s) else "")


def _realtime_words(r: Mapping[str, Any]) -> tuple[str, str]:
    """(words, css class) on whether the run kept up with the audio on the machine that ran it."""
    where = f" on {r['device']}" if r.get("device") else ""
    cpa = r["compute_per_audio_s"]
    cost = f" ({cpa:.2f} s of compute per second of audio)" if _finite(cpa) else ""
    if r["real_time"] is None:
        return "unknown: the log was imported, so its compute was not recorded", "na"
    if r["real_time"]:
        return f"real-time capable{where}{cost}: the computation-aware lag stayed bounded", "better-a"
    return (f"not real-time{where}{cost}: the computation-aware lag kept growing, so a live viewer would fall "
            "further behind the longer the stream runs"), "worse"


def _summary(con: duckdb.DuckDBPyConnection, stream_ids: list[str], normalizer: str,
             colors: Mapping[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    from asr_eval.streaming.evaluate import offline_runs, stream_summary

    off_of = offline_runs(con, stream_ids)
    rows = stream_summary(con, stream_ids, normalizer, off_of)
    offline_ids = list(dict.fromkeys(r["offline_run"] for r in rows if r["offline_run"]))
    labels = run_labels(con, list(dict.fromkeys([*stream_ids, *offline_ids])))
    cer = _cer_rows(con, [*stream_ids, *offline_ids], normalizer)
    device = dict(con.execute("SELECT run_id, device FROM eval_runs WHERE run_id IN (SELECT unnest(?))",
                              [stream_ids]).fetchall())
    for i, r in enumerate(rows):
        rid = r["run_id"]
        off = r["offline_run"]
        r.update(label=labels.get(rid, rid), short=_short(r["policy"], r["chunk_s"]),
                 color=colors.get(rid) or PALETTE[i % len(PALETTE)],
                 device=device.get(rid),
                 offline_label=labels.get(off, off) if off else None,
                 offline_cer=cer.get(off, {}).get("cer") if off else None,
                 params_shown={k: v for k, v in (r["params"] or {}).items() if k != "chunk_s"},
                 lat={c: {"median": secs(r["latency_median_s"][c]),
                          "ci": secs_ci(r["latency_median_lo"][c], r["latency_median_hi"][c])
                          if r["latency_reliable"] else "",
                          "p90": secs(r["latency_p90_s"][c]), "mean": secs(r["latency_mean_s"][c]),
                          "first": secs(r["first_emission_median_s"][c])} for c in CLOCKS},
                 compute=secs(r["compute_per_audio_s"]).replace(" s", " s/s") if _finite(r["compute_per_audio_s"])
                 else "—")
        r["realtime_words"], r["realtime_cls"] = _realtime_words(r)
    offline = [{"run_id": o, "label": labels.get(o, o), **cer.get(o, {"cer": None, "cer_lo": None, "cer_hi": None,
                                                                       "reliable": False})} for o in offline_ids]
    scored = {r["run_id"] for r in rows}
    return rows, offline, [s for s in stream_ids if s not in scored]


def _slices(con: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]], normalizer: str,
            max_values: int) -> list[dict[str, Any]]:
    """Per slice attribute of ``stream_slices``: a row per value × run, formatted, with the stored numbers."""
    from asr_eval.streaming.evaluate import latency_evidence
    from asr_eval.streaming.store import stored_stream_slices

    by_id = {r["run_id"]: r for r in rows}
    stored = stored_stream_slices(con, list(by_id), normalizer, include_all=False)
    attrs: dict[str, list[dict[str, Any]]] = {}
    for s in stored:
        attrs.setdefault(s["slice_attr"], []).append(s)
    out = []
    for attr, srows in attrs.items():
        n_of: dict[str, int] = {}
        for s in srows:
            n_of[s["slice_value"]] = max(n_of.get(s["slice_value"], 0), int(s["n"] or 0))
        shown = set(sorted(n_of, key=lambda v: (-n_of[v], value_key(v)))[:max_values])
        table = []
        for s in srows:  # stored order: value, then run
            if s["slice_value"] not in shown:
                continue
            reliable = latency_evidence(s).reliable
            run = by_id[s["run_id"]]
            table.append({
                "value": s["slice_value"], "run_id": s["run_id"], "label": run["label"], "color": run["color"],
                "n": int(s["n"] or 0), "n_matched": int(s["n_matched"] or 0), "reliable": reliable, "stored": s,
                "lat": {c: {"median": secs(s[f"latency_median_s_{c}"]),
                            "ci": secs_ci(s[f"latency_median_lo_{c}"], s[f"latency_median_hi_{c}"]) if reliable else "",
                            "p90": secs(s[f"latency_p90_s_{c}"])} for c in CLOCKS},
                "flicker": s["flicker"], "real_time": s["real_time"]})
        out.append({"attr": attr, "rows": table, "n_values": len(n_of), "n_shown": len(shown),
                    "thin": sorted({r["value"] for r in table if not r["reliable"]}, key=value_key)})
    return out


# ───────────────────────────── the timeline of one recording ─────────────────────────────


def _pick_recording(con: duckdb.DuckDBPyConnection, run_id: str, normalizer: str) -> dict[str, Any] | None:
    """The run's longest scored recording (ties: the most reference segments, then its id)."""
    cur = con.execute("""
        SELECT r.utt_id, coalesce(r.audio_s, u.duration_s) AS audio_s, u.duration_s, u.text, u.segments::VARCHAR AS segments,
               s.timing_method, s.latency_unaware::VARCHAR AS latency_unaware, s.n_ref_chars, s.n_matched, c.path, e.split
        FROM stream_recordings r
        JOIN stream_scores s ON s.run_id = r.run_id AND s.utt_id = r.utt_id AND s.normalizer = ?
        JOIN eval_runs e ON e.run_id = r.run_id
        LEFT JOIN utterances u ON u.corpus_id = e.corpus_id AND u.utt_id = r.utt_id
        LEFT JOIN corpora c ON c.corpus_id = e.corpus_id
        WHERE r.run_id = ?
        ORDER BY coalesce(r.audio_s, u.duration_s, 0) DESC, coalesce(json_array_length(u.segments), 0) DESC, r.utt_id
        LIMIT 1""", [normalizer, run_id])
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def _cached_timing(rec: Mapping[str, Any], normalizer: str) -> ReferenceTiming | None:
    """The recording's forced-alignment timing from ``asr_eval.streaming.timing``'s per-corpus
    cache (``<corpus>/timing/*.json``), matched by the aligner key its scores name and the
    normalizer; None when the module, the cache or the recording is not there. Never aligns
    anything itself (that needs the alignment model)."""
    try:
        from asr_eval.streaming.timing import TIMING_DIR, method_aligner
    except ImportError:
        return None
    key = method_aligner(rec.get("timing_method"))
    if key is None or not rec.get("path"):
        return None
    from asr_eval.corpus_handle import derived_cache_dir

    folder = derived_cache_dir(rec["path"]) / TIMING_DIR
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
            if doc.get("aligner") != key or doc.get("profile") != normalizer:
                continue
            got = doc.get("timings", {}).get(rec["utt_id"])
            if got is not None:
                return ReferenceTiming(**got)
        except (OSError, ValueError, TypeError):
            continue
    return None


def _uniform(segs: list[list], dur: float, text: str, normalizer: str) -> ReferenceTiming:
    """The declared fallback, through ``asr_eval.streaming.timing`` when present (the scorer's own
    path), else ``metrics.uniform_reference`` (the same even spreading)."""
    try:
        from asr_eval.streaming.timing import reference_timing
    except ImportError:
        from asr_eval.streaming.metrics import uniform_reference

        return uniform_reference(segs, normalizer)
    return reference_timing(None, segs, dur, normalizer, None, text=text)


def reference_times(rec: Mapping[str, Any], ems: Sequence[Emission], normalizer: str,
                    timing: Any = None) -> tuple[str, list[float], list[tuple[float, float]], str, list[bool]]:
    """(reference characters, their end times, segments (s), source, matched flags) of one recording.

    In order: ``timing`` (a ``streaming.store.TimingSource``) when given (``"given"``); for a
    recording scored with the uniform fallback, the same even spreading over its segments (the
    whole recording as one segment when it has none) — exactly the times its latencies used
    (``"uniform"``); for one scored with forced-alignment times, those times from the timing
    cache beside the corpus (``"cache"``), else recovered from the store — a matched character
    ends at its emission time minus its stored latency, the characters between matched ones
    spread evenly between their neighbours (``"stored"``) — else the uniform times, flagged
    (``"uniform-mismatch"``)."""
    from asr_eval.streaming.metrics import committed_units, matched

    dur = float(rec.get("audio_s") or rec.get("duration_s") or 0.0)
    segs = json.loads(rec["segments"]) if rec.get("segments") else None
    segs = [list(x) for x in segs] if segs else [[0.0, dur, rec.get("text") or ""]]
    spans = [(float(x[0]), float(x[1])) for x in segs]
    method = rec.get("timing_method") or ""
    ref, source = None, "uniform"
    if timing is not None:
        got = timing(rec.get("path"), rec.get("split"), normalizer)
        ref = got.get(rec["utt_id"]) if got else None
        source = "given" if ref is not None else source
    if ref is None and method and method != "uniform":
        ref = _cached_timing(rec, normalizer)
        source = "cache" if ref is not None else source
    if ref is None:
        ref = _uniform(segs, dur, rec.get("text") or "", normalizer)
    hyp, times = committed_units(ems, "unaware", normalizer)
    pairs = matched(ref.chars, hyp)
    is_matched = [False] * len(ref.chars)
    for i, _ in pairs:
        is_matched[i] = True
    ends = list(ref.end_s)
    if source == "uniform" and method and method != "uniform":
        lat = json.loads(rec.get("latency_unaware") or "[]")
        if len(lat) == len(pairs) and rec.get("n_ref_chars") in (None, len(ref.chars)):
            known = {i: times[j] - v for (i, j), v in zip(pairs, lat, strict=True)}
            ends = _fill(known, ref.end_s)
            source = "stored"
        else:
            source = "uniform-mismatch"
    return ref.chars, ends, spans, source, is_matched


def _fill(known: Mapping[int, float], fallback: Sequence[float]) -> list[float]:
    """End times: the known ones; between two known, spread evenly; before the first / after the
    last known, the fallback's spacing shifted to meet it."""
    n = len(fallback)
    out = list(fallback)
    ks = sorted(known)
    for i in ks:
        out[i] = known[i]
    if not ks:
        return out
    for a, b in pairwise(ks):
        for i in range(a + 1, b):
            out[i] = known[a] + (known[b] - known[a]) * (i - a) / (b - a)
    for i in range(ks[0]):
        out[i] = known[ks[0]] - (fallback[ks[0]] - fallback[i])
    for i in range(ks[-1] + 1, n):
        out[i] = known[ks[-1]] + (fallback[i] - fallback[ks[-1]])
    return out


def _lanes(spans: Sequence[tuple[float, float]], gap: float, max_lanes: int) -> list[int]:
    """Greedy row assignment of [left, right] pixel spans (in order) so that no two overlap,
    with at most ``max_lanes`` rows (then the row that frees first is reused)."""
    ends: list[float] = []
    out = []
    for a, b in spans:
        lane = next((k for k, e in enumerate(ends) if e + gap <= a), None)
        if lane is None and len(ends) < max_lanes:
            lane = len(ends)
            ends.append(b)
        elif lane is None:
            lane = min(range(len(ends)), key=ends.__getitem__)
        ends[lane] = b
        out.append(lane)
    return out


def timeline(con: duckdb.DuckDBPyConnection, run: Mapping[str, Any], normalizer: str, timing: Any = None,
             max_s: float = TIMELINE_MAX_S, px_per_s: float = PX_PER_S) -> Timeline | None:
    rec = _pick_recording(con, run["run_id"], normalizer)
    if rec is None:
        return None
    ems = stored_logs(con, run["run_id"], rec["utt_id"]).get(rec["utt_id"], [])
    ref_chars, ends, spans, source, is_matched = reference_times(rec, ems, normalizer, timing)
    dur = float(rec["audio_s"] or rec["duration_s"] or max((e.emit_s for e in ems), default=0.0))
    shown = min(dur, max_s)

    def sx(t: float) -> float:
        return round(TL_LEFT + max(t, 0.0) * px_per_s, 1)

    # reference characters: up to three rows so that neighbours never overlap
    ref_idx = [i for i, t in enumerate(ends) if t <= shown + 1e-9]
    ref_lane = _lanes([(sx(ends[i]) - text_width(ref_chars[i], TL_FONT), sx(ends[i])) for i in ref_idx], 1.0, 3)
    n_ref_lanes = max(ref_lane, default=0) + 1
    ref_top = 40.0
    row_h = TL_FONT + 7
    chars_out = [TlChar(sx(ends[i]), ref_top + row_h * lane, ref_chars[i], round(ends[i], 3), is_matched[i])
                 for i, lane in zip(ref_idx, ref_lane, strict=True)]
    # emissions: committed increment ends at the emission time, the tentative tail follows it
    drawn = [(k, e) for k, e in enumerate(ems) if e.emit_s <= shown + 1e-9 and (e.text.strip() or e.tentative.strip())]

    def tent(e: Emission) -> str:
        t = e.tentative.strip()
        return t if len(t) <= MAX_TENTATIVE else t[:MAX_TENTATIVE] + "…"

    em_spans = [(sx(e.emit_s) - text_width(e.text.strip(), TL_FONT), sx(e.emit_s) + 4 + text_width(tent(e), TL_FONT))
                for _, e in drawn]
    em_lane = _lanes(em_spans, 6.0, MAX_LANES)
    em_top = ref_top + row_h * n_ref_lanes + 30
    emissions = [TlEmission(sx(e.emit_s), em_top + row_h * lane, e.text.strip(), tent(e), e.tentative, round(e.emit_s, 3),
                            round(e.emit_aware_s, 3), e.final, k)
                 for (k, e), lane in zip(drawn, em_lane, strict=True)]
    axis_y = em_top + row_h * (max(em_lane, default=0) + 1) + 6
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60) if s * px_per_s >= 50)
    ticks = [Tick(sx(t), f"{t:g}") for t in (k * step for k in range(int(shown // step) + 1))]
    width = int(sx(shown) + 6 + max((b - sx(shown) for _, b in em_spans), default=0.0) + 10)
    return Timeline(run["run_id"], run["label"], rec["utt_id"], dur, shown, max(width, 200), int(axis_y + 34),
                    ref_top, ref_top + row_h * (n_ref_lanes - 1) + 8, em_top, axis_y, ticks, [(sx(a), sx(min(b, shown))) for a, b in spans if a <= shown],
                    chars_out, emissions, rec.get("timing_method") or "", source, len(ems), len(spans))


# ───────────────────────────── the section ─────────────────────────────


def stream_view(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], normalizer: str,
                colors: Mapping[str, str] | None = None, timing: Any = None,
                max_slice_values: int = 30) -> StreamView | None:
    """The report's streaming section for the streaming runs among ``run_ids`` (module docstring);
    ``colors``: run_id → the report's colour of that run; ``timing``: an optional
    ``streaming.store.TimingSource`` for the timeline's reference times. None when there is
    nothing to show."""
    if not run_ids or not _has_stream_tables(con):
        return None
    from asr_eval.streaming.store import stream_run_ids

    stream_ids = stream_run_ids(con, list(run_ids))
    if not stream_ids:
        return None
    rows, offline, unscored = _summary(con, stream_ids, normalizer, dict(colors or {}))
    labels = run_labels(con, unscored) if unscored else {}
    plots = [tradeoff_plot(rows, offline, c) for c in CLOCKS] if rows else []
    return StreamView(runs=rows, offline=offline, plots=plots, slices=_slices(con, rows, normalizer, max_slice_values),
                      timeline=timeline(con, rows[0], normalizer, timing) if rows else None,
                      unscored=[(u, labels.get(u, u)) for u in unscored], normalizer=normalizer)


__all__ = ["StreamView", "Timeline", "TradeoffPlot", "reference_times", "secs", "secs_ci", "stream_view",
           "timeline", "tradeoff_plot"]
