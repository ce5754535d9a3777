"""Plots for EigenDamage (notebook 06): each takes Axes, draws with title / labels / units, returns the artists."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.ticker import EngFormatter, MaxNLocator

from ..methods.eigen.basis import LayerScores


def plot_weight_vs_eigenbasis(axes, weight: torch.Tensor, ls: LayerScores) -> list:
    """Three heat-maps of one layer: Σ_p W[:, :, p]² (weight space), Σ_p W*[:, :, p]² (eigenbasis, directions
    sorted by eigenvalue, largest first) and the importance Σ_p W*² λ_G λ_A, each as a share of its total."""
    w = weight.detach().double().reshape(weight.shape[0], weight.shape[1], -1).pow(2).sum(-1).cpu()
    order_in = torch.argsort(ls.eig_A.cpu(), descending=True)
    order_out = torch.argsort(ls.eig_G.cpu(), descending=True)
    w_star = ls.weight_star.detach().double().pow(2).sum(-1).cpu()
    importance = w_star * ls.eig_G.double().cpu()[:, None] * ls.eig_A.double().cpu()[None, :]
    panels = [(w, "weight space: Σ_p W²", "input channel", "output channel"),
              (w_star[order_out][:, order_in], "eigenbasis: Σ_p W*²", "input eigen-direction (λ_A ↓)",
               "output eigen-direction (λ_G ↓)"),
              (importance[order_out][:, order_in], "importance Σ_p W*² λ_G λ_A", "input eigen-direction (λ_A ↓)",
               "output eigen-direction (λ_G ↓)")]
    artists = []
    for ax, (m, title, xlabel, ylabel) in zip(axes, panels):
        share = (m / m.sum()).numpy()
        im = ax.imshow(np.log10(share + 1e-12), cmap="magma", vmin=-6, vmax=0, aspect="auto")
        ax.set(title=f"{ls.name}\n{title}", xlabel=xlabel, ylabel=ylabel)
        ax.figure.colorbar(im, ax=ax, label="log10 share")
        artists.append(im)
    return artists


def plot_concentration(ax, layers: list[LayerScores], weights: dict[str, torch.Tensor]) -> list:
    """Share of a layer's total importance Σ W*² λ_G λ_A captured by its top output directions (eigenbasis,
    solid) vs the share of Σ W² captured by its top output channels (weight space, dashed)."""
    artists = []
    for k, ls in enumerate(layers):
        eig = torch.sort(ls.score_out.double().cpu(), descending=True).values
        w = weights[ls.name].detach().double().cpu()
        raw = torch.sort(w.reshape(w.shape[0], -1).pow(2).sum(1), descending=True).values
        x = np.arange(1, len(eig) + 1) / len(eig)
        artists += ax.plot(x, (eig.cumsum(0) / eig.sum()).numpy(), "-", color=f"C{k % 10}", label=ls.name)
        artists += ax.plot(x, (raw.cumsum(0) / raw.sum()).numpy(), "--", color=f"C{k % 10}", alpha=0.5)
    ax.set(title="where the importance concentrates (solid: eigenbasis, dashed: channels)",
           xlabel="fraction of output directions kept (largest first)", ylabel="share of the total captured")
    ax.legend(fontsize=6, ncol=2)
    return artists


def plot_kept_directions(ax, layers: list[LayerScores], plan: dict) -> list:
    """Bars per layer: fraction of its input and output directions kept (1 = left as it is)."""
    x = np.arange(len(layers))
    kept = [plan[ls.name] or ls.ranks for ls in layers]
    bars = list(ax.bar(x - 0.2, [r[0] / ls.c_in for r, ls in zip(kept, layers)], 0.4, label="input directions"))
    bars += list(ax.bar(x + 0.2, [r[1] / ls.c_out for r, ls in zip(kept, layers)], 0.4, label="output directions"))
    ax.set_xticks(x, [ls.name for ls in layers], rotation=90, fontsize=7)
    ax.set(title="eigenbasis rank selection", ylabel="fraction of directions kept", ylim=(0, 1.3))
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.legend(fontsize=7, ncol=2, loc="upper left")  # in the band above 1, never over a bar
    return bars


def plot_importance_curves(ax, layers: list[LayerScores], threshold: float) -> list:
    """Each layer's direction scores (input and output together) sorted decreasingly, log scale, with the
    global threshold: directions below the line are removed (unless the per-layer cap keeps them)."""
    artists = []
    for k, ls in enumerate(layers):
        s = torch.sort(torch.cat([ls.score_in, ls.score_out]).double().cpu(), descending=True).values
        artists += ax.semilogy(np.linspace(0, 1, len(s)), s.clamp_min(1e-12).numpy(), color=f"C{k % 10}",
                               label=ls.name)
    if np.isfinite(threshold):
        artists.append(ax.axhline(threshold, color="k", ls="--", label="global threshold"))
    ax.set(title="sorted direction importance per layer", xlabel="rank / number of directions",
           ylabel="importance Δwᵀ(G⊗A)Δw (2 × predicted Δloss, nats)")
    ax.legend(fontsize=6, ncol=2)
    return artists


def plot_accuracy_vs_flops(ax, flops: list[float], curves: dict[str, list[float]], title: str = "accuracy vs compute",
                           ylabel: str = "test accuracy (%)") -> list:
    """One line per named curve of accuracy over FLOPs per image (2 x MACs), on a linear axis with engineering
    tick labels ("800 kFLOPs", "1.2 MFLOPs": matplotlib's EngFormatter, at most 5 ticks, so they never overlap
    the way a log axis spanning less than a decade labels its minor ticks); the right end is the unpruned net."""
    artists = []
    for name, y in curves.items():
        artists += ax.plot(flops, y, "o-", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(EngFormatter(unit="FLOPs"))
    ax.set(title=title, xlabel="FLOPs per image (2 x MACs)", ylabel=ylabel)
    ax.legend(fontsize=8)
    return artists
