"""Plots for data, training curves and weight pruning (notebooks 00, 01): each takes a matplotlib Axes, draws with title / labels / units, returns the artists."""
from __future__ import annotations

import numpy as np
import torch


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
    ax.set(title=title, ylabel=ylabel)
    return list(bars)


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
