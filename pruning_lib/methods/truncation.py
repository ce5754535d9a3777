"""Rank-r truncations of one layer's weight W (C_out x d) in three metrics, the low-rank frontier on one page:

  svd           W' = [W]_r, minimising ‖W − W'‖_F (Eckart-Young: plain SVD, what `svd` does);
  whitened_svd  W' = [W A^½]_r A^-½, minimising ‖(W − W') A^½‖_F = E‖(W − W') a‖², the output error on the
                layer's inputs (one-sided, activation whitening: SVD-LLM; what `whitened_svd` does);
  two_sided     W' = G^-½ [G^½ W A^½]_r A^-½, minimising ‖G^½ (W − W') A^½‖_F² = tr(G ΔW A ΔWᵀ), the K-FAC quadratic
                form, i.e. twice the predicted loss increase (input AND output-gradient whitening: Improved
                EigenDamage's whitened subspace for a Linear layer).

[M]_r keeps M's r leading singular triplets; A = E[a aᵀ] (the layer's inputs), G = E[g gᵀ] (its output gradients),
their roots damped as Improved EigenDamage damps them (`subspaces.matrix_roots`). All three are rank r, so they
cost the same parameters; each is optimal for its own (damped) metric, so the predicted loss increase of two_sided
is never above the others' up to that damping (`tests/test_truncation.py`)."""
from __future__ import annotations

import torch
from torch import nn

from ..batches import first_batches
from ..curvature.quadratic import kfac_predicted_increase
from .eigen.improved import batch_loss
from .eigen.subspaces import matrix_roots

FACTORISATIONS = ("svd", "whitened_svd", "two_sided")


def _roots(A: torch.Tensor, G: torch.Tensor, damping: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{factorisation: (left root, right root)} with their inverses implied: identity for svd."""
    (a_half, a_inv), (g_half, g_inv) = matrix_roots(A, damping), matrix_roots(G, damping)
    eye_out = torch.eye(G.shape[0], dtype=torch.float64, device=G.device)
    eye_in = torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
    return {"svd": ((eye_out, eye_out), (eye_in, eye_in)), "whitened_svd": ((eye_out, eye_out), (a_half, a_inv)),
            "two_sided": ((g_half, g_inv), (a_half, a_inv))}


def spectra(w: torch.Tensor, A: torch.Tensor, G: torch.Tensor, damping: float = 1e-3) -> dict[str, torch.Tensor]:
    """Singular values of W, W A^½ and G^½ W A^½ (float64), the spectra each factorisation truncates."""
    out = {}
    for name, ((left, _), (right, _)) in _roots(A, G, damping).items():
        out[name] = torch.linalg.svdvals(left @ w.double() @ right)
    return out


def truncations(w: torch.Tensor, A: torch.Tensor, G: torch.Tensor, rank: int,
                damping: float = 1e-3) -> dict[str, torch.Tensor]:
    """{factorisation: W'} the three rank-`rank` approximations of W (module docstring), float64."""
    if not 1 <= rank <= min(w.shape):
        raise ValueError(f"rank: {rank} is outside [1, {min(w.shape)}] for a {tuple(w.shape)} weight")
    out = {}
    for name, ((left, left_inv), (right, right_inv)) in _roots(A, G, damping).items():
        u, s, vh = torch.linalg.svd(left @ w.double() @ right, full_matrices=False)
        out[name] = left_inv @ (u[:, :rank] * s[:rank]) @ vh[:rank] @ right_inv
    return out


@torch.no_grad()
def truncation_curve(model: nn.Module, name: str, loader, A: torch.Tensor, G: torch.Tensor, ranks: list[int],
                     num_batches: int = 2, damping: float = 1e-3) -> list[dict]:
    """Rows {factorisation, rank, predicted, measured} for one Linear layer `name` of `model`: predicted = ½ tr(G ΔW A
    ΔWᵀ) (K-FAC), measured = mean loss over the first `num_batches` batches with W replaced by W', minus the loss with
    W. Those batches are drawn once and reused for every measurement (a shuffling loader would otherwise give each
    its own batches). The layer's weight is restored afterwards."""
    layer = model.get_submodule(name)
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"layer '{name}': {type(layer).__name__}, a Linear layer is needed")
    w = layer.weight.detach().clone()
    loader = list(first_batches(loader, num_batches))
    base = batch_loss(model, loader, num_batches)
    rows = []
    try:
        for r in ranks:
            for f, w_r in truncations(w, A, G, r, damping).items():
                layer.weight.copy_(w_r.to(w.dtype))
                rows.append({"factorisation": f, "rank": r, "predicted": kfac_predicted_increase(w.double() - w_r, A, G),
                             "measured": batch_loss(model, loader, num_batches) - base})
    finally:
        layer.weight.copy_(w)
    return rows
