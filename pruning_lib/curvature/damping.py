"""Damping of a curvature factor: the one place where "add γ·(something)·I" is written.

Convention (kind="relative", the default): M + γ·s·I with s the mean eigenvalue of M, so one γ suits factors of
any scale (a trained net's output-gradient factor G is tiny; an absolute γ would swamp it); s = mean(diag M)
(= mean eigenvalue; floored at the smallest positive float64 so a zero factor still becomes invertible) and the
result is float64 (callers invert it). kind="values" is the same shift written in the eigenbasis, for eigenvalues
or per-direction curvatures λ of any shape: λ + γ·mean(λ) (+ eps), in λ's dtype.

The other kind exists because compute_kfac's `damping` argument is defined that way:
- "absolute_sqrt": M + √γ·I in M's dtype (γ split evenly between the two factors of G ⊗ A, the K-FAC
  "π = 1" damping without the norm-based π).

Each kind reproduces the arithmetic its callers had before, bit for bit.
"""
from __future__ import annotations

import torch

KINDS = ("relative", "values", "absolute_sqrt")


def damp(m: torch.Tensor, gamma: float, kind: str = "relative", eps: float = 0.0) -> torch.Tensor:
    """Damped copy of a symmetric PSD factor `m` (kind "relative", "absolute_sqrt") or of its eigenvalues / per-
    direction curvatures (kind "values", any shape).

    kind="relative": M + γ·max(mean(diag M), tiny)·I in float64.
    kind="values": λ + γ·mean(λ) + eps (eps > 0 keeps inverse roots finite for an all-zero λ; 0 adds nothing).
    kind="absolute_sqrt": M + √γ·I in M's dtype (compute_kfac's `damping`)."""
    if kind == "values":
        out = m + gamma * m.mean()
        return out + eps if eps else out
    if kind in ("relative", "absolute_sqrt") and (m.dim() != 2 or m.shape[0] != m.shape[1]):
        raise ValueError(f"m: kind={kind!r} damps a square matrix (got shape {tuple(m.shape)}); use kind='values' "
                         "for eigenvalues")
    if kind == "relative":
        m = m.double()
        scale = m.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
        return m + gamma * scale * torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
    if kind == "absolute_sqrt":
        return m + gamma ** 0.5 * torch.eye(m.shape[0], device=m.device)
    raise ValueError(f"kind: unknown '{kind}', allowed: {', '.join(KINDS)}")
