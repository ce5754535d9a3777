"""The call shape every pruning method shares: prune(model, ctx, target, options) -> PruneResult."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn
from torch.utils.data import DataLoader

from .metrics import count_macs, count_nonzero_params, gflops


@dataclass
class PruneContext:
    """What a method may use besides the model: training batches for scores, the input shape, the
    parameter count of the unpruned model (the reference for `target`), and a seed."""

    loader: DataLoader
    input_shape: tuple[int, int, int]
    base_params: int
    seed: int = 0


@dataclass
class PruneResult:
    """The pruned model, the achieved fraction of parameters removed, its FLOPs, and method details."""

    model: nn.Module
    achieved_param_ratio: float
    achieved_flops: int
    info: dict[str, Any] = field(default_factory=dict)


class TargetUnreachable(ValueError):
    """The requested target cannot be met within one point; `closest` is the nearest achievable fraction of
    parameters removed (None when unknown). The runner records the row as failed and goes on."""

    def __init__(self, message: str, closest: float | None = None):
        super().__init__(message)
        self.closest = closest


# Integer options are counts (>= 1) except these (hooi_iters = 0 is the truncated HOSVD).
INT_OPTION_MINIMUM = {"hooi_iters": 0}


@dataclass
class Method:
    """A registered pruning method: the function, one line saying what it does, option defaults, and the
    allowed values of its string options (so a config is checked before any work)."""

    fn: Callable[..., PruneResult]
    summary: str
    options: dict[str, Any] = field(default_factory=dict)
    family: str = "weight"  # "weight" (masks; dense FLOPs unchanged) | "channel" | "lowrank" | "eigen"
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def option_error(self, key: str, value: Any) -> str | None:
        """Why `value` is not allowed for option `key` (same type as the default; counts >= 1, or the
        INT_OPTION_MINIMUM; layer_cap in [0, 1); other numbers >= 0; strings from `choices`), or None."""
        default = self.options[key]
        if isinstance(default, bool):
            return None if isinstance(value, bool) else f"{value!r} must be true or false"
        if isinstance(value, bool) or not isinstance(value, type(default) if isinstance(default, str) else
                                                      (int,) if isinstance(default, int) else (int, float)):
            kind = "a string" if isinstance(default, str) else "an integer" if isinstance(default, int) else "a number"
            return f"{value!r} must be {kind} like the default {default!r}"
        if not isinstance(value, str) and not math.isfinite(value):
            return f"{value!r} is not a finite number"
        if isinstance(default, str):
            allowed = self.choices.get(key, ())
            return None if value in allowed else f"unknown {value!r}, allowed: {', '.join(allowed)}"
        if isinstance(default, int) and value < INT_OPTION_MINIMUM.get(key, 1):
            return f"{value!r} must be >= {INT_OPTION_MINIMUM.get(key, 1)}"
        if key == "layer_cap" and not 0.0 <= value < 1.0:
            return f"{value!r} is outside [0, 1) (the largest fraction of a layer's channels removed)"
        if value < 0:
            return f"{value!r} must be >= 0"
        return None


def finish(model: nn.Module, ctx: PruneContext, info: dict[str, Any] | None = None) -> PruneResult:
    """Measure the pruned model: parameter reduction 1 - nonzero / base_params, and FLOPs (2 x MACs)."""
    nonzero = count_nonzero_params(model)
    flops = int(gflops(count_macs(model, ctx.input_shape)) * 1e9)
    return PruneResult(model, 1.0 - nonzero / ctx.base_params, flops, info or {})


def check_target(target: float) -> None:
    """Raise ValueError unless 0 <= target < 1."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target: {target} is outside [0, 1) (the fraction of parameters removed)")


def closest_threshold(candidates: list[float], removed: Callable[[float], float], target: float) -> tuple[float, float]:
    """(t, removed(t)) for the t among sorted `candidates` whose removed fraction is closest to `target`, by
    bisection: `removed` must never decrease as the threshold rises, so O(log n) evaluations suffice."""
    value = lambda i: removed(candidates[i])  # noqa: E731
    lo, hi = 0, len(candidates) - 1
    if value(hi) < target:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if value(mid) < target else (lo, mid)
    best = min((lo, hi), key=lambda i: abs(value(i) - target))
    return candidates[best], value(best)
