"""Plots for data, training curves and weight pruning (notebooks 00, 01): each takes a matplotlib Axes, draws with title / labels / units, returns the artists."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps


def show_images(axes, images: torch.Tensor, labels, title: str = "") -> list:
    """Draw single-channel or RGB images (N, C, H, W) on a flat sequence of Axes, one per image."""
    artists = []
    for ax, img, label in zip(axes, images, labels):
        img = img.detach().cpu()
        arr = img[0].numpy() if img.shape[0] == 1 else np.clip(img.permute(1, 2, 0).numpy(), 0, 1)
        artists.append(ax.imshow(arr, cmap="gray" if img.shape[0] == 1 else None))
        ax.set_title(f"{title}{int(label)}")
        ax.axis("off")
    return artists


def plot_history(ax, history: list[dict], title: str = "training curve") -> list:
    """Training loss (left axis) and validation accuracy (right axis, %) per epoch."""
    epochs = [h["epoch"] for h in history]
    artists = ax.plot(epochs, [h["train_loss"] for h in history], "o-", color="C0", label="train loss")
    ax.set(title=title, xlabel="epoch", ylabel="cross-entropy (nats)")
    if history and "val_acc" in history[0]:
        ax2 = ax.twinx()
        artists += ax2.plot(epochs, [h["val_acc"] for h in history], "s-", color="C1", label="val accuracy")
        ax2.set_ylabel("validation accuracy (%)")
    ax.legend(artists, [a.get_label() for a in artists], loc="center right")
    return artists


def plot_layer_bars(ax, values: dict[str, float], title: str, ylabel: str, label: str | None = None,
                    offset: float = 0.0, width: float = 0.8) -> list:
    """One bar per layer (x: layer names, rotated)."""
    x = np.arange(len(values)) + offset
    bars = ax.bar(x, list(values.values()), width=width, label=label)
    ax.set_xticks(np.arange(len(values)), list(values), rotation=90, fontsize=7)
    ax.set(title=title, xlabel="layer", ylabel=ylabel)
    return list(bars)


def plot_weight_matrix(ax, weight: torch.Tensor, title: str, mask: torch.Tensor | None = None,
                       pruned_color: str = "black") -> list:
    """Heat map of a weight tensor as (output channel) x (everything else), on a diverging scale symmetric
    about 0. With `mask` (same shape, 0 = pruned), the pruned entries are drawn in `pruned_color` (a masked
    array and the colour map's "bad" colour) instead of as the white of w = 0, and the title says so."""
    w = weight.detach().cpu().double().reshape(weight.shape[0], -1).numpy()
    limit = float(np.abs(w).max()) or 1.0
    cmap = colormaps["RdBu_r"].copy()
    if mask is not None:
        pruned = mask.detach().cpu().reshape(weight.shape[0], -1).numpy() == 0
        w = np.ma.masked_array(w, mask=pruned)
        cmap.set_bad(pruned_color)
        title = f"{title}\n{pruned_color}: pruned (mask = 0), {int(pruned.sum())} of {pruned.size}"
    im = ax.imshow(w, cmap=cmap, vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set(title=title, xlabel="input channel x kernel position (index)", ylabel="output channel")
    return [im, ax.figure.colorbar(im, ax=ax, label="weight value")]


def plot_weight_histogram(ax, before: torch.Tensor, after: torch.Tensor, bins: int = 80) -> list:
    """Histogram of weight values before pruning and of the weights kept after (log count axis)."""
    before = before.detach().cpu().flatten().numpy()
    kept = after.detach().cpu().flatten().numpy()
    kept = kept[kept != 0]
    edges = np.linspace(before.min(), before.max(), bins)
    a = ax.hist(before, edges, alpha=0.5, label="before")[2]
    b = ax.hist(kept, edges, alpha=0.7, label="kept after pruning")[2]
    ax.set(title="weight distribution", xlabel="weight value", ylabel="count (log)", yscale="log")
    ax.legend()
    return list(a) + list(b)


def plot_curves(ax, x, curves: dict[str, list[float]], title: str, xlabel: str, ylabel: str) -> list:
    """One line per named curve over a shared x."""
    artists = []
    for name, y in curves.items():
        artists += ax.plot(x, y, "o-", label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    return artists
