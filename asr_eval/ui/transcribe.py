"""One model configuration on one recording — the scorer's own path, so the page shows exactly what
``asr-eval score`` stores for the same audio, model, engine, compute type, recipe, preprocessing
and long-form strategy.

The recording goes through ingest's per-item step (``shards.process_item``: decode → mono → 16 kHz →
validate → 16-bit FLAC; recordings over 30 s block by block, up to a cap), and the FLAC row through
``scoring.parts.transcribe_rows`` — the per-shard transcription loop of ``asr-eval score``: ≤ 30 s
through ``engine.transcribe`` (the engine-neutral driver), longer through the long-form strategy
with ``longform.short_transcriber``. The run spec comes from ``scoring.parts.expand_specs``, which
validates every axis before any model is loaded. CER and the diff come from
``metrics.score_pair`` under the chosen normalizer profile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from asr_eval.audio import MAX_DURATION_S, MIN_DURATION_S, REASON_FIX, Reason
from asr_eval.errors import AsrEvalError
from asr_eval.ui.models import BUNDLED_MODEL, EngineCache

MAX_UPLOAD_S = 600.0  # the app's cap on one recording (long-form strategies take it in 30 s pieces)
DEFAULT_STRATEGY = "vad"  # works on every engine; `sequential` needs transformers
UPLOAD_ID = "upload"
log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Config:
    """One column of the comparison: what ``asr-eval score --model … --engine …`` would be given."""

    model: str = BUNDLED_MODEL
    engine: str = "ctranslate2"
    compute_type: str = "auto"
    recipe: str = "greedy"
    preprocessing: str = "pad-audio"

    def label(self) -> str:
        from asr_eval.models.naming import display_name

        src = "ct2" if self.model.startswith("ct2:") else None
        return (f"{display_name(self.model, src)} · {self.engine} {self.compute_type} · {self.recipe}"
                f"{'' if self.preprocessing == 'pad-audio' else ' · ' + self.preprocessing}")

    def spec(self, strategy: str = DEFAULT_STRATEGY, device: str = "auto"):
        """The ``RunSpec`` ``asr-eval score`` builds for this configuration (checks every name)."""
        from asr_eval.scoring.parts import expand_specs

        if not (self.model or "").strip():
            raise AsrEvalError("no model chosen: pick one from the list, or type a checkpoint folder, ct2:FOLDER "
                               "or a Hugging Face hub id")
        (spec,) = expand_specs([self.model.strip()], self.engine, self.compute_type or "auto", self.preprocessing,
                               self.recipe, device, strategies=strategy or DEFAULT_STRATEGY)
        return spec


@dataclass(frozen=True)
class Clip:
    """A recording as ingest stores it: 16 kHz mono 16-bit FLAC."""

    flac: bytes
    duration_s: float
    source: str  # file name, for messages

    def row(self) -> dict:
        return {"utt_id": UPLOAD_ID, "audio": self.flac, "duration_s": self.duration_s}

    @property
    def long(self) -> bool:
        return self.duration_s > MAX_DURATION_S


def audio_message(reason: str, detail: str, source: str, max_s: float) -> str:
    """A page message for an audio item ingest would quarantine: what is wrong and what to do."""
    code = Reason(reason) if reason in {r.value for r in Reason} else None
    what = {
        Reason.UNREADABLE: "is not audio that can be decoded (WAV, FLAC, MP3, OGG/Opus): upload another file or "
                           "re-export it",
        Reason.TRUNCATED: "is cut short or corrupt: upload the complete file",
        Reason.ZERO_LENGTH: "holds no audio samples: record again or upload another file",
        Reason.NON_FINITE: "holds NaN/Inf samples: re-export it",
        Reason.SILENT: "is silent (peak below −80 dBFS): check the microphone or the file's channels",
        Reason.TOO_SHORT: f"is shorter than {MIN_DURATION_S} s: record something longer",
        Reason.TOO_LONG: f"is longer than this app's cap of {max_s:.0f} s: cut it, or start the app with a higher "
                         "--max-audio-s (or score it with `asr-eval ingest --long-form` + `asr-eval score --strategy`)",
    }.get(code) or REASON_FIX.get(code, "cannot be used")
    return f"the audio {source} {what} ({reason}: {detail})"


def load_clip(src: str | Path | bytes, max_s: float = MAX_UPLOAD_S, name: str | None = None) -> Clip:
    """Decode and check a recording exactly as ``asr-eval ingest --long-form`` would (the same
    function); an item ingest would quarantine is an AsrEvalError naming why and what to do."""
    from asr_eval.corpus.base import Utterance
    from asr_eval.shards import process_item

    if src is None or (isinstance(src, (str, Path)) and not str(src)):
        raise AsrEvalError("no audio: upload a file or record from the microphone first")
    is_bytes = isinstance(src, bytes | bytearray | memoryview)
    source = name or ("<upload>" if is_bytes else Path(src).name)
    u = Utterance(UPLOAD_ID, "", "ui", audio_bytes=bytes(src) if is_bytes else None,
                  audio_path=None if is_bytes else Path(src), source_path=source)
    got = process_item(u, MIN_DURATION_S, MAX_DURATION_S, keep_long=False, long_form=True, max_long_s=max_s)
    if isinstance(got, tuple):
        detail = got[1] if is_bytes else got[1].replace(str(src), source)  # not the upload's temp path
        raise AsrEvalError(audio_message(got[0], detail, source, max_s))
    return Clip(got["audio"], float(got["duration_s"]), source)


@dataclass
class Result:
    """One configuration's outcome on one recording (``error`` set instead when it failed)."""

    config: Config
    text: str = ""
    proc_s: float = 0.0  # preprocessing + decoding, as the store's proc_s (audio decoding excluded)
    wall_s: float = 0.0  # the whole request for this configuration, model loading included
    load_s: float = 0.0  # loading the engine (0: it was cached)
    audio_s: float = 0.0
    strategy: str = "short"  # the long-form strategy used ('short': the recording is ≤ 30 s)
    cer: float | None = None
    normalizer: str | None = None
    counts: tuple[int, int, int, int] | None = None  # reference chars, S, D, I
    alignment: list[tuple[str, str, str]] = field(default_factory=list)
    error: str | None = None

    @property
    def rtfx(self) -> float:
        return self.audio_s / self.proc_s if self.proc_s else 0.0

    def summary(self) -> str:
        """A Markdown line for the page."""
        if self.error:
            return f"**error:** {self.error}"
        how = f"long-form `{self.strategy}`" if self.strategy != "short" else "one 30 s window"
        parts = [(f"**{self.proc_s:.2f} s** processing · **RTFx {self.rtfx:.1f}** on {self.audio_s:.1f} s of audio "
                  f"({how})"),
                 f"model loaded in {self.load_s:.1f} s" if self.load_s else "model cached"]
        if self.cer is not None and self.counts is not None:
            n, s, d, i = self.counts
            parts.insert(0, f"**CER {100 * self.cer:.2f} %** ({self.normalizer}; {n} ref chars · S {s} · D {d} · I {i})")
        return " · ".join(parts)


def score_text(reference: str, hypothesis: str, normalizer: str):
    """``metrics.score_pair`` — the scorer's per-utterance scoring — of one pair."""
    from asr_eval.metrics import score_pair

    return score_pair(reference, hypothesis, normalizer)


def transcribe_clip(cache: EngineCache, config: Config, clip: Clip, strategy: str = DEFAULT_STRATEGY,
                    reference: str | None = None, normalizer: str = "zh-v1", device: str = "auto") -> Result:
    """Transcribe ``clip`` with ``config`` (engine from ``cache``); score it when a reference is
    given. Raises AsrEvalError for a user error (unknown model/engine/recipe, a strategy the
    engine cannot run, …)."""
    from asr_eval.scoring.parts import transcribe_rows

    t0 = time.perf_counter()
    spec = config.spec(strategy, device)
    engine, load_s = cache.get(spec.model, spec.engine, spec.compute_type, spec.device)
    bs = spec.batch_size or engine.suggest_batch_size(spec.recipe_obj)
    table, audio_s, proc_s = transcribe_rows(engine, [clip.row()], spec, bs)
    text = table.column("hyp_raw")[0].as_py() or ""
    res = Result(config, text, proc_s, time.perf_counter() - t0, load_s, audio_s,
                 spec.strategy if clip.long else "short")
    if reference and reference.strip():
        sc = score_text(reference, text, normalizer)
        res.cer, res.normalizer = sc.cer, normalizer
        res.counts, res.alignment = (sc.cer_n, sc.cer_s, sc.cer_d, sc.cer_i), sc.alignment
    return res


def compare(cache: EngineCache, configs: list[Config], src: str | Path | bytes | None, strategy: str = DEFAULT_STRATEGY,
            reference: str | None = None, normalizer: str = "zh-v1", device: str = "auto",
            max_s: float = MAX_UPLOAD_S, progress: Progress | None = None) -> list[Result]:
    """Every configuration on one recording. An audio problem raises (it concerns them all); a
    configuration's own error (say, an unknown model) is its result's ``error``, and the others
    still run."""
    from asr_eval.text import get_profile

    if not configs:
        raise AsrEvalError("no configuration enabled: tick at least one model configuration")
    if reference and reference.strip():
        get_profile(normalizer)  # an unknown profile fails before any inference
    say = progress or (lambda f, d: None)
    say(0.0, "decoding the audio")
    clip = load_clip(src, max_s) if not isinstance(src, Clip) else src
    out = []
    for k, cfg in enumerate(configs):
        say(k / len(configs), f"configuration {k + 1}/{len(configs)}: {cfg.label()}")
        try:
            out.append(transcribe_clip(cache, cfg, clip, strategy, reference, normalizer, device))
        except AsrEvalError as exc:
            out.append(Result(cfg, error=str(exc), audio_s=clip.duration_s))
        except Exception as exc:
            log.exception("configuration %s failed", cfg)
            out.append(Result(cfg, error=f"unexpected {type(exc).__name__}: {exc}", audio_s=clip.duration_s))
    say(1.0, "done")
    return out
