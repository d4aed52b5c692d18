"""HTML for the web app, drawn with the report's own pieces: its Jinja environment and ``tokens``
macro (the coloured character diff), its worst-utterance view model (``report.build.worst_views``,
audio embedded as data URIs by ``report.audio``) and its stylesheet's rules for those elements —
so a diff in the app looks exactly like the same diff in the HTML report.

Everything user-supplied (transcripts, references, ids) goes through Jinja autoescaping or
``html.escape``.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from typing import Any

SCOPE = "asr-report"  # the report's rules apply inside <div class="asr-report"> only
# the report.css rules the app uses (diff tokens, worst-utterance cards, raw/normalized texts)
_KEEP = re.compile(r"^\.(diff|tok|utt|texts|flags)\b|^(code, \.mono|p\.lead, \.muted|\.pill|\.nodata)\b")
MAX_TOKENS = 400  # aligned characters drawn per diff (the report's default, ReportOptions.max_tokens)


@functools.cache
def _env():
    from asr_eval.report.build import _env as report_env

    return report_env()


@functools.cache
def css() -> str:
    """The report stylesheet's rules for diffs and utterance cards, scoped to ``.asr-report``, with
    the report's colour variables defined on that scope (not on :root, which is gradio's)."""
    from asr_eval.report.build import _static

    text = re.sub(r"/\*.*?\*/", "", _static("report.css"), flags=re.DOTALL)
    out = []
    for m in re.finditer(r"([^{}]+)\{([^{}]*)\}", text):
        sel, body = m.group(1).strip(), m.group(2).strip()
        if sel == ":root":
            out.append(f".{SCOPE} {{ {body} color: var(--fg); background: var(--card); border-radius: 8px; "
                       "padding: 6px 10px; }")
        elif _KEEP.search(sel):
            scoped = ", ".join(f".{SCOPE} {s.strip()}" for s in sel.split(","))
            out.append(f"{scoped} {{ {body} }}")
    out.append(f".{SCOPE} .live .tentative {{ color: #94a3b8; }}")
    out.append(f".{SCOPE} .live {{ font-size: 20px; line-height: 1.6; min-height: 2em; }}")
    out.append(f".{SCOPE} .err {{ color: #b91c1c; white-space: pre-wrap; }}")
    return "\n".join(out)


_DIFF = """{% import "_macros.html.j2" as m %}<div class="asr-report">
<span class="diff-legend muted">reference on top, hypothesis below:
<span class="tok S">substitution</span> <span class="tok D"><span class="r">deletion</span></span>
<span class="tok I"><span class="h">insertion</span></span></span>
{{ m.tokens(tokens, truncated) }}</div>"""


def diff_html(alignment: Sequence[tuple[str, str, str]], max_tokens: int = MAX_TOKENS) -> str:
    """The report's coloured character diff of one alignment (``UtteranceScore.alignment``)."""
    tokens = list(alignment)
    return _env().from_string(_DIFF).render(tokens=tokens[:max_tokens], truncated=max(0, len(tokens) - max_tokens))


def live_html(committed: str, tentative: str) -> str:
    """Committed text, then the tentative tail greyed (it may still change)."""
    if not committed and not tentative:
        return f'<div class="{SCOPE}"><div class="live muted">…</div></div>'
    return (f'<div class="{SCOPE}"><div class="live"><span class="committed">{html.escape(committed)}</span>'
            f'<span class="tentative">{html.escape(tentative)}</span></div></div>')


def message_html(text: str) -> str:
    return f'<div class="{SCOPE}"><p class="err">{html.escape(text)}</p></div>'


_WORST = """{% import "_macros.html.j2" as m %}<div class="asr-report">
{% if not utts %}{{ m.nodata("No scored utterances.") }}{% endif %}
<p class="muted">Reference on top, hypothesis below:
<span class="diff-legend"><span class="tok S">substitution</span> <span class="tok D"><span class="r">deletion</span></span>
<span class="tok I"><span class="h">insertion</span></span></span>{% if audio.missing %} · {{ audio.missing|length }} clip(s)
without audio{% endif %}</p>
{% for x in utts %}{% set u = x.u %}
<div class="utt" data-utt="{{ u.utt_id }}">
  <div class="head">
    <b>#{{ u.rank }}</b> <span class="mono">{{ u.utt_id }}</span>
    <span>CER <b>{{ u.cer|pct(1) }}</b></span>
    <span>{{ u.n }} ref chars · S {{ u.subs }} · D {{ u.dels }} · I {{ u.ins }}</span>
    {% if u.duration_s is not none %}<span>{{ "%.1f"|format(u.duration_s) }} s</span>{% endif %}
    {% if u.flags %}<span class="flags">{% for f in u.flags %}<span class="pill">{{ f|replace("_", " ") }}</span> {% endfor %}</span>{% endif %}
    {% if x.windows is none %}{% if x.audio %}<audio controls preload="none" src="{{ uris[x.audio] }}"></audio>
    {% else %}<span class="muted">no audio: {{ x.audio_missing or "not requested" }}</span>{% endif %}{% endif %}
  </div>
  {% if x.windows is not none %}
  {% for p in x.windows %}{% if p.window %}
  <div class="window"><span class="muted">{{ "%.1f"|format(p.t0) }}–{{ "%.1f"|format(p.t1) }} s ({{ p.window.n_errors }} errors)</span>
    {% if p.audio %}<audio controls preload="none" src="{{ uris[p.audio] }}"></audio>{% endif %}
    {{ m.tokens(p.tokens, 0) }}</div>
  {% elif p.omitted %}<p class="muted">… {{ p.omitted }} characters omitted ({{ p.omitted_errors }} errors) …</p>{% endif %}
  {% endfor %}
  {% elif x.tokens %}{{ m.tokens(x.tokens, x.truncated) }}{% endif %}
  <dl class="texts">
    <dt>reference (raw)</dt><dd>{{ u.ref_raw if u.ref_raw is not none else "—" }}</dd>
    <dt>hypothesis (raw)</dt><dd>{{ u.hyp_raw if u.hyp_raw is not none else "∅ (no output)" }}</dd>
    <dt>reference (normalized)</dt><dd>{{ u.ref_norm if u.ref_norm is not none else "—" }}</dd>
    <dt>hypothesis (normalized)</dt><dd>{{ u.hyp_norm if u.hyp_norm is not none else "—" }}</dd>
  </dl>
</div>
{% endfor %}</div>"""


def worst_html(per_run: dict[str, Any], audio: Any) -> str:
    """One run's worst utterances (``report.build.worst_views``'s per-run view) with playable audio."""
    return _env().from_string(_WORST).render(utts=per_run["utts"], audio=audio, uris=audio.uris)
