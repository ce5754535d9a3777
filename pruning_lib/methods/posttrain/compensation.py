"""Layer-wise least-squares compensation: after a structured method has pruned or factorised a network, refit what
remains, layer after layer, so that each layer's output on calibration examples matches the dense network's.

Which weights. A layer that kept its name (a channel-pruned conv or Linear, the classifier) is refit on its kept
input channels, its kept output channels matched to the same channels of the dense layer (He et al. 2017 /
ThiNet's least-squares reconstruction); a layer replaced by an nn.Sequential of factors (svd, tucker, cp, the
eigen methods) has its LAST factor refit, given the factors before it (SVD-LLM's closed-form update of the
second factor is the Linear case). Inner factors, grouped / depthwise and 3-d convs (whose rows this module does
not form) and layers wider than `max_factor` are left as they are (report["skipped"] says why).

Sequential (OBC / SparseGPT's order): the layers are refit in the order the forward pass calls them, each on the
inputs Z that the already-refit layers before it produce, against the dense layer's outputs Y on the dense
network's own inputs, so later layers also undo the error of earlier ones. Labels are never read.

The fit. With Z the layer's input rows (`curvature.kfac.layer_rows`: im2col patches, a trailing 1 with a bias), W
its present weights and λI = damp(ZᵀZ, γ) − ZᵀZ (the kit's one damping convention, γ relative to the mean of
diag ZᵀZ):  W' = argmin ‖W'Z − Y‖² + λ‖W' − W‖²,  W'ᵀ = (ZᵀZ + λI)⁻¹(ZᵀY + λWᵀ). The ridge pulls towards W, not
towards 0, so W' = W whenever W already reproduces Y (nothing pruned) and, as W' = W is a candidate,
‖W'Z − Y‖ ≤ ‖WZ − Y‖ always. Only d x d moments are kept (ZᵀZ, Zᵀ X_dense), accumulated in float64.

BatchNorm. Before the refits, every BatchNorm takes the dense network's running statistics (of its kept
channels): the refit pre-BatchNorm outputs are fitted to the dense ones, whose statistics those are. The runner
re-estimates BatchNorm afterwards as after every method."""
from __future__ import annotations

import copy
import functools
import inspect
import time
from typing import Any, Callable

import torch
from torch import nn

from ...batches import first_batches
from ...checks import check_positive_int, checked
from ...curvature.damping import damp
from ...curvature.kfac import CONVS, MAX_FACTOR, layer_rows
from ...modes import eval_mode
from ...pruner import PruneContext, PruneResult, finish
from .calibration import call_order

DAMPING = 0.01  # γ of the ridge towards the present weights, relative to the mean of diag ZᵀZ
CHUNK = 32  # examples per forward pass while the moments accumulate (im2col rows of a chunk stay small)


def least_squares_refit(w: torch.Tensor, zz: torch.Tensor, zy: torch.Tensor, damping: float = DAMPING) -> torch.Tensor:
    """W' = argmin_W' ‖W'Z − Y‖² + λ‖W' − W‖² from the moments ZᵀZ (d x d) and ZᵀY (d x C_out), with
    λ = damping · mean(diag ZᵀZ): W'ᵀ = (ZᵀZ + λI)⁻¹(ZᵀY + λWᵀ); `w` is C_out x d. damping = 0 is ordinary least
    squares (Z of full column rank). float64."""
    h = damp(zz, damping)
    rhs = zy.double() + (h - zz.double()) @ w.double().T
    return torch.linalg.solve(h, rhs).T


def reconstruction_error(w: torch.Tensor, zz: torch.Tensor, zy: torch.Tensor, yy: float) -> float:
    """‖WZ − Y‖² / ‖Y‖² from the moments: (tr(W ZᵀZ Wᵀ) − 2 tr(W ZᵀY) + ‖Y‖²) / ‖Y‖²."""
    w = w.double()
    err = (w @ zz * w).sum() - 2 * (w * zy.T).sum() + yy
    return float(err.clamp_min(0) / max(yy, torch.finfo(torch.float64).tiny))


def _matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as C_out x d, with its bias as the last column."""
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    return w if layer.bias is None else torch.cat([w, layer.bias.detach()[:, None]], 1)


def _readable(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, CONVS) and layer.groups == 1)


def counterparts(dense: nn.Module, model: nn.Module, kept: dict[str, list[int]],
                 max_factor: int = MAX_FACTOR) -> tuple[dict[str, tuple[str, list[int] | None]], dict[str, str]]:
    """({layer of `model` to refit: (its dense layer, the dense output channels it keeps or None for all)},
    {layer left as it is: why}): a layer of the same name, or the last factor of an nn.Sequential that replaced
    a dense layer (module docstring)."""
    dense_layers = {n: m for n, m in dense.named_modules() if isinstance(m, (nn.Linear, *CONVS))}
    modules = dict(model.named_modules())
    pairs, skipped = {}, {}
    for name, m in modules.items():
        if not isinstance(m, (nn.Linear, nn.Conv3d, *CONVS)):
            continue
        parent, _, child = name.rpartition(".")
        if name in dense_layers:
            source, outputs = name, kept.get(name)
        elif parent in dense_layers and isinstance(modules[parent], nn.Sequential) and \
                child == list(modules[parent]._modules)[-1]:
            source, outputs = parent, None
        else:
            continue  # an inner factor: its outputs have no dense counterpart
        if not (_readable(m) and _readable(dense_layers[source])):
            skipped[name] = "grouped / depthwise or 3-d convolution"
        elif m.weight[0].numel() > max_factor or dense_layers[source].weight[0].numel() > max_factor:
            skipped[name] = f"input width above max_factor {max_factor}"
        else:
            pairs[name] = (source, outputs)
    return pairs, skipped


@torch.no_grad()
def _dense_batchnorm(dense: nn.Module, model: nn.Module, kept: dict[str, list[int]]) -> None:
    """Every BatchNorm of `model` takes the running statistics of the dense BatchNorm of its name (kept channels)."""
    dense_modules = dict(dense.named_modules())
    for name, bn in model.named_modules():
        source = dense_modules.get(name)
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and isinstance(source, type(bn)) and bn.track_running_stats:
            idx = torch.as_tensor(kept.get(name, range(source.num_features)), device=bn.running_mean.device)
            if len(idx) == bn.num_features:
                bn.running_mean.copy_(source.running_mean[idx])
                bn.running_var.copy_(source.running_var[idx])


@torch.no_grad()
def _moments(dense: nn.Module, model: nn.Module, source: nn.Module, layer: nn.Module, outputs: list[int] | None,
             inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(ZᵀZ, ZᵀY, ‖Y‖²) of `layer` in `model` against `source` in `dense` on the calibration `inputs`, or None when
    their rows do not correspond (a layer never called, or different output positions)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [source.register_forward_hook(lambda m, i, o: seen.__setitem__("dense", i[0])),
             layer.register_forward_hook(lambda m, i, o: seen.__setitem__("model", i[0]))]
    w = _matrix(source).double()
    w = w if outputs is None else w[torch.as_tensor(outputs, device=w.device)]
    zz = zy = None
    yy = 0.0
    try:
        for x in inputs:
            for chunk in x.split(CHUNK):
                dense(chunk)
                model(chunk)
                if "model" not in seen or "dense" not in seen:  # a layer the forward pass never calls
                    return None
                z, xd = layer_rows(layer, seen["model"].double()), layer_rows(source, seen["dense"].double())
                if z.shape[0] != xd.shape[0]:
                    return None
                y = xd @ w.T
                zz = z.T @ z if zz is None else zz + z.T @ z
                zy = z.T @ y if zy is None else zy + z.T @ y
                yy += float((y * y).sum())
    finally:
        for h in hooks:
            h.remove()
    return zz, zy, yy


@torch.no_grad()
def compensate_layers(dense: nn.Module, model: nn.Module, loader, calibration: int = 256,
                      kept: dict[str, list[int]] | None = None, damping: float = DAMPING,
                      max_factor: int = MAX_FACTOR) -> dict[str, Any]:
    """Refit `model` (pruned from `dense`) layer after layer on `calibration` examples of `loader` (module
    docstring); `kept` maps a channel-pruned layer or norm to its kept output channels (the channel methods'
    info["kept_outputs"]). Returns a report: layers refit, skipped (why), calibration examples, each layer's
    relative reconstruction error ‖WZ − Y‖² / ‖Y‖² before and after, and the seconds it took."""
    check_positive_int(calibration, "calibration")
    start, kept = time.perf_counter(), kept or {}
    device = next(model.parameters()).device
    inputs = [x for x, _ in first_batches(loader, num_examples=calibration, device=device)]
    if not inputs:
        raise ValueError("loader: no calibration examples (compensation refits each layer on its inputs)")
    pairs, skipped = counterparts(dense, model, kept, max_factor)
    modules, dense_modules = dict(model.named_modules()), dict(dense.named_modules())
    _dense_batchnorm(dense, model, kept)
    errors = {}
    with eval_mode(model), eval_mode(dense):
        for layer in call_order(model, [modules[n] for n in pairs], inputs[0][:1]):
            name = next(n for n in pairs if modules[n] is layer)
            source, outputs = pairs[name]
            moments = _moments(dense, model, dense_modules[source], layer, outputs, inputs)
            if moments is None:
                skipped[name] = (f"its inputs do not match those of '{source}' row for row (not called, or other "
                                 "output positions)")
                continue
            zz, zy, yy = moments
            w = _matrix(layer)
            new = least_squares_refit(w, zz, zy, damping)
            errors[name] = (reconstruction_error(w, zz, zy, yy), reconstruction_error(new, zz, zy, yy))
            new = new.to(layer.weight.dtype)
            if layer.bias is not None:
                layer.bias.copy_(new[:, -1])
                new = new[:, :-1]
            layer.weight.copy_(new.reshape(layer.weight.shape))
    return {"layers": list(errors), "skipped": skipped, "calibration": sum(len(x) for x in inputs),
            "layer_errors": errors, "seconds": round(time.perf_counter() - start, 3)}


def compensation_data(reason: Callable[[dict], str | None]) -> Callable[[dict], str | None]:
    """The data predicate of a method given `compensate`: its own reason, or the calibration examples."""
    def data(options: dict) -> str | None:
        if options.get("compensate"):
            return reason(options) or "refits each layer on calibration examples of training batches (compensate)"
        return reason(options)
    return data


def with_compensation(fn: Callable[..., PruneResult]) -> Callable[..., PruneResult]:
    """The structured method `fn` (checks.checked) with two more options: `compensate` (False: as before) and
    `calibration` (examples of the loader the refits read). With compensate=True the dense model is copied
    first (one more copy in memory), `fn` prunes, `compensate_layers` refits and info["compensation"] is its
    report."""
    own = inspect.signature(fn)
    extra = [inspect.Parameter("compensate", inspect.Parameter.KEYWORD_ONLY, default=False),
             inspect.Parameter("calibration", inspect.Parameter.KEYWORD_ONLY, default=256)]

    @functools.wraps(fn)
    def run(model: nn.Module, ctx: PruneContext, target: float, *args: Any, compensate: bool = False,
            calibration: int = 256, **options: Any) -> PruneResult:
        if not compensate:
            return fn(model, ctx, target, *args, **options)
        check_positive_int(calibration, "calibration")
        dense = copy.deepcopy(model)
        result = fn(model, ctx, target, *args, **options)
        report = compensate_layers(dense, result.model, ctx.loader, calibration, result.info.get("kept_outputs"))
        return finish(result.model, ctx, {**result.info, "compensation": report})

    run.__signature__ = own.replace(parameters=[*own.parameters.values(), *extra])
    return checked(**fn.choices)(run)
