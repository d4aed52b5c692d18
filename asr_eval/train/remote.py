"""A fine-tuning run whose ``--out`` is a URL (``s3://bucket/runs/NAME``): it trains in a local
staging folder (``~/.cache/asr-eval/runs/<hash of the URL>/NAME``: checkpoints are written and
resumed there, as torch and the Trainer need a filesystem), and rank 0 publishes the finished run
folder to the URL — run record, loss stream, selection, checkpoints, ``best/`` and ``final/``. The
exported models are registered under their URLs (``s3://…/NAME/best``), so scoring them by URL on
any node gives the same model id and keeps the lineage. A staging folder that is empty while the
URL holds a run is filled from the URL first: a run resumes on another machine."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from asr_eval import storage

RUN_FILE = "training_run.json"


def staging(out: str | Path) -> tuple[Path, str | None]:
    """(the local run folder, the URL it is published to — None for a local ``out``)."""
    if not storage.is_url(out):
        return Path(out), None
    url = storage.redact(str(out)).rstrip("/")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return storage.cache_dir() / "runs" / digest / storage.location(url).name, url


def fetch(local: Path, url: str) -> bool:
    """Fill an empty staging folder from the URL's run (resume elsewhere); True when it did."""
    if (local / RUN_FILE).is_file() or storage.stat(storage.location(url) / RUN_FILE) is None:
        return False
    storage.get_tree(storage.location(url), local)
    return True


def publish(local: Path, url: str) -> int:
    """Upload the run folder to its URL; the run record goes last (it says the run is complete)."""
    n = storage.put_tree(local, storage.location(url))
    storage.write_bytes(storage.location(url) / RUN_FILE, (local / RUN_FILE).read_bytes())
    return n


def url_names(rows: list[dict[str, Any]], url: str) -> list[dict[str, Any]]:
    """Exported model rows renamed to their published URLs (model id = URL@weights hash)."""
    from asr_eval.models.naming import display_name

    out = []
    for r in rows:
        name = f"{url}/{Path(r['path']).name}"
        lineage = {"step": r.get("step")} if r.get("step") is not None else None
        out.append({**r, "name": name, "model_id": f"{name}@{str(r['revision'])[:12]}",
                    "display_name": display_name(name, r.get("source"), r.get("path"), lineage)})
    return out
