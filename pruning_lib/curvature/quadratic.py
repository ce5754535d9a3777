"""The K-FAC quadratic form of a weight change, the one definition shared by C-OBS, EigenDamage and its
subspaces.

With the Fisher block of vec(W) (row-major) ≈ G ⊗ A (⊗ I_{k·k} for channel-patch factors, see kfac.py), a weight
change ΔW costs

    q(ΔW) = vec(ΔW)ᵀ (G ⊗ A) vec(ΔW) = tr(G ΔW A ΔWᵀ)                   ΔW: (C_out, d_A), Linear / im2col
    q(ΔW) = Σ_p vec(ΔW_p)ᵀ (G ⊗ A) vec(ΔW_p) = Σ_p tr(G ΔW_p A ΔW_pᵀ)  ΔW: (C_out, C_in, k·k), ch. patch

Convention: `kfac_quadratic_form` is q itself, WITHOUT the ½: EigenDamage's importance and C-OBS's
saliencies are q. The second-order prediction of the loss increase at a minimum is ½ q:
`kfac_predicted_increase`.
"""
from __future__ import annotations

import torch


def kfac_quadratic_form(dW: torch.Tensor, A: torch.Tensor, G: torch.Tensor) -> float:
    """q = vec(ΔW)ᵀ (G ⊗ A [⊗ I_{k·k}]) vec(ΔW) in float64, without the ½ (see the module docstring).

    dW: (C_out, d_A) for a Linear layer or im2col factors (d_A = C_in·k·k [+1 bias], A: d_A x d_A), or
    (C_out, C_in, k·k) / (C_out, C_in, k_h, k_w) under channel-patch factors (A: C_in x C_in), summed over
    kernel positions p. G: C_out x C_out."""
    d = dW.double()
    if d.dim() == 2:
        return float(torch.trace(G.double() @ d @ A.double() @ d.T))
    d = d.reshape(d.shape[0], d.shape[1], -1)
    return float(torch.einsum("oip,oq,qjp,ij->", d, G.double(), d, A.double()))


def kfac_predicted_increase(dW: torch.Tensor, A: torch.Tensor, G: torch.Tensor) -> float:
    """½ q: the K-FAC second-order prediction of the loss increase of the weight change ΔW (at a minimum)."""
    return 0.5 * kfac_quadratic_form(dW, A, G)
