"""Widgets for weight pruning (notebook 01). Like every widget here, each returns an `ipywidgets.interactive` bound to a pure function, so it is
testable without Jupyter (call `.result` after changing a control, or call the pure function)."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from ..methods.weight import layer_sparsity, prune_copy
from ..viz.weight import plot_layer_bars


def sparsity_view(model, evaluate_fn, sparsity: float, scope: str = "global") -> dict:
    """Prune a copy of `model` to `sparsity` (fraction of all parameters removed) and measure it:
    {"accuracy": evaluate_fn(pruned), "layer_sparsity": {layer: fraction of zeros}}."""
    pruned = prune_copy(model, sparsity, scope)
    return {"accuracy": evaluate_fn(pruned), "layer_sparsity": layer_sparsity(pruned)}


def sparsity_widget(model, evaluate_fn, max_sparsity: float = 0.95):
    """Sparsity slider + scope dropdown: bar chart of per-layer sparsity, accuracy in the title (the slider
    redraws when released, not while dragged)."""

    def show(sparsity: float, scope: str) -> dict:
        view = sparsity_view(model, evaluate_fn, sparsity, scope)
        fig, ax = plt.subplots(figsize=(9, 3))
        plot_layer_bars(ax, view["layer_sparsity"],
                        f"{scope} magnitude pruning at {sparsity:.0%}: test accuracy {view['accuracy']:.1f} %",
                        "fraction of weights zeroed")
        ax.set_ylim(0, 1)
        plt.show()
        return view

    # continuous_update=False: every change prunes a copy and evaluates it, so redraw once the slider is released
    return W.interactive(show, sparsity=W.FloatSlider(value=0.5, min=0.0, max=max_sparsity, step=0.05,
                                                      continuous_update=False),
                         scope=W.Dropdown(options=["global", "layer"], value="global"))
