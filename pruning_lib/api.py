"""One entry point for your own model: `pruning_lib.prune(model, method, target, loader=..., ...)`.

What it promises: every input is checked before any work (the method, its options, the target, whether the
method needs a loader with these options, an input shape); the method then prunes a deep copy, and only when it
has succeeded does the user's model object take the pruned copy's state. Whatever goes wrong inside (a refusal,
TargetUnreachable, a crash in a dependency, KeyboardInterrupt) the model passed in is exactly as it was.
"""
from __future__ import annotations

import copy
import types
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checks import check_target
from .metrics import count_params
from .pruner import PruneContext, PruneResult
from .registry import METHODS


def _hook_owners(model: nn.Module) -> dict[int, Any]:
    """A deepcopy memo that keeps the objects behind the model's hooks shared, not copied: a forward hook
    that is a bound method of the user's recorder still feeds that recorder (functions are never copied)."""
    memo: dict[int, Any] = {}
    for m in model.modules():
        for name, hooks in vars(m).items():
            if name.endswith("hooks") and isinstance(hooks, dict):
                for hook in hooks.values():
                    owner = getattr(hook, "__self__", None)
                    if isinstance(hook, types.MethodType) and not isinstance(owner, nn.Module):
                        memo[id(owner)] = owner
    return memo


def _working_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` for the method to prune (the user's model is never touched until success)."""
    try:
        return copy.deepcopy(model, _hook_owners(model))
    except Exception as e:  # e.g. a non-leaf tensor kept as an attribute
        raise ValueError(f"model: cannot be deep-copied ({type(e).__name__}: {e}); prune works on a copy so that "
                         "a failure leaves your model as it was") from e


def _adopt(model: nn.Module, pruned: nn.Module, training: dict[str, bool]) -> None:
    """Give the user's object `model` the pruned copy's state (parameters, buffers, submodules, hooks,
    attributes), and every module the training flag it had before (a new submodule: its parent's)."""
    state = pruned.__dict__
    model.__dict__.clear()
    model.__dict__.update(state)
    for name, m in model.named_modules():
        parent = name
        while parent not in training and parent:
            parent = parent.rpartition(".")[0]
        m.training = training.get(parent, training[""])


def input_shape_of(batch: Any, what: str = "example_inputs") -> tuple[int, ...]:
    """The shape of one example of `batch`, a tensor whose FIRST dimension is the batch: batch.shape[1:] for
    any rank (2-D tabular (N, D), 3-D sequences / signals (N, C, L) or (N, T, D), 4-D images (N, C, H, W) in
    either memory format, ...). An unbatched single example is not guessed: add its batch dimension
    (x.unsqueeze(0)). A ValueError naming `what` for anything else."""
    if not isinstance(batch, torch.Tensor):
        raise ValueError(f"{what}: expected a tensor batch of inputs, got {type(batch).__name__}; models with "
                         "several inputs or non-tensor inputs are not supported")
    if batch.dim() < 2 or batch.shape[0] < 1:
        raise ValueError(f"{what}: expected a batch with the first dimension = batch (N, ...) and N >= 1, got shape "
                         f"{tuple(batch.shape)}; add the batch dimension of a single example with x.unsqueeze(0)")
    return tuple(int(d) for d in batch.shape[1:])


def prune(model: nn.Module, method: str, target: float, loader: DataLoader | None = None,
          example_inputs: torch.Tensor | None = None, seed: int = 0, **options: Any) -> PruneResult:
    """Prune `model` in place with a registered method so that a fraction `target` of its parameters is
    removed (within one point); returns PruneResult(model, achieved_param_ratio, achieved_flops, info), where
    `result.model is model`.

    Checked before any work, each refusal a ValueError naming the argument: `method` (a name in
    registry.METHODS); the options (`METHODS[method].options` lists them with their defaults; Method.check
    refuses an unknown or renamed name and a wrong value); `target` in [0, 1); `loader` when the method reads
    training batches with these options (`METHODS[method].needs_data(options)`: taylor, obd, obs, eigendamage
    and improved_eigendamage always; l1 and random with steps > 1, which re-estimate BatchNorm statistics
    between steps; magnitude and svd / tucker / cp never); an input shape, from `example_inputs` (one batch)
    or from the loader's first batch. The FIRST dimension is always the batch, whatever the rank: the input
    shape is example_inputs.shape[1:] (tabular (N, D), sequences / signals (N, C, L) or (N, T, D), images
    (N, C, H, W), channels-last or not); an unbatched single example is not guessed (a 3-D image (C, H, W)
    would be read as C examples): pass x.unsqueeze(0). FLOPs are counted on one example of that shape.

    In place, all or nothing: the method prunes a deep copy of `model`; on success the object you passed takes
    the pruned state (its submodules and parameters are new objects: hold on to `model` or `result.model`, not
    to submodules, parameters or optimizers made before), each module keeps the training flag it had, and your
    hooks stay. On ANY exception (a refusal, TargetUnreachable, a crash in a dependency, an interrupt) nothing
    of `model` has changed: parameters, buffers (BatchNorm running statistics), submodules, hooks, training
    flags. Memory: one deep copy of the model while pruning."""
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}, allowed: {', '.join(METHODS)}")
    entry = METHODS[method]
    entry.check(options)
    check_target(target)
    why = entry.data_reason(options)
    if loader is None and why:
        raise ValueError(f"loader: {method} {why}; pass a DataLoader of (inputs, labels)")
    given = example_inputs is not None
    if not given:
        if loader is None:
            raise ValueError("example_inputs: pass one input batch (or a loader) so that FLOPs can be counted")
        example_inputs = next(iter(loader))[0]
    shape = input_shape_of(example_inputs, "example_inputs" if given else "loader's first batch")
    training = {name: m.training for name, m in model.named_modules()}
    work = _working_copy(model)
    ctx = PruneContext(loader, shape, count_params(work), seed)
    result = entry.fn(work, ctx, target, **{**entry.options, **options})
    if result.model is not work:
        raise TypeError(f"{method}: returned a model other than the one it was given; registered methods prune "
                        "in place")
    _adopt(model, work, training)
    result.model = model
    return result
