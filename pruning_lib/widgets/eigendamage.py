"""EigenDamage widget (notebook 06): a ratio slider that only re-thresholds cached direction scores."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from ..methods.eigen.basis import LayerScores
from ..methods.eigen.select import plan_layers, plan_totals, search_threshold
from ..pruner import TargetUnreachable
from ..viz.eigendamage import plot_importance_curves, plot_kept_directions


def rank_selection_view(layers: list[LayerScores], target: float, params: int, layer_cap: float = 0.9) -> dict:
    """For a target fraction of the model's `params` removed: the global threshold, the achieved fraction,
    the per-layer ranks {layer: (r_in, r_out) or None} and the parameter / MAC change of the plan.
    Pure: it reads only the cached scores in `layers` (no model, no data, no K-FAC)."""
    threshold, got = search_threshold(layers, target, layer_cap, params, params)
    plan = plan_layers(layers, threshold, layer_cap)
    return {"threshold": threshold, "achieved": got, "plan": plan, **plan_totals(layers, plan)}


def rank_selection_widget(layers: list[LayerScores], params: int, layer_cap: float = 0.9, max_ratio: float = 0.9):
    """Ratio slider: kept directions per layer (bars) and sorted importance curves with the global threshold.

    The slider redraws once, when it is released (continuous_update=False: dragging does not queue one
    threshold search and one figure per intermediate value, so the plot never lags behind the slider's value).
    Each change only re-plans from the cached `layers` (K-FAC is never recomputed); views are memoised per
    ratio, so going back to a ratio already seen is instant."""
    cache: dict[float, dict | str] = {}

    def view_at(ratio: float) -> dict | str:
        key = round(ratio, 6)
        if key not in cache:
            try:
                cache[key] = rank_selection_view(layers, ratio, params, layer_cap)
            except TargetUnreachable as err:
                cache[key] = str(err)
        return cache[key]

    def show(ratio: float) -> dict | None:
        view = view_at(ratio)
        if isinstance(view, str):  # unreachable target: say so instead of a traceback
            print(view)
            return None
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
        plot_kept_directions(ax1, layers, view["plan"])
        ax1.set_title(f"slider {ratio:.2f}: kept directions at {view['achieved']:.1%} of parameters removed")
        plot_importance_curves(ax2, layers, view["threshold"])
        fig.tight_layout()
        plt.show()
        return view

    return W.interactive(show, ratio=W.FloatSlider(value=0.5, min=0.0, max=max_ratio, step=0.05,
                                                   description="ratio", continuous_update=False))
