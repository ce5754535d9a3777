"""Eigenbases and direction scores of the eigen family (EigenDamage, Wang, Grosse, Fidler & Zhang, ICML 2019).

Channel-patch K-FAC approximates the Fisher of a layer's weight W (C_out x C_in x k x k, flattened row-major
as (i, j, p) with p the kernel position) by G ⊗ A ⊗ I_{k²}, with eigendecompositions A = Q_A diag(λ_A) Q_Aᵀ
and G = Q_G diag(λ_G) Q_Gᵀ. In the rotated weight W*[:, :, p] = Q_Gᵀ W[:, :, p] Q_A that Fisher is diagonal,
so removing input eigen-direction j (the whole column j of every W*[:, :, p]) costs

    score_in[j]  = Σ_{i,p} W*[i, j, p]² λ_G[i] λ_A[j]       and likewise  score_out[i] = Σ_{j,p} (...)

Convention: a score is the K-FAC quadratic form Δwᵀ (G ⊗ A ⊗ I) Δw of that removal, the paper's importance;
the second-order prediction of the loss increase is half of it (ΔL ≈ ½ ΔwᵀFΔw). Scores of different layers
share units (select.py thresholds them globally). Eigenvalues are floored (`floored`) before scoring.
EKFAC (`ekfac_scores`) replaces λ_G[i] λ_A[j] by measured second moments in the same basis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ...curvature import compute_kfac
from ...curvature.damping import damp
from ...curvature.kfac import CONVS, MAX_FACTOR
from ...metrics import layer_pixels
from ...models import classifier_of
from .rebuild import EigenBottleneck, EigenPair, collapse_pairs, is_pair_layer, is_pointwise, scored_weight


@dataclass
class LayerScores:
    """One prunable layer in its eigenbasis: W* of its (core) weight, the bases and direction scores.

    c_in / c_out are the layer's outer widths (unchanged by pruning); W* is (r_out, r_in, k·k) where r are
    the current core ranks (= c_in, c_out for a layer not yet factored, or an EigenPair, scored as the Linear it
    applies); params / macs are its current cost. `pair`: the layer is a Linear one, rebuilt as an EigenPair
    (rebuild.py) and costed as one (`factored_cost`)."""

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
    pair: bool = False

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
        """(params, MACs) of the layer rebuilt keeping (r_in, r_out) directions. A convolution, rot_in -> core
        -> rot_out: params = C_in·r_in + r_in·r_out·k² + r_out·C_out (+ C_out bias); MACs = C_in·r_in·P_in +
        (r_in·r_out·k² + r_out·C_out)·P_out with P the input / output pixels. A Linear layer (`pair`), the rank-r
        EigenPair with r = min(r_in, r_out): params = r·(C_in + C_out) (+ C_out bias); MACs = r·(C_in + C_out)
        per example (P = 1: layer_pixels counts a Linear layer once per example)."""
        if self.pair:
            r = min(r_in, r_out)
            return (r * (self.c_in + self.c_out) + (self.c_out if self.bias else 0),
                    r * (self.c_in + self.c_out) * self.out_pixels)
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


# K-FAC from a few batches is rank-deficient on wide layers (G of a 512-channel layer at 1x1 resolution from
# 16 examples has 496 zero eigenvalues): every direction with a zero eigenvalue would score exactly 0, and one
# threshold step would remove all of them at once (50 % asked, 60 % removed on torchvision's ResNet-18).
# Scoring with eigenvalues floored at EIGEN_FLOOR x their mean orders those directions by their weight energy
# and leaves the order of the others unchanged up to that relative precision.
EIGEN_FLOOR = 1e-6


def floored(eig: torch.Tensor) -> torch.Tensor:
    """λ + EIGEN_FLOOR · mean(λ) (eigenvalues already clamped at 0; a zero factor stays zero): curvature.damp's
    relative damping in the eigenbasis."""
    return damp(eig, EIGEN_FLOOR, "values")


def prunable_layers(model: nn.Module, include_classifier: bool = False) -> list[str]:
    """Names of the layers EigenDamage can factor: every ungrouped Conv1d / Conv2d and every Linear (the classifier
    only if asked), and every EigenBottleneck / EigenPair (a layer factored before), not the parts inside one."""
    head = None if include_classifier else classifier_of(model)
    names, inside = [], set()
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, (EigenBottleneck, EigenPair)):
            inside.add(name)
            names.append(name)
        elif (isinstance(m, nn.Linear) or (isinstance(m, CONVS) and m.groups == 1)) and m is not head:
            names.append(name)
    return names


def require_prunable(model: nn.Module, names: list[str], include_classifier: bool) -> None:
    """Raise a ValueError naming the model's layers when `names` (prunable_layers) is empty: EigenDamage rebuilds
    ungrouped Conv1d / Conv2d and Linear layers only, so e.g. an LSTM net with a Linear classifier has none."""
    if names:
        return
    head = classifier_of(model)
    found = [f"{n} ({type(m).__name__}{', the classifier' if m is head else ''})" for n, m in model.named_modules()
             if any(True for _ in m.parameters(recurse=False))]
    classifier = "" if include_classifier else " (the classifier only with include_classifier=True)"
    raise ValueError(f"model: no layer EigenDamage can factor: it rebuilds ungrouped Conv1d / Conv2d and Linear layers"
                     f"{classifier}; this model's layers with parameters are {', '.join(found) or 'none'}")


def layer_scores(module: nn.Module, name: str, bases: tuple[torch.Tensor, ...],
                 pixels: tuple[int, int] = (1, 1), pointwise_pairs: bool = True) -> LayerScores:
    """Rotate the (core) weight of `module` into the eigenbasis `bases` = (eig_A, Q_A, eig_G, Q_G) of its
    weight block (A over input channels, no bias coordinate) and score every input / output direction, with
    the eigenvalues floored (`floored`) so that directions of zero estimated curvature do not tie. An EigenPair
    is scored as the layer it applies (W = second.W · first.W, bases of that outer layer). `pair`: a Linear layer
    or an EigenPair, and with `pointwise_pairs` a 1x1 conv too, is costed and rebuilt as a rank-r pair."""
    eig_A, Q_A, eig_G, Q_G = bases
    w_star = rotate(scored_weight(module), Q_A, Q_G)
    score_in, score_out = direction_scores(w_star, *(floored(e.to(w_star.dtype)) for e in (eig_A, eig_G)))
    outer_in = {EigenBottleneck: "rot_in", EigenPair: "first"}.get(type(module))
    outer_out = {EigenBottleneck: "rot_out", EigenPair: "second"}.get(type(module))
    outer_in = getattr(module, outer_in) if outer_in else module
    outer_out = getattr(module, outer_out) if outer_out else module
    c_in = outer_in.in_channels if isinstance(outer_in, CONVS) else outer_in.in_features
    c_out = outer_out.out_channels if isinstance(outer_out, CONVS) else outer_out.out_features
    params = sum(p.numel() for p in module.parameters())
    ls = LayerScores(name=name, c_in=c_in, c_out=c_out, kernel=w_star.shape[2], bias=outer_out.bias is not None,
                     in_pixels=pixels[0], out_pixels=pixels[1], params=params, macs=0, weight_star=w_star,
                     eig_A=eig_A, Q_A=Q_A, eig_G=eig_G, Q_G=Q_G, score_in=score_in, score_out=score_out,
                     pair=is_pair_layer(module) or (pointwise_pairs and is_pointwise(module)))
    if isinstance(module, EigenBottleneck):
        ls.macs = replace(ls, pair=False).factored_cost(*ls.ranks)[1]
    elif isinstance(module, EigenPair):
        ls.macs = module.rank * (c_in + c_out) * pixels[1]
    else:
        ls.macs = c_in * c_out * ls.kernel * pixels[1]
    return ls


def frobenius_layer_scores(module: nn.Module, name: str, pixels: tuple[int, int] = (1, 1)) -> LayerScores:
    """The Frobenius (curvature-blind) counterpart of `layer_scores`: Q_G / Q_A are the left singular vectors of
    the mode-0 (C_out x C_in·k²) and mode-1 (C_in x C_out·k²) unfoldings of W (torch.linalg.svd; truncated HOSVD
    / Tucker-2 without ALS, the subspaces of `lowrank.tucker2(W, ranks, n_iter=0)`) and λ_A = λ_G = 1, so a
    direction's score is its squared singular value, the ‖ΔW‖²_F of removing it. `rebuild_layers` with a plan's
    ranks then keeps the top singular subspaces at equal cost, in the same 1x1 -> core -> 1x1 form."""
    w = scored_weight(module).double()
    w3 = w.reshape(w.shape[0], w.shape[1], -1)
    Q_G = torch.linalg.svd(w3.reshape(w3.shape[0], -1), full_matrices=True)[0]
    Q_A = torch.linalg.svd(w3.permute(1, 0, 2).reshape(w3.shape[1], -1), full_matrices=True)[0]
    ones = lambda n: torch.ones(n, dtype=torch.float64, device=w.device)  # noqa: E731
    return layer_scores(module, name, (ones(Q_A.shape[0]), Q_A, ones(Q_G.shape[0]), Q_G), pixels)


def ekfac_scores(ls: LayerScores, moments: torch.Tensor) -> LayerScores:
    """`ls` with EKFAC scores: I[i, j, p] = W*[i, j, p]² s[i, j, p] (s floored like K-FAC's eigenvalues),
    summed over (i, p) for input direction j and over (j, p) for output direction i."""
    s = floored(moments.to(ls.weight_star.dtype))
    importance = ls.weight_star.pow(2) * s
    return replace(ls, score_in=importance.sum(dim=(0, 2)), score_out=importance.sum(dim=(1, 2)))


def score_model(model: nn.Module, loader, names: list[str], input_shape: tuple[int, ...], *, fisher: str = "true",
                num_batches: int = 4, max_factor: int | None = MAX_FACTOR, reasons: dict[str, str] | None = None,
                factors: dict | None = None, plain: nn.Module | None = None,
                pointwise_pairs: bool = True, approx: str = "expand") -> tuple[list[LayerScores], list[str]]:
    """Channel-patch K-FAC of the named layers (of their cores when already factored as EigenBottlenecks; of
    the Linear an EigenPair applies, on `plain` = rebuild.collapse_pairs(model, names), made here if not given),
    their eigenbases and direction scores. Returns (scores per layer, layers K-FAC skipped); a layer with a
    factor side above `max_factor` is skipped, and why is added to `reasons` (if given); `factors` (if given)
    receives {layer: its LayerKFAC} (modules of `plain`); `pointwise_pairs`: 1x1 convs become rank-r pairs;
    `approx`: K-FAC's "expand" | "reduce" for Linear layers on (N, *, D) inputs."""
    modules = dict(model.named_modules())
    plain = collapse_pairs(model, names) if plain is None else plain
    kfac_names = {n: (f"{n}.core" if isinstance(modules[n], EigenBottleneck) else n) for n in names}
    kfac = compute_kfac(plain, loader, form="channel_patch", fisher=fisher, num_batches=num_batches,
                        layers=list(kfac_names.values()), max_factor=max_factor, approx=approx)
    skipped = [n for n in names if kfac_names[n] in set(kfac.skipped) or kfac_names[n] not in kfac]
    if reasons is not None:
        reasons.update({n: kfac.too_large.get(kfac_names[n], "no K-FAC factors") for n in skipped})
    kept = [n for n in names if n not in skipped]
    if factors is not None:
        factors.update({n: kfac[kfac_names[n]] for n in kept})
    pixels = layer_pixels(plain, kept, input_shape)
    return [layer_scores(modules[n], n, kfac[kfac_names[n]].weight_eig(), pixels[n], pointwise_pairs)
            for n in kept], skipped
