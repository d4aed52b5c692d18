"""Bad input never crashes a reader (hypothesis): manifests (CSV, TSV, JSONL/NeMo), Kaldi dirs and
Common Voice TSVs built from malformed bytes, missing columns, huge fields, odd encodings and
byte-order marks. Every input line is either ingested or quarantined with a reason (or is
blank / the header), nothing raises but a clear AsrEvalError at open, and the run's counts add up."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from conftest import write_audio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asr_eval.audio import Reason
from asr_eval.corpus import open_source
from asr_eval.corpus.base import Rejection, Utterance
from asr_eval.errors import AsrEvalError
from asr_eval.shards import IngestOptions, ingest
from asr_eval.corpus_handle import read_index, read_metadata, read_quarantine

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
REASONS = {r.value for r in Reason}
BOM16 = (b"\xff\xfe", b"\xfe\xff")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz_audio")
    write_audio(d / "good.wav", 0.3, 16000)
    write_audio(d / "clips" / "good.wav", 0.3, 16000)
    return d


def _workdir(audio_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=audio_dir))


# ───────────── strategies ─────────────

ODD = ["", " ", '"', '""', '"a', "a,b", "a\tb", "\r", "\x00", "\x0b", "你好", "\ufeff", "NaN", "-1", "1e309",
       "Infinity", "\\ud800", "💥", "\u2028", "a\u0085b", "ä"]
field = st.one_of(st.sampled_from(ODD), st.text(max_size=12), st.just("字" * 70_000), st.just("x" * 200_000))
AUDIO = ["good.wav", "missing.wav", "../../etc/passwd", "{abs}", "", "sub/../good.wav", "good.wav\x00", "{abs}\x00",
         "clips/good.wav", "/" + "a" * 5000]
audio_ref = st.one_of(st.sampled_from(AUDIO), field)
COLUMNS = ["audio", "text", "utt_id", "split", "speaker", "accent", "Accent", "offset", "duration", "path",
           "sentence", "client_id", "up_votes", "file_name", "x y", "meta"]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "gb18030", "latin-1"]


@st.composite
def corruption(draw, data: bytes) -> bytes:
    """Insert / overwrite a few random bytes (or cut the file short)."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(data)))
        junk = draw(st.binary(min_size=1, max_size=4))
        if draw(st.booleans()):
            data[pos:pos] = junk
        else:
            data[pos:pos + len(junk)] = junk
    if data and draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _encode(draw, text: str) -> bytes:
    return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")


@st.composite
def table_file(draw, delimiter: str, columns: list[str]) -> bytes:
    header = draw(st.lists(st.sampled_from(columns), min_size=0, max_size=6, unique=True))
    lines = [delimiter.join(header)]
    for _ in range(draw(st.integers(0, 8))):
        n = max(0, len(header) + draw(st.sampled_from([0, 0, 0, -1, 1])))
        row = [draw(audio_ref) if c in ("audio", "path", "file_name") else draw(field) for c in header[:n]]
        row += [draw(field) for _ in range(n - len(row))]
        lines.append(delimiter.join(row))
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from(["", "   ", delimiter * 3])))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return draw(corruption(_encode(draw, eol.join(lines) + eol)))


JSON_VALUE = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
                          | st.integers(-(10**30), 10**30) | field,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                          max_leaves=6)


@st.composite
def jsonl_file(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind <= 5:
            keys = draw(st.lists(st.sampled_from(["audio_filepath", "text", "duration", "offset", "utt_id",
                                                  "speaker", "lang", "Lang"]), max_size=6, unique=True))
            row = {k: (draw(audio_ref) if k == "audio_filepath" and draw(st.booleans()) else draw(JSON_VALUE))
                   for k in keys}
            lines.append(json.dumps(row, ensure_ascii=draw(st.booleans())))
        elif kind == 6:
            lines.append(draw(st.sampled_from(["[1, 2]", "3", "null", '"s"', "{", "{}", '{"text": "\\ud800",'
                                               ' "audio_filepath": "good.wav"}'])))
        elif kind == 7:
            lines.append(draw(field))
        else:
            lines.append("")
    return draw(corruption(_encode(draw, "\n".join(lines) + "\n")))


@st.composite
def kaldi_file(draw, keys: list[str], value) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 7))):
        sep = draw(st.sampled_from([" ", "\t", "  ", " \t"]))
        lines.append(draw(st.sampled_from(keys)) + sep + draw(value) if draw(st.integers(0, 6))
                     else draw(st.sampled_from(["", "   ", "lonely_key", draw(field)])))
    enc = draw(st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]))
    return draw(corruption(("\n".join(lines) + "\n").encode(enc, errors="replace")))


# ───────────── oracles ─────────────


def _lines(data: bytes) -> list[str | None]:
    """The file's lines as the readers see them (None: not decodable)."""
    if data[:2] in BOM16:
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return []  # damaged UTF-16: coverage is not checked line by line
        out = text.split("\n")
        return out[:-1] if out[-1] == "" else out
    raw = data.split(b"\n")
    if raw[-1] == b"":
        raw.pop()
    out: list[str | None] = []
    for i, b in enumerate(raw):
        try:
            out.append(b.decode("utf-8-sig" if i == 0 else "utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            out.append(None)
    return out


_WHERE = re.compile(r":(\d+)(?:-(\d+))?$")


def _covered(items, path: Path) -> set[int]:
    lines: set[int] = set()
    for it in items:
        if it.where.startswith(str(path)) and (m := _WHERE.search(it.where)):
            lines.update(range(int(m[1]), int(m[2] or m[1]) + 1))
    return lines


def _check_lines(items, path: Path, data: bytes, delimiter: str | None) -> None:
    """Every non-blank line is covered by an item, except the header record at the top."""
    lines = _lines(data)
    covered = _covered(items, path)
    strip = " \t\r\n\x0b\x0c\ufeff" + (delimiter or "") + ('"' if delimiter == "," else "")
    uncovered = [i for i, ln in enumerate(lines, start=1)
                 if i not in covered and ln is not None and ln.strip().strip(strip).strip()]
    if delimiter is None:  # JSONL: no header, every non-blank line is an item
        assert uncovered == [], (uncovered, [lines[i - 1][:80] for i in uncovered])
    else:
        data_lines = [i for i in covered if lines and lines[i - 1] is not None]
        first = min(data_lines, default=len(lines) + 1)
        assert all(i < first for i in uncovered), (uncovered, first)
    for i, ln in enumerate(lines, start=1):
        if ln is None:
            assert i in covered, f"undecodable line {i} not quarantined"


def _check_items(items) -> None:
    for it in items:
        assert isinstance(it, Utterance | Rejection)
        if isinstance(it, Rejection):
            assert it.reason.value in REASONS and it.detail and it.where


def _check_run(reader, out: Path, n_items: int) -> None:
    s = ingest(reader, out, IngestOptions(workers=1), progress=False)
    q = read_quarantine(out)
    assert s.n_items == n_items == s.n_ingested + s.n_quarantined
    assert len(q) == s.n_quarantined and sum(s.quarantine_by_reason.values()) == s.n_quarantined
    assert all(r["reason"] in REASONS and r["detail"] for r in q)
    assert read_index(out)["n_utterances"] == s.n_ingested == read_metadata(out).num_rows


def _open(path: Path, layout: str):
    try:
        return open_source(str(path), layout)
    except AsrEvalError as e:  # a whole-file problem (no audio/text column): named, no traceback
        assert str(path) in str(e) or path.name in str(e)
        return None


def _abs(data: bytes, audio_dir: Path) -> bytes:
    return data.replace(b"{abs}", str(audio_dir / "good.wav").encode())


# ───────────── properties ─────────────


@pytest.mark.parametrize("kind,delimiter", [("csv", ","), ("tsv", "\t")])
@SETTINGS
@given(data=st.data())
def test_csv_and_tsv_manifests_never_crash(audio_dir, kind, delimiter, data):
    work = _workdir(audio_dir)
    (work / "good.wav").write_bytes((audio_dir / "good.wav").read_bytes())
    raw = _abs(data.draw(table_file(delimiter, COLUMNS)), audio_dir)
    path = work / f"m.{kind}"
    path.write_bytes(raw)
    reader = _open(path, "manifest")
    if reader is None:
        return
    items = list(reader.items())
    _check_items(items)
    _check_lines(items, path, raw, delimiter)
    _check_run(reader, work / "out", len(items))


@SETTINGS
@given(raw=jsonl_file())
# Crashes found on the way, kept as explicit cases: a NaN / huge offset, a lone surrogate in the
# transcript, a NUL byte in the path, keys that collide once lower-cased, a U+2028 in a value.
@example(raw=b'{"audio_filepath": "good.wav", "text": "a", "offset": NaN, "duration": 1}\n')
@example(raw=b'{"audio_filepath": "good.wav", "text": "a", "offset": 1e308, "duration": 1}\n')
@example(raw=b'{"audio_filepath": "good.wav", "text": "\\ud800"}\n')
@example(raw=b'{"audio_filepath": "good\\u0000.wav", "text": "a"}\n')
@example(raw=b'{"audio_filepath": "good.wav", "text": "a", "Lang": "x", "lang": "y"}\n')
@example(raw=b'{"audio_filepath": "missing.wav", "text": "a\xe2\x80\xa8b"}\n{"audio_filepath": "good.wav", "text": "b"}\n')
def test_jsonl_and_nemo_manifests_never_crash(audio_dir, raw):
    work = _workdir(audio_dir)
    (work / "good.wav").write_bytes((audio_dir / "good.wav").read_bytes())
    raw = _abs(raw, audio_dir)
    path = work / "train.jsonl"
    path.write_bytes(raw)
    reader = _open(path, "manifest")
    if reader is None:
        return
    items = list(reader.items())
    _check_items(items)
    _check_lines(items, path, raw, None)
    _check_run(reader, work / "out", len(items))


KALDI_KEYS = ["u1", "u2", "u3", "ü4", "u5"]


def _kaldi_expected(files: dict[str, bytes]) -> int:
    """Items a Kaldi dir must yield: one per undecodable or duplicate line, one per utterance key."""
    n, keys = 0, set()
    for name in ("wav.scp", "text"):
        seen = set()
        for ln in _lines(files[name]):
            if ln is None:
                n += 1
            elif ln.strip():
                k = ln.strip().split(maxsplit=1)[0]
                if k in seen:
                    n += 1
                seen.add(k)
        keys |= seen
    return n + len(keys)


@SETTINGS
@given(data=st.data())
def test_kaldi_dirs_never_crash(audio_dir, data):
    work = _workdir(audio_dir)
    (work / "good.wav").write_bytes((audio_dir / "good.wav").read_bytes())
    files = {"wav.scp": data.draw(kaldi_file(KALDI_KEYS, audio_ref)),
             "text": data.draw(kaldi_file(KALDI_KEYS, field))}
    files = {k: _abs(v, audio_dir) for k, v in files.items()}
    if data.draw(st.booleans()):
        files["utt2spk"] = data.draw(kaldi_file(KALDI_KEYS, st.sampled_from(["s1", "s2", ""])))
    for name, raw in files.items():
        (work / name).write_bytes(raw)
    reader = _open(work, "kaldi")
    assert reader is not None
    items = list(reader.items())
    _check_items(items)
    extra = sum(isinstance(i, Rejection) and i.where.startswith(str(work / "utt2spk")) for i in items)
    assert len(items) - extra == _kaldi_expected(files)
    _check_run(reader, work / "out", len(items))


@SETTINGS
@given(data=st.data())
def test_kaldi_segments_never_crash(audio_dir, data):
    work = _workdir(audio_dir)
    (work / "good.wav").write_bytes((audio_dir / "good.wav").read_bytes())
    (work / "wav.scp").write_bytes(b"rec good.wav\n")
    (work / "text").write_bytes(data.draw(kaldi_file(KALDI_KEYS, field)))
    seg = st.one_of(st.sampled_from(["rec 0 0.2", "rec 0.1 0.25", "rec 0.2 0.1", "rec nan 1", "rec 0 inf",
                                     "rec -1 0.2", "other 0 0.2", "rec 0", "rec a b"]), field)
    (work / "segments").write_bytes(data.draw(kaldi_file(KALDI_KEYS, seg)))
    reader = _open(work, "kaldi")
    items = list(reader.items())
    _check_items(items)
    text_keys = {ln.strip().split(maxsplit=1)[0] for ln in _lines((work / "text").read_bytes()) if ln and ln.strip()}
    utts = {i.utt_id for i in items}
    assert text_keys <= utts  # every transcript line ends up ingested or quarantined
    _check_run(reader, work / "out", len(items))


CV_COLUMNS = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale",
              "segment", "sentence_id"]


@SETTINGS
@given(data=st.data())
def test_common_voice_tsvs_never_crash(audio_dir, data):
    work = _workdir(audio_dir)
    (work / "clips").mkdir()
    (work / "clips" / "good.wav").write_bytes((audio_dir / "good.wav").read_bytes())
    raws = {}
    for split in data.draw(st.lists(st.sampled_from(["train", "dev", "test"]), min_size=1, max_size=3, unique=True)):
        raws[split] = _abs(data.draw(table_file("\t", CV_COLUMNS)), audio_dir)
        (work / f"{split}.tsv").write_bytes(raws[split])
    reader = _open(work, "commonvoice")
    assert reader is not None
    items = list(reader.items())
    _check_items(items)
    for split, raw in raws.items():
        _check_lines([i for i in items if i.where.startswith(str(work / f"{split}.tsv"))], work / f"{split}.tsv",
                     raw, "\t")
    _check_run(reader, work / "out", len(items))
