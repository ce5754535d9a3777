"""Plots for the curvature notebook: matrices on one colour scale, factor spectra, Kronecker-factored
eigenvalues, spectral densities."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import SymLogNorm


def plot_matrices(axes, mats: dict[str, torch.Tensor], fig=None, linthresh: float = 1e-4) -> list:
    """Heat-maps of several square matrices on one symmetric-log colour scale (shared colour bar).

    Only the first panel carries the y-label (the panels share their index axes), so a label never runs
    into its left neighbour; create the figure with layout="constrained" to leave room for the colour bar."""
    vmax = max(m.abs().max().item() for m in mats.values())
    norm = SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax)
    ims = []
    for i, (ax, (title, m)) in enumerate(zip(axes, mats.items())):
        ims.append(ax.imshow(m.detach().cpu().numpy(), cmap="RdBu_r", norm=norm))
        ax.set(title=title, xlabel="parameter index (column)")
        if i == 0:
            ax.set_ylabel("parameter index (row)")
        else:
            ax.tick_params(labelleft=False)
    if fig is not None:
        fig.colorbar(ims[-1], ax=list(axes), label="entry value (symlog scale)", shrink=0.9)
    return ims


def plot_factor_spectra(ax, eig_A: torch.Tensor, eig_G: torch.Tensor, layer: str,
                        threshold: float | None = None) -> list:
    """Sorted eigenvalues of a layer's K-FAC factors A and G (log scale); with `threshold`, a dotted line
    at threshold × the largest eigenvalue of each factor ("flat" below it)."""
    artists = []
    for i, (name, e) in enumerate((("A (input side)", eig_A), ("G (output-gradient side)", eig_G))):
        v = np.sort(e.detach().cpu().double().numpy())[::-1]
        artists += ax.semilogy(np.arange(1, len(v) + 1), np.clip(v, 1e-12, None), "o-", ms=3, color=f"C{i}",
                               label=name)
        if threshold is not None:
            artists.append(ax.axhline(max(threshold * v[0], 1e-12), color=f"C{i}", ls=":", lw=1,
                                      label=f"{threshold:.0e} × its largest" if i == 1 else None))
    ax.set(title=f"K-FAC factor spectra: {layer}", xlabel="eigenvalue rank", ylabel="eigenvalue (log scale)")
    ax.legend(fontsize=8)
    return artists


def plot_kron_spectrum(ax, eig_A: torch.Tensor, eig_G: torch.Tensor, threshold: float = 1e-3) -> list:
    """Sorted eigenvalues λ_G[i]·λ_A[j] of G ⊗ A (every product, log scale) with the line threshold × the
    largest; the title gives the fraction of products below it (the layer's nearly flat directions under K-FAC).
    For a channel-patch conv each product is an eigenvalue of G ⊗ A ⊗ I_{k·k}, k·k times over."""
    prod = (eig_G.detach().cpu().double()[:, None] * eig_A.detach().cpu().double()[None, :]).flatten()
    v = np.sort(prod.numpy())[::-1]
    flat = float((v < threshold * v[0]).mean())
    artists = ax.semilogy(np.arange(1, len(v) + 1), np.clip(v, 1e-16, None), "-", color="C2",
                          label="λ_G[i]·λ_A[j]")
    artists.append(ax.axhline(max(threshold * v[0], 1e-16), color="k", ls=":", lw=1,
                              label=f"{threshold:.0e} × largest"))
    ax.set(title=f"eigenvalues of G ⊗ A: {flat:.0%} below the line", xlabel="eigenvalue rank",
           ylabel="eigenvalue (log scale)")
    ax.legend(fontsize=8)
    return artists


def plot_density(ax, grid: torch.Tensor, density: torch.Tensor, top: torch.Tensor | None = None) -> list:
    """Spectral density on a log-density axis, top eigenvalues as vertical lines."""
    artists = ax.semilogy(grid.numpy(), np.clip(density.numpy(), 1e-8, None), label="SLQ density")
    if top is not None:
        for i, t in enumerate(top.tolist()):
            artists.append(ax.axvline(t, color="C3", ls="--", lw=1, label="top eigenvalues (Lanczos)" if i == 0 else None))
    ax.set(title="Hessian eigenvalue density (stochastic Lanczos quadrature)", xlabel="eigenvalue (loss curvature)",
           ylabel="density (log scale)")
    ax.legend()
    return artists
