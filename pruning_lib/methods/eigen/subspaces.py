"""The subspaces an Improved EigenDamage layer can keep for given ranks (eigen/improved.py), each rebuilt as
an EigenBottleneck rot_in (1x1) -> core -> rot_out (1x1), Ŵ_p = rot_out · core_p · rot_in (a Linear layer as the
EigenPair of the same three factors, the core folded into one side: rebuild.build_pair):

  eigenbasis  the top-scoring eigen-directions of the layer's K-FAC eigenbasis (EigenDamage's choice);
  tucker      the Frobenius Tucker-2 of the layer's effective weight (HOSVD, then HOOI);
  whitened    the Tucker-2 of the whitened weight W̃_p = G^½ W_p A^½, mapped back with the inverse roots: it minimises
              the K-FAC prediction of the loss increase ½ Σ_p ‖G^½ (W − Ŵ)_p A^½‖² over the forms HOOI reaches, started
              from the other two so it never predicts more than they do.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ...curvature import compute_kfac
from ...curvature.damping import damp
from ...curvature.kfac import CONVS
from ...curvature.quadratic import kfac_predicted_increase
from .basis import LayerScores
from .rebuild import (EigenBottleneck, EigenPair, build_layer, collapsed_pair, pair_weight, rebuild_layers,
                      top_directions)

SUBSPACES = ("eigenbasis", "tucker", "whitened")


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The (C_out, C_in, k·k) weight the layer applies: W itself, R_out W*_p R_in of an EigenBottleneck, or
    second.W · first.W of an EigenPair."""
    if isinstance(module, EigenPair):
        return pair_weight(module)[:, :, None]
    if isinstance(module, EigenBottleneck):
        r_in = module.rot_in.weight.reshape(module.rot_in.weight.shape[0], -1)
        r_out = module.rot_out.weight.reshape(module.rot_out.weight.shape[0], -1)
        core = module.core.weight.reshape(*module.core.weight.shape[:2], -1)
        return torch.einsum("oa,abp,bc->ocp", r_out, core, r_in).detach()
    return module.weight.detach().reshape(*module.weight.shape[:2], -1)


def matrix_roots(m: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(M^½, M^-½) of a symmetric PSD factor with eigenvalues raised by damping · their mean (float64)."""
    values, vectors = torch.linalg.eigh(m.double())
    values = damp(values.clamp_min(0), damping, "values", eps=1e-300)
    return (vectors * values.sqrt()) @ vectors.T, (vectors / values.sqrt()) @ vectors.T


def _orthonormal(basis: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(basis)[0]


def _fit(w: torch.Tensor, u_out: torch.Tensor, u_in: torch.Tensor) -> float:
    """‖U_outᵀ W_p U_in‖² summed over p: the energy a Tucker-2 with these orthonormal factors keeps."""
    return float(torch.einsum("oa,obp,bc->acp", u_out, w, u_in).pow(2).sum())


def _left(m: torch.Tensor, r: int) -> torch.Tensor:
    """The r leading left singular vectors of m, completed to r orthonormal columns when m has fewer."""
    return torch.linalg.svd(m, full_matrices=True)[0][:, :r]


def hooi(w: torch.Tensor, ranks: tuple[int, int], inits: list[tuple[torch.Tensor, torch.Tensor]],
         n_iter: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal (U_out, U_in) of a Tucker-2 of w (C_out, C_in, k·k) at ranks (r_out, r_in), by HOOI started
    from the best of the truncated HOSVD and `inits` (orthonormal factor pairs). Written here rather than with
    tensorly because the guarantee needs it: each sweep maximises the kept energy over one factor with the other
    fixed, so the result keeps at least as much energy (has at most the error) of every starting point."""
    r_out, r_in = ranks
    hosvd = (_left(w.reshape(w.shape[0], -1), r_out), _left(w.transpose(0, 1).reshape(w.shape[1], -1), r_in))
    u_out, u_in = max([hosvd, *inits], key=lambda f: _fit(w, *f))
    best = _fit(w, u_out, u_in)
    for _ in range(n_iter):
        new_out = _left(torch.einsum("obp,bc->ocp", w, u_in).reshape(w.shape[0], -1), r_out)
        new_in = _left(torch.einsum("obp,oa->bap", w, new_out).reshape(w.shape[1], -1), r_in)
        fit = _fit(w, new_out, new_in)
        if fit <= best * (1 + 1e-12):  # converged (a sweep never lowers the fit; stop at no gain)
            if fit > best:
                u_out, u_in, best = new_out, new_in, fit
            break
        u_out, u_in, best = new_out, new_in, fit
    return u_out, u_in


def whitened_tucker(w: torch.Tensor, A: torch.Tensor, G: torch.Tensor, ranks: tuple[int, int],
                    starts: list[tuple[torch.Tensor, torch.Tensor]] = (), damping: float = 1e-3,
                    n_iter: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rot_out C_out x r_out, core r_out x r_in x k·k, rot_in r_in x C_in) with Ŵ_p = rot_out core_p rot_in the
    rank-(r_out, r_in) Tucker-2 minimising Σ_p ‖G^½ (W − Ŵ)_p A^½‖² that HOOI reaches in the whitened space,
    started (among others) from every (column basis, row basis) pair in `starts`, given in the original space,
    so it is never worse than those subspaces with their best core."""
    a_half, a_inv = matrix_roots(A, damping)
    g_half, g_inv = matrix_roots(G, damping)
    wt = torch.einsum("oa,abp,bc->ocp", g_half, w.double(), a_half)
    inits = [(_orthonormal(g_half @ b_out.double()), _orthonormal(a_half @ b_in.double())) for b_out, b_in in starts]
    u_out, u_in = hooi(wt, ranks, inits, n_iter=n_iter)
    core = torch.einsum("oa,obp,bc->acp", u_out, wt, u_in)
    # G^-½ U_out and U_inᵀ A^-½ can have norms near 1 / √damping: re-orthonormalise them (QR) and move the
    # triangular factors into the core, Ŵ_p = Q_out (R_out C_p R_inᵀ) Q_inᵀ: the same layer, but rotations as
    # well-conditioned as the other subspaces' for fine-tuning.
    q_out, r_out = torch.linalg.qr(g_inv @ u_out)
    q_in, r_in = torch.linalg.qr((u_in.T @ a_inv).T)
    return q_out, torch.einsum("ab,bcp,dc->adp", r_out, core, r_in), q_in.T


def plain_tucker(w: torch.Tensor, ranks: tuple[int, int], n_iter: int = 10) -> tuple[torch.Tensor, ...]:
    """(rot_out, core, rot_in) of the Frobenius Tucker-2 of w (C_out, C_in, k·k) at ranks (r_out, r_in): HOSVD then
    HOOI, the algorithm of lowrank.tucker2 (tensorly), here because tensorly lowers a rank that exceeds what the
    other mode can carry (r_in > r_out·k² on a Linear layer), which would break the planned parameter count."""
    u_out, u_in = hooi(w, ranks, [], n_iter)
    return u_out, torch.einsum("oa,obp,bc->acp", u_out, w, u_in), u_in.T


def collapsed_kfac(model: nn.Module, names: list[str], loader, fisher: str, num_batches: int,
                   approx: str = "expand") -> dict:
    """K-FAC of the named layers as the plain layers they apply (EigenBottlenecks collapsed to R_out W* R_in,
    EigenPairs to second.W · first.W, on a copy; the outputs are the same), so that the whitened subspace of a
    factored layer uses its outer A and G."""
    plain = copy.deepcopy(model)
    for n in names:
        m = plain.get_submodule(n)
        if isinstance(m, EigenPair):
            plain.set_submodule(n, collapsed_pair(m))
        elif isinstance(m, EigenBottleneck):
            inner = m.core
            w = effective_weight(m)
            if isinstance(inner, CONVS):
                new = type(inner)(w.shape[1], w.shape[0], inner.kernel_size, inner.stride, inner.padding,
                                  inner.dilation, bias=m.rot_out.bias is not None, padding_mode=inner.padding_mode)
            else:
                new = nn.Linear(w.shape[1], w.shape[0], bias=m.rot_out.bias is not None)
            new = new.to(w.device, w.dtype)
            with torch.no_grad():
                new.weight.copy_(w.reshape(new.weight.shape))
                if new.bias is not None:
                    new.bias.copy_(m.rot_out.bias)
            plain.set_submodule(n, new)
    return compute_kfac(plain, loader, form="channel_patch", fisher=fisher, num_batches=num_batches, layers=names,
                        approx=approx)


@torch.no_grad()
def subspace_parts(module: nn.Module, ls: LayerScores, ranks: tuple[int, int], subspace: str, factors=None,
                   damping: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rot_out C_out x r_out, core r_out x r_in x k·k, rot_in r_in x C_in) of `module` kept at ranks (r_in, r_out)
    in `subspace`, Ŵ_p = rot_out core_p rot_in. eigenbasis: the top-scoring eigen-directions of `ls` (merged with
    an EigenBottleneck's rotations); tucker / whitened: a fresh Tucker-2 of the layer's effective weight, whitened
    with `factors` (the LayerKFAC of the plain layer it applies: A without the bias coordinate, and G)."""
    r_in, r_out = ranks
    keep_in, keep_out = top_directions(ls.score_in, r_in), top_directions(ls.score_out, r_out)
    eig_out, eig_in = ls.Q_G[:, keep_out].double(), ls.Q_A[:, keep_in].double()
    if isinstance(module, EigenBottleneck):  # the eigen-directions as subspaces of the outer layer (an EigenPair
        # is scored as the Linear it applies: its eigen-directions are already the outer layer's)
        eig_out = module.rot_out.weight.detach().reshape(ls.c_out, -1).double() @ eig_out
        eig_in = module.rot_in.weight.detach().reshape(-1, ls.c_in).double().T @ eig_in
    if subspace == "eigenbasis":
        return eig_out, ls.weight_star[keep_out][:, keep_in].double(), eig_in.T
    w = effective_weight(module).double()
    tucker = plain_tucker(w, (r_out, r_in))
    if subspace == "tucker":
        return tucker
    A = factors.A[:-1, :-1] if factors.has_bias else factors.A
    return whitened_tucker(w, A, factors.G, (r_out, r_in), starts=[(eig_out, eig_in), (tucker[0], tucker[2].T)],
                           damping=damping)


def kfac_increase(w: torch.Tensor, w_hat: torch.Tensor, A: torch.Tensor, G: torch.Tensor) -> float:
    """½ Σ_p tr((W − Ŵ)_pᵀ G (W − Ŵ)_p A): the K-FAC (G ⊗ A ⊗ I) prediction of the loss increase of replacing
    the (C_out, C_in, k·k) weight W by Ŵ."""
    return kfac_predicted_increase(w - w_hat, A, G)


@torch.no_grad()
def rebuild_subspace(model: nn.Module, layers: list[LayerScores], plan: dict, subspace: str, *, factors: dict,
                     damping: float = 1e-3, freeze_rotations: bool = False) -> nn.Module:
    """Apply `plan` (ranks per layer) keeping the chosen subspace (in place): eigenbasis = rebuild.rebuild_layers;
    tucker / whitened re-factor each planned layer's effective weight (`subspace_parts`). `factors` maps a layer
    to the LayerKFAC of the plain layer it applies (used by "whitened")."""
    if subspace == "eigenbasis":
        return rebuild_layers(model, layers, plan, freeze_rotations)
    for ls in layers:
        if plan.get(ls.name) is not None:
            module = model.get_submodule(ls.name)
            parts = subspace_parts(module, ls, plan[ls.name], subspace, factors=factors.get(ls.name), damping=damping)
            model.set_submodule(ls.name, build_layer(module, *parts, freeze_rotations, ls.pair))
    return model
