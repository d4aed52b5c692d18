"""Fine-tuning: shard dataset + collator (``data``), the Seq2SeqTrainer run (``finetune``), its
checkpoints (``checkpoints``), checkpoint export and registration with lineage (``export``), and
multi-process runs: rank helpers (``distributed``), a torchrun launcher for the flow (``launch``)."""

from asr_eval.train.data import (
    BlockShuffleSampler, LabelEncoder, ShardSpeechDataset, SpeechSeq2SeqCollator,
)
from asr_eval.train.export import export_checkpoint, register_finetune
from asr_eval.train.finetune import FinetuneConfig, FinetuneResult, finetune, read_run

__all__ = ["BlockShuffleSampler", "FinetuneConfig", "FinetuneResult", "LabelEncoder", "ShardSpeechDataset",
           "SpeechSeq2SeqCollator", "export_checkpoint", "finetune", "read_run", "register_finetune"]
