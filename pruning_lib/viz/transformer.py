"""Plots for notebook 10 (transformers): head importances per block, the three spectra a rank-r truncation of a
Linear layer cuts (W, W A^½, G^½ W A^½), and the predicted against the measured loss increase as the rank shrinks.
Each draws on a given Axes and returns what it drew."""
from __future__ import annotations

import numpy as np
import torch

# the factorisations of methods/truncation.py, as the plots name them
LABELS = {"svd": "plain SVD: W", "whitened_svd": "one-sided: W A^½ (SVD-LLM)",
          "two_sided": "two-sided: G^½ W A^½ (Improved EigenDamage)"}


def plot_head_heatmap(ax, scores: dict[str, torch.Tensor], title: str = "head importance") -> list:
    """One row per attention (`scores[name]`: one score per head), one column per head, each row divided by its
    largest score so that blocks of different scale compare; the raw values are written in the cells."""
    names = list(scores)
    width = max(len(s) for s in scores.values())
    grid = np.full((len(names), width), np.nan)
    for i, n in enumerate(names):
        s = scores[n].detach().double().cpu().numpy()
        grid[i, :len(s)] = s / max(s.max(), 1e-300)
    artists = [ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")]
    for i, n in enumerate(names):
        for h, v in enumerate(scores[n].tolist()):
            artists.append(ax.text(h, i, f"{v:.3g}", ha="center", va="center", fontsize=7,
                                   color="w" if grid[i, h] < 0.6 else "k"))
    ax.set_xticks(range(width), [f"head {h}" for h in range(width)])
    ax.set_yticks(range(len(names)), names)
    ax.set(title=title, xlabel="head (score / the block's largest)", ylabel="attention")
    return artists


def plot_spectra(ax, spectra: dict[str, torch.Tensor], rank: int | None = None,
                 title: str = "singular values, each divided by its largest") -> list:
    """σ_i / σ_1 (log scale) against i for each factorisation's matrix, a vertical line at `rank`."""
    artists = []
    for name, s in spectra.items():
        s = s.detach().double().cpu().numpy()
        artists += ax.plot(np.arange(1, len(s) + 1), s / s[0], label=LABELS.get(name, name))
    if rank is not None:
        artists.append(ax.axvline(rank, color="grey", ls="--", lw=0.8, label=f"rank {rank}"))
    ax.set(title=title, xlabel="index i", ylabel="σ_i / σ_1 (log)", yscale="log")
    ax.legend(fontsize=7)
    return artists


def plot_loss_curves(ax, rows: list[dict], title: str = "loss increase as the rank shrinks") -> list:
    """Predicted (½ tr(G ΔW A ΔWᵀ), dashed) and measured (solid) loss increase against the rank, one colour per
    factorisation (`rows` from `truncation.truncation_curve`)."""
    artists = []
    for k, name in enumerate(dict.fromkeys(r["factorisation"] for r in rows)):
        mine = sorted((r for r in rows if r["factorisation"] == name), key=lambda r: r["rank"])
        ranks = [r["rank"] for r in mine]
        artists += ax.plot(ranks, [r["measured"] for r in mine], "o-", color=f"C{k}",
                           label=f"{LABELS.get(name, name)}, measured")
        artists += ax.plot(ranks, [r["predicted"] for r in mine], "--", color=f"C{k}", alpha=0.7,
                           label="predicted (K-FAC)")
    ax.set(title=title, xlabel="rank r kept", ylabel="loss increase on training batches (nats, symlog)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return artists
