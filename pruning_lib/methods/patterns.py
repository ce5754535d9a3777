"""Sparsity patterns of a weight matrix W (C_out x d; a conv's weight flattened to C_out x C_in·k·k, the order of
its im2col inputs): "unstructured" (any entries), or N:M semi-structured, at most N nonzeros in every group of M
consecutive inputs of a row (2:4 is what NVIDIA's sparse tensor cores run, `torch.sparse.to_sparse_semi_structured`
on CUDA; CPUs run an N:M matrix no faster than a dense one). Masks are boolean, True = pruned."""
from __future__ import annotations

import torch
from torch import nn

from ..pruner import TargetUnreachable

PATTERNS = ("unstructured", "1:2", "2:4", "4:8")


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """(N, M) of an "N:M" pattern, None for "unstructured"."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern: unknown '{pattern}', allowed: {', '.join(PATTERNS)}")
    if pattern == "unstructured":
        return None
    n, m = pattern.split(":")
    return int(n), int(m)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Pruned entries of an N:M pattern: in every group of m consecutive columns of each row, the m − n lowest
    `scores` (ties: the earlier column is kept). scores: (rows, d) with d a multiple of m."""
    rows, d = scores.shape
    if d % m:
        raise ValueError(f"scores: {d} columns are not a multiple of M = {m}")
    groups = scores.reshape(rows, d // m, m)
    lowest = groups.argsort(dim=-1, stable=True)[..., : m - n]
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, lowest, True).reshape(rows, d)


def row_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Pruned entries when a layer loses `count` weights compared per output row (Wanda's groups): every row loses
    ⌊count / rows⌋ of its lowest scores, the first count mod rows rows one more."""
    rows, d = scores.shape
    per_row = torch.full((rows,), count // rows, dtype=torch.long, device=scores.device)
    per_row[: count % rows] += 1
    order = scores.argsort(dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d, device=scores.device).expand(rows, d))
    return rank < per_row[:, None]


def nm_counts(layers: list[nn.Module], target: float, base_params: int, nm: tuple[int, int],
              pattern: str) -> tuple[dict[nn.Module, int], list[nn.Module]]:
    """({layer: weights an N:M pattern prunes}, the layers it leaves dense: input width not a multiple of M). The
    fraction of `base_params` that gives is the only target it meets (0 prunes nothing): any other is refused
    (TargetUnreachable) naming it."""
    n, m = nm
    fits = [layer for layer in layers if layer.weight[0].numel() % m == 0]
    counts = {layer: layer.weight.numel() // m * (m - n) for layer in fits} if target > 0 else {}
    removed = sum(counts.values()) / base_params
    if abs(removed - target) > 0.01:
        raise TargetUnreachable(f"target: pattern {pattern} prunes {m - n} of every {m} weights of the layers whose "
                                f"input width is a multiple of {m}, {removed:.4f} of this model's parameters; "
                                f"set target to {removed:.4f} (or 0)", closest=removed)
    return counts, [layer for layer in layers if layer not in fits]
