"""Audio: decode (soundfile) → mono → 16 kHz (soxr) → validate → 16-bit FLAC bytes.

Validation reasons are the stable codes stored in quarantine files (see ``Reason``).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

TARGET_SR = 16_000
MIN_DURATION_S = 0.1
MAX_DURATION_S = 30.0  # Whisper's input window
MAX_LONG_FORM_S = 4 * 3600.0  # cap of a long-form recording (``ingest --long-form``)
STREAM_BLOCK_S = 30.0  # source seconds decoded, resampled and FLAC-encoded per step (long-form)
SILENCE_PEAK = 1e-4  # ≈ −80 dBFS: below this everywhere the clip carries no speech


class Reason(StrEnum):
    """Why an item was kept out of the shards (the quarantine file's ``reason``)."""

    MISSING_FILE = "missing_file"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    ZERO_LENGTH = "zero_length"
    NON_FINITE = "non_finite"
    SILENT = "silent"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    EMPTY_TRANSCRIPT = "empty_transcript"
    DUPLICATE_ID = "duplicate_id"
    BAD_ENCODING = "bad_encoding"
    PATH_ESCAPE = "path_escape"
    BAD_ROW = "bad_row"
    UNSUPPORTED = "unsupported"


# What to do about each quarantine reason: the one table the ingest summary quotes when most
# items of a run were kept out for the same reason.
REASON_FIX: dict[Reason, str] = {
    Reason.MISSING_FILE: "the audio files are not where the source says: check the audio column, and that "
                         "relative paths are relative to the manifest's folder",
    Reason.UNREADABLE: "the files are not audio soundfile can decode (WAV, FLAC, MP3, OGG/Opus): re-export them",
    Reason.TRUNCATED: "the files are cut short: copy or download them again",
    Reason.ZERO_LENGTH: "the files hold no samples: check the source files",
    Reason.NON_FINITE: "the files hold NaN/Inf samples: re-export them",
    Reason.SILENT: "the clips are silent (peak below −80 dBFS): check the source files or their channel layout",
    Reason.TOO_SHORT: f"clips under {MIN_DURATION_S} s are kept out: check offsets/durations in the source",
    Reason.TOO_LONG: f"clips over {MAX_DURATION_S:.0f} s are kept out: pass --keep-long to keep them "
                     "(flagged 'too_long'), or segment them first",
    Reason.EMPTY_TRANSCRIPT: "the transcripts are empty: point --text-column at the transcript column",
    Reason.DUPLICATE_ID: "utterance ids repeat: pass --id-column naming a unique column "
                         "(the default id is the audio file's path without extension)",
    Reason.BAD_ENCODING: "the lines are not UTF-8: re-save the file as UTF-8",
    Reason.PATH_ESCAPE: "relative audio paths must stay inside the manifest's folder: write absolute paths, "
                        "or drop --confine-to-root to accept absolute paths elsewhere",
    Reason.BAD_ROW: "the rows are malformed (field count, JSON syntax, empty audio field): fix the lines "
                    "named in quarantine.jsonl",
    Reason.UNSUPPORTED: "wav.scp holds piped commands: materialise the audio into files first "
                        "(e.g. `wav-copy scp:wav.scp ark,scp:…`)",
}


def dominant_reason(by_reason: dict[str, int], n_items: int, share: float = 0.5) -> tuple[str, int, str] | None:
    """(reason, count, fix) when one reason kept out more than ``share`` of a run's items."""
    if not by_reason or n_items <= 0:
        return None
    reason, n = max(by_reason.items(), key=lambda kv: kv[1])
    if n <= share * n_items:
        return None
    fix = next((f for r, f in REASON_FIX.items() if r.value == reason), "see quarantine.jsonl")
    return reason, n, fix


class AudioError(Exception):
    """An audio item that cannot be used; ``reason`` is a ``Reason`` code."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Audio:
    """Decoded, validated audio at 16 kHz mono."""

    samples: np.ndarray  # float32, 1-D, in [-1, 1]
    source_sample_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / TARGET_SR


def _open(src: str | Path | bytes) -> sf.SoundFile:
    if isinstance(src, bytes | bytearray | memoryview):
        return sf.SoundFile(io.BytesIO(bytes(src)))
    return sf.SoundFile(str(src))


def decode(
    src: str | Path | bytes, offset_s: float = 0.0, duration_s: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode a file or in-memory bytes to float32 ``[frames, channels]`` and its sample rate.

    ``offset_s``/``duration_s`` cut a segment (Kaldi ``segments``, NeMo ``offset``).
    """
    is_bytes = isinstance(src, bytes | bytearray | memoryview)
    name = "<bytes>" if is_bytes else str(src)
    if not is_bytes and not Path(src).is_file():
        raise AudioError(Reason.MISSING_FILE, f"{src} does not exist")
    raw = bytes(src) if is_bytes else None
    try:
        with _open(src) as f:
            sr, declared, fmt = f.samplerate, f.frames, f.format
            start = int(round(offset_s * sr))
            if start:
                f.seek(min(start, max(declared, 0)))
            want = -1 if duration_s is None else int(round(duration_s * sr))
            data = f.read(frames=want, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError for bad streams
        msg = str(exc).strip()
        cut = any(k in msg.lower() for k in ("lost sync", "truncat", "end of file", "unexpected end"))
        raise AudioError(Reason.TRUNCATED if cut else Reason.UNREADABLE, f"{name}: {msg}") from exc
    _check_complete(src if not is_bytes else raw, fmt, declared, len(data) + start, sr, want, name)
    if duration_s is not None and start + want > declared:
        raise AudioError(
            Reason.TRUNCATED,
            f"{name}: segment {offset_s:.3f}+{duration_s:.3f}s runs past the end ({declared / sr:.3f}s)",
        )
    return data, sr


def _check_complete(src, fmt: str, declared: int, end: int, sr: int, want: int, name: str) -> None:
    """Detect a file cut short. libsndfile silently shrinks a truncated WAV's frame count, so
    WAV is checked against its RIFF ``data`` chunk size; MP3's Xing count is an estimate, so it
    gets a tolerance; a cut Ogg reports zero frames."""
    if fmt == "WAV":
        header_frames = _wav_header_frames(src)
        if header_frames is not None and header_frames > declared:
            raise AudioError(
                Reason.TRUNCATED,
                f"{name}: header declares {header_frames} frames, file holds {declared}",
            )
    elif fmt in ("MPEG", "MP3") and want < 0 and declared > 0 and end < 0.95 * declared:
        raise AudioError(Reason.TRUNCATED, f"{name}: expected ~{declared} frames, decoded {end}")
    elif fmt == "OGG" and declared == 0 and _size(src) > 4096:
        raise AudioError(Reason.TRUNCATED, f"{name}: Ogg stream with no decodable frames")


def _size(src) -> int:
    return len(src) if isinstance(src, bytes) else Path(src).stat().st_size


def _wav_header_frames(src) -> int | None:
    """Frames promised by a RIFF/WAVE header (``data`` size / block align), or None."""
    head = src[:1 << 16] if isinstance(src, bytes) else Path(src).open("rb").read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"fmt ":
            block_align = int.from_bytes(head[pos + 20:pos + 22], "little")
        elif cid == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):  # streaming writers leave 0/-1
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


def to_mono_16k(data: np.ndarray, sr: int) -> np.ndarray:
    """Downmix (mean of channels) and resample to 16 kHz with soxr (HQ)."""
    mono = data.mean(axis=1) if data.ndim == 2 else data
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sr != TARGET_SR and len(mono):
        mono = soxr.resample(mono, sr, TARGET_SR, quality="HQ").astype(np.float32, copy=False)
    return mono


def validate(samples: np.ndarray, min_s: float = MIN_DURATION_S, max_s: float | None = MAX_DURATION_S) -> None:
    """Raise ``AudioError`` for audio that would poison scoring or training."""
    if len(samples) == 0:
        raise AudioError(Reason.ZERO_LENGTH, "no samples")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(Reason.NON_FINITE, f"{bad} NaN/inf samples")
    dur = len(samples) / TARGET_SR
    if dur < min_s:
        raise AudioError(Reason.TOO_SHORT, f"{dur:.3f}s < {min_s}s")
    peak = float(np.abs(samples).max())
    if peak < SILENCE_PEAK:
        raise AudioError(Reason.SILENT, f"peak amplitude {peak:.2e} (all silent)")
    if max_s is not None and dur > max_s:
        raise AudioError(Reason.TOO_LONG, f"{dur:.2f}s > {max_s}s (Whisper's 30 s window)")


def load(src: str | Path | bytes, offset_s: float = 0.0, duration_s: float | None = None) -> Audio:
    """Decode → mono → 16 kHz, without validation."""
    data, sr = decode(src, offset_s, duration_s)
    return Audio(to_mono_16k(data, sr), sr, data.shape[1] if data.ndim == 2 else 1)


def encode_flac(samples: np.ndarray, sr: int = TARGET_SR) -> bytes:
    """16-bit FLAC bytes (lossless for 16-bit sources; ~2× smaller than WAV)."""
    buf = io.BytesIO()
    clipped = np.clip(samples, -1.0, 1.0)
    sf.write(buf, clipped, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: bytes) -> np.ndarray:
    """FLAC (or any soundfile format) bytes → float32 mono at the stored rate."""
    samples, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return samples if samples.ndim == 1 else samples.mean(axis=1).astype(np.float32)


@dataclass(frozen=True)
class Encoded:
    """A recording decoded, resampled and FLAC-encoded block by block (``encode_streaming``)."""

    flac: bytes
    n_samples: int  # at 16 kHz
    source_sample_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        return self.n_samples / TARGET_SR


def probe_duration(src: str | Path | bytes) -> float | None:
    """Duration from the header only (no decoding); None when the header does not say."""
    try:
        with _open(src) as f:
            return f.frames / f.samplerate if f.frames > 0 else None
    except Exception:
        return None


def encode_streaming(src: str | Path | bytes, offset_s: float = 0.0, duration_s: float | None = None,
                     min_s: float = MIN_DURATION_S, max_s: float | None = MAX_LONG_FORM_S,
                     block_s: float = STREAM_BLOCK_S) -> Encoded:
    """Decode → mono → 16 kHz → validate → 16-bit FLAC in blocks of ``block_s`` source seconds,
    so memory stays bounded by one block plus the FLAC bytes, whatever the recording's length
    (a 1 h source never exists as one float array). Same checks and reasons as
    ``load`` + ``validate``; soxr's streaming resampler gives the same HQ filter as ``to_mono_16k``."""
    is_bytes = isinstance(src, bytes | bytearray | memoryview)
    name = "<bytes>" if is_bytes else str(src)
    if not is_bytes and not Path(src).is_file():
        raise AudioError(Reason.MISSING_FILE, f"{src} does not exist")
    out = io.BytesIO()
    n_out = n_bad = 0
    peak = 0.0
    try:
        with _open(src) as f:
            sr, declared, fmt, channels = f.samplerate, f.frames, f.format, f.channels
            start = int(round(offset_s * sr))
            if start:
                f.seek(min(start, max(declared, 0)))
            want = -1 if duration_s is None else int(round(duration_s * sr))
            span = (declared - start) if want < 0 else want
            if max_s is not None and declared > 0 and span / sr > max_s:
                raise AudioError(Reason.TOO_LONG, f"{span / sr:.1f}s > {max_s:.0f}s (the long-form cap)")
            rs = soxr.ResampleStream(sr, TARGET_SR, 1, dtype="float32", quality="HQ") if sr != TARGET_SR else None
            block = max(1, int(block_s * sr))
            read = 0
            with sf.SoundFile(out, "w", TARGET_SR, 1, format="FLAC", subtype="PCM_16") as w:
                while want < 0 or read < want:
                    n = block if want < 0 else min(block, want - read)
                    data = f.read(frames=n, dtype="float32", always_2d=True)
                    last = len(data) < n or (want >= 0 and read + len(data) >= want)
                    read += len(data)
                    mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
                    if rs is not None:
                        mono = rs.resample_chunk(mono, last=last)
                    bad = ~np.isfinite(mono)
                    if bad.any():
                        n_bad += int(bad.sum())
                        mono = np.where(bad, 0.0, mono).astype(np.float32)
                    if len(mono):
                        peak = max(peak, float(np.abs(mono).max()))
                        w.write(np.clip(mono, -1.0, 1.0))
                        n_out += len(mono)
                    if max_s is not None and n_out / TARGET_SR > max_s:
                        raise AudioError(Reason.TOO_LONG, f"more than {max_s:.0f}s (the long-form cap)")
                    if last:
                        break
    except AudioError:
        raise
    except Exception as exc:
        msg = str(exc).strip()
        cut = any(k in msg.lower() for k in ("lost sync", "truncat", "end of file", "unexpected end"))
        raise AudioError(Reason.TRUNCATED if cut else Reason.UNREADABLE, f"{name}: {msg}") from exc
    _check_complete(bytes(src) if is_bytes else src, fmt, declared, read + start, sr, want, name)
    if want >= 0 and start + want > declared:
        raise AudioError(Reason.TRUNCATED, f"{name}: segment {offset_s:.3f}+{duration_s:.3f}s runs past the end "
                                           f"({declared / sr:.3f}s)")
    if n_out == 0:
        raise AudioError(Reason.ZERO_LENGTH, "no samples")
    if n_bad:
        raise AudioError(Reason.NON_FINITE, f"{n_bad} NaN/inf samples")
    if n_out / TARGET_SR < min_s:
        raise AudioError(Reason.TOO_SHORT, f"{n_out / TARGET_SR:.3f}s < {min_s}s")
    if peak < SILENCE_PEAK:
        raise AudioError(Reason.SILENT, f"peak amplitude {peak:.2e} (all silent)")
    return Encoded(out.getvalue(), n_out, sr, channels)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
