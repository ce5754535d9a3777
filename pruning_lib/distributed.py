"""Several processes, one experiment: torch.distributed under torchrun, and no-ops in a single process.

`torchrun --nproc_per_node=N main_prune.py ...` starts N processes with RANK / WORLD_SIZE / LOCAL_RANK set;
`init_from_env` joins them into one process group (NCCL when CUDA is available, else gloo). Then:
- training and fine-tuning wrap the model in DistributedDataParallel (train.py), each rank reading its own
  share of every epoch (data.make_loader(shard="train"), a DistributedSampler);
- statistics (K-FAC A and G, EKFAC moments, the diagonal Fisher, Taylor scores, evaluation counts) are
  summed over ranks with `all_reduce_sum` before anything is divided or decomposed, so N ranks see N times
  the data in the same time; every rank then takes the same pruning decision from the same numbers, and
  `broadcast_state` makes rank 0's pruned weights everyone's;
- rank 0 alone writes results, tables and checkpoints and shows progress (`is_main`).
Without a process group every function here does nothing, so single-process runs are unchanged. Inside one,
the statistics functions (evaluate, recalibrate_bn, compute_kfac, ekfac_correction, diagonal_fisher,
taylor_scores, train) are collectives: call them on every rank, never under `if is_main()`.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the process that writes files and shows progress (rank 0, or the only process)."""
    return rank() == 0


def init_from_env() -> torch.device | None:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1): NCCL on CUDA (one GPU
    per process, cuda:LOCAL_RANK), gloo on CPU. Returns the process's device, or None when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return None
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        return device
    dist.init_process_group("gloo")
    return torch.device("cpu")


def local_device() -> torch.device | None:
    """This rank's device under torch.distributed (cuda:LOCAL_RANK with NCCL, cpu with gloo), else None."""
    if not is_distributed():
        return None
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over all ranks, in place (a no-op in a single process)."""
    if not is_distributed():
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_reduce_count(value: float, device: torch.device) -> float:
    """A number summed over all ranks (e.g. examples seen)."""
    if not is_distributed():
        return value
    t = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled through the process group: objects between our own ranks only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) run on rank 0 only (e.g. reading or writing a file), its result handed to every
    rank. An exception raised there is raised on every rank, so no rank is left waiting in a collective."""
    if not is_distributed():
        return fn(*args, **kwargs)
    box: list[Any] = [None, None]
    if is_main():
        try:
            box[0] = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised on every rank just below
            box[1] = e
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise box[1]
    return box[0]


@torch.no_grad()
def broadcast_state(model: nn.Module) -> nn.Module:
    """Copy rank 0's parameters and buffers into every rank's `model`, in place. The shapes must agree: ranks
    that took different pruning decisions raise, all of them, naming the first layer that differs."""
    if not is_distributed():
        return model
    state = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    theirs = broadcast_object(shapes)
    differ = torch.tensor(float(theirs != shapes), device=next(iter(state.values())).device)
    dist.all_reduce(differ)
    if differ.item() > 0:
        first = next((k for k in sorted(set(shapes) | set(theirs)) if shapes.get(k) != theirs.get(k)), None)
        where = f" at '{first}' ({shapes.get(first)} vs {theirs.get(first)})" if first else ""
        raise RuntimeError(f"rank {rank()}: the pruned models of the ranks differ{where}; their statistics disagree")
    for value in state.values():
        dist.broadcast(value, src=0)
    return model
