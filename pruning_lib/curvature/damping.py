"""Damping of a curvature factor: the one place where "add γ·(something)·I" is written.

Convention (kind="relative", the default): M + γ·s·I with s the mean eigenvalue of M, so one γ suits factors of
any scale (a trained net's output-gradient factor G is tiny; an absolute γ would swamp it). For a matrix,
s = mean(diag M) (= mean eigenvalue; floored at the smallest positive float64 so a zero factor still becomes
invertible) and the result is float64 (callers invert it); for a 1-D tensor of eigenvalues λ, the result is
λ + γ·mean(λ) (+ eps) in λ's dtype: the same shift applied in the eigenbasis.

The other kind exists because compute_kfac's `damping` argument is defined that way:
- "absolute_sqrt": M + √γ·I in M's dtype (γ split evenly between the two factors of G ⊗ A, the K-FAC
  "π = 1" damping without the norm-based π).

Each kind reproduces the arithmetic its callers had before, bit for bit.
"""
from __future__ import annotations

import torch

KINDS = ("relative", "absolute_sqrt")


def damp(m: torch.Tensor, gamma: float, kind: str = "relative", eps: float = 0.0) -> torch.Tensor:
    """Damped copy of a symmetric PSD factor `m` (a matrix) or of its eigenvalues (a 1-D tensor).

    kind="relative": matrix -> M + γ·max(mean(diag M), tiny)·I in float64; eigenvalues -> λ + γ·mean(λ) + eps
    (eps > 0 keeps inverse roots finite for an all-zero λ; 0 adds nothing).
    kind="absolute_sqrt" (matrix only): M + √γ·I in M's dtype (compute_kfac's `damping`)."""
    if kind == "relative":
        if m.dim() == 1:
            out = m + gamma * m.mean()
            return out + eps if eps else out
        m = m.double()
        scale = m.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
        return m + gamma * scale * torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
    if kind == "absolute_sqrt":
        if m.dim() != 2:
            raise ValueError(f"m: kind='absolute_sqrt' damps a matrix (got {m.dim()}-D)")
        return m + gamma ** 0.5 * torch.eye(m.shape[0], device=m.device)
    raise ValueError(f"kind: unknown '{kind}', allowed: {', '.join(KINDS)}")
