"""Low-rank widget (notebook 05): a rank slider over one layer's cached singular values."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from ..methods.lowrank import LayerInfo, factorised_cost
from ..viz.lowrank import plot_energy, plot_spectrum


def svd_rank_view(info: LayerInfo, rank: int) -> dict:
    """Truncated SVD of one layer (form "svd") at `rank`, from its cached spectrum: retained energy
    Σ_{i<=r}σ²_i / Σσ², relative Frobenius error √(Σ_{i>r}σ²_i / Σσ²) (Eckart–Young), and the parameters /
    MACs of the factorised form next to the layer's own."""
    if info.form != "svd":
        raise ValueError(f"info.form: '{info.form}', allowed: svd (analyse the model with form='svd')")
    s2 = info.spectra[0]
    if not 1 <= rank <= len(s2):
        raise ValueError(f"rank: {rank} is outside [1, {len(s2)}]")
    energy = float(s2[:rank].sum() / s2.sum())
    params, macs = factorised_cost(info, [rank])
    layer_macs = info.module.weight.numel() * info.out_hw[0] * info.out_hw[1]
    return {"rank": rank, "energy": energy, "rel_error": max(0.0, 1.0 - energy) ** 0.5, "params": params,
            "layer_params": info.params, "macs": macs, "layer_macs": layer_macs}


def svd_rank_widget(info: LayerInfo):
    """Rank slider: the spectrum with the kept part highlighted, retained energy, error / params / MACs in titles.
    The figure is redrawn when the slider is released (continuous_update=False), from the cached spectrum only."""

    def show(rank: int) -> dict:
        view = svd_rank_view(info, rank)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
        plot_spectrum(ax1, info.spectra[0], rank, f"{info.name}: σ² of W as {info.module.weight.shape[0]} x "
                                                 f"{info.module.weight[0].numel()}")
        plot_energy(ax2, info.spectra[0], rank,
                    f"error {view['rel_error']:.3f} · params {view['params']:,}/{view['layer_params']:,} · "
                    f"MACs {view['macs'] / 1e3:.0f}k/{view['layer_macs'] / 1e3:.0f}k")
        fig.tight_layout()
        plt.show()
        return view

    full = len(info.spectra[0])
    return W.interactive(show, rank=W.IntSlider(value=max(1, full // 4), min=1, max=full, description="rank",
                                                continuous_update=False))
