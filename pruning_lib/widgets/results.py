"""Widgets for a sweep's results (notebook 08): method checkboxes and a target slider that redraw the
accuracy / cost plots from the loaded results frame (nothing is recomputed)."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd

from ..viz.results import plot_tradeoff


def tradeoff_view(df: pd.DataFrame, methods: list[str], ratio: float) -> dict:
    """The plots for `methods` (accuracy vs reduction and vs GFLOPs) with the points at target `ratio` circled,
    and the rows at that target: {"figure", "table"}."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, x in zip(axes, ("param_reduction", "gflops")):
        plot_tradeoff(ax, df, x, methods=methods)
    at = df[(df["status"] == "ok") & (df["target_ratio"] == ratio) & df["method"].isin(methods)]
    means = at.groupby("method", sort=False)[["param_reduction", "gflops", "acc_finetuned"]].mean()
    axes[0].scatter(means["param_reduction"], means["acc_finetuned"], s=120, facecolors="none", edgecolors="k")
    axes[1].scatter(means["gflops"] * 1e9, means["acc_finetuned"], s=120, facecolors="none", edgecolors="k")
    fig.suptitle(f"circled: target {ratio:.0%}")
    fig.tight_layout()
    table = at.groupby("method", sort=False)[["acc_pruned", "acc_finetuned", "gflops"]].agg(["mean", "std"]).round(3)
    return {"figure": fig, "table": table}


def tradeoff_widget(df: pd.DataFrame):
    """Checkboxes (one per method) and a slider over the targets; changes redraw on release."""
    methods = list(dict.fromkeys(df["method"]))
    ratios = sorted(df["target_ratio"].unique())
    boxes = {m: W.Checkbox(value=True, description=m, indent=False) for m in methods}
    slider = W.SelectionSlider(options=[(f"{r:.0%}", r) for r in ratios], value=ratios[-1], description="target",
                               continuous_update=False)

    def show(ratio: float, **chosen: bool) -> dict:
        view = tradeoff_view(df, [m for m, on in chosen.items() if on], ratio)
        plt.show()
        return view

    out = W.interactive_output(show, {"ratio": slider, **boxes})
    return W.VBox([W.HBox([slider]), W.GridBox(list(boxes.values()), layout=W.Layout(
        grid_template_columns="repeat(4, 200px)")), out])
