"""Widget for the curvature notebook: a layer dropdown and a flatness threshold over cached K-FAC factor spectra."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from ..curvature import KFAC
from ..viz.curvature import plot_factor_spectra, plot_kron_spectrum


def factor_condition(kfac: KFAC, layer: str, threshold: float = 1e-3) -> dict[str, float]:
    """Largest eigenvalue and the fraction of eigenvalues below `threshold` × it, for A and G of one layer, and
    the same fraction for the Kronecker-factored eigenvalues λ_G[i]·λ_A[j] of G ⊗ A ("kron_flat_fraction")."""
    ea, _, eg, _ = kfac[layer].eig()
    out = {}
    for name, e in (("A", ea), ("G", eg)):
        top = e.max().item()
        out[f"{name}_max"] = top
        out[f"{name}_flat_fraction"] = (e < threshold * top).float().mean().item()
    prod = eg.double()[:, None] * ea.double()[None, :]
    out["kron_flat_fraction"] = (prod < threshold * prod.max()).double().mean().item()
    return out


def factor_spectrum_widget(kfac: KFAC):
    """Layer dropdown and a log slider for the "flat" threshold (relative to the largest eigenvalue): that layer's
    A / G eigenvalues and the products λ_G[i]·λ_A[j] (eigendecompositions are cached in `kfac`). A change
    redraws two panels, so the slider updates on release (continuous_update=False)."""

    def show(layer: str, threshold: float) -> dict[str, float]:
        ea, _, eg, _ = kfac[layer].eig()
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
        plot_factor_spectra(axes[0], ea, eg, layer, threshold)
        plot_kron_spectrum(axes[1], ea, eg, threshold)
        plt.show()
        return factor_condition(kfac, layer, threshold)

    names = list(kfac)
    return W.interactive(show, layer=W.Dropdown(options=names, value=names[0], description="layer"),
                         threshold=W.FloatLogSlider(value=1e-3, base=10, min=-8, max=-1, step=0.5,
                                                    description="flat below", readout_format=".0e",
                                                    continuous_update=False))
