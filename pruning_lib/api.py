"""One entry point for your own model: `pruning_lib.prune(model, method, target, loader=..., ...)`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checks import check_target
from .metrics import count_params
from .pruner import PruneContext, PruneResult
from .registry import METHODS

# the methods whose scores come from training batches
NEEDS_DATA = {"taylor", "obd", "obs", "eigendamage", "improved_eigendamage"}


def prune(model: nn.Module, method: str, target: float, loader: DataLoader | None = None,
          example_inputs: torch.Tensor | None = None, seed: int = 0, **options: Any) -> PruneResult:
    """Prune `model` in place with a registered method so that a fraction `target` of its parameters is
    removed (within one point); returns PruneResult(model, achieved_param_ratio, achieved_flops, info).

    `loader` yields (inputs, labels) training batches (needed by taylor, obd, obs, eigendamage); the input
    shape comes from `example_inputs` (one batch or one example) or from the loader's first batch. Options are
    the method's (`pruning_lib.registry.METHODS[method].options` lists them with their defaults); a wrong name
    or value is refused before any work."""
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}, allowed: {', '.join(METHODS)}")
    entry = METHODS[method]
    for key, value in options.items():
        if key not in entry.options:
            raise ValueError(f"{key}: not an option of {method}, allowed: {', '.join(entry.options) or '(none)'}")
        problem = entry.option_error(key, value)
        if problem:
            raise ValueError(f"{key}: {problem}")
    check_target(target)
    if loader is None and method in NEEDS_DATA:
        raise ValueError(f"loader: {method} scores with training batches; pass a DataLoader of (inputs, labels)")
    if example_inputs is None:
        if loader is None:
            raise ValueError("example_inputs: pass one input batch (or a loader) so that FLOPs can be counted")
        example_inputs = next(iter(loader))[0]
    shape = tuple(example_inputs.shape[1:] if example_inputs.dim() == 4 else example_inputs.shape)
    ctx = PruneContext(loader, shape, count_params(model), seed)
    return entry.fn(model, ctx, target, **{**entry.options, **options})
