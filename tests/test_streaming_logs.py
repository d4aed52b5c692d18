"""Readers of other systems' streaming output (asr_eval.streaming.logs): whisper_streaming logs
and JSONL parsed into exact Emission lists, and every bad log refused with one error naming the
file, the line and the fix. Pure file parsing: no model, no corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr_eval.errors import AsrEvalError
from asr_eval.streaming import Emission
from asr_eval.streaming.logs import (
    read_jsonl_stream,
    read_stream_folder,
    read_whisper_streaming,
)
from asr_eval.streaming.metrics import flicker


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# whisper_online.py prints "%1.4f %1.0f %1.0f %s"; faster-whisper words carry a leading space
WS_LOG = ("1500.0000 0 1200 今天 天气\n"
          "\n"
          "2250.5000 1200 1800  很好\n"
          "4000.0000 1800 2600 \n"  # empty text (trailing space kept)
          "4000.0000 2600 3100\n"  # three fields: empty text; the same emission time is allowed
          "9000.0000 3100 5900 。\n")  # emitted after the 5 s audio ended; end within 5 s + 1 s tolerance
WS_EXPECTED = [Emission(1.5, 1.5, "今天 天气", "", 0), Emission(2.2505, 2.2505, " 很好", "", 1),
               Emission(4.0, 4.0, "", "", 2), Emission(4.0, 4.0, "", "", 3),
               Emission(9.0, 9.0, "。", "", 4, final=True)]


@pytest.mark.parametrize("encode", [
    lambda s: s.encode("utf-8"),
    lambda s: b"\xef\xbb\xbf" + s.replace("\n", "\r\n").encode("utf-8"),  # BOM + CRLF (Windows)
], ids=["lf", "bom-crlf"])
def test_whisper_streaming_log_parsed_exactly(tmp_path, encode):
    p = write(tmp_path / "u1.txt", encode(WS_LOG))
    assert read_whisper_streaming(p, duration_s=5.0) == WS_EXPECTED
    assert read_whisper_streaming(p) == WS_EXPECTED  # no duration: no bound


JSONL_LOG = (
    '{"utt_id": "u1", "emit_s": 0.5, "text": "今", "final": false}\n'
    '{"utt_id": "u1", "emit_s": 1.0, "text": "今天", "final": true}\n'
    '{"utt_id": "u2", "emit_s": 0.8, "text": "你好 世界"}\n'  # earlier than u1's 1.0: order is per recording
    '{"utt_id": "u1", "emit_s": 1.5, "text": "天气", "final": false}\n'
    '{"utt_id": "u1", "emit_s": 2.0, "text": "天气很好", "extra": [1]}\n'
    '{"utt_id": "u2", "emit_s": 2.5, "text": "吧", "final": false}\n'
    '{"utt_id": 7, "emit_s": 3, "text": "x"}\n'
)
JSONL_EXPECTED = {
    "7": [Emission(3.0, 3.0, "x", "", 0, final=True)],
    "u1": [Emission(0.5, 0.5, "", "今", 0), Emission(1.0, 1.0, "今天", "", 1), Emission(1.5, 1.5, "", "天气", 2),
           Emission(2.0, 2.0, "天气很好", "", 3, final=True)],
    # the last record is interim: a closing emission retracts it (never committed)
    "u2": [Emission(0.8, 0.8, "你好 世界", "", 0), Emission(2.5, 2.5, "", "吧", 1),
           Emission(2.5, 2.5, "", "", 2, final=True)],
}


def test_jsonl_log_parsed_exactly(tmp_path):
    p = write(tmp_path / "sys.jsonl", JSONL_LOG)
    got = read_jsonl_stream(p, known={"u1": 3.0, "u2": 3.0, "7": 4.0})
    assert got == JSONL_EXPECTED and list(got) == ["7", "u1", "u2"]
    assert read_jsonl_stream(p) == JSONL_EXPECTED  # no known: every id accepted
    # scored like ours: u2 displays 你好世界 (4), then 你好世界吧 (+1), then retracts 吧 → 1 / 5
    assert flicker(got["u2"]) == (pytest.approx(0.2), 1, 5)
    # u1's interims were confirmed: 今 → 今天 → 今天天气 → 今天天气很好 writes 6, retracts nothing
    assert flicker(got["u1"]) == (0.0, 0, 6)


def test_stream_folder_by_utt_id_and_audio_stem(tmp_path):
    write(tmp_path / "u1.txt", "1000.0000 0 900 今天\n2000.0000 900 1500 天气\n")
    write(tmp_path / "rec_002.log", "500.0000 0 400 你好\n")  # named after the audio file rec_002.wav
    write(tmp_path / "spk.a1", "700.0000 0 600 好\n")  # a dotted utt_id: matched by its full name
    write(tmp_path / ".DS_Store", b"\x00\x01")  # hidden: skipped
    (tmp_path / "sub").mkdir()  # a folder: skipped
    got = read_stream_folder(tmp_path, {"u1": 5.0, "u2": 3.0, "spk.a1": 1.0, "u3": 2.0}, stems={"rec_002": "u2"})
    assert got == {"spk.a1": [Emission(0.7, 0.7, "好", "", 0, final=True)],
                   "u1": [Emission(1.0, 1.0, "今天", "", 0), Emission(2.0, 2.0, "天气", "", 1, final=True)],
                   "u2": [Emission(0.5, 0.5, "你好", "", 0, final=True)]}  # u3 has no log: absent


def problem(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg.startswith("cannot import the streaming log(s):") and "nothing was imported" in msg
    return msg


# (case, log content, duration_s, location, what, fix)
WS_BAD = [
    ("too-few-fields", "1000.0000 0\n", 5.0, "log.txt:1: ", "2 field(s)", "'emission_ms begin_ms end_ms text'"),
    ("non-numeric", "1000.0000 abc 500 今天\n", 5.0, "log.txt:1: ", "begin_ms 'abc': not a finite number",
     "save its stdout only"),
    ("nan-emission", "ok 0 500 x\n", None, "log.txt:1: ", "emission_ms 'ok'", "whisper_online.py prints it"),
    ("backwards", "2000.0000 0 500 今\n\n1000.0000 500 900 天\n", 5.0, "log.txt:3: ",
     "emission time 1 s goes back before line 1's 2 s", "order the system printed them"),
    ("negative-emission", "-5.0000 0 500 今\n", 5.0, "log.txt:1: ", "emission time -0.005 s is negative",
     "milliseconds since streaming started"),
    ("negative-segment", "100.0000 -20 500 今\n", 5.0, "log.txt:1: ", "negative segment time (-20 ms, 500 ms)",
     "in ms from its start"),
    ("end-before-begin", "100.0000 600 500 今\n", 5.0, "log.txt:1: ",
     "segment ends (500 ms) before it begins (600 ms)",
     "where the committed text lies in the audio"),
    ("beyond-duration", "100.0000 0 500 今\n200.0000 500 6100 天\n", 5.0, "log.txt:2: ",
     "segment end 6.1 s is beyond the recording's duration 5 s (+ 1 s tolerance)", "another recording's log"),
    ("emission-absurdly-late", "200000.0000 0 500 今\n", 5.0, "log.txt:1: ",
     "emission time 200 s is beyond 10 × the recording's duration 5 s + 60 s", "milliseconds since streaming"),
    ("empty-file", "", 5.0, "log.txt: ", "empty file (no commit lines)", "the recording then counts as missing"),
    ("blank-lines-only", "\n  \n", 5.0, "log.txt: ", "empty file", "save whisper_online.py's stdout"),
    ("not-utf8", b"100.0000 0 500 \xff\xfe\n", 5.0, "log.txt:1: ", "not valid UTF-8", "save the log as UTF-8"),
]


@pytest.mark.parametrize("content, duration, loc, what, fix", [c[1:] for c in WS_BAD], ids=[c[0] for c in WS_BAD])
def test_bad_whisper_streaming_log(tmp_path, content, duration, loc, what, fix):
    p = write(tmp_path / "log.txt", content)
    with pytest.raises(AsrEvalError) as e:
        read_whisper_streaming(p, duration_s=duration)
    msg = problem(e)
    assert "1 problem(s)" in msg and f"{tmp_path}/{loc}{what}" in msg and "; fix: " in msg and fix in msg


OK = '{"utt_id": "u1", "emit_s": 1.0, "text": "今"}\n'
JSONL_BAD = [
    ("bad-json", '{"utt_id": "u1", "emit_s": 1.0,\n', "s.jsonl:1: ", "not valid JSON", '{"utt_id": "u001", "emit_s"'),
    ("not-an-object", OK + "[1, 2]\n", "s.jsonl:2: ", "a JSON list, not an object", "one JSON object like"),
    ("missing-key", '{"utt_id": "u1", "text": "今"}\n', "s.jsonl:1: ", "no 'emit_s' key (keys: utt_id, text)",
     "one JSON object like"),
    ("string-time", '{"utt_id": "u1", "emit_s": "1.0", "text": "今"}\n', "s.jsonl:1: ",
     "'emit_s' is '1.0', not a finite number", "one JSON object like"),
    ("null-text", '{"utt_id": "u1", "emit_s": 1, "text": null}\n', "s.jsonl:1: ", "'text' is None, not a string",
     "one JSON object like"),
    ("bad-final", '{"utt_id": "u1", "emit_s": 1, "text": "x", "final": "yes"}\n', "s.jsonl:1: ",
     "'final' is 'yes', not true or false", "one JSON object like"),
    ("unknown-recording", OK + '{"utt_id": "u9", "emit_s": 1.0, "text": "今"}\n', "s.jsonl:2: ",
     "utt_id 'u9' names no recording of the corpus", "use the corpus's utt_id values"),
    ("backwards", '{"utt_id": "u1", "emit_s": 2.5, "text": "今"}\n{"utt_id": "u2", "emit_s": 3, "text": "你"}\n'
     + OK, "s.jsonl:3: ", "emission time 1 s goes back before line 1's 2.5 s", "order the system printed them"),
    ("negative", '{"utt_id": "u1", "emit_s": -0.5, "text": "今"}\n', "s.jsonl:1: ", "emission time -0.5 s is negative",
     "emit_s is seconds"),
    ("milliseconds", '{"utt_id": "u1", "emit_s": 1500, "text": "今"}\n', "s.jsonl:1: ",
     "emission time 1500 s is beyond 10 × the recording's duration 5 s + 60 s", "not milliseconds"),
    ("empty-file", "", "s.jsonl: ", "empty file (no records)", "one JSON object like"),
]


@pytest.mark.parametrize("content, loc, what, fix", [c[1:] for c in JSONL_BAD], ids=[c[0] for c in JSONL_BAD])
def test_bad_jsonl_log(tmp_path, content, loc, what, fix):
    p = write(tmp_path / "s.jsonl", content)
    with pytest.raises(AsrEvalError) as e:
        read_jsonl_stream(p, known={"u1": 5.0, "u2": 5.0})
    msg = problem(e)
    assert "1 problem(s)" in msg and f"{tmp_path}/{loc}{what}" in msg and fix in msg


GOOD = "1000.0000 0 900 今天\n"
FOLDER_BAD = [
    ("unknown-recording", {"u1.txt": GOOD, "u9.txt": GOOD}, "u9.txt: ",
     "'u9' is neither a recording's utt_id nor its audio file's stem", "name the log after the recording"),
    ("two-logs-of-one-recording", {"u1.txt": GOOD, "u1.log": GOOD}, "u1.txt: ",
     "a second log of recording 'u1' (the first is u1.log)", "keep one log per recording"),
    ("beyond-known-duration", {"u2.txt": "100.0000 0 4500 好\n"}, "u2.txt:1: ",
     "segment end 4.5 s is beyond the recording's duration 3 s", "another recording's log"),
    ("empty-file", {"u1.txt": GOOD, "u2.txt": ""}, "u2.txt: ", "empty file", "counts as missing"),
]


@pytest.mark.parametrize("files, loc, what, fix", [c[1:] for c in FOLDER_BAD], ids=[c[0] for c in FOLDER_BAD])
def test_bad_stream_folder(tmp_path, files, loc, what, fix):
    for name, content in files.items():
        write(tmp_path / name, content)
    with pytest.raises(AsrEvalError) as e:  # u1.txt is valid, yet nothing is returned
        read_stream_folder(tmp_path, {"u1": 5.0, "u2": 3.0})
    msg = problem(e)
    assert "1 problem(s)" in msg and f"{tmp_path}/{loc}{what}" in msg and fix in msg


def test_every_problem_of_every_file_in_one_error(tmp_path):
    write(tmp_path / "u1.txt", "1000.0000 0 900 今天\n500.0000 900 1000 天\nxx\n")
    write(tmp_path / "u9.txt", "1 2 3 bad\n")
    write(tmp_path / "u2.txt", GOOD)
    with pytest.raises(AsrEvalError) as e:
        read_stream_folder(tmp_path, {"u1": 5.0, "u2": 3.0})
    msg = problem(e)
    assert "3 problem(s)" in msg
    assert f"{tmp_path}/u1.txt:2: emission time 0.5 s goes back before line 1's 1 s" in msg
    assert f"{tmp_path}/u1.txt:3: 1 field(s) 'xx'" in msg
    assert f"{tmp_path}/u9.txt: 'u9' is neither" in msg


def test_long_lists_are_capped(tmp_path):
    p = write(tmp_path / "log.txt", "x\n" * 13)
    with pytest.raises(AsrEvalError) as e:
        read_whisper_streaming(p)
    msg = problem(e)
    assert "13 problem(s)" in msg and f"{tmp_path}/log.txt:10: " in msg and ":11: " not in msg
    assert msg.endswith("… and 3 more")


@pytest.mark.parametrize("make, what", [
    (lambda d: d / "missing", "is not a folder"),
    (lambda d: d, "holds no log files"),
])
def test_folder_itself_must_hold_logs(tmp_path, make, what):
    with pytest.raises(AsrEvalError, match=what):
        read_stream_folder(make(tmp_path), {"u1": 5.0})


def test_missing_file(tmp_path):
    with pytest.raises(AsrEvalError, match="does not exist"):
        read_whisper_streaming(tmp_path / "nope.txt")
    with pytest.raises(AsrEvalError, match="does not exist"):
        read_jsonl_stream(tmp_path / "nope.jsonl")
