"""Chart geometry for inline SVG: pure functions from numbers to coordinates.

No markup is produced here — the Jinja macros in ``templates/_charts.html.j2`` draw these objects,
so every label passes through the template's autoescaping like any other text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

SEVERITY_COLORS = {"critical": "#dc2626", "regression": "#ea580c", "warning": "#ca8a04", "info": "#64748b"}
OP_COLORS = {"S": "#f59e0b", "D": "#ef4444", "I": "#3b82f6"}


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class SeriesSpec:
    """Input: one curve. lo/hi (optional) draw a min–max band behind it."""

    name: str
    color: str
    xs: Sequence[float]
    ys: Sequence[float]
    dashed: bool = False
    lo: Sequence[float] = ()
    hi: Sequence[float] = ()


@dataclass(frozen=True)
class Marker:
    """A vertical marker (an alert, a non-finite value): x in data units on input, in pixels in a LinePlot."""

    x: float
    label: str
    color: str


@dataclass(frozen=True)
class PlotLine:
    name: str
    color: str
    d: str
    dashed: bool
    dots: tuple[tuple[float, float], ...]
    band: str = ""


@dataclass(frozen=True)
class LinePlot:
    title: str
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    lines: list[PlotLine]
    markers: list[Marker]
    flags: list[Marker]  # non-finite values, drawn on the top edge
    log_y: bool
    x_label: str
    empty: str = ""


def fmt_num(v: float) -> str:
    """Short axis label: 0.5, 12, 1.5k, 2M."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        lo, hi = (lo - 0.5, hi + 0.5) if lo == 0 else (lo - abs(lo) * 0.1, hi + abs(hi) * 0.1)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * mag) <= n)
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(start, stop + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if b == a:
        b += 1
    mult = (1, 2, 5) if b - a <= 2 else (1,)
    return [m * 10 ** e for e in range(a, b + 1) for m in mult if lo / 10 <= m * 10 ** e <= hi * 10][: 3 * (b - a) + 1]


def want_log(values: Sequence[float], ratio: float = 100.0) -> bool:
    """Log scale when positive values span more than ``ratio`` (a loss spike or exploding grad norm)."""
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return len(pos) > 1 and max(pos) / min(pos) > ratio


def line_plot(title: str, series: Sequence[SeriesSpec], markers: Sequence[Marker] = (),
              flags: Sequence[Marker] = (), log_y: bool | None = None, x_label: str = "step",
              y_floor_zero: bool = True, width: int = 560, height: int = 240,
              empty: str = "no data") -> LinePlot:
    """Lay out curves on shared axes; markers and flags share the x scale."""
    left, top, right, bottom = 56.0, 26.0, width - 14.0, height - 34.0
    pts = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=True) if math.isfinite(y)]
    if not pts:
        return LinePlot(title, width, height, left, top, right, bottom, [], [], [], [], [], False, x_label, empty)
    all_y = [y for _, y in pts] + [v for s in series for v in (*s.lo, *s.hi) if math.isfinite(v)]
    log = want_log(all_y) if log_y is None else log_y
    if log:
        all_y = [y for y in all_y if y > 0]
        log = bool(all_y)
    xs = [x for x, _ in pts] + [m.x for m in (*markers, *flags)]
    x_ticks = nice_ticks(min(xs), max(xs), 6)
    x0, x1 = x_ticks[0], x_ticks[-1]
    if log:
        y_ticks = _log_ticks(min(all_y), max(all_y))
        y0, y1 = math.log10(y_ticks[0]), math.log10(y_ticks[-1])
    else:
        y_ticks = nice_ticks(min(0.0, min(all_y)) if y_floor_zero else min(all_y), max(all_y), 5)
        y0, y1 = y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * (right - left)

    def sy(y: float) -> float:
        v = math.log10(y) if log else y
        return bottom - (v - y0) / ((y1 - y0) or 1) * (bottom - top)

    def ok(y: float) -> bool:
        return math.isfinite(y) and (y > 0 or not log)

    lines = []
    for s in series:
        xy = [(round(sx(x), 1), round(sy(y), 1)) for x, y in zip(s.xs, s.ys, strict=True) if ok(y)]
        if not xy:
            continue
        band = ""
        if s.lo and s.hi:
            upper = [(round(sx(x), 1), round(sy(h), 1)) for x, h in zip(s.xs, s.hi, strict=True) if ok(h)]
            lower = [(round(sx(x), 1), round(sy(lo), 1)) for x, lo in zip(s.xs, s.lo, strict=True) if ok(lo)]
            if upper and lower:
                band = _path(upper + lower[::-1]) + " Z"
        lines.append(PlotLine(s.name, s.color, _path(xy), s.dashed, tuple(xy) if len(xy) <= 40 else (), band))
    return LinePlot(
        title=title, width=width, height=height, left=left, top=top, right=right, bottom=bottom,
        x_ticks=[Tick(round(sx(t), 1), fmt_num(t)) for t in x_ticks],
        y_ticks=[Tick(round(sy(t), 1), fmt_num(t)) for t in y_ticks],
        lines=lines, markers=[Marker(round(sx(m.x), 1), m.label, m.color) for m in markers],
        flags=[Marker(round(sx(m.x), 1), m.label, m.color) for m in flags], log_y=log, x_label=x_label)


def _path(xy: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{x},{y}" for x, y in xy)


# ───────────────────────────── interval (forest) plot ─────────────────────────────


@dataclass(frozen=True)
class CiItem:
    """Input: one estimate with its interval, in a group (a slice value) of rows (models)."""

    group: str
    label: str
    color: str
    value: float | None
    lo: float | None
    hi: float | None
    best: bool = False
    reliable: bool = True  # False: too little evidence — the point alone, marked †, never ★


@dataclass(frozen=True)
class CiRow:
    y: float
    group: str  # shown on the first row of each group only
    label: str
    color: str
    x: float | None
    x_lo: float | None
    x_hi: float | None
    text: str
    best: bool


@dataclass(frozen=True)
class CiPlot:
    title: str
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    x_ticks: list[Tick]
    rows: list[CiRow]
    separators: list[float] = field(default_factory=list)


def text_width(text: str, px: float = 12.0) -> float:
    """Rough rendered width: CJK and other wide characters are a full em, the rest ~0.58 em."""
    return sum(px if ord(c) >= 0x2E80 else 0.58 * px for c in text)


def clip(text: str, max_px: float, px: float = 12.0) -> str:
    """Cut ``text`` with an ellipsis so that it fits ``max_px``."""
    if text_width(text, px) <= max_px:
        return text
    while text and text_width(text + "…", px) > max_px:
        text = text[:-1]
    return text + "…"


def ci_plot(title: str, items: Sequence[CiItem], width: int = 760, row_h: float = 17.0) -> CiPlot:
    """Point + 95% interval per row, rates on a percent axis starting at 0; groups (slice values) label row blocks."""
    group_w = min(max((text_width(it.group) for it in items), default=0.0), 170.0)
    label_w = min(max((text_width(it.label) for it in items), default=0.0), 230.0)
    left, right, top = 8 + group_w + (14 if group_w else 0) + label_w + 8, width - 90.0, 24.0
    vals = [v for it in items for v in ((it.value, it.lo, it.hi) if it.reliable else (it.value,))
            if v is not None and math.isfinite(v)]
    ticks = nice_ticks(0.0, max(vals) if vals else 1.0, 5)
    x1 = ticks[-1] or 1.0

    def sx(v: float | None) -> float | None:
        return None if v is None or not math.isfinite(v) else round(left + v / x1 * (right - left), 1)

    rows, seps, y, prev = [], [], top + row_h / 2, None
    for it in items:
        if prev is not None and it.group != prev:
            seps.append(y - row_h / 2 + 2)
            y += 6
        text = "—" if it.value is None else f"{100 * it.value:.2f}%" + ("" if it.reliable else " †")
        lo, hi = (it.lo, it.hi) if it.reliable else (None, None)
        rows.append(CiRow(y, clip(it.group, group_w) if it.group != prev else "", clip(it.label, label_w), it.color,
                          sx(it.value), sx(lo), sx(hi), text, it.best and it.reliable))
        prev = it.group
        y += row_h
    bottom = y + 4
    return CiPlot(title, width, int(bottom + 28), left, right, top, bottom,
                  [Tick(sx(t) or left, f"{100 * t:g}%") for t in ticks], rows, seps)


# ───────────────────────────── stacked bars ─────────────────────────────


@dataclass(frozen=True)
class BarSeg:
    x: float
    w: float
    color: str
    name: str
    text: str


@dataclass(frozen=True)
class BarRow:
    y: float
    label: str
    segs: list[BarSeg]
    total: str


@dataclass(frozen=True)
class BarPlot:
    title: str
    width: int
    height: int
    left: float
    right: float
    x_ticks: list[Tick]
    rows: list[BarRow]
    legend: list[tuple[str, str]]
    bottom: float


def stacked_bars(title: str, rows_in: Sequence[tuple[str, Sequence[tuple[str, float]]]],
                 colors: dict[str, str], width: int = 760, row_h: float = 24.0,
                 reliable: Sequence[bool] | None = None) -> BarPlot:
    """Horizontal stacked bars of rates (fractions), one bar per label; segment order as given.
    ``reliable`` (one per row): a thin row's total is marked † (its rates are point estimates on
    too little data)."""
    left, right, top = 240.0, width - 80.0, 24.0
    totals = [sum(v for _, v in segs) for _, segs in rows_in]
    ticks = nice_ticks(0.0, max(totals, default=0.0) or 0.01, 5)
    x1 = ticks[-1] or 1.0
    scale = (right - left) / x1
    out = []
    for i, (label, segs) in enumerate(rows_in):
        x, parts = left, []
        for name, v in segs:
            parts.append(BarSeg(round(x, 1), round(v * scale, 1), colors[name], name, f"{name} {100 * v:.2f}%"))
            x += v * scale
        thin = reliable is not None and not reliable[i]
        out.append(BarRow(top + i * row_h, clip(label, left - 16), parts, f"{100 * totals[i]:.2f}%" + (" †" if thin else "")))
    bottom = top + len(rows_in) * row_h
    return BarPlot(title, width, int(bottom + 30), left, right, [Tick(round(left + t * scale, 1), f"{100 * t:g}%")
                                                              for t in ticks], out, list(colors.items()), bottom)
