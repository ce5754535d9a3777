"""Low-rank factorisation of conv / linear layers: truncated SVD, Tucker-2 (Kim et al., ICLR 2016) and CP
(Lebedev et al., ICLR 2015), with ranks chosen by retained energy, VBMF or one global parameter budget.

Factorised forms, each an nn.Sequential of plain nn.Conv2d / nn.Linear (BatchNorm and residuals untouched):
  svd     W (C_out x C_in k_h k_w, or out x in) = U S Vᵀ -> conv k_h x k_w (C_in -> r, rows S½V_rᵀ, original
          stride / padding / dilation) -> 1x1 conv (r -> C_out, U_r S½, original bias); Linear -> two Linears.
  tucker  W ≈ core ×₀ U_out ×₁ U_in (HOOI, 0 iterations = HOSVD) -> 1x1 (C_in -> r_in, U_inᵀ) -> core conv
          (r_in -> r_out, original kernel / stride / padding / dilation) -> 1x1 (r_out -> C_out, U_out, bias).
  cp      W[t, s, y, x] ≈ Σ_r A[t, r] B[s, r] V[y, r] H[x, r] (CP-ALS) -> 1x1 (C_in -> R, Bᵀ) -> depthwise
          k_h x 1 (V; stride / padding / dilation of the height axis) -> depthwise 1 x k_w (H; those of the
          width axis) -> 1x1 (R -> C_out, A, bias). Each rank-one term's norm is split evenly over its factors.
Linear layers and 1x1 convs always get the svd form (Tucker-2 / CP of a 1x1 kernel are the matrix SVD plus
redundant layers). Grouped convs are left as they are; the classifier is factorised only with include_classifier.

Rank selection works on "directions": the singular vectors of each unfolding of a weight (svd: C_out x C_in k_h k_w;
tucker / cp: mode 0, C_out x C_in k_h k_w, and mode 1, C_in x C_out k_h k_w), with squared singular values σ²:
  energy  the fewest directions retaining a fraction e of the unfolding's energy Σσ²;
  vbmf    ⌈ρ · r_VBMF⌉ directions, r_VBMF from analytic EVBMF (pruning_lib.vbmf; ρ = 1 gives Kim et al.'s ranks);
  budget  every direction whose share σ²_i / Σσ² of its unfolding's energy exceeds one global threshold τ.
A CP layer gets the rank whose parameter count matches its Tucker-2 form at the selected (r_out, r_in),
R = ⌊params_tucker / (C_in + k_h + k_w + C_out)⌋ (CP has no spectrum of its own; Lebedev et al. chose R by hand).
A layer whose factorised form would have at least as many parameters as now is left as it is.

Hitting a target (`fit_ranks`): each rule orders all directions of all layers (budget: by share; energy: by the
energy retained before the direction; vbmf: by index / r_VBMF), which is the same as sweeping its one scalar
(τ, e or ρ). Starting from rank 1 everywhere, directions are added in that order until the parameter count reaches
(1 − target) · base_params; the closer of the last two states is kept. A step adds one direction, i.e. at most one
layer's per-rank cost (< 1 % of resnet8, far less for larger nets), so the target is met within one point.
"""
from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_choice, checked
from ..metrics import count_params
from ..models import classifier_of
from ..modes import eval_mode
from ..pruner import PruneContext, PruneResult, TargetUnreachable, finish
from .vbmf import evbmf_rank

FORMS = ("svd", "tucker", "cp")
RULES = ("budget", "energy", "vbmf")


# ----------------------------------------------------------------------------------------------- tensorly adapter
# The only place that touches tensorly: its PyTorch backend keeps the tensors on the weight's device.

def tucker2(weight: torch.Tensor, ranks: tuple[int, int], n_iter: int = 10) -> tuple[torch.Tensor, ...]:
    """Tucker-2 of a conv kernel over its output / input channel modes: (core, U_out, U_in) with orthonormal
    U_out (C_out x r_out), U_in (C_in x r_in) and core = W ×₀ U_outᵀ ×₁ U_inᵀ, so W ≈ core ×₀ U_out ×₁ U_in.
    n_iter = 0 is the truncated HOSVD; n_iter > 0 runs that many HOOI sweeps (tensorly.partial_tucker)."""
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    with tl.backend_context("pytorch"):
        (core, (u_out, u_in)), _ = partial_tucker(weight.detach(), rank=list(ranks), modes=[0, 1],
                                                  n_iter_max=n_iter, init="svd")
    return core, u_out, u_in


def cp4(weight: torch.Tensor, rank: int, n_iter: int = 50, seed: int = 0) -> list[torch.Tensor]:
    """Rank-R CP of a 4-way kernel by ALS (tensorly.parafac, SVD init): factors [A (C_out x R), B (C_in x R),
    V (k_h x R), H (k_w x R)] with W[t,s,y,x] ≈ Σ_r A[t,r] B[s,r] V[y,r] H[x,r]; each term's weight λ_r is
    split as λ_r^¼ over its four factor columns."""
    import tensorly as tl
    from tensorly.decomposition import parafac

    with tl.backend_context("pytorch"), warnings.catch_warnings():
        # SVD init of a mode narrower than R fills the missing columns at random; tensorly warns each time.
        warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
        weights, factors = parafac(weight.detach(), rank, n_iter_max=n_iter, init="svd", tol=1e-10,
                                   random_state=seed, normalize_factors=True)
    scale = weights.abs() ** 0.25
    factors = [f * scale for f in factors]
    factors[0] = factors[0] * torch.sign(weights)
    return factors


# ----------------------------------------------------------------------------------------- layers from factors

def _conv(c_in: int, c_out: int, like: nn.Conv2d, kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
          groups: int = 1, bias: bool = False) -> nn.Conv2d:
    w = like.weight
    padding_mode = like.padding_mode if kernel != (1, 1) else "zeros"
    return nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias, padding_mode,
                     device=w.device, dtype=w.dtype)


def _set(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape))
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def svd_layers(layer: nn.Module, rank: int) -> nn.Sequential:
    """Truncated SVD of a Linear or Conv2d (weight as C_out x C_in k_h k_w) at `rank`: `project` (C_in -> r,
    S½V_rᵀ; for a conv the original kernel / stride / padding / dilation) then `expand` (r -> C_out, U_r S½, bias)."""
    w = layer.weight.detach()
    u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
    root = s[:rank].sqrt()
    first, second = root[:, None] * vh[:rank], u[:, :rank] * root
    bias = None if layer.bias is None else layer.bias.detach()
    if isinstance(layer, nn.Linear):
        project = nn.Linear(layer.in_features, rank, bias=False, device=w.device, dtype=w.dtype)
        expand = nn.Linear(rank, layer.out_features, bias=bias is not None, device=w.device, dtype=w.dtype)
    else:
        project = _conv(layer.in_channels, rank, layer, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation)
        expand = _conv(rank, layer.out_channels, layer, bias=bias is not None)
    return nn.Sequential(OrderedDict(project=_set(project, first), expand=_set(expand, second, bias)))


def tucker2_layers(layer: nn.Conv2d, core: torch.Tensor, u_out: torch.Tensor, u_in: torch.Tensor) -> nn.Sequential:
    """The conv W = core ×₀ U_out ×₁ U_in as `reduce_in` (1x1, C_in -> r_in, U_inᵀ), `core` (r_in -> r_out, the
    original kernel / stride / padding / dilation) and `restore_out` (1x1, r_out -> C_out, U_out, original bias)."""
    r_out, r_in = core.shape[:2]
    bias = None if layer.bias is None else layer.bias.detach()
    return nn.Sequential(OrderedDict(
        reduce_in=_set(_conv(layer.in_channels, r_in, layer), u_in.T),
        core=_set(_conv(r_in, r_out, layer, layer.kernel_size, layer.stride, layer.padding, layer.dilation), core),
        restore_out=_set(_conv(r_out, layer.out_channels, layer, bias=bias is not None), u_out, bias)))


def cp_layers(layer: nn.Conv2d, factors: list[torch.Tensor]) -> nn.Sequential:
    """The conv with kernel Σ_r A[:,r] ∘ B[:,r] ∘ V[:,r] ∘ H[:,r] as `pointwise_in` (1x1, C_in -> R, Bᵀ),
    `depthwise_v` (k_h x 1, groups R, stride (s_h, 1), padding (p_h, 0), dilation (d_h, 1)), `depthwise_h`
    (1 x k_w, stride (1, s_w), padding (0, p_w), dilation (1, d_w)) and `pointwise_out` (1x1, R -> C_out, A, bias).
    A string padding ('same' / 'valid') is passed to both depthwise convs; it acts per axis."""
    a, b, v, h = factors
    rank = a.shape[1]
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    pad_v, pad_h = (layer.padding, layer.padding) if isinstance(layer.padding, str) else \
        ((layer.padding[0], 0), (0, layer.padding[1]))
    bias = None if layer.bias is None else layer.bias.detach()
    return nn.Sequential(OrderedDict(
        pointwise_in=_set(_conv(layer.in_channels, rank, layer), b.T),
        depthwise_v=_set(_conv(rank, rank, layer, (kh, 1), (sh, 1), pad_v, (dh, 1), groups=rank), v.T),
        depthwise_h=_set(_conv(rank, rank, layer, (1, kw), (1, sw), pad_h, (1, dw), groups=rank), h.T),
        pointwise_out=_set(_conv(rank, layer.out_channels, layer, bias=bias is not None), a, bias)))


# ----------------------------------------------------------------------------------------------- layer analysis

@dataclass
class LayerInfo:
    """One factorisable layer: its form, input / output spatial size, and the squared singular values
    (descending, float64 on CPU) and EVBMF rank of each unfolding (svd: one; tucker / cp: mode 0 then mode 1)."""

    name: str
    module: nn.Module
    form: str
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    spectra: list[torch.Tensor]
    vbmf: list[int]

    @property
    def params(self) -> int:
        """Parameters of the layer as it is."""
        return sum(p.numel() for p in self.module.parameters())

    @property
    def full_ranks(self) -> list[int]:
        """The rank of every unfolding that reproduces the weight exactly."""
        return [len(s) for s in self.spectra]


def factorised_cost(info: LayerInfo, ranks: list[int]) -> tuple[int, int]:
    """(parameters, MACs per image) of the layer's factorised form at `ranks`. With P_in / P_out the input /
    output pixels: svd r(C_in k_h k_w + C_out) params, P_out · that MACs; tucker C_in r_in + r_in r_out k_h k_w +
    r_out C_out params, P_in C_in r_in + P_out (r_in r_out k_h k_w + r_out C_out) MACs; cp R(C_in + k_h + k_w + C_out)
    params, P_in C_in R + H_out W_in R k_h + P_out R (k_w + C_out) MACs. The bias adds C_out params, no MACs."""
    m = info.module
    bias = 0 if m.bias is None else m.bias.numel()
    if isinstance(m, nn.Linear):
        per = m.in_features + m.out_features
        return ranks[0] * per + bias, ranks[0] * per
    c_in, c_out, (kh, kw) = m.in_channels, m.out_channels, m.kernel_size
    p_in, p_out = info.in_hw[0] * info.in_hw[1], info.out_hw[0] * info.out_hw[1]
    if info.form == "svd":
        per = c_in * kh * kw + c_out
        return ranks[0] * per + bias, p_out * ranks[0] * per
    if info.form == "tucker":
        r_out, r_in = tucker_ranks(m, ranks)
        return (c_in * r_in + r_in * r_out * kh * kw + r_out * c_out + bias,
                p_in * c_in * r_in + p_out * (r_in * r_out * kh * kw + r_out * c_out))
    r = cp_rank(info, ranks)
    return (r * (c_in + kh + kw + c_out) + bias,
            p_in * c_in * r + info.out_hw[0] * info.in_hw[1] * r * kh + p_out * r * (kw + c_out))


def tucker_ranks(module: nn.Conv2d, ranks: list[int]) -> tuple[int, int]:
    """(r_out, r_in) clamped to what a Tucker-2 core can hold: the mode-0 unfolding of an r_out x r_in x k_h x k_w
    core has rank <= r_in k_h k_w (and mode-1 <= r_out k_h k_w), so larger ranks only add zero columns."""
    r_out, r_in = ranks
    kk = module.kernel_size[0] * module.kernel_size[1]
    return min(r_out, r_in * kk), min(r_in, r_out * kk)


def cp_rank(info: LayerInfo, ranks: list[int]) -> int:
    """CP rank with the parameter count of the Tucker-2 form at (r_out, r_in): ⌊params / (C_in+k_h+k_w+C_out)⌋, ≥ 1."""
    m, (r_out, r_in) = info.module, ranks
    kh, kw = m.kernel_size
    tucker = m.in_channels * r_in + r_in * r_out * kh * kw + r_out * m.out_channels
    return max(1, tucker // (m.in_channels + kh + kw + m.out_channels))


def is_factorised(info: LayerInfo, ranks: list[int]) -> bool:
    """True when the factorised form at `ranks` has fewer parameters than the layer as it is."""
    return factorised_cost(info, ranks)[0] < info.params


def _check(form: str, rule: str | None = None) -> None:
    check_choice(form, FORMS, "form")
    if rule is not None:
        check_choice(rule, RULES, "rank_rule")


@torch.no_grad()
def analyse(model: nn.Module, input_shape: tuple[int, ...], form: str,
            include_classifier: bool = False) -> list[LayerInfo]:
    """Every factorisable layer of `model` (Conv2d with groups = 1 and Linear, the classifier only if asked),
    in module order, with its spatial sizes (one forward pass of a zero image of `input_shape`) and spectra."""
    _check(form)
    head = None if include_classifier else classifier_of(model)
    layers = [(n, m) for n, m in model.named_modules()
              if (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)) and m is not head]
    sizes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: sizes.__setitem__(n, (inp[0].shape, out.shape)))
             for n, m in layers]
    with eval_mode(model):
        try:
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
        finally:
            for h in hooks:
                h.remove()
    infos = []
    for name, m in layers:
        w = m.weight.detach()
        one_by_one = isinstance(m, nn.Linear) or tuple(m.kernel_size) == (1, 1)
        unfoldings = [w.reshape(w.shape[0], -1)]
        if not one_by_one and form != "svd":
            unfoldings.append(w.transpose(0, 1).reshape(w.shape[1], -1))
        sv = [torch.linalg.svdvals(u).double().cpu() for u in unfoldings]
        (inp, out), conv = sizes[name], isinstance(m, nn.Conv2d)
        infos.append(LayerInfo(name, m, "svd" if one_by_one else form,
                               tuple(inp[-2:]) if conv else (1, 1), tuple(out[-2:]) if conv else (1, 1),
                               [s ** 2 for s in sv],
                               [max(1, evbmf_rank(s, tuple(u.shape))[0]) for s, u in zip(sv, unfoldings)]))
    return infos


# ------------------------------------------------------------------------------------------------ rank selection

def priorities(info: LayerInfo, rule: str) -> list[torch.Tensor]:
    """Per unfolding, each direction's priority under `rule` (non-increasing along the spectrum; a direction is
    kept when its priority exceeds the rule's threshold): budget σ²_i / Σσ²; energy 1 − Σ_{j<i} σ²_j / Σσ²;
    vbmf −i / r_VBMF (0-based i)."""
    _check(info.form, rule)
    out = []
    for s2, r_vbmf in zip(info.spectra, info.vbmf):
        total = s2.sum().clamp_min(torch.finfo(s2.dtype).tiny)
        if rule == "budget":
            out.append(s2 / total)
        elif rule == "energy":
            out.append(1.0 - torch.cat([s2.new_zeros(1), s2.cumsum(0)[:-1]]) / total)
        else:
            out.append(-torch.arange(len(s2), dtype=s2.dtype) / r_vbmf)
    return out


def rule_ranks(info: LayerInfo, rule: str, value: float) -> list[int]:
    """Ranks of one layer at a fixed rule value, at least 1 per unfolding: energy (value = e in (0, 1]) keeps
    the fewest directions retaining e of the energy; vbmf (value = ρ > 0) keeps ⌈ρ r_VBMF⌉; budget (value = τ)
    keeps the directions with share σ²_i / Σσ² > τ."""
    _check(info.form, rule)
    threshold = {"energy": 1.0 - value, "vbmf": -value, "budget": value}[rule]
    return [max(1, int((p > threshold).sum())) for p in priorities(info, rule)]


def fit_ranks(infos: list[LayerInfo], rule: str, max_params: float, fixed_params: int,
              base_params: int | None = None) -> dict[str, list[int]]:
    """Ranks meeting a parameter budget: from rank 1 everywhere, add directions of all layers in the rule's
    priority order while fixed_params + Σ_layers min(factorised, original params) stays <= max_params; of the
    last state and the one with the next direction added, keep the closer to max_params. Raise
    TargetUnreachable (closest reduction 1 - rank-1 params / base_params) when rank 1 everywhere is too big."""
    ranks = {i.name: [1] * len(i.spectra) for i in infos}
    kept = {i.name: min(factorised_cost(i, ranks[i.name])[0], i.params) for i in infos}
    total = fixed_params + sum(kept.values())
    if total > max_params:
        raise TargetUnreachable(f"target: needs at most {max_params:.0f} parameters but rank 1 in every factorisable "
                                f"layer keeps {total}; lower the target or set include_classifier",
                                closest=None if base_params is None else 1.0 - total / base_params)
    events = sorted((-float(p[j]), k, mode, j) for k, info in enumerate(infos)
                    for mode, p in enumerate(priorities(info, rule)) for j in range(1, len(p)))
    for _, k, mode, _ in events:
        info = infos[k]
        trial = list(ranks[info.name])
        trial[mode] += 1
        new = min(factorised_cost(info, trial)[0], info.params)
        new_total = total - kept[info.name] + new
        if new_total > max_params:
            if new_total - max_params < max_params - total:
                ranks[info.name] = trial
            break
        ranks[info.name], kept[info.name], total = trial, new, new_total
    return ranks


# ------------------------------------------------------------------------------------------------ factorisation

def factorise_layer(info: LayerInfo, ranks: list[int], hooi_iters: int = 10, cp_iters: int = 50,
                    seed: int = 0) -> nn.Sequential:
    """The layer's factorised form at `ranks` (svd: [r]; tucker / cp: [r_out, r_in])."""
    m = info.module
    if info.form == "svd":
        return svd_layers(m, ranks[0])
    if info.form == "tucker":
        return tucker2_layers(m, *tucker2(m.weight, tucker_ranks(m, ranks), hooi_iters))
    return cp_layers(m, cp4(m.weight, cp_rank(info, ranks), cp_iters, seed))


def factorise(model: nn.Module, infos: list[LayerInfo], ranks: dict[str, list[int]], hooi_iters: int = 10,
              cp_iters: int = 50, seed: int = 0) -> dict[str, list[int] | None]:
    """Replace (in place) every layer of `infos` whose factorised form at its ranks is smaller; returns the
    ranks used per layer (cp: [R]), None for a layer left as it is."""
    plan: dict[str, list[int] | None] = {}
    for info in infos:
        r = ranks[info.name]
        if not is_factorised(info, r):
            plan[info.name] = None
            continue
        parent, _, child = info.name.rpartition(".")
        setattr(model.get_submodule(parent), child, factorise_layer(info, r, hooi_iters, cp_iters, seed))
        plan[info.name] = ([cp_rank(info, r)] if info.form == "cp" else
                           list(tucker_ranks(info.module, r)) if info.form == "tucker" else list(r))
    return plan


@checked(form=FORMS, rank_rule=RULES)
def lowrank_prune(model: nn.Module, ctx: PruneContext, target: float, form: str, rank_rule: str = "budget",
                  include_classifier: bool = False, hooi_iters: int = 10, cp_iters: int = 50) -> PruneResult:
    """Factorise `model` in place so that a fraction `target` of ctx.base_params is removed (within one point):
    spectra of every factorisable layer, ranks by `fit_ranks` under `rank_rule`, then the decompositions."""
    t0 = time.perf_counter()
    infos = analyse(model, ctx.input_shape, form, include_classifier)
    fixed = count_params(model) - sum(i.params for i in infos)
    ranks = fit_ranks(infos, rank_rule, (1.0 - target) * ctx.base_params, fixed, ctx.base_params)
    t1 = time.perf_counter()
    plan = factorise(model, infos, ranks, hooi_iters, cp_iters, ctx.seed)
    return finish(model, ctx, {"form": form, "rank_rule": rank_rule, "ranks": plan,
                               "seconds_ranks": round(t1 - t0, 3), "seconds_decompose": round(time.perf_counter() - t1, 3)})


@checked(rank_rule=RULES)
def prune_svd(model: nn.Module, ctx: PruneContext, target: float, rank_rule: str = "budget",
              include_classifier: bool = False) -> PruneResult:
    """Registry entry: truncated SVD of every conv (C_out x C_in k k) and linear layer."""
    return lowrank_prune(model, ctx, target, "svd", rank_rule, include_classifier)


@checked(rank_rule=RULES)
def prune_tucker(model: nn.Module, ctx: PruneContext, target: float, rank_rule: str = "budget",
                 include_classifier: bool = False, hooi_iters: int = 10) -> PruneResult:
    """Registry entry: Tucker-2 (HOOI) of every k x k conv, SVD of 1x1 convs and linear layers."""
    return lowrank_prune(model, ctx, target, "tucker", rank_rule, include_classifier, hooi_iters=hooi_iters)


@checked(rank_rule=RULES)
def prune_cp(model: nn.Module, ctx: PruneContext, target: float, rank_rule: str = "budget",
             include_classifier: bool = False, cp_iters: int = 50) -> PruneResult:
    """Registry entry: CP (ALS) of every k x k conv, SVD of 1x1 convs and linear layers."""
    return lowrank_prune(model, ctx, target, "cp", rank_rule, include_classifier, cp_iters=cp_iters)

