"""Improved EigenDamage widget (notebook 07): ingredient toggles and a ratio slider that only re-plan from
cached curvature (methods.eigen.improved.plan_preview); nothing is re-estimated."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from ..methods.eigen.improved import plan_preview
from ..methods.eigen.subspaces import SUBSPACES
from ..pruner import TargetUnreachable
from ..viz.eigendamage import plot_kept_directions
from ..viz.improved import plot_predicted_increase


def ingredient_view(model, scores: dict, factors: dict, base_params: int, ekfac: bool, subspace: str,
                    per_param: bool, ratio: float) -> dict:
    """plan_preview with the toggles' settings: `scores` holds the cached LayerScores per eigenvalue kind
    ({"kfac": [...], "ekfac": [...]}), `factors` the cached LayerKFAC per layer."""
    layers = scores["ekfac" if ekfac else "kfac"]
    return {**plan_preview(model, layers, factors, subspace, "per_param" if per_param else "saliency", ratio,
                           base_params), "layers": layers}


def ingredient_widget(model, scores: dict, factors: dict, base_params: int):
    """Checkboxes (EKFAC eigenvalues, per-parameter budget), a subspace dropdown and a ratio slider: kept
    directions per layer and the predicted loss increase per layer, re-planned from the cache on each change
    (the slider redraws when released)."""

    def show(ekfac: bool, subspace: str, per_param: bool, ratio: float):
        try:
            view = ingredient_view(model, scores, factors, base_params, ekfac, subspace, per_param, ratio)
        except TargetUnreachable as err:
            print(err)
            return None
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
        plot_kept_directions(ax1, view["layers"], view["plan"])
        ax1.set_title(f"kept directions at {view['achieved']:.1%} of parameters removed")
        plot_predicted_increase(ax2, view["predicted"])
        ax2.set_title(f"predicted loss increase: {view['total']:.3g} nats / example in all")
        fig.tight_layout()
        plt.show()
        return view

    return W.interactive(show, ekfac=W.Checkbox(value=False, description="EKFAC eigenvalues"),
                         subspace=W.Dropdown(options=list(SUBSPACES), value="whitened", description="subspace"),
                         per_param=W.Checkbox(value=False, description="budget per parameter"),
                         ratio=W.FloatSlider(value=0.5, min=0.1, max=0.9, step=0.05, description="ratio",
                                             continuous_update=False))
