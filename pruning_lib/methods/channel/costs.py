"""The closed-form cost of a channel plan: every weight dimension is `fixed` channels plus the kept channels of
the groups mapped onto it, so parameters and MACs follow from the kept-channel masks without pruning."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ...metrics import layer_pixels
from .layers import CONVS, NORMS, is_depthwise, ties, width_of


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


def cost_table(model: nn.Module, groups: list, input_shape: tuple[int, ...],
               param_dim: Callable[[nn.Parameter], int]) -> list[LayerCost]:
    """One LayerCost per parametrised layer of `model` and per parameter outside the known layers, each dimension
    linked to the slots of the ChannelGroups that set its width; `param_dim(p)` is the dimension a free-standing
    parameter is sliced along."""
    slots: dict[tuple[str, str], list[tuple[int, torch.Tensor]]] = {}
    for k, g in enumerate(groups):
        for n, which, _, root_idxs in g.slots:
            slots.setdefault((n, which), []).append((k, torch.tensor(root_idxs, dtype=torch.long)))

    def side(name: str, which: str, width: int) -> Side:
        found = slots.get((name, which), [])
        return Side(width - sum(len(idx) for _, idx in found), found)

    weights = [n for n, m in model.named_modules() if isinstance(m, (*CONVS, nn.Linear))]
    pixels = {n: out for n, (_, out) in layer_pixels(model, weights, input_shape).items()}
    costs = []
    for name, m in model.named_modules():
        own = dict(m.named_parameters(recurse=False))
        if isinstance(m, (*CONVS, nn.Linear)):
            c_in, c_out = m.weight.shape[1] * ties(m), m.weight.shape[0]  # a depthwise conv: c_in = 1 per group
            kind = "depthwise" if is_depthwise(m) else "weight"
            costs.append(LayerCost(name, kind, side(name, "out", c_out), side(name, "in", c_in),
                                   m.weight[0, 0].numel(), m.bias is not None, pixels.get(name, 0), ties(m)))
            own = {k: v for k, v in own.items() if k not in ("weight", "bias")}
        elif isinstance(m, NORMS) and own:
            width = width_of(m, True)
            costs.append(LayerCost(name, "vector", side(name, "out", width), None,
                                   sum(p.numel() for p in own.values()) // width, False))
            own = {}
        for pname, p in own.items():  # parameters outside the known layers: sliced along one dimension
            full = f"{name}.{pname}" if name else pname
            width = p.shape[param_dim(p)] if slots.get((full, "out")) else 1
            costs.append(LayerCost(full, "vector", side(full, "out", width), None, p.numel() // width, False))
    return costs


def kept_masks(groups: list, kept: dict[str, Any]) -> list[torch.Tensor]:
    """One boolean mask per group (group order) of the channels kept[root] keeps: an index tensor or list, or a
    count k (channels 0..k-1); a group not in `kept` stays whole."""
    masks = []
    for g in groups:
        mask = torch.zeros(g.size, dtype=torch.bool)
        keep = kept.get(g.root, g.size)
        mask[torch.arange(keep) if isinstance(keep, int) else torch.as_tensor(keep, dtype=torch.long)] = True
        masks.append(mask)
    return masks
