"""Plots for channel pruning (notebooks 02, 03): each takes Axes, draws with title / labels / units, returns artists."""
from __future__ import annotations

import numpy as np
import torch

from ..methods.channel import ChannelPruner


def plot_kept_channels(ax, pruner: ChannelPruner, kept: dict[str, int], title: str) -> list:
    """Bars per prunable layer (producer): channels before (light) and kept (dark)."""
    names = pruner.producers
    full = {n: g.size for g in pruner.groups for n, _, _ in g.producers}
    widths = pruner.layer_widths(kept)
    x = np.arange(len(names))
    bars = list(ax.bar(x, [full[n] for n in names], color="0.85", label="before"))
    bars += list(ax.bar(x, [widths[n] for n in names], color="C0", label="kept"))
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set(title=title, ylabel="output channels")
    ax.legend(fontsize=7)
    return bars


def plot_score_scatter(ax, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], label_a: str, label_b: str) -> list:
    """Per-channel scatter of two criteria (log-log), one colour per layer."""
    artists = []
    for k, n in enumerate(a):
        artists.append(ax.scatter(a[n].double().cpu().clamp_min(1e-12).numpy(),
                                  b[n].double().cpu().clamp_min(1e-12).numpy(), s=8, color=f"C{k % 10}", label=n))
    ax.set(xscale="log", yscale="log", title=f"{label_b} vs {label_a}, one dot per output channel",
           xlabel=f"{label_a} score", ylabel=f"{label_b} score")
    ax.legend(fontsize=6, ncol=2)
    return artists


def plot_speedup(ax, ratios: list[float], theoretical: list[float], measured: dict[str, list[float]]) -> list:
    """Speed-up vs fraction of parameters removed: theoretical (MACs) and measured latency per batch size."""
    artists = ax.plot(ratios, theoretical, "k--o", label="theoretical (MACs)")
    for k, (label, values) in enumerate(measured.items()):
        artists += ax.plot(ratios, values, "-o", color=f"C{k}", label=f"measured, {label}")
    ax.set(title="speed-up of the physically pruned network (CPU)", xlabel="fraction of parameters removed",
           ylabel="speed-up over the unpruned network (x)")
    ax.legend(fontsize=8)
    return artists


def plot_quadratic(ax, H: torch.Tensor, w: torch.Tensor, result: dict, q: int) -> list:
    """Contours of L(v) = ½ (v - w)ᵀ H (v - w) with the trained point w and the OBD / OBS points after
    removing weight q (result of second_order.quadratic_pruning)."""
    H, w = H.double(), w.double()
    span = float(w.abs().max()) * 1.8
    g = torch.linspace(-span, span, 200, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="xy")
    D = torch.stack([X - w[0], Y - w[1]], -1)
    L = 0.5 * torch.einsum("...i,ij,...j->...", D, H, D)
    artists = [ax.contour(X.numpy(), Y.numpy(), L.numpy(), levels=15, cmap="viridis")]
    axis = "w1 = 0" if q == 0 else "w2 = 0"
    artists.append(ax.axvline(0, color="0.6", lw=1) if q == 0 else ax.axhline(0, color="0.6", lw=1))
    for point, style, label in ((w, "ko", "trained w (minimum)"),
                                (result["obd_point"], "C3s", f"OBD: ΔL = {result['obd_true']:.3f}"),
                                (result["obs_point"], "C2^", f"OBS: ΔL = {result['obs_true']:.3f}")):
        artists += ax.plot(*point.tolist(), style, ms=9, label=label)
    ax.set(title=f"removing weight {q + 1} (constraint {axis})", xlabel="w1", ylabel="w2", aspect="equal")
    ax.legend(fontsize=8)
    return artists
