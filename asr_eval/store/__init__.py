"""DuckDB store: schema (``schema.py``), connection + migrations (``db.py``), loaders, queries."""

from asr_eval.store.db import DEFAULT_DB, connect, migrate

__all__ = ["DEFAULT_DB", "connect", "migrate"]
