"""Unstructured magnitude pruning with masks (torch.nn.utils.prune), global or layer-wise.

Prunable: the weights of every Conv1d / Conv2d / Conv3d and Linear layer (PRUNABLE) except the classifier (unless
`include_classifier`); BatchNorm parameters and biases are never pruned. `target` is the fraction
of *all* parameters removed, so the prunable weights lose target * total / prunable of theirs. Other
layers with weights (LSTM / GRU / RNN, Embedding, ...) are kept: a target they make unreachable raises
TargetUnreachable naming them.
Masks stay during fine-tuning (the forward pass multiplies by them). Dense FLOPs do not shrink:
a sparse weight still costs a dense convolution unless a sparse kernel runs it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from ..checks import check_target, checked
from ..metrics import count_nonzero_params, count_params
from ..models import classifier_of
from ..pruner import PruneContext, PruneResult, TargetUnreachable, finish
from .patterns import PATTERNS, nm_counts, nm_mask, parse_pattern


PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_weights(model: nn.Module, include_classifier: bool = False) -> list[tuple[nn.Module, str]]:
    """(module, "weight") of every Conv1d / Conv2d / Conv3d / Linear, the classifier only if asked."""
    head = None if include_classifier else classifier_of(model)
    return [(m, "weight") for m in model.modules()
            if isinstance(m, PRUNABLE) and m is not head]


def amount_to_remove(model: nn.Module, params: list[tuple[nn.Module, str]], target: float, base_params: int) -> int:
    """Number of prunable weights to zero so that nonzero = (1 - target) * base_params."""
    to_remove = count_nonzero_params(model) - int(round((1.0 - target) * base_params))
    prunable = sum(int(torch.count_nonzero(getattr(m, n))) for m, n in params)
    if to_remove > prunable:
        ids = {id(m) for m, _ in params}
        others = sorted({f"{n} ({type(m).__name__})" for n, m in model.named_modules() if id(m) not in ids
                         and any(p.dim() > 1 for p in m.parameters(recurse=False))})
        kept = f"; weights of {', '.join(others[:5])}{' ...' if len(others) > 5 else ''} are kept" if others else ""
        raise TargetUnreachable(f"target: {target} removes {to_remove} parameters but only {prunable} are prunable "
                                "(Conv1d / Conv2d / Conv3d / Linear weights; classifier, BatchNorm and biases are kept"
                                f"{kept}); lower the target or set include_classifier",
                                closest=target - (to_remove - prunable) / base_params)
    return max(to_remove, 0)


def magnitude_prune(model: nn.Module, target: float, base_params: int, scope: str = "global",
                    include_classifier: bool = False, pattern: str = "unstructured") -> nn.Module:
    """Zero the smallest-|w| weights so that a fraction `target` of `base_params` is removed.

    scope="global": one threshold over all prunable weights; "layer": every layer loses the same fraction.
    pattern "N:M" (methods/patterns.py): the m − n smallest |w| of every m consecutive inputs of each row, in every
    layer whose input width is a multiple of m (scope then plays no part; the target must be the pattern's own
    fraction, as for wanda / sparsegpt).
    """
    check_target(target)
    params = prunable_weights(model, include_classifier)
    nm = parse_pattern(pattern)
    if nm is not None:
        counts, _ = nm_counts([m for m, _ in params], target, base_params, nm, pattern)
        for m in counts:
            w = m.weight.detach()
            prune.custom_from_mask(m, "weight", ~nm_mask(w.abs().reshape(w.shape[0], -1), *nm).reshape(w.shape))
        return model
    k = amount_to_remove(model, params, target, base_params)
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=k)
    elif scope == "layer":
        fraction = k / sum(getattr(m, n).numel() for m, n in params)
        for m, n in params:
            prune.l1_unstructured(m, n, amount=fraction)
    else:
        raise ValueError(f"scope: unknown '{scope}', allowed: global, layer")
    return model


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The pruning masks of a model, by module name."""
    return {name: m.weight_mask for name, m in model.named_modules() if hasattr(m, "weight_mask")}


@checked(pattern=PATTERNS)
def prune_global(model: nn.Module, ctx: PruneContext, target: float, include_classifier: bool = False,
                 pattern: str = "unstructured") -> PruneResult:
    """Registry entry: global magnitude pruning."""
    magnitude_prune(model, target, ctx.base_params, "global", include_classifier, pattern)
    return finish(model, ctx, {"scope": "global", "pattern": pattern})


@checked(pattern=PATTERNS)
def prune_layerwise(model: nn.Module, ctx: PruneContext, target: float,
                    include_classifier: bool = False, pattern: str = "unstructured") -> PruneResult:
    """Registry entry: layer-wise magnitude pruning (the same fraction in every layer)."""
    magnitude_prune(model, target, ctx.base_params, "layer", include_classifier, pattern)
    return finish(model, ctx, {"scope": "layer", "pattern": pattern})


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights of every Conv1d / Conv2d / Conv3d / Linear layer, by module name."""
    return {name: 1.0 - float(torch.count_nonzero(m.weight)) / m.weight.numel()
            for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def layer_sensitivity(model: nn.Module, evaluate_fn, fractions: list[float]) -> dict[str, list[float]]:
    """Accuracy when one layer at a time loses `fraction` of its smallest-|w| weights (others intact).

    `evaluate_fn(model) -> accuracy`. Returns {layer name: [accuracy per fraction]}.
    """
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, PRUNABLE):
            continue
        original, accs = m.weight.detach().clone(), []
        for f in fractions:
            prune.l1_unstructured(m, "weight", amount=f)
            accs.append(evaluate_fn(model))
            prune.remove(m, "weight")
            with torch.no_grad():
                m.weight.copy_(original)
        out[name] = accs
    return out


def prune_copy(model: nn.Module, sparsity: float, scope: str = "global") -> nn.Module:
    """A pruned deep copy of `model` (the original is left as it is)."""
    pruned = copy.deepcopy(model)
    return magnitude_prune(pruned, sparsity, count_params(pruned), scope)
