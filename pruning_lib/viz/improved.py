"""Plots for Improved EigenDamage (notebook 07): each takes Axes, draws with title / labels / units, returns the artists."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def plot_second_moments(ax, measured: torch.Tensor, estimates: dict[str, torch.Tensor]) -> list:
    """Log-log scatter of per-direction second moments E[(Q_Gᵀ ∇W Q_A)²_ij] measured on held-out examples (x)
    against each estimate (y: K-FAC's λ_G λ_A, EKFAC's moments from other examples), with the diagonal."""
    x = measured.flatten().double().clamp_min(1e-20).cpu().numpy()
    artists = []
    for k, (label, est) in enumerate(estimates.items()):
        y = est.flatten().double().clamp_min(1e-20).cpu().numpy()
        artists.append(ax.loglog(x, y, ".", ms=3, alpha=0.5, color=f"C{k}", label=label)[0])
    lo, hi = x.min(), x.max()
    artists += ax.loglog([lo, hi], [lo, hi], "k--", lw=1, label="estimate = measured")
    ax.set(title="per-direction second moments: estimate vs measured", xlabel="measured on held-out examples "
           "(squared gradient units)", ylabel="estimate (same units)")
    ax.legend(fontsize=8)
    return artists


def plot_subspace_curves(ax, fractions: list[float], curves: dict[str, list[float]], what: str) -> list:
    """One line per subspace: loss increase (nats per example) against the fraction of directions kept per side."""
    artists = []
    for k, (label, values) in enumerate(curves.items()):
        artists += ax.semilogy(fractions, np.clip(values, 1e-9, None), "o-", color=f"C{k}", label=label)
    ax.set(title=f"{what} loss increase of one layer", xlabel="fraction of input and output directions kept",
           ylabel="loss increase (nats / example, log)")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    return artists


def plot_ablation(ax, df: pd.DataFrame, col: str = "acc_finetuned") -> list:
    """Grouped bars: mean `col` per method (rows of a results frame with status ok) at each target, with the
    standard deviation over seeds as error bars."""
    ok = df[df.status == "ok"]
    stats = ok.groupby(["method", "target_ratio"], sort=False)[col].agg(["mean", "std"]).reset_index()
    methods = list(dict.fromkeys(ok.method))
    ratios = sorted(stats.target_ratio.unique())
    width = 0.8 / len(ratios)
    artists = []
    for k, r in enumerate(ratios):
        s = stats[stats.target_ratio == r].set_index("method").reindex(methods)
        x = np.arange(len(methods)) + (k - (len(ratios) - 1) / 2) * width
        artists.append(ax.bar(x, s["mean"], width, yerr=s["std"].fillna(0), capsize=2, label=f"{r:.0%} removed"))
    ax.set_xticks(np.arange(len(methods)), [m.replace("improved_eigendamage", "improved") for m in methods],
                  rotation=60, ha="right", fontsize=7)
    finite = stats["mean"].dropna()
    label = {"acc_finetuned": "after fine-tuning", "acc_pruned": "right after pruning (BatchNorm re-estimated)"}.get(col, col)
    ax.set(title=f"ablation: test accuracy {label} (mean ± std over seeds)", ylabel="test accuracy (%)",
           ylim=(max(0.0, finite.min() - 5), min(100.0, finite.max() + 2)))
    ax.legend(fontsize=8)
    return artists


def plot_predicted_increase(ax, predicted: dict[str, float]) -> list:
    """Bars: the K-FAC prediction of each layer's loss increase (log scale); a layer left as it is (0) gets no bar
    and "(kept)" after its name."""
    names = list(predicted)
    x = np.arange(len(names))
    changed = [k for k, v in enumerate(predicted.values()) if v > 0]
    bars = list(ax.bar(x[changed], [list(predicted.values())[k] for k in changed], color="C3"))
    ax.set_yscale("log")
    ax.set_xticks(x, [n if k in changed else f"{n} (kept)" for k, n in enumerate(names)], rotation=90, fontsize=7)
    ax.set(title="predicted loss increase per layer (K-FAC)", ylabel="nats / example (log)")
    return bars
