"""The one sequential loop of the post-training methods (as OBC / SparseGPT / Wanda run it): draw `calibration`
examples from the loader once (labels unused), then for every prunable layer in the order the forward pass calls
them, measure its input second moment A = XᵀX / rows on the calibration examples as the ALREADY PRUNED layers
before it produce them (curvature.activations.input_covariances, im2col for convs), choose its mask (and new
weights), and install the mask with torch.nn.utils.prune, as magnitude pruning does (kept during fine-tuning).

Every layer loses the same fraction of its weights (unstructured; the target is the fraction of ALL parameters,
so the prunable weights lose target · total / prunable), or follows the N:M pattern. A layer whose inputs K-FAC does
not read (a grouped / depthwise or 3-d convolution), or whose input width d exceeds `max_factor` (A is d x d in
float64: VGG's 25088-wide Linear would take 5 GB, and SparseGPT inverts it), gets the magnitude mask
(info["magnitude_layers"]); under N:M a
layer whose input width is not a multiple of M stays dense (info["dense_layers"]), and a target other than the
pattern's own fraction is refused with that fraction."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from ...batches import first_batches
from ...checks import check_positive_int
from ...curvature.activations import input_covariances
from ...curvature.kfac import kfac_layers
from ...modes import eval_mode
from ...pruner import PruneContext, PruneResult, finish
from ..weight import amount_to_remove, prunable_weights
from ..patterns import nm_counts, parse_pattern

# (W as C_out x d, A or None, weights to prune, (N, M) or None) -> (new W, pruned mask)
LayerRule = Callable[[torch.Tensor, torch.Tensor | None, int, tuple[int, int] | None], tuple[torch.Tensor, torch.Tensor]]


def call_order(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> list[nn.Module]:
    """`modules` in the order a forward pass on `x` first calls them (those never called last, in the given
    order)."""
    seen: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(m) if m not in seen else None) for m in modules]
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen + [m for m in modules if m not in seen]


def _counts(model: nn.Module, params: list[nn.Module], target: float, base: int,
            nm: tuple[int, int] | None, pattern: str) -> tuple[dict[nn.Module, int], list[nn.Module]]:
    """{layer: weights to prune} and the layers an N:M pattern leaves dense."""
    if nm is not None:
        return nm_counts(params, target, base, nm, pattern)
    k = amount_to_remove(model, [(m, "weight") for m in params], target, base)
    fraction = k / max(1, sum(m.weight.numel() for m in params))
    return {m: round(fraction * m.weight.numel()) for m in params}, []


def prune_sequentially(model: nn.Module, ctx: PruneContext, target: float, calibration: int, pattern: str,
                       include_classifier: bool, rule: LayerRule, name: str, max_factor: int) -> PruneResult:
    """Prune every prunable layer of `model` in call order with `rule` (module docstring); info names the method's
    layers and what each got."""
    check_positive_int(calibration, "calibration")
    check_positive_int(max_factor, "max_factor")
    nm = parse_pattern(pattern)
    params = [m for m, _ in prunable_weights(model, include_classifier)]
    counts, dense = _counts(model, params, target, ctx.base_params, nm, pattern)
    names = {m: n for n, m in model.named_modules()}
    device = next(model.parameters()).device
    batches = [(x, y) for x, y in first_batches(ctx.loader, num_examples=calibration, device=device)]
    if not batches:
        raise ValueError("loader: no calibration examples (post-training pruning measures each layer's inputs)")
    readable, _ = kfac_layers(model)
    magnitude = []
    for module in call_order(model, list(counts), batches[0][0]):
        layer = names[module]
        measured = layer in readable and module.weight[0].numel() <= max_factor
        A = input_covariances(model, batches, [layer], len(batches)).get(layer) if measured else None
        if A is None:
            magnitude.append(layer)
        w = module.weight.detach()
        new_w, mask = rule(w.reshape(w.shape[0], -1), A, counts[module], nm)
        with torch.no_grad():
            module.weight.copy_(new_w.reshape(w.shape).to(w.dtype))
        prune.custom_from_mask(module, "weight", ~mask.reshape(w.shape))
    info = {"method": name, "pattern": pattern, "calibration": sum(len(x) for x, _ in batches),
            "magnitude_layers": magnitude, "dense_layers": [names[m] for m in dense]}
    return finish(model, ctx, info)
