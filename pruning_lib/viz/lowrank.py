"""Plots for notebook 05 (low-rank): each takes an Axes and returns the artists it drew."""
from __future__ import annotations

import numpy as np
import torch


def plot_spectrum(ax, s2: torch.Tensor, rank: int | None = None, title: str = "singular value spectrum") -> list:
    """Squared singular values σ²_i (log scale) over i = 1..n, the kept ones (i <= rank) highlighted."""
    y = s2.detach().cpu().numpy()
    x = np.arange(1, len(y) + 1)
    rank = len(y) if rank is None else rank
    artists = list(ax.bar(x[:rank], y[:rank], width=1.0, color="C0", label=f"kept (r = {rank})"))
    artists += list(ax.bar(x[rank:], y[rank:], width=1.0, color="C7", label="discarded"))
    ax.set(title=title, xlabel="index i", ylabel="σ²_i (log)", yscale="log")
    ax.legend(fontsize=8)
    return artists


def plot_energy(ax, s2: torch.Tensor, rank: int | None = None, title: str = "retained energy") -> list:
    """Cumulative retained energy Σ_{j<=r} σ²_j / Σ σ² against the rank r, with a marker at `rank`."""
    y = (s2.cumsum(0) / s2.sum()).detach().cpu().numpy()
    x = np.arange(1, len(y) + 1)
    artists = ax.plot(x, y, "-", color="C0")
    if rank is not None:
        artists += ax.plot([rank], [y[rank - 1]], "o", color="C3", label=f"r = {rank}: {y[rank - 1]:.1%}")
        ax.legend(fontsize=8)
    ax.set(title=title, xlabel="rank r", ylabel="fraction of Σσ² retained", ylim=(0, 1.02))
    return artists


def plot_rank_bars(ax, ranks: dict[str, dict[str, float]], title: str, ylabel: str) -> list:
    """Grouped bars: one group per layer, one bar per rule (`ranks[rule][layer]`)."""
    layers = list(next(iter(ranks.values())))
    width = 0.8 / len(ranks)
    artists = []
    for k, (rule, values) in enumerate(ranks.items()):
        x = np.arange(len(layers)) + (k - (len(ranks) - 1) / 2) * width
        artists += list(ax.bar(x, [values[n] for n in layers], width=width, label=rule))
    ax.set_xticks(np.arange(len(layers)), layers, rotation=90, fontsize=7)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=7, ncol=len(ranks), loc="upper center")
    return artists


def plot_error_vs_params(ax, curves: dict[str, tuple[list[float], list[float]]], title: str) -> list:
    """Relative Frobenius error against the fraction of the layer's parameters kept, one line per form."""
    artists = []
    for name, (kept, err) in curves.items():
        artists += ax.plot(kept, err, "o-", label=name)
    ax.set(title=title, xlabel="fraction of the layer's parameters kept", ylabel="‖W − Ŵ‖_F / ‖W‖_F")
    ax.legend(fontsize=8)
    return artists
