"""Plots for channel pruning (notebooks 02, 03): each takes Axes, draws with title / labels / units, returns artists."""
from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib import ticker

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


def log_ticks(axis, lo: float, hi: float, max_ticks: int = 5) -> None:
    """Few, non-overlapping labelled ticks on a log `axis` spanning [lo, hi] (lo > 0): 1-2-5 steps when the
    range is under 1.5 decades, else powers of ten (every k-th decade, at most `max_ticks`); minor ticks unlabelled."""
    decades = math.log10(hi) - math.log10(lo)
    if decades < 1.5:
        major = ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades >= 0.7 else (1.0, 2.0, 3.0, 5.0, 7.0))
    else:
        major = ticker.LogLocator(base=10, subs=(1.0,), numticks=max_ticks)
    axis.set_major_locator(major)
    # minor_thresholds=inf: label every tick the locator places (the default hides some with a wide range)
    axis.set_major_formatter(ticker.LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(math.inf, math.inf)))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs="auto", numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())


def plot_score_scatter(ax, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], label_a: str, label_b: str,
                       floor: float = 1e-12) -> list:
    """Per-channel scatter of two criteria (log-log), one colour per layer; scores below `floor` (e.g. exact
    zeros) are drawn at `floor`. Few labelled ticks per axis (`log_ticks`), so labels never overlap."""
    artists, xs, ys = [], [], []
    for k, n in enumerate(a):
        x = a[n].double().cpu().clamp_min(floor).numpy()
        y = b[n].double().cpu().clamp_min(floor).numpy()
        xs.append(x)
        ys.append(y)
        artists.append(ax.scatter(x, y, s=8, color=f"C{k % 10}", label=n))
    ax.set(xscale="log", yscale="log", title=f"{label_b} vs {label_a}, one dot per output channel",
           xlabel=f"{label_a} score (log scale)", ylabel=f"{label_b} score (log scale)")
    for axis, v in ((ax.xaxis, np.concatenate(xs)), (ax.yaxis, np.concatenate(ys))):
        log_ticks(axis, float(v.min()), float(v.max()))
    ax.legend(fontsize=6, ncol=2)
    return artists


def plot_speedup(ax, ratios: list[float], theoretical: list[float], measured: dict[str, list[float]],
                 device: str = "CPU", threads: int | None = None) -> list:
    """Speed-up vs fraction of parameters removed: theoretical (MACs) and measured latency per batch size
    (ratios of median latencies), on a log axis with the 1x line; the title names the device and, when given,
    the thread count."""
    artists = ax.plot(ratios, theoretical, "k--o", label="theoretical (MACs)")
    for k, (label, values) in enumerate(measured.items()):
        artists += ax.plot(ratios, values, "-o", color=f"C{k}", label=f"measured, {label}")
    artists.append(ax.axhline(1.0, color="0.5", lw=0.8, ls=":", label="no speed-up (1x)"))
    where = device + (f", {threads} thread{'s' if threads != 1 else ''}" if threads is not None else "")
    ax.set(title=f"speed-up of the physically pruned network ({where})", xlabel="fraction of parameters removed",
           ylabel="speed-up over the unpruned network (x, log scale)", yscale="log")
    values = [v for v in [*theoretical, *(x for vs in measured.values() for x in vs), 1.0] if v > 0]
    log_ticks(ax.yaxis, min(values), max(values))
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
