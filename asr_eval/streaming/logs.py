"""Other systems' streaming output read into the same ``Emission`` records ``simulate`` produces,
so an external streaming log is scored by ``asr_eval.streaming.metrics`` exactly like our runs.

Formats (UTF-8, an optional BOM, ``\\n`` or ``\\r\\n`` line ends; blank lines are skipped):

**whisper_streaming** (``whisper_online.py``'s stdout; one file per recording): one line per
commit, ``emission_ms begin_ms end_ms text`` separated by single spaces — whisper_online prints
``"%1.4f %1.0f %1.0f %s"``, e.g. ``4186.3606 0 1720 今天天气``. ``emission_ms``: when the commit
was printed, in ms since streaming started; ``begin_ms``/``end_ms``: Whisper's estimate of where
the committed text lies in the audio. ``text`` is everything after the third space, verbatim
(faster-whisper words carry a leading space, so a text may start with one, and may be empty; a
line of only three fields has an empty text). Emission k (0-based line index among the non-blank
lines) is ``Emission(emission_ms/1000, emission_ms/1000, text, "", k)``; the last is ``final``.

**JSONL** (several recordings per file): one object per line, ``{"utt_id": "u001", "emit_s":
1.5, "text": "今天", "final": true}``; other keys are ignored. ``final`` (default true) says what
``text`` is, as in streaming APIs' final vs interim results: ``true`` — a committed increment,
appended to the recording's committed text (``Emission(t, t, text, "", k)``, the tentative tail
cleared, or set to the record's optional ``tentative`` string: the tail shown after this commit,
as ``asr-eval export`` writes it so an exported log re-imports with the same flicker); ``false`` —
the interim hypothesis shown after the committed text, replacing the previous one
(``Emission(t, t, "", text, k)``). ``k`` counts the recording's records from 0. The
last emission of a recording gets ``Emission.final = True`` (the end of stream, like simulate's
flush); when it is interim, a closing ``Emission(t, t, "", "", k + 1, final=True)`` at the same
time is appended: text never finalized is not part of the hypothesis and counts as retracted.

**Clocks.** An external log knows one time, when the system printed the text (whisper_online
prints wall time in its default real-time mode: the computation-aware clock; with
``--comp_unaware`` it prints the chunk's arrival: the unaware clock). The log does not say which,
so both ``emit_s`` and ``emit_aware_s`` hold that value and an imported run's latency is the same
on both clocks.

**Validation** (every problem of every file is collected; one ``AsrEvalError`` names each as
``file:line``, what is wrong and the fix, up to ``MAX_LISTED``; the readers return only when every
file is valid, so nothing is half-imported): malformed lines (field count, non-numbers,
non-finite numbers, bad JSON, missing or mistyped keys), an empty file, an unknown recording
(``known``), negative times, emission times that go backwards within a recording, ``end_ms <
begin_ms``, and times beyond the recording's duration ``D`` (when known): ``end_ms/1000`` may
exceed ``D`` by at most ``DURATION_TOLERANCE_S`` (Whisper's timestamps are estimates); emission
times may lie after ``D`` (the system may still be computing) but not beyond ``MAX_EMIT_FACTOR · D
+ MAX_EMIT_SLACK_S`` (such a time is a unit mistake — milliseconds as seconds — or another
recording's log).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from asr_eval.errors import AsrEvalError
from asr_eval.streaming.base import Emission

DURATION_TOLERANCE_S = 1.0  # end_ms may exceed the recording's duration by this much
MAX_EMIT_FACTOR = 10.0  # emission times must be ≤ MAX_EMIT_FACTOR · duration + MAX_EMIT_SLACK_S
MAX_EMIT_SLACK_S = 60.0
MAX_LISTED = 10  # problems named in one error

WS_FIX = ("each line must be 'emission_ms begin_ms end_ms text', as whisper_online.py prints it "
          "(e.g. '4186.3606 0 1720 今天天气'); save its stdout only, not the log on stderr")
JSONL_FIX = 'each line must be one JSON object like {"utt_id": "u001", "emit_s": 1.5, "text": "今天", "final": true}'
ORDER_FIX = "keep the records in the order the system printed them (one run of a recording per log)"


@dataclass(frozen=True)
class LogProblem:
    """One problem of a log: where (``line`` 0 for the whole file), what, and how to fix it."""

    path: Path
    line: int
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}{f':{self.line}' if self.line else ''}: {self.what}; fix: {self.fix}"


def raise_problems(problems: list[LogProblem]) -> None:
    """One ``AsrEvalError`` listing ``problems`` (up to ``MAX_LISTED``); nothing when empty."""
    if problems:
        more = f"\n  … and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise AsrEvalError(f"cannot import the streaming log(s): {len(problems)} problem(s), nothing was imported:\n  "
                           + "\n  ".join(str(p) for p in problems[:MAX_LISTED]) + more)


def _lines(path: Path, problems: list[LogProblem]) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; an unreadable file or non-UTF-8 line is a problem."""
    if not path.is_file():
        raise AsrEvalError(f"streaming log {path} does not exist (or is not a file); pass the log's path")
    out: list[tuple[int, str]] = []
    for i, b in enumerate(path.read_bytes().split(b"\n"), start=1):
        if i == 1 and b.startswith(b"\xef\xbb\xbf"):
            b = b[3:]
        try:
            s = b.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            problems.append(LogProblem(path, i, f"not valid UTF-8 ({e.reason} at byte {e.start})",
                                       "save the log as UTF-8"))
            continue
        if s.strip():
            out.append((i, s))
    return out


def _number(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _check_emit(path: Path, line: int, t: float, prev: tuple[float, int] | None, duration_s: float | None,
                unit_fix: str, out: list[LogProblem]) -> None:
    """Emission time ``t`` (s): not negative, not before ``prev`` (time, line), not absurdly late."""
    if t < 0:
        out.append(LogProblem(path, line, f"emission time {t:g} s is negative", unit_fix))
    elif prev is not None and t < prev[0]:
        out.append(LogProblem(path, line, f"emission time {t:g} s goes back before line {prev[1]}'s {prev[0]:g} s",
                              ORDER_FIX))
    if duration_s is not None and t > MAX_EMIT_FACTOR * duration_s + MAX_EMIT_SLACK_S:
        out.append(LogProblem(path, line, f"emission time {t:g} s is beyond {MAX_EMIT_FACTOR:g} × the recording's "
                              f"duration {duration_s:g} s + {MAX_EMIT_SLACK_S:g} s", unit_fix))


def _parse_whisper_streaming(path: Path, duration_s: float | None, out: list[LogProblem]) -> list[Emission]:
    unit_fix = "emission_ms is milliseconds since streaming started (" + WS_FIX + ")"
    lines = _lines(path, out)
    if not lines and not out:
        out.append(LogProblem(path, 0, "empty file (no commit lines)", "save whisper_online.py's stdout for this "
                              "recording into it, or remove the file (the recording then counts as missing)"))
    emissions: list[Emission] = []
    prev: tuple[float, int] | None = None
    for lineno, s in lines:
        parts = s.split(" ", 3)
        if len(parts) < 3:
            out.append(LogProblem(path, lineno, f"{len(parts)} field(s) {s[:60]!r}, expected at least 3", WS_FIX))
            continue
        nums = [_number(p) for p in parts[:3]]
        vals = [v for v in nums if v is not None]
        if len(vals) < 3:
            bad = [f"{n} {p!r}" for n, p, v in zip(("emission_ms", "begin_ms", "end_ms"), parts, nums) if v is None]
            out.append(LogProblem(path, lineno, f"{', '.join(bad)}: not a finite number", WS_FIX))
            continue
        emit_ms, begin_ms, end_ms = vals
        t = emit_ms / 1000
        _check_emit(path, lineno, t, prev, duration_s, unit_fix, out)
        prev = (t, lineno)
        seg_fix = "begin_ms/end_ms are where the committed text lies in the audio, in ms from its start"
        if begin_ms < 0 or end_ms < 0:
            out.append(LogProblem(path, lineno, f"negative segment time ({begin_ms:g} ms, {end_ms:g} ms)", seg_fix))
        elif end_ms < begin_ms:
            out.append(LogProblem(path, lineno, f"segment ends ({end_ms:g} ms) before it begins ({begin_ms:g} ms)",
                                  seg_fix))
        elif duration_s is not None and end_ms / 1000 > duration_s + DURATION_TOLERANCE_S:
            out.append(LogProblem(path, lineno, f"segment end {end_ms / 1000:g} s is beyond the recording's duration "
                                  f"{duration_s:g} s (+ {DURATION_TOLERANCE_S:g} s tolerance)",
                                  "is this another recording's log? name each log after the recording it transcribes"))
        emissions.append(Emission(t, t, parts[3] if len(parts) == 4 else "", "", len(emissions)))
    if emissions:
        emissions[-1] = replace(emissions[-1], final=True)
    return emissions


def read_whisper_streaming(path: str | Path, duration_s: float | None = None) -> list[Emission]:
    """One whisper_streaming log (module docstring) → its emissions; ``duration_s``, when given,
    bounds its times. Any problem is one ``AsrEvalError`` naming ``file:line`` and the fix."""
    problems: list[LogProblem] = []
    emissions = _parse_whisper_streaming(Path(path), duration_s, problems)
    raise_problems(problems)
    return emissions


def read_jsonl_stream(path: str | Path, known: Mapping[str, float] | None = None) -> dict[str, list[Emission]]:
    """A JSONL streaming log (module docstring) → emissions per ``utt_id`` (sorted by id).
    ``known`` (utt_id → duration s), when given, refuses other ids and bounds the times. Any
    problem is one ``AsrEvalError`` naming ``file:line`` and the fix."""
    path = Path(path)
    out: list[LogProblem] = []
    lines = _lines(path, out)
    if not lines and not out:
        out.append(LogProblem(path, 0, "empty file (no records)", JSONL_FIX))
    records: dict[str, list[tuple[float, str, bool, str]]] = {}
    prev: dict[str, tuple[float, int]] = {}
    unit_fix = "emit_s is seconds (not milliseconds) since streaming started"
    for lineno, s in lines:
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            out.append(LogProblem(path, lineno, f"not valid JSON ({e.msg} at column {e.colno})", JSONL_FIX))
            continue
        if not isinstance(obj, dict):
            out.append(LogProblem(path, lineno, f"a JSON {type(obj).__name__}, not an object", JSONL_FIX))
            continue
        bad = [f"no {k!r} key" for k in ("utt_id", "emit_s", "text") if k not in obj]
        uid, t, text, final = obj.get("utt_id"), obj.get("emit_s"), obj.get("text"), obj.get("final", True)
        tail = obj.get("tentative", "")
        if "utt_id" in obj and (isinstance(uid, bool) or not isinstance(uid, str | int)):
            bad.append(f"'utt_id' is {uid!r}, not a string")
        if "emit_s" in obj and (isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)):
            bad.append(f"'emit_s' is {t!r}, not a finite number")
        if "text" in obj and not isinstance(text, str):
            bad.append(f"'text' is {text!r}, not a string")
        if not isinstance(final, bool):
            bad.append(f"'final' is {final!r}, not true or false")
        if not isinstance(tail, str) or (tail and final is False):
            bad.append(f"'tentative' is {tail!r}: a string, and only on a final record (an interim record's "
                       "text is the tentative tail)")
        if bad:
            keys = ", ".join(obj) or "none"
            out.append(LogProblem(path, lineno, "; ".join(bad) + f" (keys: {keys})", JSONL_FIX))
            continue
        uid, t = str(uid), float(t)  # type: ignore[arg-type]
        if known is not None and uid not in known:
            out.append(LogProblem(path, lineno, f"utt_id {uid!r} names no recording of the corpus",
                                  "use the corpus's utt_id values (the shards' utt_id column, or `asr-eval export`)"))
            continue
        _check_emit(path, lineno, t, prev.get(uid), None if known is None else known[uid], unit_fix, out)
        prev[uid] = (t, lineno)
        records.setdefault(uid, []).append((t, str(text), bool(final), tail))
    raise_problems(out)
    result: dict[str, list[Emission]] = {}
    for uid in sorted(records):
        ems = [Emission(t, t, text if fin else "", tail if fin else text, k) for k, (t, text, fin, tail) in
               enumerate(records[uid])]
        last = ems[-1]
        if last.tentative:
            ems.append(Emission(last.emit_s, last.emit_aware_s, "", "", len(ems), final=True))
        else:
            ems[-1] = replace(last, final=True)
        result[uid] = ems
    return result


def read_stream_folder(folder: str | Path, known: Mapping[str, float],
                       stems: Mapping[str, str] | None = None) -> dict[str, list[Emission]]:
    """A folder of whisper_streaming logs, one per recording → emissions per ``utt_id`` (sorted).

    Every visible regular file directly in ``folder`` is a log (names starting with ``.`` and
    subfolders are skipped). Its recording: the file's full name or its stem (``u001.txt`` →
    ``u001``) as a key of ``known`` (utt_id → duration s), else as a key of ``stems`` (audio
    file stem → utt_id). Recordings of ``known`` without a log are simply absent from the result
    (the caller counts them as missing). Any problem in any file — an unknown recording, two logs
    of one recording, or a bad log — is one ``AsrEvalError`` and nothing is returned."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AsrEvalError(f"{folder} is not a folder; pass the folder holding one whisper_streaming log per recording")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise AsrEvalError(f"{folder} holds no log files; save one whisper_online.py output per recording into it, "
                           "named after the recording's utt_id (e.g. u001.txt)")
    stems = stems or {}
    problems: list[LogProblem] = []
    owner: dict[str, Path] = {}
    result: dict[str, list[Emission]] = {}
    for p in files:
        uid = next((k for k in (p.name, p.stem) if k in known), None)
        if uid is None:
            uid = next((stems[k] for k in (p.name, p.stem) if k in stems and stems[k] in known), None)
        if uid is None:
            problems.append(LogProblem(p, 0, f"{p.stem!r} is neither a recording's utt_id nor its audio file's stem",
                                       "name the log after the recording it transcribes (e.g. u001.txt), "
                                       "or move it out of the folder"))
            _parse_whisper_streaming(p, None, problems)
            continue
        if uid in owner:
            problems.append(LogProblem(p, 0, f"a second log of recording {uid!r} (the first is {owner[uid].name})",
                                       "keep one log per recording"))
            continue
        owner[uid] = p
        result[uid] = _parse_whisper_streaming(p, known[uid], problems)
    raise_problems(problems)
    return dict(sorted(result.items()))
