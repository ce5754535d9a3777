"""SparseGPT (Frantar & Alistarh, ICML 2023): OBS on the layer-wise reconstruction loss ‖W X − W' X‖², whose
Hessian H = X Xᵀ (here A = XᵀX / rows, the same up to scale) is shared by every output row. Columns are visited left
to right; pruning column i's weight in row r costs w² / [H_F⁻¹]_ii and is compensated by the OBS update of the
weights to its right, δW_{r, i:} = −(w / [H_F⁻¹]_ii) · [H_F⁻¹]_{i, i:}, F = the columns not yet visited (those to the
left are frozen). The rows of H_F⁻¹ for every F come at once from the upper Cholesky factor U of H⁻¹
(U_{i, i:} / U_ii = [H_F⁻¹]_{i, i:} / [H_F⁻¹]_ii, U_ii² = [H_F⁻¹]_ii), and updates to far columns are applied
lazily, once per block of `blocksize` columns. The mask is chosen per block (unstructured: the block's lowest
w² / U_ii², over all its rows at once) or per group of M columns when the block reaches it (N:M).
`tests/test_posttrain.py` checks it against an explicit-inverse OBS loop."""
from __future__ import annotations

import torch
from torch import nn

from ...checks import checked
from ...curvature.kfac import MAX_FACTOR
from ...curvature.damping import damp
from ...pruner import PruneContext, PruneResult
from .calibration import prune_sequentially
from ..patterns import PATTERNS, nm_mask


def _inverse_cholesky(H: torch.Tensor, damping: float) -> torch.Tensor:
    """U, upper triangular with Uᵀ U = (H + damping · mean(diag H) · I)⁻¹ (float64)."""
    L = torch.linalg.cholesky(damp(H, damping))
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def obc_row(w: torch.Tensor, H: torch.Tensor, count: int, damping: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(updated row, pruned mask) of one output row w (d,) under H (d x d, damped as SparseGPT's): OBS applied
    `count` times, greedily (OBC, Frantar & Alistarh 2022): remove the kept weight of lowest cost w_q² / [H⁻¹]_qq,
    move the others by δ = −w_q H⁻¹e_q / [H⁻¹]_qq, and drop q from H⁻¹ (H⁻¹ ← H⁻¹ − H⁻¹e_q e_qᵀH⁻¹ / [H⁻¹]_qq, the
    inverse of H without row and column q). Exact and O(count · d²) per row; SparseGPT approximates it for a
    whole layer by fixing the column order. After every step the kept weights minimise the quadratic given the
    removed ones (the OBS property)."""
    w = w.detach().double().clone()
    Hinv = torch.linalg.inv(damp(H, damping))
    mask = torch.zeros_like(w, dtype=torch.bool)
    for _ in range(count):
        cost = w.pow(2) / Hinv.diagonal().clamp_min(torch.finfo(torch.float64).tiny)
        cost[mask] = float("inf")
        q = int(cost.argmin())
        w -= w[q] / Hinv[q, q] * Hinv[:, q]
        w[q] = 0.0
        Hinv -= Hinv[:, q:q + 1] @ Hinv[q:q + 1, :] / Hinv[q, q]
        mask[q] = True
    return w, mask


def sparsegpt_layer(w: torch.Tensor, H: torch.Tensor, count: int, nm: tuple[int, int] | None = None,
                    blocksize: int = 128, damping: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(updated W, pruned mask) of W (C_out x d) under the input second moment H (d x d): `count` weights pruned
    (unstructured, spread over the blocks in proportion to their size) or the N:M pattern (`count` unused).
    Inputs that never fire (H_jj = 0) are pruned first: their weights cost nothing."""
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize: {blocksize} is not a multiple of M = {nm[1]} (pattern {nm[0]}:{nm[1]}): the "
                         "N:M groups would straddle blocks")
    W = w.detach().double().clone()
    rows, d = W.shape
    H = H.double().clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    U = _inverse_cholesky(H, damping)
    mask = torch.zeros_like(W, dtype=torch.bool)
    fraction = count / W.numel()
    done = 0
    for i1 in range(0, d, blocksize):
        i2 = min(i1 + blocksize, d)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        diag = U1.diagonal()
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if nm is None:  # this block's share of the count, so the layer loses exactly `count`
            k = round(fraction * rows * i2) - done
            cost = W1.pow(2) / diag.pow(2)
            cost[:, dead[i1:i2]] = -1.0
            mask1.view(-1)[cost.flatten().argsort(stable=True)[:k]] = True
            done += k
        err = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                cost = W1[:, i:i + nm[1]].pow(2) / diag[i:i + nm[1]].pow(2)
                mask1[:, i:i + nm[1]] = nm_mask(cost, *nm)
            col = W1[:, i]
            e = torch.where(mask1[:, i], col, torch.zeros_like(col)) / U1[i, i]
            W1[:, i:] -= e[:, None] * U1[i, i:][None, :]  # column i becomes 0 where pruned, stays where kept
            W1[mask1[:, i], i] = 0.0
            err[:, i] = e
        W[:, i1:i2], mask[:, i1:i2] = W1, mask1
        W[:, i2:] -= err @ U[i1:i2, i2:]
    return W.to(w.dtype), mask


def _layer(w: torch.Tensor, A: torch.Tensor | None, count: int, nm, blocksize: int, damping: float):
    if A is None:  # no input statistics: the magnitude mask, no update
        scores = w.detach().abs()
        if nm is not None:
            return w, nm_mask(scores, *nm)
        m = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        m[scores.flatten().argsort(stable=True)[:count]] = True
        return w, m.reshape(w.shape)
    return sparsegpt_layer(w, A, count, nm, blocksize, damping)


@checked(pattern=PATTERNS)
def prune_sparsegpt(model: nn.Module, ctx: PruneContext, target: float, calibration: int = 256,
                    pattern: str = "unstructured", blocksize: int = 128, damping: float = 0.01,
                    include_classifier: bool = False, max_factor: int = MAX_FACTOR) -> PruneResult:
    """Registry entry: SparseGPT, layer after layer on `calibration` examples of the loader (labels unused);
    `damping` is relative to the mean of diag H (SparseGPT's percdamp)."""
    def layer(w, A, count, nm):
        return _layer(w, A, count, nm, blocksize, damping)
    return prune_sequentially(model, ctx, target, calibration, pattern, include_classifier, layer, "sparsegpt",
                              max_factor)
