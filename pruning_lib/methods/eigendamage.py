"""EigenDamage (Wang, Grosse, Fidler & Zhang, ICML 2019): structured pruning in the Kronecker-factored eigenbasis.

Channel-patch K-FAC approximates the Fisher of a layer's weight W (C_out x C_in x k x k, flattened row-major
as (i, j, p) with p the kernel position) by G ⊗ A ⊗ I_{k²}, with eigendecompositions A = Q_A diag(λ_A) Q_Aᵀ
and G = Q_G diag(λ_G) Q_Gᵀ. In the rotated weight W*[:, :, p] = Q_Gᵀ W[:, :, p] Q_A that Fisher is diagonal,
so removing input eigen-direction j (the whole column j of every W*[:, :, p]) costs

    score_in[j]  = Σ_{i,p} W*[i, j, p]² λ_G[i] λ_A[j]       and likewise  score_out[i] = Σ_{j,p} (...)

Convention: a score is the K-FAC quadratic form Δwᵀ (G ⊗ A ⊗ I) Δw of that removal, the paper's importance;
the second-order prediction of the loss increase is half of it (ΔL ≈ ½ ΔwᵀFΔw). Scores of different layers
share units, so one global threshold removes every direction scoring at or below it, except that a per-layer
cap keeps at least max(1, ceil((1 - layer_cap) · C)) directions per side. A pruned layer becomes
rot_in (1x1, Q_A'ᵀ) -> core (W*', original kernel / stride / padding / dilation) -> rot_out (1x1, Q_G', original
bias): its output width is unchanged, so BatchNorm and residual paths are untouched. A layer whose factored
form would have at least as many parameters as now is left as it is ("never grows").

`target` is the fraction of all parameters of the unpruned model removed (rotations included), hit within
one percentage point by searching the threshold (parameters counted densely, as they are reported: an exact
zero in a rotation, e.g. an eigenvector of a dead channel, is still stored and computed). target_kind="directions" instead removes that fraction of all eigen-directions of the prunable
layers (the paper's "pruning ratio"): the parameter reduction it gives is different (usually larger, as the
core shrinks in both ranks) and is reported, not targeted. Iterative mode re-estimates K-FAC in eval mode
after re-estimating BatchNorm statistics on `num_batches` training batches (the pruned layers changed them).
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..checks import TOLERANCE, checked
from ..curvature import compute_kfac
from ..curvature.fisher import FISHERS
from ..curvature.kfac import MAX_FACTOR
from ..metrics import count_params, layer_pixels
from ..models import classifier_of
from ..pruner import PruneContext, PruneResult, TargetUnreachable, closest_threshold, finish, rounded_width
from ..train import recalibrate_bn

MODES = ("oneshot", "iterative")
TARGET_KINDS = ("params", "directions")


class EigenBottleneck(nn.Sequential):
    """A layer rebuilt in its Kronecker-factored eigenbasis: rot_in (Q_A'ᵀ: C_in -> r_in, 1x1), core (W*':
    r_in -> r_out, the original kernel, stride, padding and dilation), rot_out (Q_G': r_out -> C_out, 1x1,
    the original bias). Output = Q_G' W*' Q_A'ᵀ applied like the original layer."""

    def __init__(self, rot_in: nn.Module, core: nn.Module, rot_out: nn.Module):
        super().__init__(OrderedDict(rot_in=rot_in, core=core, rot_out=rot_out))


@dataclass
class LayerScores:
    """One prunable layer in its eigenbasis: W* of its (core) weight, the bases and direction scores.

    c_in / c_out are the layer's outer widths (unchanged by pruning); W* is (r_out, r_in, k·k) where r are
    the current core ranks (= c_in, c_out for a layer not yet factored); params / macs are its current cost."""

    name: str
    c_in: int
    c_out: int
    kernel: int
    bias: bool
    in_pixels: int
    out_pixels: int
    params: int
    macs: int
    weight_star: torch.Tensor
    eig_A: torch.Tensor
    Q_A: torch.Tensor
    eig_G: torch.Tensor
    Q_G: torch.Tensor
    score_in: torch.Tensor
    score_out: torch.Tensor

    @property
    def ranks(self) -> tuple[int, int]:
        """Current (input, output) ranks of the layer's core."""
        return self.weight_star.shape[1], self.weight_star.shape[0]

    def min_keep(self, layer_cap: float) -> tuple[int, int]:
        """Fewest (input, output) directions the per-layer cap allows: max(1, ceil((1 - cap) · C)), ≤ the ranks."""
        r_in, r_out = self.ranks
        return (min(r_in, max(1, math.ceil((1 - layer_cap) * self.c_in - 1e-9))),
                min(r_out, max(1, math.ceil((1 - layer_cap) * self.c_out - 1e-9))))

    def factored_cost(self, r_in: int, r_out: int) -> tuple[int, int]:
        """(params, MACs) of rot_in -> core -> rot_out with core ranks (r_in, r_out):
        params = C_in·r_in + r_in·r_out·k² + r_out·C_out (+ C_out bias);
        MACs = C_in·r_in·P_in + (r_in·r_out·k² + r_out·C_out)·P_out with P the input / output pixels."""
        params = self.c_in * r_in + r_in * r_out * self.kernel + r_out * self.c_out + (self.c_out if self.bias else 0)
        macs = self.c_in * r_in * self.in_pixels + (r_in * r_out * self.kernel + r_out * self.c_out) * self.out_pixels
        return params, macs


def rotate(weight: torch.Tensor, Q_A: torch.Tensor, Q_G: torch.Tensor) -> torch.Tensor:
    """W* with W*[:, :, p] = Q_Gᵀ W[:, :, p] Q_A for every kernel position p; weight (C_out, C_in[, kh, kw])
    -> (C_out', C_in', k·k) where the primes are the numbers of columns of Q_G and Q_A."""
    w = weight.reshape(weight.shape[0], weight.shape[1], -1).to(Q_A.dtype)
    return torch.einsum("oi,ojp,jk->ikp", Q_G, w, Q_A)


def direction_scores(weight_star: torch.Tensor, eig_A: torch.Tensor,
                     eig_G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(score_in, score_out): I[i, j, p] = W*[i, j, p]² λ_G[i] λ_A[j] summed over (i, p) for input direction j
    and over (j, p) for output direction i = Δwᵀ(G ⊗ A ⊗ I)Δw of removing that direction (2 x predicted ΔL)."""
    importance = weight_star.pow(2) * eig_G[:, None, None] * eig_A[None, :, None]
    return importance.sum(dim=(0, 2)), importance.sum(dim=(1, 2))


def prunable_layers(model: nn.Module, include_classifier: bool = False) -> list[str]:
    """Names of the layers EigenDamage can factor: every ungrouped Conv2d and every Linear (the classifier
    only if asked), and every EigenBottleneck (a layer factored before), not the parts inside one."""
    head = None if include_classifier else classifier_of(model)
    names, inside = [], set()
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, EigenBottleneck):
            inside.add(name)
            names.append(name)
        elif (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)) and m is not head:
            names.append(name)
    return names


def _core(module: nn.Module) -> nn.Module:
    return module.core if isinstance(module, EigenBottleneck) else module


def layer_scores(module: nn.Module, name: str, bases: tuple[torch.Tensor, ...],
                 pixels: tuple[int, int] = (1, 1)) -> LayerScores:
    """Rotate the (core) weight of `module` into the eigenbasis `bases` = (eig_A, Q_A, eig_G, Q_G) of its
    weight block (A over input channels, no bias coordinate) and score every input / output direction, with
    the eigenvalues floored (`_floored`) so that directions of zero estimated curvature do not tie."""
    eig_A, Q_A, eig_G, Q_G = bases
    core = _core(module)
    w_star = rotate(core.weight.detach(), Q_A, Q_G)
    score_in, score_out = direction_scores(w_star, *(_floored(e.to(w_star.dtype)) for e in (eig_A, eig_G)))
    outer_in = module.rot_in if isinstance(module, EigenBottleneck) else module
    outer_out = module.rot_out if isinstance(module, EigenBottleneck) else module
    c_in = outer_in.in_channels if isinstance(outer_in, nn.Conv2d) else outer_in.in_features
    c_out = outer_out.out_channels if isinstance(outer_out, nn.Conv2d) else outer_out.out_features
    params = sum(p.numel() for p in module.parameters())
    ls = LayerScores(name, c_in, c_out, w_star.shape[2], outer_out.bias is not None, pixels[0], pixels[1], params, 0,
                     w_star, eig_A, Q_A, eig_G, Q_G, score_in, score_out)
    if isinstance(module, EigenBottleneck):
        ls.macs = ls.factored_cost(*ls.ranks)[1]
    else:
        ls.macs = c_in * c_out * ls.kernel * pixels[1]
    return ls


# K-FAC from a few batches is rank-deficient on wide layers (G of a 512-channel layer at 1x1 resolution from
# 16 examples has 496 zero eigenvalues): every direction with a zero eigenvalue would score exactly 0, and one
# threshold step would remove all of them at once (50 % asked, 60 % removed on torchvision's ResNet-18).
# Scoring with eigenvalues floored at EIGEN_FLOOR x their mean orders those directions by their weight energy
# and leaves the order of the others unchanged up to that relative precision.
EIGEN_FLOOR = 1e-6


def _floored(eig: torch.Tensor) -> torch.Tensor:
    """λ + EIGEN_FLOOR · mean(λ) (eigenvalues already clamped at 0; a zero factor stays zero)."""
    return eig + EIGEN_FLOOR * eig.mean()


def frobenius_layer_scores(module: nn.Module, name: str, pixels: tuple[int, int] = (1, 1)) -> LayerScores:
    """The Frobenius (curvature-blind) counterpart of `layer_scores`: Q_G / Q_A are the left singular vectors of
    the mode-0 (C_out x C_in·k²) and mode-1 (C_in x C_out·k²) unfoldings of W (torch.linalg.svd; truncated HOSVD
    / Tucker-2 without ALS, the subspaces of `lowrank.tucker2(W, ranks, n_iter=0)`) and λ_A = λ_G = 1, so a
    direction's score is its squared singular value, the ‖ΔW‖²_F of removing it. `rebuild` with a plan's ranks
    then keeps the top singular subspaces at equal cost, in the same 1x1 -> core -> 1x1 form as EigenDamage."""
    w = _core(module).weight.detach().double()
    w3 = w.reshape(w.shape[0], w.shape[1], -1)
    Q_G = torch.linalg.svd(w3.reshape(w3.shape[0], -1), full_matrices=True)[0]
    Q_A = torch.linalg.svd(w3.permute(1, 0, 2).reshape(w3.shape[1], -1), full_matrices=True)[0]
    ones = lambda n: torch.ones(n, dtype=torch.float64, device=w.device)  # noqa: E731
    return layer_scores(module, name, (ones(Q_A.shape[0]), Q_A, ones(Q_G.shape[0]), Q_G), pixels)


def kept_counts(ls: LayerScores, threshold: float, layer_cap: float, round_to: int = 1) -> tuple[int, int]:
    """(input, output) directions kept when every direction scoring <= threshold is removed, within the cap,
    each rounded up to a multiple of round_to or the current rank (`rounded_width`; never rises with the
    threshold, so the bisection holds)."""
    rounded = lambda count, full: rounded_width(count, full, round_to)  # noqa: E731
    (lo_in, lo_out), (r_in, r_out) = ls.min_keep(layer_cap), ls.ranks
    return (max(rounded(lo_in, r_in), rounded(int((ls.score_in > threshold).sum()), r_in)),
            max(rounded(lo_out, r_out), rounded(int((ls.score_out > threshold).sum()), r_out)))


def plan_layers(layers: list[LayerScores], threshold: float, layer_cap: float,
                round_to: int = 1) -> dict[str, tuple[int, int] | None]:
    """{layer: (r_in, r_out) to factor it to (`kept_counts`), or None to leave it as it is (nothing removed, or
    the factored form would not have fewer parameters than the layer has now: "never grows")}."""
    plan = {}
    for ls in layers:
        r = kept_counts(ls, threshold, layer_cap, round_to)
        plan[ls.name] = None if r == ls.ranks or ls.factored_cost(*r)[0] >= ls.params else r
    return plan


def plan_totals(layers: list[LayerScores], plan: dict[str, tuple[int, int] | None]) -> dict[str, int]:
    """Change in parameters and MACs and the directions left ({"params_delta", "macs_delta", "directions",
    "directions_total"}) if `plan` is applied; directions count core ranks against the outer widths."""
    out = {"params_delta": 0, "macs_delta": 0, "directions": 0, "directions_total": 0}
    for ls in layers:
        r = plan[ls.name]
        out["directions_total"] += ls.c_in + ls.c_out
        if r is None:
            out["directions"] += sum(ls.ranks)
            continue
        params, macs = ls.factored_cost(*r)
        out["params_delta"] += params - ls.params
        out["macs_delta"] += macs - ls.macs
        out["directions"] += sum(r)
    return out


def achieved(layers: list[LayerScores], plan: dict, target_kind: str, current_params: int, base_params: int) -> float:
    """Fraction removed under `plan`: of the base model's parameters, or of all directions of the layers."""
    t = plan_totals(layers, plan)
    if target_kind == "directions":
        return 1.0 - t["directions"] / t["directions_total"]
    return 1.0 - (current_params + t["params_delta"]) / base_params


def search_threshold(layers: list[LayerScores], target: float, layer_cap: float, current_params: int,
                     base_params: int, target_kind: str = "params", round_to: int = 1) -> tuple[float, float]:
    """(threshold, achieved fraction) closest to `target` among all score values (bisection: the fraction
    removed never decreases as the threshold rises), ranks rounded by `round_to`. Raise TargetUnreachable
    (a ValueError) when it misses by more than 1 point."""
    scores = torch.cat([torch.cat([ls.score_in, ls.score_out]).double().cpu() for ls in layers])
    candidates = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), scores.unique()]).tolist()
    value = lambda t: achieved(layers, plan_layers(layers, t, layer_cap, round_to),  # noqa: E731
                               target_kind, current_params, base_params)
    threshold, got = closest_threshold(candidates, value, target)
    if abs(got - target) > TOLERANCE:
        raise TargetUnreachable(f"target: {target} cannot be reached within 1 point by eigendamage "
                                f"(target_kind={target_kind}, layer_cap={layer_cap}, round_to={round_to}): "
                                f"the nearest is {got:.4f} "
                                f"(at most {value(candidates[-1]):.4f}); raise layer_cap or include the classifier",
                                closest=got)
    return threshold, got


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in decreasing order of score."""
    return torch.argsort(scores, descending=True)[:k]


@torch.no_grad()
def bottleneck(module: nn.Module, rot_out: torch.Tensor, core: torch.Tensor, rot_in: torch.Tensor,
               freeze_rotations: bool = False) -> EigenBottleneck:
    """An EigenBottleneck applying rot_out · core_p · rot_in (rot_out C_out x r_out, core r_out x r_in [x k·k],
    rot_in r_in x C_in) in place of `module` (Conv2d, Linear or an EigenBottleneck), with its kernel, stride,
    padding, dilation, bias, device and dtype; rotations trainable unless frozen."""
    inner = _core(module)
    bias = module.rot_out.bias if isinstance(module, EigenBottleneck) else module.bias
    c_out, c_in, (r_out, r_in) = rot_out.shape[0], rot_in.shape[1], core.shape[:2]
    like = dict(device=inner.weight.device, dtype=inner.weight.dtype)
    if isinstance(inner, nn.Conv2d):
        parts = (nn.Conv2d(c_in, r_in, 1, bias=False, **like),
                 nn.Conv2d(r_in, r_out, inner.kernel_size, inner.stride, inner.padding, inner.dilation, bias=False,
                           padding_mode=inner.padding_mode, **like),
                 nn.Conv2d(r_out, c_out, 1, bias=bias is not None, **like))
    else:
        parts = (nn.Linear(c_in, r_in, bias=False, **like), nn.Linear(r_in, r_out, bias=False, **like),
                 nn.Linear(r_out, c_out, bias=bias is not None, **like))
    for part, value in zip(parts, (rot_in, core, rot_out)):
        part.weight.copy_(value.reshape(part.weight.shape))
    if bias is not None:
        parts[2].bias.copy_(bias)
    for part in (parts[0], parts[2]):
        part.weight.requires_grad_(not freeze_rotations)
    return EigenBottleneck(*parts)


@torch.no_grad()
def factorise(module: nn.Module, ls: LayerScores, keep_in: torch.Tensor, keep_out: torch.Tensor,
              freeze_rotations: bool = False) -> EigenBottleneck:
    """Rebuild `module` (Conv2d, Linear or an EigenBottleneck) keeping input directions `keep_in` and output
    directions `keep_out` of its (core) eigenbasis: rot_in = Q_A[:, keep_in]ᵀ, core = W*[keep_out][:, keep_in],
    rot_out = Q_G[:, keep_out]. An EigenBottleneck's old rotations are merged in (rot_in' = Q_A'ᵀ R_in,
    rot_out' = R_out Q_G'), so a layer stays one 1x1 -> core -> 1x1 however often it is pruned."""
    rot_in = ls.Q_A[:, keep_in].T
    rot_out = ls.Q_G[:, keep_out]
    if isinstance(module, EigenBottleneck):
        rot_in = rot_in @ module.rot_in.weight.reshape(module.rot_in.weight.shape[0], -1).to(rot_in.dtype)
        rot_out = module.rot_out.weight.reshape(ls.c_out, -1).to(rot_out.dtype) @ rot_out
    return bottleneck(module, rot_out, ls.weight_star[keep_out][:, keep_in], rot_in, freeze_rotations)


def rebuild(model: nn.Module, layers: list[LayerScores], plan: dict[str, tuple[int, int] | None],
            freeze_rotations: bool = False) -> nn.Module:
    """Replace every layer the plan factors by its EigenBottleneck keeping its top-scoring directions (in place)."""
    for ls in layers:
        if plan.get(ls.name) is not None:
            r_in, r_out = plan[ls.name]
            new = factorise(model.get_submodule(ls.name), ls, _top(ls.score_in, r_in), _top(ls.score_out, r_out),
                            freeze_rotations)
            model.set_submodule(ls.name, new)
    return model


def score_model(model: nn.Module, loader, names: list[str], input_shape: tuple[int, ...], fisher: str = "true",
                num_batches: int = 4, max_factor: int | None = MAX_FACTOR, reasons: dict[str, str] | None = None,
                factors: dict | None = None) -> tuple[list[LayerScores], list[str]]:
    """Channel-patch K-FAC of the named layers (of their cores when already factored), their eigenbases and
    direction scores. Returns (scores per layer, layers K-FAC skipped); a layer with a factor side above
    `max_factor` is skipped, and why is added to `reasons` (if given); `factors` (if given) receives
    {layer: its LayerKFAC}."""
    modules = dict(model.named_modules())
    kfac_names = {n: (f"{n}.core" if isinstance(modules[n], EigenBottleneck) else n) for n in names}
    kfac = compute_kfac(model, loader, form="channel_patch", fisher=fisher, num_batches=num_batches,
                        layers=list(kfac_names.values()), max_factor=max_factor)
    skipped = [n for n in names if kfac_names[n] in set(kfac.skipped) or kfac_names[n] not in kfac]
    if reasons is not None:
        reasons.update({n: kfac.too_large.get(kfac_names[n], "no K-FAC factors") for n in skipped})
    kept = [n for n in names if n not in skipped]
    if factors is not None:
        factors.update({n: kfac[kfac_names[n]] for n in kept})
    pixels = layer_pixels(model, kept, input_shape)
    return [layer_scores(modules[n], n, kfac[kfac_names[n]].weight_eig(), pixels[n]) for n in kept], skipped


@checked(mode=MODES, fisher=FISHERS, target_kind=TARGET_KINDS)
def eigendamage(model: nn.Module, loader, target: float, input_shape: tuple[int, ...], base_params: int | None = None,
                include_classifier: bool = False, fisher: str = "true", num_batches: int = 4, mode: str = "oneshot",
                iterations: int = 3, layer_cap: float = 0.9, freeze_rotations: bool = False,
                target_kind: str = "params", round_to: int = 1,
                max_factor: int = MAX_FACTOR) -> tuple[nn.Module, dict[str, Any]]:
    """Prune `model` in place by EigenDamage; returns (model, info). One-shot: one K-FAC estimate, one global
    threshold. Iterative: `iterations` rounds towards target·t/iterations, each re-estimating K-FAC (on the
    cores of layers already factored, after re-estimating BatchNorm statistics) and merging rotations.
    `round_to`: every kept rank a multiple of it (or the layer's whole width). A layer whose K-FAC factor side
    exceeds `max_factor` is left as it is and listed in info["skipped"] (why: info["skip_reasons"])."""
    base_params = base_params or count_params(model)
    names = prunable_layers(model, include_classifier)
    rounds = iterations if mode == "iterative" else 1
    info: dict[str, Any] = {"rounds": [], "kfac_seconds": 0.0, "round_to": round_to, "skip_reasons": {}}
    for t in range(1, rounds + 1):
        if t > 1:
            recalibrate_bn(model, loader, num_batches)
        t0 = time.perf_counter()
        layers, skipped = score_model(model, loader, names, input_shape, fisher, num_batches, max_factor,
                                      info["skip_reasons"])
        info["kfac_seconds"] += time.perf_counter() - t0
        step_target = target * t / rounds
        threshold, got = search_threshold(layers, step_target, layer_cap, count_params(model), base_params,
                                          target_kind, round_to)
        plan = plan_layers(layers, threshold, layer_cap, round_to)
        rebuild(model, layers, plan, freeze_rotations)
        info["rounds"].append({"target": step_target, "threshold": threshold, "achieved": got,
                               "ranks": {n: list(r) for n, r in plan.items() if r is not None}})
        info["skipped"] = skipped
    info["ranks"] = {n: list(_core(model.get_submodule(n)).weight.shape[:2][::-1]) for n in names
                     if isinstance(model.get_submodule(n), EigenBottleneck)}
    info["achieved_" + target_kind] = info["rounds"][-1]["achieved"]
    return model, info


@checked(mode=MODES, fisher=FISHERS, target_kind=TARGET_KINDS)
def prune_eigendamage(model: nn.Module, ctx: PruneContext, target: float, include_classifier: bool = False,
                      fisher: str = "true", num_batches: int = 4, mode: str = "oneshot", iterations: int = 3,
                      layer_cap: float = 0.9, freeze_rotations: bool = False,
                      target_kind: str = "params", round_to: int = 1, max_factor: int = MAX_FACTOR) -> PruneResult:
    """Registry entry: EigenDamage with the threshold searched so that `target` of the parameters is removed
    (kept ranks multiples of `round_to`; layers with a K-FAC factor side above `max_factor` skipped)."""
    model, info = eigendamage(model, ctx.loader, target, ctx.input_shape, ctx.base_params, include_classifier, fisher,
                              num_batches, mode, iterations, layer_cap, freeze_rotations, target_kind, round_to,
                              max_factor)
    return finish(model, ctx, info)
