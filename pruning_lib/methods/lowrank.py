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
redundant layers). Conv1d and Conv3d layers get the svd form under every decomposition, tucker and cp included
(svd of the C_out x C_in·prod(kernel) unfolding: a conv of the same class C_in -> r with the original kernel /
stride / padding / dilation, then a pointwise conv r -> C_out with the bias; Tucker-2 and CP here are written
for 2-D kernels only). A Linear applied to a sequence (N, T, D) is factorised as any Linear. Grouped convs and
layers of other types (LSTM / GRU, Embedding, transposed convs, ...) are left as they are, their parameters
fixed; when that makes the target unreachable, TargetUnreachable names them. The classifier is factorised only
with include_classifier.

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
`round_to` q: every rank is rounded up to a multiple of q or the unfolding's full rank (a cp layer: its R), and
the same sweep runs on the rounded ranks, so a step adds q directions; a miss by more than a point raises.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import TOLERANCE, check_choice, checked
from ..metrics import count_params
from ..models import classifier_of
from ..modes import eval_mode
from ..pruner import PruneContext, PruneResult, TargetUnreachable, finish, rounded_width
from .lowrank_layers import cp4, cp_layers, svd_layers, tucker2, tucker2_layers
from .vbmf import evbmf_rank

DECOMPOSITIONS = ("svd", "tucker", "cp")
RULES = ("budget", "energy", "vbmf")


# ----------------------------------------------------------------------------------------------- layer analysis

@dataclass
class LayerInfo:
    """One factorisable layer: its form, input / output spatial size (Conv2d: (H, W); Conv1d: (1, L); Conv3d:
    (D·H, W); Linear: (1, positions), positions = 1, or T on a sequence (N, T, D)), and the squared singular values
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


def factorised_cost(info: LayerInfo, ranks: list[int], round_to: int = 1) -> tuple[int, int]:
    """(parameters, MACs per image) of the layer's factorised form at `ranks`. With P_in / P_out the input /
    output pixels: svd r(C_in k_h k_w + C_out) params, P_out · that MACs; tucker C_in r_in + r_in r_out k_h k_w +
    r_out C_out params, P_in C_in r_in + P_out (r_in r_out k_h k_w + r_out C_out) MACs; cp R(C_in + k_h + k_w + C_out)
    params, P_in C_in R + H_out W_in R k_h + P_out R (k_w + C_out) MACs (R = cp_rank(info, ranks, round_to)).
    The bias adds C_out params, no MACs."""
    m = info.module
    bias = 0 if m.bias is None else m.bias.numel()
    p_in, p_out = info.in_hw[0] * info.in_hw[1], info.out_hw[0] * info.out_hw[1]
    if isinstance(m, nn.Linear):
        per = m.in_features + m.out_features
        return ranks[0] * per + bias, p_out * ranks[0] * per
    c_in, c_out = m.in_channels, m.out_channels
    if info.form == "svd":
        per = c_in * m.weight[0, 0].numel() + c_out
        return ranks[0] * per + bias, p_out * ranks[0] * per
    kh, kw = m.kernel_size
    if info.form == "tucker":
        r_out, r_in = tucker_ranks(m, ranks)
        return (c_in * r_in + r_in * r_out * kh * kw + r_out * c_out + bias,
                p_in * c_in * r_in + p_out * (r_in * r_out * kh * kw + r_out * c_out))
    r = cp_rank(info, ranks, round_to)
    return (r * (c_in + kh + kw + c_out) + bias,
            p_in * c_in * r + info.out_hw[0] * info.in_hw[1] * r * kh + p_out * r * (kw + c_out))


def tucker_ranks(module: nn.Conv2d, ranks: list[int]) -> tuple[int, int]:
    """(r_out, r_in) clamped to what a Tucker-2 core can hold: the mode-0 unfolding of an r_out x r_in x k_h x k_w
    core has rank <= r_in k_h k_w (and mode-1 <= r_out k_h k_w), so larger ranks only add zero columns."""
    r_out, r_in = ranks
    kk = module.kernel_size[0] * module.kernel_size[1]
    return min(r_out, r_in * kk), min(r_in, r_out * kk)


def cp_rank(info: LayerInfo, ranks: list[int], round_to: int = 1) -> int:
    """CP rank with the parameter count of the Tucker-2 form at (r_out, r_in): ⌊params / (C_in+k_h+k_w+C_out)⌋,
    ≥ 1, rounded up to a multiple of round_to (CP's rank has no full width to stop at)."""
    m, (r_out, r_in) = info.module, ranks
    kh, kw = m.kernel_size
    tucker = m.in_channels * r_in + r_in * r_out * kh * kw + r_out * m.out_channels
    r = max(1, tucker // (m.in_channels + kh + kw + m.out_channels))
    return -(-r // round_to) * round_to


def is_factorised(info: LayerInfo, ranks: list[int], round_to: int = 1) -> bool:
    """True when the factorised form at `ranks` has fewer parameters than the layer as it is."""
    return factorised_cost(info, ranks, round_to)[0] < info.params


def rounded_ranks(info: LayerInfo, ranks: list[int], round_to: int = 1) -> list[int]:
    """`ranks` rounded up to multiples of round_to, at most each unfolding's full rank (`rounded_width`); a cp
    layer's Tucker-2 ranks stay as they are (cp_rank rounds its one rank R)."""
    if info.form == "cp":
        return list(ranks)
    return [rounded_width(r, full, round_to) for r, full in zip(ranks, info.full_ranks)]


def _check(form: str, rule: str | None = None) -> None:
    check_choice(form, DECOMPOSITIONS, "form")
    if rule is not None:
        check_choice(rule, RULES, "rank_rule")


FACTORISABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _factorisable(m: nn.Module) -> bool:
    """A Linear, or a Conv1d / Conv2d / Conv3d with groups = 1."""
    return isinstance(m, nn.Linear) or (isinstance(m, FACTORISABLE) and m.groups == 1)


def _positions(shape: torch.Size, conv: bool) -> tuple[int, int]:
    """(rows, columns) of the positions a layer's weight is applied at, per example: a Conv2d's (H, W), a
    Conv1d's (1, L), a Conv3d's (D·H, W); a Linear's (1, prod of the dimensions between batch and features)."""
    if conv:
        dims = [int(d) for d in shape[2:]]
        return (1, dims[0]) if len(dims) == 1 else (math.prod(dims[:-1]), dims[-1])
    return 1, math.prod(int(d) for d in shape[1:-1])


def unfactorised_layers(model: nn.Module, infos: list[LayerInfo]) -> list[str]:
    """"name (Type)" of every module with a weight matrix or kernel (a parameter of 2 or more dimensions) that
    is not among `infos`: what a low-rank method leaves as it is (the classifier, grouped convs, LSTM, ...)."""
    done = {id(i.module) for i in infos}
    return [f"{n} ({type(m).__name__}{', classifier' if _is_head(model, m) else ''})"
            for n, m in model.named_modules()
            if id(m) not in done and any(p.dim() > 1 for p in m.parameters(recurse=False))]


def _is_head(model: nn.Module, m: nn.Module) -> bool:
    try:
        return m is classifier_of(model)
    except ValueError:
        return False


@torch.no_grad()
def analyse(model: nn.Module, input_shape: tuple[int, ...], form: str,
            include_classifier: bool = False) -> list[LayerInfo]:
    """Every factorisable layer of `model` (Conv1d / Conv2d / Conv3d with groups = 1 and Linear, the classifier
    only if asked), in module order, with its spatial sizes (one forward pass of a zero batch of one example of
    `input_shape`, any rank) and spectra. Conv1d / Conv3d layers get the svd form whatever `form` is. A layer
    whose forward never runs (its weight read functionally, as nn.MultiheadAttention reads out_proj) is left out:
    replacing the module would not change the computation."""
    _check(form)
    head = None if include_classifier else classifier_of(model)
    layers = [(n, m) for n, m in model.named_modules()
              if _factorisable(m) and m is not head]
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
        if name not in sizes:  # never called as a module (nn.MultiheadAttention's out_proj): left as it is
            continue
        w = m.weight.detach()
        one_by_one = (isinstance(m, nn.Linear) or not isinstance(m, nn.Conv2d)  # Conv1d / Conv3d: svd form
                      or tuple(m.kernel_size) == (1, 1))
        unfoldings = [w.reshape(w.shape[0], -1)]
        if not one_by_one and form != "svd":
            unfoldings.append(w.transpose(0, 1).reshape(w.shape[1], -1))
        sv = [torch.linalg.svdvals(u).double().cpu() for u in unfoldings]
        (inp, out), conv = sizes[name], not isinstance(m, nn.Linear)
        infos.append(LayerInfo(name, m, "svd" if one_by_one else form, _positions(inp, conv), _positions(out, conv),
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
              base_params: int | None = None, round_to: int = 1) -> dict[str, list[int]]:
    """Ranks meeting a parameter budget: from rank 1 everywhere, add directions of all layers in the rule's
    priority order while fixed_params + Σ_layers min(factorised, original params) stays <= max_params; of the
    last state and the one with the next direction added, keep the closer to max_params. Raise
    TargetUnreachable (closest reduction 1 - rank-1 params / base_params) when rank 1 everywhere is too big.
    With round_to q every state is costed, and returned, at its `rounded_ranks` (cp: its rank R rounded), so
    ranks grow q directions at a time: the same sweep of the rule's threshold on rounded ranks."""
    cost = lambda info, r: min(factorised_cost(info, rounded_ranks(info, r, round_to), round_to)[0],  # noqa: E731
                               info.params)
    ranks = {i.name: [1] * len(i.spectra) for i in infos}
    kept = {i.name: cost(i, ranks[i.name]) for i in infos}
    total = fixed_params + sum(kept.values())
    if total > max_params:
        raise TargetUnreachable(f"target: needs at most {max_params:.0f} parameters but rank {round_to} in every "
                                f"factorisable layer keeps {total}; lower the target or set include_classifier",
                                closest=None if base_params is None else 1.0 - total / base_params)
    events = sorted((-float(p[j]), k, mode, j) for k, info in enumerate(infos)
                    for mode, p in enumerate(priorities(info, rule)) for j in range(1, len(p)))
    for _, k, mode, _ in events:
        info = infos[k]
        trial = list(ranks[info.name])
        trial[mode] += 1
        new = cost(info, trial)
        new_total = total - kept[info.name] + new
        if new_total > max_params:
            if new_total - max_params < max_params - total:
                ranks[info.name] = trial
            break
        ranks[info.name], kept[info.name], total = trial, new, new_total
    return {i.name: rounded_ranks(i, ranks[i.name], round_to) for i in infos}


# ------------------------------------------------------------------------------------------------ factorisation

def factorise_layer(info: LayerInfo, ranks: list[int], hooi_iters: int = 10, cp_iters: int = 50,
                    seed: int = 0, round_to: int = 1, whitening: torch.Tensor | None = None) -> nn.Sequential:
    """The layer's factorised form at `ranks` (svd: [r], whitened by `whitening` if given; tucker / cp:
    [r_out, r_in]; cp's R rounded by round_to)."""
    m = info.module
    if info.form == "svd":
        return svd_layers(m, ranks[0], whitening)
    if info.form == "tucker":
        return tucker2_layers(m, *tucker2(m.weight, tucker_ranks(m, ranks), hooi_iters))
    return cp_layers(m, cp4(m.weight, cp_rank(info, ranks, round_to), cp_iters, seed))


def factorise(model: nn.Module, infos: list[LayerInfo], ranks: dict[str, list[int]], hooi_iters: int = 10,
              cp_iters: int = 50, seed: int = 0, round_to: int = 1,
              whitening: dict[str, torch.Tensor] | None = None) -> dict[str, list[int] | None]:
    """Replace (in place) every layer of `infos` whose factorised form at its ranks is smaller (svd forms whitened
    by whitening[name] where given); returns the ranks used per layer (cp: [R], rounded by round_to), None for a
    layer left as it is."""
    plan: dict[str, list[int] | None] = {}
    for info in infos:
        r = ranks[info.name]
        if not is_factorised(info, r, round_to):
            plan[info.name] = None
            continue
        parent, _, child = info.name.rpartition(".")
        setattr(model.get_submodule(parent), child, factorise_layer(info, r, hooi_iters, cp_iters, seed, round_to,
                                                                    (whitening or {}).get(info.name)))
        plan[info.name] = ([cp_rank(info, r, round_to)] if info.form == "cp" else
                           list(tucker_ranks(info.module, r)) if info.form == "tucker" else list(r))
    return plan


@checked(form=DECOMPOSITIONS, rank_rule=RULES)
def lowrank_prune(model: nn.Module, ctx: PruneContext, target: float, form: str, rank_rule: str = "budget",
                  include_classifier: bool = False, hooi_iters: int = 10, cp_iters: int = 50,
                  round_to: int = 1) -> PruneResult:
    """Factorise `model` in place so that a fraction `target` of ctx.base_params is removed (within one point):
    spectra of every factorisable layer, ranks by `fit_ranks` under `rank_rule` (multiples of `round_to`, or a
    layer's full rank), then the decompositions. Raise TargetUnreachable when the ranks miss by over a point."""
    t0 = time.perf_counter()
    infos = analyse(model, ctx.input_shape, form, include_classifier)
    return finish(model, ctx, fit_and_factorise(model, ctx, target, infos, form, rank_rule, round_to, t0,
                                                hooi_iters, cp_iters))


def fit_and_factorise(model: nn.Module, ctx: PruneContext, target: float, infos: list[LayerInfo], form: str,
                      rank_rule: str, round_to: int, t0: float, hooi_iters: int = 10, cp_iters: int = 50,
                      whitening: dict[str, torch.Tensor] | None = None, label: str | None = None) -> dict:
    """Ranks of `infos` (their spectra) fitted to `target` by `fit_ranks`, then the factorisation in place
    (`factorise`); returns the info record. Raise TargetUnreachable when the ranks miss by over a point, naming
    the layers left as they are."""
    fixed = count_params(model) - sum(i.params for i in infos)
    others = unfactorised_layers(model, infos)
    kept = (f" (left as they are: {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}; {form} factorises "
            "Linear and ungrouped Conv1d / Conv2d / Conv3d layers)") if others else ""
    try:
        ranks = fit_ranks(infos, rank_rule, (1.0 - target) * ctx.base_params, fixed, ctx.base_params, round_to)
    except TargetUnreachable as e:
        raise TargetUnreachable(f"{e}{kept}", closest=e.closest) from None
    planned = 1.0 - (fixed + sum(min(factorised_cost(i, ranks[i.name], round_to)[0], i.params)
                                 for i in infos)) / ctx.base_params
    if abs(planned - target) > TOLERANCE:
        raise TargetUnreachable(f"target: {target} cannot be reached within 1 point by {label or form} (rank_rule="
                                f"{rank_rule}, round_to={round_to}): the nearest is {planned:.4f}{kept}",
                                closest=planned)
    t1 = time.perf_counter()
    plan = factorise(model, infos, ranks, hooi_iters, cp_iters, ctx.seed, round_to, whitening)
    return {"form": form, "rank_rule": rank_rule, "round_to": round_to, "ranks": plan,
            "seconds_ranks": round(t1 - t0, 3), "seconds_decompose": round(time.perf_counter() - t1, 3)}


@checked(rank_rule=RULES)
def prune_svd(model: nn.Module, ctx: PruneContext, target: float, rank_rule: str = "budget",
              include_classifier: bool = False, round_to: int = 1) -> PruneResult:
    """Registry entry: truncated SVD of every conv (C_out x C_in k k) and linear layer, ranks multiples of round_to."""
    return lowrank_prune(model, ctx, target, "svd", rank_rule, include_classifier, round_to=round_to)


@checked(rank_rule=RULES)
def prune_tucker(model: nn.Module, ctx: PruneContext, target: float, rank_rule: str = "budget",
                 include_classifier: bool = False, hooi_iters: int = 10, round_to: int = 1) -> PruneResult:
    """Registry entry: Tucker-2 (HOOI) of every k x k conv, SVD of 1x1 convs and linear layers, ranks multiples
    of round_to."""
    return lowrank_prune(model, ctx, target, "tucker", rank_rule, include_classifier, hooi_iters=hooi_iters,
                         round_to=round_to)


@checked(rank_rule=RULES)
def prune_cp(model: nn.Module, ctx: PruneContext, target: float, rank_rule: str = "budget",
             include_classifier: bool = False, cp_iters: int = 50, round_to: int = 1) -> PruneResult:
    """Registry entry: CP (ALS) of every k x k conv, SVD of 1x1 convs and linear layers, ranks (CP: R) multiples
    of round_to."""
    return lowrank_prune(model, ctx, target, "cp", rank_rule, include_classifier, cp_iters=cp_iters,
                         round_to=round_to)

