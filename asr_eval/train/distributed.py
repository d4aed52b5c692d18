"""Multi-process fine-tuning (``torchrun`` / ``accelerate launch``): which process this is, and
the few collectives ``finetune`` needs so that N processes make one run.

Every process of a launch runs ``finetune`` with the same arguments. The Trainer (through
accelerate) gives each process its own per-device batch of every global batch — the
``BlockShuffleSampler`` order is the same on all ranks (same seed and epoch), and rank *r* takes
per-device batch *kN + r* of it — and all-reduces the gradients. This module adds what one run
directory needs on top:

* **one writer** — rank 0 alone writes training_run.json, selection_split.json, the loss stream and
  TensorBoard, eval predictions, live alerts, checkpoints and their checksums, the best/final
  exports and the DuckDB registration; what it decides (run id, the checkpoint to resume from, a
  user error) reaches every rank through ``on_main``, so no rank goes on alone;
* **one stop** — the live monitor's rules run on rank 0's stream; ``StopSyncCallback`` all-reduces
  ``should_training_stop`` at every log and evaluation (points every rank reaches together), so a
  stop decided there stops all ranks at the same step and they save together (a rank that trained
  on would wait forever at the next gradient all-reduce);
* **complete checkpoints** — every rank writes its own RNG state into a checkpoint; ``barrier``
  lets rank 0 hash the checkpoint only after all of them have.

Without a launcher (``WORLD_SIZE`` unset or 1) every function here is a no-op and the rank is 0.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from transformers import TrainerCallback

from asr_eval.errors import AsrEvalError

T = TypeVar("T")
# How long a rank waits at a collective (the Trainer's ddp_timeout default): rank 0 alone hashes each
# checkpoint and, at the end, exports and registers the run while the others wait.
TIMEOUT_S = 1800


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun and accelerate launch set ``WORLD_SIZE``)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def active() -> bool:
    """True in a process group of more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (before the group is joined: the launcher's ``RANK``)."""
    if active():
        import torch.distributed as dist

        return dist.get_rank()
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def world_size() -> int:
    """Processes in this run (1 without a launcher)."""
    if active():
        import torch.distributed as dist

        return dist.get_world_size()
    return launched_world_size()


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory and prints summaries."""
    return rank() == 0


def init(use_cuda: bool) -> None:
    """Join the launch's process group (no-op without a launcher): nccl for CUDA, gloo on CPU,
    through accelerate's ``PartialState`` — the same state the Trainer's arguments then reuse.
    The rendezvous comes from the launcher's environment (MASTER_ADDR, MASTER_PORT, RANK, …);
    collectives time out after ``TIMEOUT_S`` (nccl's own default would be 10 minutes)."""
    if launched_world_size() <= 1 or active():
        return
    from datetime import timedelta

    from accelerate import PartialState

    try:
        PartialState(cpu=not use_cuda, timeout=timedelta(seconds=TIMEOUT_S))
    except (RuntimeError, ValueError) as exc:
        raise AsrEvalError(
            f"rank {rank()} of {launched_world_size()} could not join the process group "
            f"(MASTER_ADDR={os.environ.get('MASTER_ADDR')!r}, MASTER_PORT={os.environ.get('MASTER_PORT')!r}): {exc}. "
            "Start every process with the same torchrun/accelerate launch command; on several nodes "
            "--master-addr must be rank 0's address, reachable from every node") from None
    if not is_main():  # model-loading and download bars: rank 0 shows them once
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        disable_progress_bars()


def _device() -> Any:
    import torch
    import torch.distributed as dist

    return (torch.device("cuda", torch.cuda.current_device()) if "nccl" in str(dist.get_backend())
            else torch.device("cpu"))


def barrier() -> None:
    """Wait until every rank is here."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not active():
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(bool(flag))], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order, on every rank (picklable objects)."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 alone; its result — or its error — on every rank.

    An ``AsrEvalError`` raised on rank 0 is raised on every rank with the same message (each
    process then exits 2 like a single one would); any other error is raised on rank 0 as is and
    as a ``RuntimeError`` naming it on the others. The result must be picklable."""
    if not active():
        return fn()
    import torch.distributed as dist

    payload: list[Any] = [None]
    err: BaseException | None = None
    if is_main():
        try:
            payload[0] = ("ok", fn())
        except AsrEvalError as exc:
            payload[0], err = ("user", str(exc)), exc
        except Exception as exc:  # noqa: BLE001  (re-raised below, after the others have heard of it)
            payload[0], err = ("error", f"{type(exc).__name__}: {exc}"), exc
    dist.broadcast_object_list(payload, src=0)
    kind, value = payload[0]
    if err is not None:
        raise err
    if kind == "user":
        raise AsrEvalError(value)
    if kind == "error":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def require_same(value: Any, what: str, fix: str) -> None:
    """An ``AsrEvalError`` on every rank when the ranks do not all see the same ``value``."""
    seen = gather(value)
    if any(v != seen[0] for v in seen):
        raise AsrEvalError(f"the processes of this launch disagree on {what}: "
                           + ", ".join(f"rank {r}: {v}" for r, v in enumerate(seen)) + f". {fix}")


class StopSyncCallback(TrainerCallback):
    """Makes a stop decided on any rank the stop of every rank.

    The live monitor judges rank 0's stream and sets ``should_training_stop`` there only; the
    Trainer calls ``on_log`` and ``on_evaluate`` on every rank at the same points, so an all-reduce
    there leaves every rank with the same decision before the Trainer acts on it. Place it after
    the callbacks that may stop training and before ``SaveOnStopCallback``."""

    def _sync(self, control):
        if active():
            control.should_training_stop = any_rank(bool(control.should_training_stop))
        return control

    def on_log(self, args, state, control, **kwargs):
        return self._sync(control)

    def on_evaluate(self, args, state, control, **kwargs):
        return self._sync(control)
