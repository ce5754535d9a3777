"""Plots for the curvature notebook: matrices on one colour scale, factor spectra, spectral densities."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import SymLogNorm


def plot_matrices(axes, mats: dict[str, torch.Tensor], fig=None, linthresh: float = 1e-4) -> list:
    """Heat-maps of several square matrices on one symmetric-log colour scale (shared colour bar)."""
    vmax = max(m.abs().max().item() for m in mats.values())
    norm = SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax)
    ims = []
    for ax, (title, m) in zip(axes, mats.items()):
        ims.append(ax.imshow(m.detach().cpu().numpy(), cmap="RdBu_r", norm=norm))
        ax.set(title=title, xlabel="parameter index", ylabel="parameter index")
    if fig is not None:
        fig.colorbar(ims[-1], ax=list(axes), label="entry value (symlog)")
    return ims


def plot_factor_spectra(ax, eig_A: torch.Tensor, eig_G: torch.Tensor, layer: str) -> list:
    """Sorted eigenvalues of a layer's K-FAC factors A and G (log scale)."""
    artists = []
    for name, e in (("A (input side)", eig_A), ("G (output-gradient side)", eig_G)):
        v = np.sort(e.detach().cpu().double().numpy())[::-1]
        artists += ax.semilogy(np.arange(1, len(v) + 1), np.clip(v, 1e-12, None), "o-", ms=3, label=name)
    ax.set(title=f"K-FAC factor spectra: {layer}", xlabel="eigenvalue rank", ylabel="eigenvalue (log)")
    ax.legend()
    return artists


def plot_density(ax, grid: torch.Tensor, density: torch.Tensor, top: torch.Tensor | None = None) -> list:
    """Spectral density on a log-density axis, top eigenvalues as vertical lines."""
    artists = ax.semilogy(grid.numpy(), np.clip(density.numpy(), 1e-8, None), label="SLQ density")
    if top is not None:
        for i, t in enumerate(top.tolist()):
            artists.append(ax.axvline(t, color="C3", ls="--", lw=1, label="top eigenvalues (Lanczos)" if i == 0 else None))
    ax.set(title="Hessian eigenvalue density (stochastic Lanczos quadrature)", xlabel="eigenvalue",
           ylabel="density (log)")
    ax.legend()
    return artists
