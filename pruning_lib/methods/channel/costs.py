"""The closed-form cost of a channel plan: every weight dimension is `fixed` channels plus the kept channels of
the groups mapped onto it, so parameters and MACs follow from the kept-channel masks without pruning."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Side:
    """One dimension of a layer's weights: `fixed` channels no group removes, plus per slot (group number,
    group indices) the channels a group maps onto it. width = fixed + Σ_slots kept channels among them."""

    fixed: int
    slots: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    def width(self, masks: list[torch.Tensor]) -> int:
        return self.fixed + sum(int(masks[k][idx].sum()) for k, idx in self.slots)


@dataclass
class LayerCost:
    """One parametrised tensor owner: params = (w_in / groups) · w_out · unit (+ w_out bias) for a weight layer
    ("weight"; a grouped conv has `groups` > 1; a depthwise conv: w_out · unit), unit · w_out for a norm or a
    parameter sliced along one dimension ("vector"); MACs = weight params · output positions."""

    name: str
    kind: str  # "weight" | "depthwise" | "vector"
    out: Side
    inp: Side | None
    unit: int
    bias: bool
    pixels: int = 0
    groups: int = 1


def total_cost(costs: list[LayerCost], masks: list[torch.Tensor]) -> tuple[int, int]:
    """(parameters, MACs per example) of every LayerCost under the kept-channel masks (one per group)."""
    params = macs = 0
    for c in costs:
        w_out = c.out.width(masks)
        if c.kind == "vector":
            params += c.unit * w_out
            continue
        w_in = 1 if c.kind == "depthwise" else c.inp.width(masks) // c.groups
        weights = w_in * w_out * c.unit
        params += weights + (w_out if c.bias else 0)
        macs += weights * c.pixels
    return params, macs


def layer_widths(costs: list[LayerCost], masks: list[torch.Tensor]) -> dict[str, tuple[int, int]]:
    """(input channels, output channels) of every conv / Linear layer under the kept-channel masks (a depthwise
    conv: its channels twice), what a latency table is read at."""
    out = {}
    for c in costs:
        if c.kind != "vector":
            w_out = c.out.width(masks)
            out[c.name] = (w_out if c.kind == "depthwise" else c.inp.width(masks), w_out)
    return out
