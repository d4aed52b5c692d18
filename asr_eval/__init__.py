"""asr-eval: ingest, normalize, score, fine-tune and report on Mandarin Whisper models."""

__version__ = "0.1.0"
