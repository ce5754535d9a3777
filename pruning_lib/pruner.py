"""The call shape every pruning method shares, fn(model, ctx, target, **options) -> PruneResult, the
registry's Method record, `finish` (measure a pruned model), the threshold bisection, width rounding and the
one schedule every iterative method runs (`step_targets`, `run_steps`: option `steps`, 1 = one shot)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn
from torch.utils.data import DataLoader

from .checks import check_choice, check_options, check_positive_int, option_error
from .metrics import count_macs, count_remaining_params
from .train import recalibrate_bn


@dataclass
class PruneContext:
    """What a method may use besides the model: training batches for scores, the input shape (of ONE example,
    without the batch dimension, any rank: (D,), (C, L), (T, D), (C, H, W), ...), the
    parameter count of the unpruned model (the reference for `target`), a seed, and, from the runner, its
    fine-tuning: `finetune(model, steps)` trains with the runner's recipe for that many optimizer steps, out of
    a budget of `finetune_steps` (a method that uses some reports info["finetune_steps_used"] and the runner
    fine-tunes for the rest, so every method gets the same total)."""

    loader: DataLoader
    input_shape: tuple[int, ...]
    base_params: int
    seed: int = 0
    finetune: Callable[[nn.Module, int], None] | None = None
    finetune_steps: int = 0


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


# Options renamed across methods (old name -> new name): an old name a method no longer has is refused with
# "<old>: renamed; use <new> (<OPTION_NOTES[new]>)" when the method has the new one.
RENAMED_OPTIONS = {"mode": "steps", "iterations": "steps", "schedule": "steps"}
OPTION_NOTES = {"steps": "1 = one shot"}


def no_data(options: dict[str, Any]) -> str | None:
    """Data predicate of a method that never reads training batches."""
    return None


@dataclass
class Method:
    """A registered pruning method: the function (wrapped by checks.checked, which refuses a bad target or
    option before any work), one line saying what it does, its family, and `data`: a predicate of the full
    options ({**defaults, **given}) returning why the method reads training batches with them, as words after
    the method's name ("scores with training batches"; None: it does not). The option defaults and the allowed
    strings are read from the function, so they are written once; `name` is set by the registry."""

    fn: Callable[..., PruneResult]
    summary: str
    family: str = "weight"  # "weight" (masks; dense FLOPs unchanged) | "channel" | "lowrank" | "eigen"
    data: Callable[[dict[str, Any]], str | None] = no_data
    name: str = ""

    def __post_init__(self) -> None:
        if not hasattr(self.fn, "defaults"):
            raise TypeError(f"{self.fn.__name__}: a registered method must be wrapped by checks.checked")
        untyped = [k for k, p in inspect.signature(self.fn).parameters.items() if p.default is None]
        if untyped:  # the config check reads an option's type from its default
            raise TypeError(f"{self.fn.__name__}: option(s) {', '.join(untyped)} need a non-None default")

    @property
    def options(self) -> dict[str, Any]:
        """{option: default} of the method function (its keyword arguments after `target`)."""
        return dict(self.fn.defaults)

    @property
    def choices(self) -> dict[str, tuple[str, ...]]:
        """{string option: allowed values}."""
        return dict(self.fn.choices)

    def option_error(self, key: str, value: Any) -> str | None:
        """Why `value` is not allowed for option `key` (checks.option_error against the default), or None."""
        return option_error(key, value, self.fn.defaults[key], self.fn.choices.get(key, ()))

    def check(self, options: dict[str, Any]) -> None:
        """Refuse, before any work, the first option that this method does not have (a RENAMED_OPTIONS name:
        "mode: renamed; use steps (1 = one shot)"; otherwise the allowed names) or whose value is not allowed
        (its type and range, or the allowed strings): checks.OptionError, a ValueError "<option>: <why>"."""
        check_options(options, self.fn.defaults, self.fn.choices, self.name, RENAMED_OPTIONS, OPTION_NOTES)

    def data_reason(self, options: dict[str, Any] | None = None) -> str | None:
        """Why the method reads training batches with `options` (defaults filled in), or None if it does not."""
        return self.data({**self.options, **(options or {})})

    def needs_data(self, options: dict[str, Any] | None = None) -> bool:
        """True when the method, run with `options` (defaults filled in), reads training batches (a loader)."""
        return self.data_reason(options) is not None


def finish(model: nn.Module, ctx: PruneContext, info: dict[str, Any] | None = None) -> PruneResult:
    """Measure the pruned model: parameter reduction 1 - remaining / base_params (metrics.count_remaining_params:
    nonzero under masks, tensor sizes otherwise), and FLOPs = 2 x MACs."""
    flops = 2 * count_macs(model, ctx.input_shape)
    return PruneResult(model, 1.0 - count_remaining_params(model) / ctx.base_params, flops, info or {})


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


def rounded_width(count: int, size: int, q: int) -> int:
    """`count` channels (or ranks) rounded up to a multiple of q, at most the layer's `size`:
    min(size, ⌈count / q⌉ · q) (widths that vectorised kernels run fast; q = 1: no rounding). Every `round_to`
    option (channel groups, low-rank ranks, EigenDamage directions) rounds with it."""
    return min(size, -(-count // q) * q)


STEP_RULES = ("geometric", "linear")
STEP_BN_BATCHES = 20  # BatchNorm re-estimation between channel steps (as the runner's default after pruning)


def step_targets(target: float, steps: int, rule: str = "geometric") -> list[float]:
    """Fractions of the unpruned parameters removed after each of `steps` steps; the last is `target` itself.
    geometric: 1 - (1 - target)^(k/steps), the same fraction of the remaining parameters at every step (the
    channel methods); linear: target · k / steps, the same fraction of the unpruned ones (the eigen family)."""
    check_positive_int(steps, "steps")
    check_choice(rule, STEP_RULES, "rule")
    if rule == "linear":
        return [target * k / steps for k in range(1, steps + 1)]
    return [1.0 - (1.0 - target) ** (k / steps) for k in range(1, steps)] + [target]


def run_steps(model: nn.Module, loader, target: float, steps: int, step: Callable[[int, float], bool | None], *,
              rule: str = "geometric", bn_batches: int = STEP_BN_BATCHES,
              between: Callable[[int], bool] | None = None) -> list[float]:
    """Run an iterative pruning schedule: `step(k, goal)` for k = 0 .. steps-1 and the goals of
    `step_targets(target, steps, rule)`; it prunes `model` towards `goal` and returns False when it changed
    nothing. Before every later step: BatchNorm statistics re-estimated on `bn_batches` batches of `loader`
    (train.recalibrate_bn) if the previous step changed the model, then `between(k)` (e.g. fine-tuning part of
    the runner's budget, ctx.finetune), and BatchNorm re-estimated again when it returns True (it trained).
    steps = 1 is one shot: one step at `target`, nothing re-estimated. Returns the goals."""
    goals = step_targets(target, steps, rule)
    changed = False
    for k, goal in enumerate(goals):
        if k and changed:
            recalibrate_bn(model, loader, bn_batches)
        if k and between is not None and between(k):
            recalibrate_bn(model, loader, bn_batches)
        changed = step(k, goal) is not False
    return goals
