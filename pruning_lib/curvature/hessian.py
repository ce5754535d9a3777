"""Hessian of the training loss without forming it: Hessian-vector products by double backward, top
eigenpairs by Lanczos, Hutchinson's trace estimate, and the spectral density by stochastic Lanczos
quadrature (Ghorbani, Krishnan & Xiao, ICML 2019). Restricting the parameters to one layer's gives the
per-layer (block) versions. The model runs in eval mode (BatchNorm fixed), loss = mean cross-entropy.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..batches import first_batches
from ..modes import eval_mode


class HessianOperator:
    """v -> H v for H = ∇²_θ L(θ), L the mean cross-entropy over `num_batches` batches of `loader` and θ the
    given parameters (default: all trainable ones). Batches are loaded once onto the model's device."""

    def __init__(self, model: nn.Module, loader: DataLoader, num_batches: int = 1,
                 params: Iterable[torch.nn.Parameter] | None = None):
        if num_batches < 1:
            raise ValueError(f"num_batches: must be >= 1 (got {num_batches})")
        self.model = model
        self.params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        if not self.params:
            raise ValueError("params: no trainable parameters given")
        device = self.params[0].device
        self.batches = list(first_batches(loader, num_batches, device=device))
        self.weights = [x.shape[0] / sum(b[0].shape[0] for b in self.batches) for x, _ in self.batches]
        self.dim = sum(p.numel() for p in self.params)
        self.device, self.dtype = device, self.params[0].dtype

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x), y)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v by double backward: ∇_θ (∇_θ L · v), batch-weighted over the stored batches."""
        vs = _unflat(v, self.params)
        out = 0
        with eval_mode(self.model):
            for w, (x, y) in zip(self.weights, self.batches):
                grads = torch.autograd.grad(self._loss(x, y), self.params, create_graph=True)
                dot = sum((g * u).sum() for g, u in zip(grads, vs))
                out = out + w * _flat(torch.autograd.grad(dot, self.params))
        return out.detach()


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _unflat(v: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for p in like:
        out.append(v[i:i + p.numel()].view_as(p))
        i += p.numel()
    return out


def lanczos(op: HessianOperator, steps: int, v0: torch.Tensor | None = None,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps` Lanczos iterations with full re-orthogonalisation from v0 (default: a seeded Gaussian).

    Returns (T, Q): the tridiagonal matrix Qᵀ H Q (steps x steps, float64) and the orthonormal basis
    Q (dim x steps). Stops early if the Krylov space is exhausted."""
    steps = min(steps, op.dim)
    if v0 is None:
        g = torch.Generator(device="cpu").manual_seed(seed)
        v0 = torch.randn(op.dim, generator=g, dtype=torch.float64).to(op.device)
    q = (v0.double() / v0.double().norm())
    Q, alphas, betas = [q], [], []
    for j in range(steps):
        w = op.matvec(q.to(op.dtype)).double()
        alpha = torch.dot(w, q)
        alphas.append(alpha)
        basis = torch.stack(Q, 1)
        w = w - basis @ (basis.T @ w)  # full re-orthogonalisation (twice is enough)
        w = w - basis @ (basis.T @ w)
        beta = w.norm()
        if j == steps - 1 or beta < 1e-10 * max(1.0, abs(alpha.item())):
            break
        betas.append(beta)
        q = w / beta
        Q.append(q)
    m = len(alphas)
    T = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[: m - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return T.cpu(), torch.stack(Q[:m], 1)


def top_eigenpairs(op: HessianOperator, k: int = 1, steps: int | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest (algebraic) Hessian eigenvalues and their unit eigenvectors (dim x k), by Lanczos
    (Ritz pairs of `steps` iterations, default min(dim, max(4k, 40)))."""
    if k < 1:
        raise ValueError(f"k: must be >= 1 (got {k})")
    T, Q = lanczos(op, steps or min(op.dim, max(4 * k, 40)), seed=seed)
    theta, s = torch.linalg.eigh(T)
    order = torch.argsort(theta, descending=True)[:k]
    vecs = Q @ s[:, order].to(Q.device)
    return theta[order].to(op.dtype), vecs.to(op.dtype)


def hutchinson_trace(op: HessianOperator, num_probes: int = 100, seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate tr(H) ≈ mean_i z_iᵀ H z_i over Rademacher probes z_i, and its standard
    error std / √num_probes."""
    if num_probes < 2:
        raise ValueError(f"num_probes: must be >= 2 for a standard error (got {num_probes})")
    g = torch.Generator(device="cpu").manual_seed(seed)
    vals = []
    for _ in range(num_probes):
        z = (torch.randint(0, 2, (op.dim,), generator=g) * 2 - 1).to(op.device, op.dtype)
        vals.append(torch.dot(z, op.matvec(z)).item())
    t = torch.tensor(vals, dtype=torch.float64)
    return t.mean().item(), (t.std() / math.sqrt(num_probes)).item()


def spectral_density(op: HessianOperator, steps: int = 20, num_runs: int = 1, grid_points: int = 500,
                     sigma: float | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic Lanczos quadrature: ρ(t) ≈ (1/R) Σ_r Σ_k τ_rk N(t; θ_rk, σ²), with θ_rk the Ritz values
    of `steps` Lanczos steps from random unit vector r and τ_rk the squared first components of their
    eigenvectors (Σ_k τ_rk = 1, so ρ integrates to 1). Returns (grid, density) as float64 tensors; σ
    defaults to 1 % of the spectral range."""
    nodes, weights = [], []
    for r in range(num_runs):
        T, _ = lanczos(op, steps, seed=seed + r)
        theta, s = torch.linalg.eigh(T)
        nodes.append(theta)
        weights.append(s[0] ** 2)
    nodes, weights = torch.cat(nodes), torch.cat(weights) / num_runs
    lo, hi = nodes.min().item(), nodes.max().item()
    span = max(hi - lo, 1e-12)
    sigma = sigma or 0.01 * span
    grid = torch.linspace(lo - 0.05 * span - 3 * sigma, hi + 0.05 * span + 3 * sigma, grid_points, dtype=torch.float64)
    gauss = torch.exp(-0.5 * ((grid[:, None] - nodes[None]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return grid, gauss @ weights


def layer_operator(model: nn.Module, layer: str, loader: DataLoader, num_batches: int = 1) -> HessianOperator:
    """The Hessian block of one module's parameters (weight and bias), e.g. 'layer1.0.conv1'."""
    return HessianOperator(model, loader, num_batches, model.get_submodule(layer).parameters())
