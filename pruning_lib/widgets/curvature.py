"""Widget for the curvature notebook: a layer dropdown over cached K-FAC factor spectra."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from ..curvature import KFAC
from ..viz.curvature import plot_factor_spectra


def factor_condition(kfac: KFAC, layer: str) -> dict[str, float]:
    """Largest eigenvalue and the fraction of eigenvalues below 1e-3 of it, for A and G of one layer."""
    ea, _, eg, _ = kfac[layer].eig()
    out = {}
    for name, e in (("A", ea), ("G", eg)):
        top = e.max().item()
        out[f"{name}_max"] = top
        out[f"{name}_flat_fraction"] = (e < 1e-3 * top).float().mean().item()
    return out


def factor_spectrum_widget(kfac: KFAC):
    """Layer dropdown: plot that layer's A / G eigenvalues (eigendecompositions are cached in `kfac`)."""

    def show(layer: str) -> dict[str, float]:
        ea, _, eg, _ = kfac[layer].eig()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_factor_spectra(ax, ea, eg, layer)
        plt.show()
        return factor_condition(kfac, layer)

    return W.interactive(show, layer=W.Dropdown(options=list(kfac), value=list(kfac)[0]))
