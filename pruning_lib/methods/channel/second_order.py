"""Second-order channel saliencies: C-OBD (diagonal Fisher) and C-OBS (im2col K-FAC inverse) with the OBS
weight correction, on top of groups.py's groups, threshold search and physical removal.

Write a layer's weight as a matrix W (C_out x d), d = C_in·k·k in im2col (unfold) order plus a last column
for the bias if any; row c is output channel c. With the Fisher F of vec(W) (row-major) and the loss at a
minimum, removing the weights S and moving the others by δ costs ΔL ≈ ½ δᵀ F δ with δ_S = -w_S.

C-OBD (LeCun et al. 1990, per channel): no compensation, diagonal F:  s_c = Σ_j W_cj² F_cj,cj.
C-OBS (as in the EigenDamage paper's baseline): each weight's OBS saliency w² / [F⁻¹]_ii with the K-FAC
inverse F⁻¹ ≈ G⁻¹ ⊗ A⁻¹, summed over the channel:  s_c = Σ_j W_cj² / ([G⁻¹]_cc [A⁻¹]_jj).
Kron-OBS (saliency="kron"): the exact OBS cost of removing the whole row c under K-FAC,
w_cᵀ ([F⁻¹]_SS)⁻¹ w_c = w_cᵀ A w_c / [G⁻¹]_cc, since [F⁻¹]_SS = [G⁻¹]_cc A⁻¹ for S = row c.
Scores omit the common factor ½ (it does not change the ranking).

OBS weight correction for the rows R removed from one layer (Hassibi & Stork 1993, with F = G ⊗ A):
minimise ½ δᵀ F δ subject to δ_S = -w_S. The Lagrangian gives δ = -F⁻¹ λ with λ supported on S; as a
matrix, ΔW = -G⁻¹ C A⁻¹ with C zero outside rows R. The constraint on rows R, [G⁻¹]_RR C_R A⁻¹ = W_R,
gives C_R = ([G⁻¹]_RR)⁻¹ W_R A, hence

    ΔW = -G⁻¹[:, R] ([G⁻¹]_RR)⁻¹ W_R          (A cancels: the correction mixes output channels only)

so rows R become 0 and the kept rows K move by ΔW_K = -[G⁻¹]_KR ([G⁻¹]_RR)⁻¹ W_R before R is removed.
Each producer of a group is corrected on its own (K-FAC is block-diagonal over layers); the consumers'
input channels are removed without compensation.

Damping: G and A get γ·mean(diag)·I added before inversion (curvature.damping.damp, kind="relative": the same γ
suits factors of any scale; compute_kfac's absolute √γ·I would swamp the tiny output-gradient factor G of a
trained net).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...checks import checked
from ...curvature import compute_kfac, diagonal_fisher
from ...curvature.damping import damp
from ...curvature.fisher import FISHERS
from ...curvature.kfac import MAX_FACTOR
from ...curvature.quadratic import kfac_quadratic_form
from ...pruner import PruneContext, PruneResult
from .groups import GROUP_REDUCTIONS, NORMALIZATIONS, ChannelPruner
from .schedule import TARGET_KINDS, Selection, run_channel_method
from .layers import is_depthwise

SALIENCIES = ("diag", "kron")


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """W as (C_out, d): the weight flattened in im2col order (C_in, kh, kw), the bias as a last column."""
    w = module.weight.detach().flatten(1)
    return torch.cat([w, module.bias.detach()[:, None]], 1) if module.bias is not None else w


def obd_layer_scores(weight: torch.Tensor, fisher_diag: torch.Tensor) -> torch.Tensor:
    """C-OBD per output channel: s_c = Σ_j W_cj² F_cj (weight and diagonal Fisher shaped alike)."""
    return (weight.detach().double() ** 2 * fisher_diag.double()).flatten(1).sum(1)


def obs_layer_scores(w: torch.Tensor, G_inv: torch.Tensor, A_inv: torch.Tensor, A: torch.Tensor | None = None,
                     saliency: str = "diag") -> torch.Tensor:
    """C-OBS per output channel of W (C_out x d): "diag": Σ_j W_cj² / ([G⁻¹]_cc [A⁻¹]_jj);
    "kron": w_cᵀ A w_c / [G⁻¹]_cc (A the damped factor)."""
    w = w.double()
    if saliency == "diag":
        return (w ** 2 / A_inv.diagonal()[None, :]).sum(1) / G_inv.diagonal()
    return torch.einsum("cj,jk,ck->c", w, A.double(), w) / G_inv.diagonal()


def obs_correction(w: torch.Tensor, G_inv: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """ΔW = -G⁻¹[:, R] ([G⁻¹]_RR)⁻¹ W_R for removed rows R of W (C_out x d): the OBS change of every
    weight under Fisher G ⊗ A when rows R are forced to zero (rows R of W + ΔW are exactly 0)."""
    w = w.double()
    if removed.numel() == 0:
        return torch.zeros_like(w)
    coeff = torch.linalg.solve(G_inv[removed][:, removed], w[removed])  # ([G⁻¹]_RR)⁻¹ W_R
    return -G_inv[:, removed] @ coeff


def obd_scores(model: nn.Module, names: list[str], loader, num_examples: int = 256,
               fisher: str = "true") -> dict[str, torch.Tensor]:
    """C-OBD scores of the named layers' output channels from `diagonal_fisher` (per-example gradients)."""
    diag = diagonal_fisher(model, loader, num_examples, fisher)
    modules = dict(model.named_modules())
    return {n: obd_layer_scores(modules[n].weight, diag[n + ".weight"]) for n in names}


def obs_factors(model: nn.Module, names: list[str], loader, num_batches: int = 4, fisher: str = "true",
                damping: float = 1e-2, max_factor: int | None = MAX_FACTOR,
                too_large: dict[str, str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Per named layer: the damped im2col K-FAC factors A, G (compute_kfac, then relative `damp`) and their inverses
    A_inv, G_inv (float64). A layer whose factor side exceeds `max_factor`, or with a zero factor (no gradient
    reaches it), gets none; it is added to the dict `too_large` (if given) with the reason."""
    kfac = compute_kfac(model, loader, form="im2col", fisher=fisher, num_batches=num_batches, layers=names,
                        max_factor=max_factor)
    if too_large is not None:
        too_large.update(kfac.too_large)
    out = {}
    for n in (n for n in names if n in kfac):
        if not (kfac[n].A.abs().max() > 0 and kfac[n].G.abs().max() > 0):  # relative damping of 0 is 0: no inverse
            if too_large is not None:
                too_large[n] = "zero K-FAC factor: no gradient reaches the layer (e.g. a zero-initialised head)"
            continue
        A, G = damp(kfac[n].A, damping, "relative"), damp(kfac[n].G, damping, "relative")
        out[n] = {"A": A, "G": G, "A_inv": torch.linalg.inv(A), "G_inv": torch.linalg.inv(G)}
    return out


def obs_scores(model: nn.Module, factors: dict[str, dict[str, torch.Tensor]],
               saliency: str = "diag") -> dict[str, torch.Tensor]:
    """C-OBS (or Kron-OBS) scores of every layer in `factors`."""
    modules = dict(model.named_modules())
    out = {}
    for n, f in factors.items():
        out[n] = obs_layer_scores(weight_matrix(modules[n]), f["G_inv"], f["A_inv"], f["A"], saliency)
    return out


@torch.no_grad()
def apply_obs_correction(pruner: ChannelPruner, factors: dict[str, dict[str, torch.Tensor]],
                         plan: dict[str, torch.Tensor]) -> dict[str, float]:
    """Add the OBS correction of each producer's removed output channels to its weights (and bias);
    returns the relative size ‖ΔW_K‖ / ‖W_K‖ of the change to the kept rows per layer."""
    modules = dict(pruner.model.named_modules())
    change = {}
    for g in pruner.groups:
        kept = set(plan[g.root].tolist())
        for n, idxs, root_idxs in g.producers:
            if n not in factors:  # a producer without K-FAC factors (depthwise / grouped): removed without correction
                continue
            m = modules[n]
            w = weight_matrix(m)
            removed = torch.tensor([i for i, r in zip(idxs, root_idxs) if r not in kept], dtype=torch.long,
                                   device=w.device)
            if removed.numel() == 0:
                continue
            delta = obs_correction(w, factors[n]["G_inv"], removed)
            keep_rows = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
            keep_rows[removed] = False
            change[n] = float(delta[keep_rows].norm() / w[keep_rows].double().norm().clamp_min(1e-30))
            new = (w.double() + delta).to(w.dtype)
            k = m.weight[0].numel()
            m.weight.copy_(new[:, :k].reshape_as(m.weight))
            if m.bias is not None:
                m.bias.copy_(new[:, k])
    return change


@checked(fisher=FISHERS, group_reduce=GROUP_REDUCTIONS, normalize=NORMALIZATIONS, target_kind=TARGET_KINDS)
def prune_obd(model: nn.Module, ctx: PruneContext, target: float, layer_cap: float = 0.9, num_examples: int = 256,
              fisher: str = "true", normalize: str = "sum", group_reduce: str = "sum", steps: int = 3,
              round_to: int = 1, target_kind: str = "params",
              latency_batch: int = 128) -> PruneResult:
    """Registry entry: C-OBD, remove the channels with the smallest Σ W² F (diagonal Fisher); `normalize`
    rescales each layer's saliencies first (ChannelPruner.group_scores)."""
    return run_channel_method(model, ctx, target, layer_cap,
                              lambda p: p.group_scores(obd_scores(model, p.producers, ctx.loader, num_examples,
                                                                  fisher), normalize, group_reduce),
                              info={"criterion": "obd", "normalize": normalize, "group_reduce": group_reduce},
                              steps=steps, round_to=round_to,
                              target_kind=target_kind, latency_batch=latency_batch)


@checked(fisher=FISHERS, saliency=SALIENCIES, group_reduce=GROUP_REDUCTIONS, normalize=NORMALIZATIONS,
         target_kind=TARGET_KINDS)
def prune_obs(model: nn.Module, ctx: PruneContext, target: float, layer_cap: float = 0.9, num_batches: int = 4,
              fisher: str = "true", damping: float = 1e-2, saliency: str = "diag",
              correction: bool = True, normalize: str = "sum", group_reduce: str = "sum",
              steps: int = 3, round_to: int = 1, target_kind: str = "params",
              latency_batch: int = 128, max_factor: int = MAX_FACTOR) -> PruneResult:
    """Registry entry: C-OBS with im2col K-FAC; with `correction` the kept weights of each producer get the
    OBS update ΔW = -G⁻¹[:, R] ([G⁻¹]_RR)⁻¹ W_R before the channels R are removed. A producer whose factor
    side exceeds `max_factor` (VGG's Linear(25088, 4096)) is not scored nor corrected; a group with no scored
    producer keeps its whole width. Such layers and depthwise / grouped convs are listed in info["skipped"], with the
    reason in info["skip_reasons"]."""
    state: dict[str, Any] = {}

    def score(p: ChannelPruner) -> dict[str, torch.Tensor]:
        modules = dict(model.named_modules())  # K-FAC has no factors for depthwise / grouped convs: not scored
        grouped = [n for n in p.producers if getattr(modules[n], "groups", 1) > 1]
        names = [n for n in p.producers if n not in grouped]
        state["reasons"] = {n: f"{'depthwise' if is_depthwise(modules[n]) else 'grouped'} conv: K-FAC forms no "
                               "factors for it" for n in grouped}
        state["factors"] = obs_factors(model, names, ctx.loader, num_batches, fisher, damping, max_factor,
                                       state["reasons"])
        state["skipped"] = [n for n in p.producers if n in state["reasons"]]
        return p.group_scores(obs_scores(model, state["factors"], saliency), normalize, group_reduce,
                              keep_unscored=True)

    def correct(p: ChannelPruner, sel: Selection) -> None:
        state["change"] = apply_obs_correction(p, state["factors"], sel.plan) if correction else {}

    result = run_channel_method(model, ctx, target, layer_cap, score, correct,
                                info={"criterion": "obs", "saliency": saliency, "correction": correction,
                                      "normalize": normalize, "group_reduce": group_reduce},
                                steps=steps, round_to=round_to,
                                target_kind=target_kind, latency_batch=latency_batch)
    result.info["relative_correction"] = state["change"]
    result.info["skipped"] = state["skipped"]  # depthwise / grouped producers: not scored, not corrected, still sliced
    result.info["skip_reasons"] = state["reasons"]
    return result


# K-FAC quadratic form of a weight change ΔW (C_out x d): vec(ΔW)ᵀ (G ⊗ A) vec(ΔW) = tr(G ΔW A ΔWᵀ) (twice the
# predicted loss increase). The notebooks know it by this name; its one definition is in curvature/quadratic.py.
kfac_cost = kfac_quadratic_form


def quadratic_pruning(H: torch.Tensor, w: torch.Tensor, q: int) -> dict[str, Any]:
    """Remove weight q from w, a minimum of L(v) = ½ (v - w)ᵀ H (v - w), by OBD and by OBS (dense H).

    OBD: v = w with v_q = 0, predicted ΔL = ½ w_q² H_qq. OBS: v = w - w_q H⁻¹e_q / [H⁻¹]_qq, predicted
    ΔL = ½ w_q² / [H⁻¹]_qq. Returns both new points, predictions and true ΔL = ½ δᵀHδ (exact here)."""
    H, w = H.double(), w.double()
    H_inv = torch.linalg.inv(H)
    obd = w.clone()
    obd[q] = 0
    obs = w - w[q] * H_inv[:, q] / H_inv[q, q]
    true = lambda v: float(0.5 * (v - w) @ H @ (v - w))  # noqa: E731
    return {"obd_point": obd, "obs_point": obs, "obd_predicted": float(0.5 * w[q] ** 2 * H[q, q]),
            "obs_predicted": float(0.5 * w[q] ** 2 / H_inv[q, q]), "obd_true": true(obd), "obs_true": true(obs)}
