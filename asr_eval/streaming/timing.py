"""Reference timing for streaming latency: when each normalized reference character ends.

Streaming latency is *emission time − when the character ends in the audio*
(``asr_eval.streaming.metrics``), so every normalized reference character (a CER unit:
``get_profile(profile).normalize_many`` then ``align.chars``) needs an end time.

**Forced alignment** (``ct2_aligner``): CTranslate2's ``Whisper.align`` — the cross-attention of
the model's alignment heads, median-filtered, followed by dynamic time warping (DTW) over the
tokens of a known text — the method faster-whisper uses for word timestamps. The decoder input
is ``<|startoftranscript|><|zh|><|transcribe|><|notimestamps|>`` + the text's tokens +
``<|endoftext|>``. The DTW path visits every token; a token *starts* at the first 20 ms encoder
frame of its row and *ends* where the next token (for the last one: ``<|endoftext|>``, which
absorbs the trailing silence) starts. The first token's start is not observable this way (the
path must begin at frame 0, so the first row also absorbs the leading silence): it is estimated
as its end minus the median duration of the other tokens (measured on the long-form demo set:
median error 0.05 s against the speech onset, ``bench/bench_alignment.py``).

Tokens are byte-level BPE: a Chinese character may span several tokens and one token may hold
several characters. Characters map to tokens through UTF-8 byte offsets: a character starts
when the token holding its first byte starts and ends when the token holding its last byte ends.

**Per segment** (``align_segments``): each reference segment ``[start, end, text]`` is aligned
on its own in the window [start − margin, end + margin] (clipped to the recording), which must
be ≤ 30 s. ``reference_timing`` then clamps the character times into the segment (its times are
known), makes them non-decreasing, and falls back to ``uniform_reference``'s even spreading for
a segment that cannot be aligned (window > 30 s, empty text, no aligner). ``corpus_timing``
computes every recording of a corpus once and caches the result as JSON beside its shards.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from asr_eval.errors import AsrEvalError
from asr_eval.metrics.align import chars
from asr_eval.streaming.metrics import ReferenceTiming, uniform_reference
from asr_eval.text import DEFAULT_PROFILE, get_profile

SR = 16_000
HOP = 160  # samples per log-mel frame; the encoder halves the frame rate
FRAME_S = 2 * HOP / SR  # 20 ms per encoder position (an alignment time index)
MAX_WINDOW_S = 30.0
CACHE_VERSION = 1
TIMING_DIR = "timing"


class AlignmentError(AsrEvalError):
    """A text that this aligner cannot align in this window (the segment falls back to uniform)."""


class Aligner(Protocol):
    """Forced aligner: ``align(audio, text)`` gives (start_s, end_s) of every character of
    ``text`` relative to the start of ``audio`` (16 kHz mono, ≤ 30 s). ``key`` names the model and
    method (cache key and provenance: ``ReferenceTiming.method``)."""

    key: str

    def align(self, audio: np.ndarray, text: str) -> list[tuple[float, float]]: ...


# ───────────── tokens → characters ─────────────


@functools.cache
def _byte_of_symbol() -> dict[str, int]:
    """Inverse of the GPT-2 byte-level alphabet (every byte shown as one printable character)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + k): b for k, b in enumerate(extra)})
    return table


def token_bytes(symbols: Sequence[str]) -> list[bytes]:
    """The raw bytes of byte-level BPE tokens given as vocabulary strings (``'Ġhello'`` → b' hello')."""
    table = _byte_of_symbol()
    try:
        return [bytes(table[c] for c in s) for s in symbols]
    except KeyError as e:
        raise AlignmentError(f"token {e.args[0]!r} is not a byte-level BPE symbol") from None


def char_token_spans(text: str, pieces: Sequence[bytes]) -> list[tuple[int, int]]:
    """For each character of ``text``: (index of the token holding its first UTF-8 byte, index
    of the token holding its last byte). ``pieces`` must concatenate to ``text.encode()``."""
    data = text.encode("utf-8")
    if b"".join(pieces) != data:
        raise AlignmentError(f"the tokens spell {b''.join(pieces)!r}, not the text {text!r}")
    owner = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
    spans, pos = [], 0
    for c in text:
        n = len(c.encode("utf-8"))
        spans.append((int(owner[pos]), int(owner[pos + n - 1])))
        pos += n
    return spans


def token_times(path: Sequence[tuple[int, int]], n_tokens: int) -> list[tuple[float, float]]:
    """(start_s, end_s) of each of ``n_tokens`` text tokens from a DTW path of (text index,
    time index) pairs whose rows are the tokens then ``<|endoftext|>`` (row ``n_tokens``).
    A token starts at its row's first frame and ends where the next row starts; the first
    token's start is estimated as its end minus the median duration of the other tokens."""
    if n_tokens == 0:
        return []
    rows = np.array([p[0] for p in path], dtype=np.int64)
    frames = np.array([p[1] for p in path], dtype=np.int64)
    if rows.size == 0 or not np.all(np.diff(rows) >= 0) or set(np.unique(rows)) != set(range(n_tokens + 1)):
        raise AlignmentError(f"the alignment path does not visit the {n_tokens} tokens and <|endoftext|> in order")
    first = frames[np.searchsorted(rows, np.arange(n_tokens + 1))] * FRAME_S
    starts, ends = first[:-1].copy(), first[1:]
    if n_tokens > 1:
        starts[0] = max(starts[0], ends[0] - float(np.median(ends[1:] - starts[1:])))
    return [(float(a), float(b)) for a, b in zip(starts, ends)]


def char_times(text: str, pieces: Sequence[bytes], times: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(start_s, end_s) of every character of ``text`` from its tokens' times (``char_token_spans``)."""
    return [(times[i][0], times[j][1]) for i, j in char_token_spans(text, pieces)]


# ───────────── the CTranslate2 aligner ─────────────


class CT2Aligner:
    """``ctranslate2.models.Whisper.align`` on one ≤ 30 s window at a time (module docstring)."""

    def __init__(self, files: Any, compute_type: str = "float32", threads: int = 0,
                 preprocessing: str = "pad-features", median_filter_width: int = 7):
        import ctranslate2

        from asr_eval.engines.preprocessing import check_mode
        from asr_eval.models.convert import ct2_folder

        check_mode(preprocessing)
        self.files, self.preprocessing, self.median_filter_width = files, preprocessing, median_filter_width
        self.folder = ct2_folder(files, compute_type)
        self.threads = threads or len(os.sched_getaffinity(0))
        self.model = ctranslate2.models.Whisper(str(self.folder), device="cpu", compute_type=compute_type,
                                                intra_threads=self.threads)
        self.tokenizer = files.processor.tokenizer
        # CTranslate2 appends <|notimestamps|> to this start sequence itself
        self.start = self.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|zh|>", "<|transcribe|>"])
        self.max_tokens = int(files.config.max_target_positions) - len(self.start) - 2
        self.key = (f"ct2-align:{files.model_id}:{compute_type}:{preprocessing}:mf{median_filter_width}"
                    f":ct2-{ctranslate2.__version__}")

    def align(self, audio: np.ndarray, text: str) -> list[tuple[float, float]]:
        import ctranslate2

        from asr_eval.engines.preprocessing import preprocess

        if len(audio) > MAX_WINDOW_S * SR:
            raise AlignmentError(f"window of {len(audio) / SR:.1f} s; Whisper aligns at most {MAX_WINDOW_S:.0f} s")
        if not text:
            return []
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > self.max_tokens:
            raise AlignmentError(f"{len(ids)} tokens; the decoder holds at most {self.max_tokens}")
        pieces = token_bytes(self.tokenizer.convert_ids_to_tokens(ids))
        feats = preprocess(self.files.processor.feature_extractor, [audio], self.preprocessing).numpy()
        num_frames = len(audio) // HOP
        if num_frames < 2:
            raise AlignmentError("window shorter than one encoder frame")
        res = self.model.align(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)),
                               self.start, [ids], [num_frames], median_filter_width=self.median_filter_width)[0]
        return char_times(text, pieces, token_times(res.alignments, len(ids)))


@functools.cache
def ct2_aligner(model: str = "bundled:whisper-base", compute_type: str = "float32", threads: int = 0,
                preprocessing: str = "pad-features") -> CT2Aligner:
    """The forced aligner of ``model`` (any name ``open_model`` takes), converted to CTranslate2
    through the engines' conversion cache; loaded once per process and arguments."""
    from asr_eval.models.loading import open_model

    return CT2Aligner(open_model(model), compute_type, threads, preprocessing)


# ───────────── segments → reference timing ─────────────


@dataclass(frozen=True)
class SegmentAlignment:
    """One reference segment and its alignment. ``starts_s``/``ends_s``: per normalized reference
    character, seconds from the recording's start, *unclamped*; None when the segment was not
    aligned (``fallback`` then says why)."""

    start_s: float
    end_s: float
    chars: str
    window: tuple[float, float] | None = None
    starts_s: list[float] | None = None
    ends_s: list[float] | None = None
    fallback: str = ""

    @property
    def aligned(self) -> bool:
        return self.starts_s is not None

    @property
    def first_start_s(self) -> float | None:
        return self.starts_s[0] if self.starts_s else None

    @property
    def last_end_s(self) -> float | None:
        return self.ends_s[-1] if self.ends_s else None


def _segment_list(segments: Sequence[Any] | None, duration_s: float, text: str | None) -> list[list]:
    """``[[start, end, text], ...]`` from lists or shard dicts; None/empty: one whole-recording segment."""
    if not segments:
        return [[0.0, float(duration_s), text or ""]]
    out = []
    for s in segments:
        a, b, t = (s["start"], s["end"], s["text"]) if isinstance(s, Mapping) else s
        out.append([float(a), float(b), "" if t is None else str(t)])
    return out


def align_segments(audio: np.ndarray | None, segments: Sequence[Any] | None, aligner: Aligner | None,
                   margin_s: float = 0.5, profile: str = DEFAULT_PROFILE, duration_s: float | None = None,
                   text: str | None = None) -> list[SegmentAlignment]:
    """Align each segment's normalized text in [start − margin_s, end + margin_s] (clipped to the
    recording). Segments that cannot be aligned come back with ``fallback`` set."""
    audio_s = len(audio) / SR if audio is not None else None
    dur = float(duration_s if duration_s is not None else audio_s or 0.0)
    segs = _segment_list(segments, dur, text)
    if audio_s is not None:
        dur = min(dur, audio_s)  # windows end where the samples do
    norms = get_profile(profile).normalize_many([s[2] for s in segs])
    out: list[SegmentAlignment] = []
    for (a, b, _), norm in zip(segs, norms):
        units = chars(norm)
        w0, w1 = max(0.0, a - margin_s), min(dur, b + margin_s)
        why = ("no aligner" if aligner is None or audio is None else "empty text" if not units
               else f"window of {w1 - w0:.1f} s > {MAX_WINDOW_S:.0f} s" if w1 - w0 > MAX_WINDOW_S
               else "empty window" if w1 <= w0 else "")
        if not why and aligner is not None and audio is not None:
            try:
                times = aligner.align(audio[round(w0 * SR):round(w1 * SR)], norm)
            except AlignmentError as e:
                why = str(e)
            else:
                kept = [t for c, t in zip(norm, times) if not c.isspace()]
                if len(times) != len(norm) or len(kept) != len(units):
                    raise AsrEvalError(f"aligner {aligner.key} gave {len(times)} times for {len(norm)} characters")
                out.append(SegmentAlignment(a, b, units, (w0, w1), [w0 + s for s, _ in kept], [w0 + e for _, e in kept]))
                continue
        out.append(SegmentAlignment(a, b, units, None, fallback=why))
    return out


def timing_from_alignments(alignments: Sequence[SegmentAlignment], key: str = "") -> ReferenceTiming:
    """ReferenceTiming of aligned segments: character ends clamped into their segment and made
    non-decreasing, onset = the first character's clamped start; unaligned segments spread their
    characters evenly (``uniform_reference``)."""
    out_c: list[str] = []
    ends: list[float] = []
    seg: list[int] = []
    onsets: list[float] = []
    for k, s in enumerate(alignments):
        if s.end_s < s.start_s:
            raise AsrEvalError(f"reference segment {k} ends ({s.end_s}) before it starts ({s.start_s}); "
                               "fix the manifest's segments")
        if s.starts_s is not None and s.ends_s is not None:
            e = np.maximum.accumulate(np.clip(s.ends_s, s.start_s, s.end_s))
            ends += [float(v) for v in e]
            onsets.append(float(np.clip(s.starts_s[0], s.start_s, s.end_s)))
        else:
            u = uniform_reference([[s.start_s, s.end_s, s.chars]], "none")
            ends += u.end_s
            onsets.append(s.start_s)
        out_c.append(s.chars)
        seg += [k] * len(s.chars)
    k = sum(s.aligned for s in alignments)
    n = len(alignments)
    method = ("uniform" if k == 0 else f"aligned:{key}" if k == n else f"mixed:{key} ({k}/{n} aligned)")
    return ReferenceTiming("".join(out_c), ends, seg, onsets, method)


_METHOD = re.compile(r"^(?:aligned|mixed):(?P<key>.*?)(?: \(\d+/\d+ aligned\))?$")
_CT2_KEY = re.compile(r"^ct2-align:(?P<model>.+)@[0-9a-f]{12}:")


def method_aligner(method: str | None) -> str | None:
    """The aligner key inside a timing method written by ``timing_from_alignments``
    (``aligned:<key>`` / ``mixed:<key> (k/n aligned)``); None for ``uniform`` or anything else."""
    m = _METHOD.match(method or "")
    return m["key"] if m else None


def aligner_model(key: str | None) -> str | None:
    """The model name a ``CT2Aligner.key`` was made with (``ct2-align:<model id>:…``, model id =
    name@revision); None when the key is not one of ours."""
    m = _CT2_KEY.match(key or "")
    return m["model"] if m else None


def reference_timing(audio: np.ndarray | None, segments: Sequence[Any] | None, duration_s: float,
                     profile: str = DEFAULT_PROFILE, aligner: Aligner | None = None, margin_s: float = 0.5,
                     text: str | None = None) -> ReferenceTiming:
    """Reference timing of one recording from its segments ``[[start, end, text], ...]`` (None or
    empty: one segment [0, duration_s, ``text``]). ``method``: ``aligned:<key>`` when every segment
    was aligned, ``uniform`` when none was, else ``mixed:<key> (k/n aligned)``."""
    al = align_segments(audio, segments, aligner, margin_s, profile, duration_s, text)
    return timing_from_alignments(al, aligner.key if aligner is not None else "")


# ───────────── per-corpus cache ─────────────


def timing_cache_path(corpus_dir: str | Path, profile: str = DEFAULT_PROFILE, aligner: Aligner | None = None,
                      margin_s: float = 0.5) -> Path:
    """``<corpus>/timing/<hash>.json``: one file per (aligner, profile and its rules, corpus id, margin)."""
    from asr_eval.corpus_handle import open_corpus
    from asr_eval.provenance import stable_hash

    corpus, prof = open_corpus(corpus_dir), get_profile(profile)
    key = {"v": CACHE_VERSION, "aligner": aligner.key if aligner is not None else "uniform",
           "profile": prof.name, "rules_hash": prof.rules_hash, "corpus_id": corpus.corpus_id, "margin_s": margin_s}
    return corpus.cache_dir / TIMING_DIR / f"{stable_hash(key)}.json"


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def corpus_timing(corpus_dir: str | Path, split: str | None = None, profile: str = DEFAULT_PROFILE,
                  aligner: Aligner | None = None, margin_s: float = 0.5, progress: bool = True,
                  ) -> dict[str, ReferenceTiming]:
    """Reference timing of every recording of ``split`` (None or 'all': every split; 'auto':
    test if any), computed once and cached (``timing_cache_path``; recordings missing from the
    cache are computed and added, the file is replaced atomically)."""
    from asr_eval.audio import decode_flac
    from asr_eval.corpus_handle import open_corpus
    from asr_eval.progress import Progress

    corpus = open_corpus(corpus_dir)
    split = corpus.resolve_split(split)
    path = timing_cache_path(corpus, profile, aligner, margin_s)
    cached = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    stored: dict[str, dict] = dict(cached.get("timings", {}))
    out: dict[str, ReferenceTiming] = {}
    shards = corpus.shards_for(split)
    cols = ["utt_id", "split", "duration_s", "text", "segments"] + (["audio"] if aligner is not None else [])
    todo = 0
    for sh in shards:
        ids = [r["utt_id"] for r in corpus.iter_rows(sh, split, ["utt_id", "split"])]
        todo += sum(i not in stored for i in ids)
        out.update({i: ReferenceTiming(**stored[i]) for i in ids if i in stored})
    if todo:
        label = f"reference timing ({aligner.key if aligner is not None else 'uniform'}) · {corpus.name}"
        with Progress(label, todo, "recordings", enabled=progress) as bar:
            for sh in shards:
                added = 0
                for row in corpus.iter_rows(sh, split, cols):
                    if row["utt_id"] in out:
                        continue
                    audio = decode_flac(row["audio"]) if aligner is not None and row.get("audio") else None
                    rt = reference_timing(audio, row.get("segments"), float(row["duration_s"] or 0.0), profile,
                                          aligner, margin_s, text=row.get("text"))
                    out[row["utt_id"]] = rt
                    stored[row["utt_id"]] = asdict(rt)
                    added += 1
                    bar.advance(1, audio_s=float(row["duration_s"] or 0.0))
                if added:  # per shard: an interrupted run keeps what it finished
                    _write_json(path, {"version": CACHE_VERSION, "aligner": aligner.key if aligner else "uniform",
                                       "profile": get_profile(profile).name, "corpus_id": corpus.corpus_id,
                                       "margin_s": margin_s, "timings": stored})
    return out
