"""Plots of a sweep's results (runner, notebook 08): accuracy against the parameter reduction or GFLOPs, one
line per method with error bars over seeds (each method in its own colour and marker, `viz.palette`), and the
Pareto front. Each draws on a given Axes."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.ticker import EngFormatter

from ..results import TITLES, best_cells, pareto_front, tables, tradeoff
from .palette import method_style

AXES = {"param_reduction": "parameters removed (fraction of the unpruned model)",
        "gflops": "FLOPs per image (2 x MACs)"}


def plot_tradeoff(ax, df: pd.DataFrame, x: str = "param_reduction", y: str = "acc_finetuned",
                  methods: list[str] | None = None, front: bool = True) -> list:
    """Mean `y` ± std over seeds against mean `x`, one line per method (those in `methods`, default all), and
    the Pareto front of the points drawn as a wide light-grey band behind them."""
    points = tradeoff(df, x, y)
    if methods is not None:
        points = points[points["method"].isin(methods)]
    scale = 1e9 if x == "gflops" else 1.0  # GFLOPs drawn in FLOPs with SI prefixes (kFLOPs, MFLOPs, GFLOPs)
    artists = []
    for method, p in points.groupby("method", sort=False):
        artists.append(ax.errorbar(p["x"] * scale, p["y"], yerr=p["y_std"], ms=5, capsize=3, label=method,
                                   **method_style(method)))
    if front and len(points):  # a wide light band behind the methods' lines, so that no method's style is taken
        f = pareto_front(points, lower_x_is_better=(x == "gflops"), tolerance=0.01 if x == "param_reduction" else 0.0)
        artists += ax.plot(f["x"] * scale, f["y"], "-", color="0.8", lw=6, alpha=0.7, zorder=0, label="Pareto front")
    label = "test accuracy after fine-tuning (%)" if y == "acc_finetuned" else "test accuracy right after pruning (%)"
    ax.set(xlabel=AXES.get(x, x), ylabel=label, title=f"{label.split(' (')[0]} vs {AXES.get(x, x).split(' (')[0]}")
    if x == "gflops":
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(EngFormatter(unit="FLOPs"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return artists


def save_plots(df: pd.DataFrame, run_dir: str | Path) -> list[Path]:
    """accuracy_vs_reduction.png and accuracy_vs_gflops.png in `run_dir`."""
    import matplotlib.pyplot as plt

    paths = []
    for x, name in (("param_reduction", "accuracy_vs_reduction.png"), ("gflops", "accuracy_vs_gflops.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        plot_tradeoff(ax, df, x)
        fig.tight_layout()
        paths.append(Path(run_dir) / name)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def styled_table(df: pd.DataFrame, col: str = "acc_finetuned", fmt: str = ".2f"):
    """Method x target table of mean ± std over seeds (results.tables), the best mean of each column in bold
    (highest accuracy, lowest GFLOPs or latency): a pandas Styler for the notebook."""
    title = TITLES[col]
    text = tables(df)[title]
    bold = best_cells(df, col, text).replace({True: "font-weight: bold", False: ""})
    return text.style.apply(lambda _: bold, axis=None).set_caption(title)
