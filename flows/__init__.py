"""Prefect flows: thin wrappers over the asr_eval library (no business logic here)."""
