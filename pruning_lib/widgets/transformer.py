"""Transformer widget (notebook 10): a rank slider over one Linear layer, the three rank-r truncations
(methods/truncation.py) and their predicted loss increases."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from ..curvature.quadratic import kfac_predicted_increase
from ..methods.truncation import spectra, truncations
from ..viz.transformer import LABELS, plot_spectra


def rank_view(w: torch.Tensor, A: torch.Tensor, G: torch.Tensor, rank: int) -> dict[str, float]:
    """{factorisation: ½ tr(G ΔW A ΔWᵀ)} the K-FAC predicted loss increase of each rank-`rank` truncation of W."""
    return {name: kfac_predicted_increase(w.double() - w_r, A, G) for name, w_r in truncations(w, A, G, rank).items()}


def rank_widget(name: str, w: torch.Tensor, A: torch.Tensor, G: torch.Tensor):
    """Rank slider: the three spectra (computed once) with the rank marked, and the predicted increases as bars."""
    cached = spectra(w, A, G)

    def show(rank: int) -> dict:
        view = rank_view(w, A, G, rank)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
        plot_spectra(ax1, cached, rank, f"{name}: singular values / the largest")
        ax2.barh([LABELS[k] for k in view], list(view.values()), color=["C0", "C1", "C2"])
        ax2.set(xscale="log", xlabel="predicted loss increase ½ tr(G ΔW A ΔWᵀ) (nats, log)",
                title=f"rank {rank} of {min(w.shape)}: the same parameters, three errors")
        fig.tight_layout()
        plt.show()
        return view

    full = min(w.shape)
    return W.interactive(show, rank=W.IntSlider(value=max(1, full // 4), min=1, max=full, description="rank",
                                                continuous_update=False))
