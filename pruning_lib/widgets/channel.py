"""Channel pruning widgets (notebooks 02, 03): sliders only re-threshold cached scores; they redraw their figures
when released (continuous_update=False), not at every step of a drag."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from ..methods.channel import ChannelPruner
from ..viz.channel import plot_kept_channels


def kept_channels_view(pruner: ChannelPruner, scores: dict[str, dict[str, torch.Tensor]], criterion: str,
                       ratio: float, base_params: int, base_macs: int) -> dict:
    """For group scores of `criterion` and a target fraction of parameters removed: threshold, achieved
    fraction, channels kept per group, parameters, MACs and the theoretical (MAC) speed-up."""
    if criterion not in scores:
        raise ValueError(f"criterion: unknown '{criterion}', allowed: {', '.join(scores)}")
    threshold, got = pruner.search(scores[criterion], ratio, base_params)
    kept = pruner.kept_counts(scores[criterion], threshold)
    params, macs = pruner.cost(kept)
    return {"threshold": threshold, "achieved": got, "kept": kept, "params": params, "macs": macs,
            "theoretical_speedup": base_macs / macs}


def kept_channels_widget(pruner: ChannelPruner, scores: dict[str, dict[str, torch.Tensor]], base_params: int,
                         base_macs: int, max_ratio: float = 0.9):
    """Ratio slider and criterion dropdown: kept output channels per layer as bars."""

    def show(criterion: str, ratio: float) -> dict:
        view = kept_channels_view(pruner, scores, criterion, ratio, base_params, base_macs)
        fig, ax = plt.subplots(figsize=(10, 3.5))
        plot_kept_channels(ax, pruner, view["kept"], f"{criterion}: {view['achieved']:.1%} of parameters removed, "
                           f"{view['theoretical_speedup']:.2f}x fewer MACs")
        fig.tight_layout()
        plt.show()
        return view

    return W.interactive(show, criterion=W.Dropdown(options=list(scores), description="criterion"),
                         ratio=W.FloatSlider(value=0.5, min=0.0, max=max_ratio, step=0.05, description="ratio",
                                             continuous_update=False))


def removed_overlap_view(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], layer: str, ratio: float) -> dict:
    """Within one layer, the channels each of two criteria removes when a fraction `ratio` of the layer's
    channels goes (lowest scores first), and the overlap |A ∩ B| / |A ∪ B| of the two removed sets."""
    if layer not in a or layer not in b:
        raise ValueError(f"layer: unknown '{layer}', allowed: {', '.join(a)}")
    k = int(round(ratio * a[layer].numel()))
    ra = set(torch.argsort(a[layer].cpu())[:k].tolist())
    rb = set(torch.argsort(b[layer].cpu())[:k].tolist())
    union = ra | rb
    return {"removed_a": sorted(ra), "removed_b": sorted(rb), "overlap": len(ra & rb) / len(union) if union else 1.0}


def overlap_widget(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], label_a: str, label_b: str):
    """Layer dropdown and ratio slider: both criteria's sorted saliencies of the layer, removed ones marked."""

    def show(layer: str, ratio: float) -> dict:
        view = removed_overlap_view(a, b, layer, ratio)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        for ax, s, removed, label in ((axes[0], a[layer], view["removed_a"], label_a),
                                      (axes[1], b[layer], view["removed_b"], label_b)):
            s = s.double().cpu()
            colors = ["C3" if i in removed else "C0" for i in range(len(s))]
            ax.bar(range(len(s)), s.clamp_min(1e-12).numpy(), color=colors)
            ax.set(yscale="log", title=f"{label} of {layer} (red: removed)", xlabel="output channel",
                   ylabel="saliency (log)")
        fig.suptitle(f"overlap of the removed sets: {view['overlap']:.0%}")
        fig.tight_layout()
        plt.show()
        return view

    return W.interactive(show, layer=W.Dropdown(options=list(a), description="layer"),
                         ratio=W.FloatSlider(value=0.5, min=0.0, max=0.9, step=0.05, description="ratio",
                                             continuous_update=False))
