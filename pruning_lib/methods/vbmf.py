"""Rank of a noisy matrix by empirical variational Bayesian matrix factorisation (EVBMF), analytic form.

Nakajima, Sugiyama, Babacan & Tomioka, "Global analytic solution of fully-observed variational Bayesian matrix
factorization", JMLR 2013, with the noise variance σ² estimated as in Nakajima, Tomioka, Sugiyama & Babacan,
"Condition for perfect dimensionality recovery by variational Bayesian PCA", JMLR 2015. Kim et al. (ICLR 2016)
use it to pick Tucker-2 ranks from the mode unfoldings of a conv kernel.

For Y (L x M, L <= M) with singular values γ_h, α = L / M, τ̲ = 2.5129 √α and x̲ = (1 + τ̲)(1 + α / τ̲),
EVB keeps component h iff γ_h > √(M σ² x̲). σ² minimises (Nakajima et al. 2015, eq. 15, all H = L components)

    Σ_{x_h <= x̲} (x_h − log x_h) + Σ_{x_h > x̲} (x_h − τ_h + log((τ_h + 1) / x_h) + α log(τ_h / α + 1)),

with x_h = γ_h² / (M σ²) and τ_h = ½ (x_h − (1 + α) + √((x_h − (1 + α))² − 4α)), over the bounded interval
[max(γ²_{ĥ+1} / (M x̲), mean_{h > ĥ} γ_h² / M), Σ γ_h² / (L M)] where ĥ = min(⌈L / (1 + α)⌉ − 1, L) − 1.
The bounded scalar minimisation is scipy's (declared in pyproject; scikit-learn needs it too).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

TAU_BAR_FACTOR = 2.5129  # τ̲ ≈ 2.5129 √α, the paper's approximation of the EVB threshold constant


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    """τ(x) = ½ (x − (1 + α) + √((x − (1 + α))² − 4α)), the EVB shrinkage ratio for x > x̲."""
    return 0.5 * (x - (1 + alpha) + np.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def _objective(sigma2: float, sq: np.ndarray, L: int, M: int, x_bar: float) -> float:
    """The EVB free energy as a function of σ² (up to constants), eq. 15 of Nakajima et al. 2015."""
    alpha = L / M
    x = sq / (M * sigma2)
    z1, z2 = x[x > x_bar], x[x <= x_bar]
    t1 = _tau(z1, alpha)
    return float(np.sum(z2 - np.log(z2)) + np.sum(z1 - t1) + np.sum(np.log((t1 + 1) / z1))
                 + alpha * np.sum(np.log(t1 / alpha + 1)))


def evbmf_rank(singular_values: torch.Tensor, shape: tuple[int, int]) -> tuple[int, float]:
    """(rank, σ²): the number of components EVBMF keeps for a matrix of `shape` with these singular values
    (all min(shape) of them, any order), and the estimated noise variance σ²."""
    L, M = sorted(int(d) for d in shape)
    s = np.sort(singular_values.detach().double().cpu().numpy())[::-1]
    if L < 1 or s.shape != (L,):
        raise ValueError(f"singular_values: expected {L} values for a {shape[0]} x {shape[1]} matrix, got {s.shape}")
    sq = np.maximum(s ** 2, np.finfo(np.float64).tiny)  # exact zeros would make log(x) infinite
    alpha = L / M
    tau_bar = TAU_BAR_FACTOR * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    h_ub = min(math.ceil(L / (1 + alpha)) - 1, L) - 1
    upper = sq.sum() / (L * M)
    lower = max(sq[h_ub + 1] / (M * x_bar), sq[h_ub + 1:].mean() / M)
    if lower >= upper:
        sigma2 = upper
    else:
        sigma2 = float(minimize_scalar(_objective, bounds=(lower, upper), args=(sq, L, M, x_bar), method="bounded").x)
    threshold = math.sqrt(M * sigma2 * x_bar)
    return int(np.sum(s > threshold)), sigma2
