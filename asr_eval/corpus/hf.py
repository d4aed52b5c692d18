"""Hugging Face datasets: a hub id (+ config, split), a local ``save_to_disk`` folder, or
Parquet files. datasets 5.x decodes audio through torchcodec, which fails with the CPU torch,
so the audio column is cast to ``Audio(decode=False)`` and the bytes are decoded by us."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_eval.audio import Reason
from asr_eval.corpus.base import (
    ID_COLUMNS, SPEAKER_COLUMNS, TEXT_COLUMNS, Item, Rejection, Utterance, pick,
)
from asr_eval.errors import AsrEvalError


@dataclass
class HFDatasetReader:
    source: str  # hub id, save_to_disk dir, parquet file/dir/glob
    kind: str  # 'hub' | 'disk' | 'parquet'
    config: str | None = None
    split: str | None = None
    audio_column: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    layout: str = "hf"

    def __post_init__(self) -> None:
        self.root = Path(self.source) if self.kind != "hub" else Path(".")
        self.name = Path(self.source).name if self.kind != "hub" else self.source.replace("/", "__")
        if self.kind == "parquet" and Path(self.source).is_dir():
            self.name = Path(self.source).name

    def describe(self) -> dict:
        return {"layout": f"hf-{self.kind}", "source": self.source, "config": self.config, "split": self.split}

    def _load(self):
        import datasets

        try:
            if self.kind == "disk":
                ds = datasets.load_from_disk(self.source)
            elif self.kind == "parquet":
                p = Path(self.source)
                files = sorted(str(f) for f in p.glob("**/*.parquet")) if p.is_dir() else [self.source]
                ds = datasets.load_dataset("parquet", data_files={self.split or "train": files})
            else:
                ds = datasets.load_dataset(self.source, self.config, split=self.split)
        except Exception as exc:
            hint = ""
            if self.kind == "hub" and os.environ.get("HF_HUB_OFFLINE") == "1":
                hint = (" — HF_HUB_OFFLINE=1 is set and the dataset is not in the local cache; download it "
                        "ahead on a machine with network (`hf download --repo-type dataset "
                        f"{self.source}`) or pass a save_to_disk/parquet path")
            raise AsrEvalError(f"cannot load Hugging Face dataset {self.source!r}: {exc}{hint}") from exc
        if isinstance(ds, datasets.DatasetDict):
            if self.split and self.kind != "parquet":
                if self.split not in ds:
                    raise AsrEvalError(f"{self.source}: no split {self.split!r}; splits are {list(ds)}")
                return {self.split: ds[self.split]}
            return dict(ds)
        return {self.split or "train": ds}

    def items(self) -> Iterator[Item]:
        import datasets

        for split, ds in self._load().items():
            cols = list(ds.column_names)
            audio_col = self.audio_column or next(
                (c for c, f in ds.features.items() if isinstance(f, datasets.Audio)), None
            ) or ("audio" if "audio" in cols else None)
            if audio_col is None:
                raise AsrEvalError(f"{self.source} [{split}]: no audio column among {cols} (use --audio-column)")
            text_col = pick(cols, self.text_column, TEXT_COLUMNS, "transcript", self.source)
            if text_col is None:
                raise AsrEvalError(f"{self.source} [{split}]: no transcript column among {cols} (use --text-column)")
            id_col = pick(cols, self.id_column, ID_COLUMNS, "id", self.source)
            spk_col = pick(cols, None, SPEAKER_COLUMNS, "speaker", self.source)
            if isinstance(ds.features.get(audio_col), datasets.Audio):
                ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
            skip = {audio_col, text_col, id_col}
            for i, row in enumerate(ds):
                where = f"{self.source} [{split}] row {i}"
                audio = row.get(audio_col)
                path = audio.get("path") if isinstance(audio, dict) else audio if isinstance(audio, str) else None
                data = audio.get("bytes") if isinstance(audio, dict) else None
                utt_id = str(row[id_col]) if id_col and row.get(id_col) not in (None, "") else (
                    Path(path).stem if path else f"{split}_{i:08d}")
                if data is None and not (path and Path(path).is_file()):
                    yield Rejection(Reason.MISSING_FILE, f"row has no audio bytes and path {path!r} is not a file",
                                    where, utt_id, path)
                    continue
                meta = {k: _scalar(v) for k, v in row.items() if k not in skip and _is_scalar(v)}
                if spk_col:
                    meta.pop(spk_col, None)
                yield Utterance(
                    utt_id=utt_id, text=str(row.get(text_col) or ""), split=split,
                    audio_bytes=data, audio_path=Path(path) if data is None else None,
                    source_path=path or where, speaker=_scalar(row.get(spk_col)) if spk_col else None,
                    metadata=meta, where=where,
                )


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _scalar(v) -> str | None:
    if v is None or v == "":
        return None
    return json.dumps(v) if isinstance(v, bool) else str(v)
