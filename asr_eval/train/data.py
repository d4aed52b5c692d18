"""Training data: labels, a lazily-loading dataset over shard splits, its sampler, the collator.

Nothing model-sized is cached: the dataset keeps utterance metadata and token ids in memory,
reads FLAC bytes a Parquet row group at a time (a small LRU cache), and the collator computes
log-mel features per batch. The seed recipe cached 80×3000 float32 features (~960 KB) per
utterance; 1000 h of speech would have been ~700 GB of features.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from asr_eval.audio import MAX_DURATION_S, decode_flac
from asr_eval.errors import AsrEvalError
from asr_eval.corpus_handle import open_corpus

# The decoder prompt every label starts with; the tokenizer's prefix must produce exactly it.
PREFIX_TOKENS: tuple[str, ...] = ("<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>")
LABEL_PAD = -100  # ignored by the cross-entropy loss


# ───────────────────────────── labels ─────────────────────────────


class LabelEncoder:
    """Transcript → label ids: training-profile normalization, then the Whisper tokenizer with
    the ``<|startoftranscript|><|zh|><|transcribe|><|notimestamps|>`` prefix and ``<|endoftext|>``."""

    def __init__(self, tokenizer: Any, profile: Any, language: str = "zh", task: str = "transcribe"):
        from asr_eval.models.processor import check_tokenizer

        check_tokenizer(tokenizer, "the base model's tokenizer")
        tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
        self.tokenizer = tokenizer
        self.profile = profile
        self.prefix_ids: list[int] = list(tokenizer.prefix_tokens)
        want = tokenizer.convert_tokens_to_ids([PREFIX_TOKENS[0], f"<|{language}|>", f"<|{task}|>", PREFIX_TOKENS[3]])
        if self.prefix_ids != want or tokenizer.unk_token_id in want:
            raise AsrEvalError(f"tokenizer prefix {self.prefix_ids} is not {want} "
                               f"({PREFIX_TOKENS[0]}<|{language}|><|{task}|>{PREFIX_TOKENS[3]}); "
                               "the base model's tokenizer is not a multilingual Whisper tokenizer")

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Label ids of each transcript; each checked to start with the prefix and end with EOT."""
        ids = self.tokenizer(self.profile.normalize_many(list(texts))).input_ids if texts else []
        n = len(self.prefix_ids)
        for row in ids:
            if row[:n] != self.prefix_ids or row[-1] != self.tokenizer.eos_token_id:
                raise AsrEvalError(f"label ids {row[:n + 2]}… do not start with the decoder prefix "
                                   f"{self.prefix_ids} and end with <|endoftext|>")
        return ids


# ───────────────────────────── dataset ─────────────────────────────


@dataclass(frozen=True)
class Dropped:
    """Utterances of a split left out of training, by reason (they would train on a wrong target)."""

    too_long_audio: int = 0      # > 30 s: the feature extractor cuts the audio, not the transcript
    too_long_labels: int = 0     # more tokens than the decoder's max_target_positions
    empty_label: int = 0         # nothing left after training normalization


class ShardSpeechDataset(torch.utils.data.Dataset):
    """One split of an ingested corpus as ``{"audio": float32 16 kHz, "labels": ids, "utt_id"}`` items.

    Memory holds ids, texts and token ids only; audio is read per Parquet row group (as the
    shard writer grouped it) into an LRU cache of FLAC bytes and decoded per item. Pair it with
    ``BlockShuffleSampler`` so one cached row group serves many consecutive items.
    """

    def __init__(self, corpus_dir: str | Path, split: str, labels: LabelEncoder, *,
                 max_samples: int | None = None, seed: int = 0, max_label_tokens: int = 448,
                 max_duration_s: float = MAX_DURATION_S, cache_row_groups: int = 8,
                 include: Collection[str] | None = None, exclude: Collection[str] | None = None):
        corpus = open_corpus(corpus_dir)
        self.corpus_dir = corpus.url
        self.split = split
        splits = corpus.splits
        if not splits.get(split):
            raise AsrEvalError(f"corpus {corpus_dir} has no utterances in split {split!r} "
                               f"(splits: {splits}); pick one with --train-split/--eval-split")
        # Checked against index.json (size + SHA-256) before any row is used for training.
        self.paths = [str(corpus.verified(s)) for s in corpus.shards]
        loc: list[tuple[int, int, int]] = []
        ids: list[str] = []
        texts: list[str] = []
        durs: list[float] = []
        for si, p in enumerate(self.paths):
            pf = pq.ParquetFile(p)
            for rg in range(pf.num_row_groups):
                t = pf.read_row_group(rg, columns=["utt_id", "split", "text", "duration_s"])
                for ri, (u, sp, tx, d) in enumerate(zip(*(t.column(c).to_pylist() for c in t.column_names),
                                                        strict=True)):
                    if sp == split and (include is None or u in include) and (exclude is None or u not in exclude):
                        loc.append((si, rg, ri))
                        ids.append(u)
                        texts.append(tx or "")
                        durs.append(d)
        if not ids:
            raise AsrEvalError(f"split {split!r} of {corpus_dir} has no utterances left after the held-out dev "
                               "utterances were set aside")
        if max_samples is not None and max_samples < len(ids):
            # A fixed, seeded subset in corpus order: the same utterances at every evaluation.
            keep = np.sort(np.random.default_rng(seed).choice(len(ids), max_samples, replace=False))
            loc, ids, texts, durs = ([x[i] for i in keep] for x in (loc, ids, texts, durs))
        label_ids = labels.encode_many(texts)
        n_prefix = len(labels.prefix_ids)
        ok, long_a, long_l, empty = [], 0, 0, 0
        for i, (d, lab) in enumerate(zip(durs, label_ids, strict=True)):
            if d > max_duration_s:
                long_a += 1
            elif len(lab) > max_label_tokens:
                long_l += 1
            elif len(lab) <= n_prefix + 1:
                empty += 1
            else:
                ok.append(i)
        self.dropped = Dropped(long_a, long_l, empty)
        if not ok:
            raise AsrEvalError(f"split {split!r} of {corpus_dir} has no usable utterance ({self.dropped})")
        self.loc = np.asarray([loc[i] for i in ok], dtype=np.int64).reshape(-1, 3)
        self.utt_ids = [ids[i] for i in ok]
        self.texts = [texts[i] for i in ok]  # raw references: what `asr-eval score` scores against
        self.durations = np.asarray([durs[i] for i in ok])
        self.labels = [label_ids[i] for i in ok]
        self.cache_row_groups = cache_row_groups
        self._cache: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getstate__(self) -> dict:  # DataLoader workers start with an empty cache
        return {**self.__dict__, "_cache": OrderedDict()}

    def _row_group(self, si: int, rg: int) -> list[bytes]:
        key = (si, rg)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        audio = pq.ParquetFile(self.paths[si]).read_row_group(rg, columns=["audio"]).column(0).to_pylist()
        self._cache[key] = audio
        while len(self._cache) > self.cache_row_groups:
            self._cache.popitem(last=False)
        return audio

    def __getitem__(self, i: int) -> dict[str, Any]:
        si, rg, ri = (int(x) for x in self.loc[i])
        return {"audio": decode_flac(self._row_group(si, rg)[ri]), "labels": self.labels[i],
                "utt_id": self.utt_ids[i]}

    def groups(self) -> list[list[int]]:
        """Item indices per Parquet row group, in storage order."""
        out: dict[tuple[int, int], list[int]] = {}
        for i, (si, rg, _) in enumerate(self.loc.tolist()):
            out.setdefault((si, rg), []).append(i)
        return list(out.values())


class BlockShuffleSampler(torch.utils.data.Sampler[int]):
    """Shuffle row groups, then shuffle items within windows of ``block`` row groups.

    Near-uniform mixing with bounded I/O: each row group is read once per epoch when the
    dataset's cache holds ``block`` groups. Deterministic in (seed, epoch), which is what lets
    a resumed run skip exactly the batches it already trained on.
    """

    def __init__(self, groups: Sequence[Sequence[int]], block: int = 8, seed: int = 0):
        self.groups = [list(g) for g in groups]
        self.block = max(1, block)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.groups))
        for start in range(0, len(order), self.block):
            window = np.concatenate([self.groups[g] for g in order[start:start + self.block]])
            yield from (int(i) for i in rng.permutation(window))


# ───────────────────────────── collator ─────────────────────────────


@dataclass
class SpeechSeq2SeqCollator:
    """Batch items: log-mel features on the fly, labels right-padded with −100.

    The model prepends ``decoder_start_token_id`` itself when it shifts labels right to make
    decoder inputs, so a leading start token in the labels is stripped (else it appears twice).
    """

    feature_extractor: Any
    decoder_start_token_id: int

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        feats = self.feature_extractor([it["audio"] for it in items], sampling_rate=16000, return_tensors="pt")
        labels = [list(it["labels"]) for it in items]
        if all(lab and lab[0] == self.decoder_start_token_id for lab in labels):
            labels = [lab[1:] for lab in labels]
        width = max(len(lab) for lab in labels)
        padded = torch.full((len(labels), width), LABEL_PAD, dtype=torch.long)
        for r, lab in enumerate(labels):
            padded[r, :len(lab)] = torch.tensor(lab, dtype=torch.long)
        return {"input_features": feats["input_features"], "labels": padded}
