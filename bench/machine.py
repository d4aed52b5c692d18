"""What the benchmark ran on: CPU model and the vector instruction sets that decide CTranslate2's
and torch's CPU kernels (results differ ~3× between an AVX2 and an AVX-512 VNNI machine)."""

from __future__ import annotations

import os
from pathlib import Path

from asr_eval.provenance import cpu_isa


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return {"cpu": fields.get("model name", "unknown"), "isa": cpu_isa(), "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}
