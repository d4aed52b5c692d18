"""Start a multi-process fine-tune on this machine from a process that torchrun did not start —
the Prefect flow, a notebook: ``launch`` runs ``torchrun --nproc-per-node N -m asr_eval.train.launch
SPEC`` and returns rank 0's result, read from the run directory.

``python -m asr_eval.train.launch SPEC.json`` is the per-process entry: every process runs
``finetune`` with the spec's corpus, base, out and config, with ``db=None`` — the caller registers
the run afterwards (the flow's single-writer step). From a shell, launch ``asr-eval finetune``
itself with torchrun instead (docs/train.md, "Several GPUs, several nodes").
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from asr_eval.errors import AsrEvalError
from asr_eval.train import distributed
from asr_eval.train.finetune import RUN_FILE, FinetuneConfig, FinetuneResult, read_run, result_from_record


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the launch's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(nproc_per_node: int, entry: list[str], master_port: int | None = None) -> list[str]:
    """``torchrun`` (this interpreter's) for ``nproc_per_node`` processes on this machine, rendezvous
    on 127.0.0.1; ``entry`` is what each process runs (``["-m", module, ...]`` or a script and args)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc_per_node),
            "--master-addr", "127.0.0.1", "--master-port", str(master_port or free_port()), *entry]


def launch(corpus: str | Path, base: str, out_dir: str | Path, config: FinetuneConfig,
           nproc_per_node: int) -> FinetuneResult:
    """Fine-tune in ``nproc_per_node`` processes (one per GPU; on CPU, gloo) and return the result.
    Nothing is registered in DuckDB: call ``register_finetune`` afterwards (one writer)."""
    if nproc_per_node < 1:
        raise AsrEvalError(f"nproc_per_node {nproc_per_node} must be ≥ 1")
    if distributed.launched_world_size() > 1:
        raise AsrEvalError("this process is already one of a torchrun/accelerate launch; call finetune() "
                           "directly, or start this once, outside any launcher")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before = len(read_run(out).get("resumed_from") or []) if (out / RUN_FILE).is_file() else 0
    fd, spec_path = tempfile.mkstemp(prefix="asr-eval-launch-", suffix=".json")
    err_path = Path(spec_path).with_suffix(".error")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"corpus": str(corpus), "base": base, "out": str(out), "config": asdict(config),
                       "error_file": str(err_path)}, fh)
        cmd = torchrun_command(nproc_per_node, ["-m", "asr_eval.train.launch", spec_path])
        rc = subprocess.run(cmd, check=False).returncode
        if rc != 0:
            if err_path.is_file():
                raise AsrEvalError(err_path.read_text(encoding="utf-8"))
            raise RuntimeError(f"the {nproc_per_node}-process fine-tune into {out} failed (torchrun exit status {rc}; "
                               f"its log is above, the run's state in {out / RUN_FILE}); run it again to resume")
    finally:
        Path(spec_path).unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
    record = read_run(out)
    resumed = record.get("resumed_from") or []
    return result_from_record(record, resumed[-1] if len(resumed) > before else None)


def main(argv: list[str]) -> int:
    """One process of ``launch``: run ``finetune`` from the spec file; a user error is written (by
    rank 0) to the spec's error file for the caller, and the process exits 2."""
    from asr_eval.train.finetune import finetune

    if len(argv) != 1:
        print("usage: python -m asr_eval.train.launch SPEC.json (started by torchrun; see launch())", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        finetune(spec["corpus"], spec["base"], spec["out"], FinetuneConfig(**spec["config"]), db=None, progress=True)
    except AsrEvalError as exc:
        if distributed.is_main():
            Path(spec["error_file"]).write_text(str(exc), encoding="utf-8")
            print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
