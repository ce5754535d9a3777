"""The channel-pruning engine: coupled groups from torch-pruning's dependency graph, their closed-form
parameter / MAC cost, one global threshold, and the physical removal. Criteria (criteria.py, second_order.py)
only score channels; this module turns scores into a pruned model.

Groups. `torch_pruning.DependencyGraph` traces the model and returns, for every prunable output channel
space, the set of coupled operations: the convolutions / linear layers writing those channels
("producers", e.g. every conv feeding one residual stream), their BatchNorms (weights, biases and running
statistics), and the layers reading them ("consumers": the next convs, the shortcut convs, the
classifier's input). Removing channel i of a group removes it from all of them at once, so the network
stays consistent. The classifier's outputs (the classes) are never pruned.

Group scores. A criterion gives a saliency per output channel of every producer; a group's saliency of
channel i is the SUM of its producers' saliencies of i (removing i removes all of them). `normalize` first
rescales each producer's saliencies so that layers whose scores live on different scales (weight norms,
gradients, curvature) compete on equal terms under the one global threshold: "mean" divides by their mean
over the layer's channels, as Torch-Pruning's normalizer="mean" does, so every layer's average channel
scores 1 whatever its width; "sum" divides by their sum (the EigenDamage reference baselines' choice), which
makes a wide layer's channels look cheap; "none" keeps raw scores. Defaults, as the Fashion-MNIST ranking
benchmark measured them (benchmarks/RESULTS.md, "normalisation and group reduction"): L1 "mean" (at 90 %
74.3 ± 1.3 against 69.7 ± 1.3 raw, Torch-Pruning's L1 74.9), Taylor / C-OBD / C-OBS "sum" ("mean" loses
them 1–2.5 points at 50–80 %, while removing more FLOPs).

Threshold. Every group channel scoring <= t is removed, except that each group keeps at least
max(1, ceil((1 - layer_cap) · C)) channels (its highest-scoring ones), C its width in the unpruned model:
a ratio that would empty a layer is capped instead. The parameter count after pruning is a closed-form
function of the kept channel counts (`ChannelPruner.cost`), so t is found by bisection over the sorted
scores without pruning repeatedly;
`target` (fraction of the unpruned model's parameters removed) is hit within one percentage point.

Why not torch-pruning's MetaPruner / importance classes: we use its dependency graph and its slicing, but
the scores, the threshold and the target are ours. The target must be hit within one point, found by bisection
on a closed-form parameter cost, and C-OBS must correct the kept weights between selection and removal; the
MetaPruner API offers neither.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch_pruning as tp
from torch import nn

from ...checks import TOLERANCE, check_choice, check_fraction, check_positive_int, check_target
from ...models import classifier_of
from ...modes import eval_mode
from ...pruner import TargetUnreachable, closest_threshold, rounded_width
from . import heads
from .costs import cost_table, kept_masks, layer_widths, total_cost
from .layers import (CONVS, NORMS, SUPPORTED, check_indices, check_supported, combined_ties, is_channel_shuffle,
                     is_depthwise, ties, width_of)

GROUP_REDUCTIONS = ("sum", "mean", "max")  # how a group's channel score combines its producers' scores
NORMALIZATIONS = ("mean", "sum", "none")  # how each producer's saliencies are rescaled before they are combined


@dataclass
class ChannelGroup:
    """Coupled channels of one output channel space (`size` channels, indices in the root's order).

    producers: (layer name, channel indices in the layer, same channels as group indices) of every
    Conv1d / 2d / 3d / Linear whose output channels are removed; norms: BatchNorms / LayerNorms sliced with
    them; consumers: layers whose input channels are removed; min_keep: fewest channels the per-layer cap
    allows; slots: (layer or parameter name, "out" | "in", indices in it, same channels as group indices) of
    every tensor dimension the group slices, what the cost table counts (a concatenation maps a group onto a
    slice of its consumers' inputs; a channel split onto part of the group); ties: equal parts the group's
    channels fall into (a grouped conv or GroupNorm on it, `layers.ties`): channels i, i + size/ties, ... are
    kept or removed together; attention: the attention module whose heads the group's channels are (`heads.py`:
    its producer is the module's qkv, each head owning 3·head_dim of its rows), else ""."""

    root: str
    size: int
    producers: list[tuple[str, list[int], list[int]]]
    norms: list[str]
    consumers: list[str]
    min_keep: int
    slots: list[tuple[str, str, list[int], list[int]]] = field(default_factory=list)
    ties: int = 1
    attention: str = ""

    def order(self, scores: torch.Tensor) -> torch.Tensor:
        """Channel indices, best first, with tied channels adjacent: positions j < size/ties by their score
        (descending, stable), each expanded to j, j + size/ties, ...; the first k of it, k a multiple of
        ties, removes equally from every part."""
        period = self.size // self.ties
        best = torch.argsort(scores[:period], descending=True, stable=True)
        return (best[:, None] + period * torch.arange(self.ties)).flatten()

    def tied(self, scores: torch.Tensor) -> torch.Tensor:
        """Each channel's score replaced by the mean over its tied channels (the channel saliency of removing
        them together)."""
        return scores.reshape(self.ties, -1).mean(0).repeat(self.ties) if self.ties > 1 else scores


class ChannelPruner:
    """The coupled channel groups of `model` (traced once on an input of `input_shape`), the closed-form
    parameter / MAC count as a function of the channels kept per group, the global-threshold search and the
    physical removal. A pruner describes the model as it was when built: after `apply` build a new one.

    A group that the dependency graph couples to a layer the pruner cannot slice (an LSTM, an attention layer,
    a module of unknown type with parameters), or whose channels pass through a channel shuffle, is kept whole:
    it is not in `groups`, and `frozen` says why ({root: reason}). A group read by a grouped conv or normalised
    by a GroupNorm loses the same positions in every part (`ChannelGroup.ties`). An attention's heads are one group
    (`heads.py`), removed whole with num_heads kept consistent. Parameters outside any layer
    that the graph couples to channels (ConvNeXt's layer_scale, a ViT's class token) are sliced with them along
    the dimension torch-pruning picks."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], layer_cap: float = 0.9,
                 floors: dict[str, int] | None = None, round_to: int = 1):
        check_fraction(layer_cap, "layer_cap")
        check_positive_int(round_to, "round_to")
        check_supported(model)
        self.round_to = round_to  # kept widths are multiples of it (or a group's whole width)
        self.model, self.input_shape, self.layer_cap, self.applied = model, tuple(input_shape), layer_cap, False
        self.floors = floors or {}  # producer name -> fewest channels its group keeps (from the unpruned model)
        names = {m: n for n, m in model.named_modules()}
        names.update({p: n for n, p in model.named_parameters()})
        device = next(model.parameters()).device
        with eval_mode(model):  # tracing runs a forward pass: keep BatchNorm running statistics untouched
            self.graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=torch.zeros(1, *input_shape, device=device), verbose=False)
        head = classifier_of(model)
        self.groups: list[ChannelGroup] = []
        self.frozen: dict[str, str] = {}
        attentions = heads.attention_layers(model)
        qkv = {f"{n}.qkv" for n in attentions}
        for g in self.graph.get_all_groups(ignored_layers=[head], root_module_types=(*CONVS, nn.Linear)):
            if names[g[0].dep.target.module] in qkv:  # mapped one to one onto proj's inputs: a head group instead
                continue
            described = self._describe(g, names)
            if isinstance(described, ChannelGroup):
                self.groups.append(described)
            else:
                self.frozen[names[g[0].dep.target.module]] = described
        for name, attn in attentions.items():
            why = heads.unsupported(attn)
            if why:
                self.frozen[f"{name}.qkv"] = f"attention '{name}': {why}"
            else:
                self.groups.append(self._head_group(name, attn))
        if not self.groups:
            why = "; ".join(f"'{r}': {w}" for r, w in list(self.frozen.items())[:3])
            raise ValueError(f"model: no channel group the channel pruner can remove (the classifier's inputs and "
                             f"outputs stay){'; kept whole: ' + why if why else ''}")
        self._costs = cost_table(model, self.groups, input_shape, self.param_dim)
        full = self.cost({gr.root: gr.size for gr in self.groups})
        dense = sum(p.numel() for p in model.parameters())
        if full[0] != dense:  # every parameter must be accounted for, or the target search would be wrong
            raise ValueError(f"model: the channel pruner accounts for {full[0]} of {dense} parameters; a layer it "
                             "does not understand holds the rest")

    def _describe(self, group, names: dict) -> ChannelGroup | str:
        """ChannelGroup of a torch-pruning group (its items sorted into producers, norms, consumers and the
        slots of every sliced tensor), or why it is kept whole (a coupled layer the pruner cannot slice)."""
        producers, norms, consumers, slots, parts = [], [], [], [], []
        root = names[group[0].dep.target.module]
        size = len(group[0].idxs)
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            if module not in names:  # torch-pruning's own operator nodes (add, reshape, concat): nothing to slice
                if is_channel_shuffle(item.dep.target):
                    return ("its channels pass through a channel shuffle (view -> transpose -> view), which the "
                            "dependency graph maps as the identity: the inputs it would cut downstream are the "
                            "wrong ones")
                continue
            name = names[module]
            if ties(module) > 1:
                out = handler == self.graph.get_pruner_of_module(module).prune_out_channels
                if sorted(item.root_idxs) != list(range(size)) or len(item.idxs) != width_of(module, out):
                    return f"layer '{name}' ({type(module).__name__}) splits into groups only part of these channels"
                parts.append(ties(module))
            if isinstance(module, nn.Parameter):
                if module.dim() > 0:
                    slots.append((name, "out", list(item.idxs), list(item.root_idxs)))
                continue
            if not any(True for _ in module.parameters(recurse=False)):
                continue
            if not isinstance(module, SUPPORTED):
                return f"coupled to layer '{name}' ({type(module).__name__}), which the channel pruner cannot slice"
            out = handler == self.graph.get_pruner_of_module(module).prune_out_channels
            check_indices(name, width_of(module, out), out, item.idxs, root, type(module).__name__)
            if isinstance(module, NORMS):
                norms.append(name)
            elif out:  # a depthwise conv's in- and out-handlers are this one
                if all(n != name for n, _, _ in producers):
                    producers.append((name, list(item.idxs), list(item.root_idxs)))
            else:
                consumers.append(name)
            side = "out" if out or isinstance(module, NORMS) or is_depthwise(module) else "in"
            if all(not (n == name and sd == side) for n, sd, _, _ in slots):
                slots.append((name, side, list(item.idxs), list(item.root_idxs)))
        tie = combined_ties(parts)  # divides size: each part count does
        min_keep = self.rounded(max([1, math.ceil((1 - self.layer_cap) * size - 1e-9)] +
                                    [self.floors[n] for n, _, _ in producers if n in self.floors]), size, tie)
        return ChannelGroup(root, size, producers, sorted(set(norms)), sorted(set(consumers)), min_keep, slots, tie)

    def _head_group(self, name: str, attn: nn.Module) -> ChannelGroup:
        """The group of an attention's heads (`heads.py`): qkv rows and proj columns by head."""
        rows, of_rows = heads.qkv_rows(attn)
        cols, of_cols = heads.proj_columns(attn)
        size = attn.num_heads
        min_keep = max(1, math.ceil((1 - self.layer_cap) * size - 1e-9), self.floors.get(f"{name}.qkv", 1))
        return ChannelGroup(f"{name}.qkv", size, [(f"{name}.qkv", rows, of_rows)], [], [f"{name}.proj"], min_keep,
                            [(f"{name}.qkv", "out", rows, of_rows), (f"{name}.proj", "in", cols, of_cols)],
                            attention=name)

    def param_dim(self, p: nn.Parameter) -> int:
        """The dimension torch-pruning slices a parameter along (its graph node's pruning_dim)."""
        return self.graph.module2node[p].pruning_dim % p.dim()

    def rounded(self, count: int, size: int, tie: int = 1) -> int:
        """`count` channels of a group of `size` in `tie` equal parts, rounded up to a multiple of round_to and of
        tie (`rounded_width`)."""
        return rounded_width(count, size, math.lcm(self.round_to, tie))

    def producer_floors(self) -> dict[str, int]:
        """{producer name: its group's min_keep}, to hand to the pruner of a later step (`floors`)."""
        return {n: g.min_keep for g in self.groups for n, _, _ in g.producers}

    @property
    def producers(self) -> list[str]:
        """Names of every Conv2d / Linear whose output channels can be removed."""
        return [n for g in self.groups for n, _, _ in g.producers]

    def cost(self, kept: dict[str, Any]) -> tuple[int, int]:
        """(parameters, MACs per example) of the model keeping kept[root] of each group's channels (an index
        tensor or list, or a count k: channels 0..k-1); groups not in `kept` stay whole."""
        return total_cost(self._costs, kept_masks(self.groups, kept))

    def widths(self, kept: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """(input, output) channels of every conv / Linear layer under `kept` (as `cost` reads it)."""
        return layer_widths(self._costs, kept_masks(self.groups, kept))

    def group_scores(self, layer_scores: dict[str, torch.Tensor], normalize: str = "none",
                     reduce: str = "sum", keep_unscored: bool = False) -> dict[str, torch.Tensor]:
        """Group saliency of channel i from its producers' saliencies s_p(i) (float64, CPU): their sum
        (`reduce` "sum", the default), mean or max. `normalize` first rescales each producer's saliencies:
        "mean", s_p(i) / mean_j s_p(j); "sum", s_p(i) / Σ_j s_p(j); "none", as they are (module docstring:
        why L1 defaults to "mean" and Taylor / C-OBD / C-OBS to "sum"). Producers missing from `layer_scores`
        (a layer the criterion cannot score, e.g. a depthwise conv for K-FAC) do not take part; a group with no
        scored producer is an error, or with `keep_unscored` scores +inf: it keeps its whole width (C-OBS on a
        layer whose K-FAC factor exceeds max_factor)."""
        check_choice(reduce, GROUP_REDUCTIONS, "group_reduce")
        check_choice(normalize, NORMALIZATIONS, "normalize")
        out = {}
        for g in self.groups:
            scored = [p for p in g.producers if p[0] in layer_scores]  # a criterion may skip a layer it cannot score
            if not scored and keep_unscored:
                out[g.root] = torch.full((g.size,), math.inf, dtype=torch.float64)
                continue
            if not scored:
                raise ValueError(f"group '{g.root}': the criterion scored none of its producers "
                                 f"({', '.join(n for n, _, _ in g.producers)})")
            per_producer = torch.zeros(len(scored), g.size, dtype=torch.float64)
            for k, (n, idxs, root_idxs) in enumerate(scored):
                ls = layer_scores[n].detach().double().cpu()
                if normalize != "none":
                    scale = ls.mean() if normalize == "mean" else ls.sum()
                    ls = ls / scale.clamp_min(torch.finfo(torch.float64).tiny)
                per_producer[k].index_add_(0, torch.tensor(root_idxs), ls[idxs])  # a head: sum of its rows
            out[g.root] = (per_producer.sum(0) if reduce == "sum" else per_producer.mean(0) if reduce == "mean"
                           else per_producer.max(0).values)
        return out

    def kept_counts(self, scores: dict[str, torch.Tensor], threshold: float) -> dict[str, int]:
        """Channels kept per group when every channel scoring <= threshold is removed, within the cap, rounded
        up to a multiple of round_to and of the group's ties (so the count never rises with the threshold: the
        bisection holds)."""
        return {g.root: max(g.min_keep, int((scores[g.root] > threshold).sum()) if g.attention else
                            self.rounded(int((scores[g.root] > threshold).sum()), g.size, g.ties))
                for g in self.groups}

    def tied(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Group scores with tied channels scored alike (`ChannelGroup.tied`), what search and plan threshold."""
        return {g.root: g.tied(scores[g.root]) for g in self.groups}

    def plan(self, scores: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
        """Kept channel indices (sorted, group order) per group: its kept_counts highest-scoring channels, tied
        channels together."""
        scores = self.tied(scores)
        counts = self.kept_counts(scores, threshold)
        return {g.root: torch.sort(g.order(scores[g.root])[:counts[g.root]]).values for g in self.groups}

    def search(self, scores: dict[str, torch.Tensor], target: float, base_params: float,
               strict: bool = True, measure: Callable[[dict], float] | None = None) -> tuple[float, float]:
        """(threshold, achieved fraction 1 - measure(kept) / base_params) closest to `target` over all score
        values, by bisection (the fraction removed never decreases as the threshold rises); `measure` is the
        parameter count by default (a latency target passes the predicted milliseconds and their unpruned
        value). With `strict`, raise TargetUnreachable when the best misses `target` by more than one percentage
        point (e.g. the per-layer cap forbids it); an intermediate step of an iterative schedule takes the closest
        instead."""
        measure = measure or (lambda kept: self.cost(kept)[0])
        check_target(target)
        scores = self.tied(scores)
        values = torch.cat([s for s in scores.values()]).unique()
        values = values[values != math.inf]  # +inf: a group kept whole (group_scores' keep_unscored)
        candidates = [-math.inf] + values.tolist()
        order = {g.root: g.order(scores[g.root]) for g in self.groups}
        removed = lambda t: 1.0 - measure({r: order[r][:k] for r, k in  # noqa: E731
                                          self.kept_counts(scores, t).items()}) / base_params
        threshold, got = closest_threshold(candidates, removed, target)
        if strict and abs(got - target) > TOLERANCE:
            whole = (f"; groups kept whole: {len(self.frozen)}, e.g. '{next(iter(self.frozen))}': "
                     f"{next(iter(self.frozen.values()))}" if self.frozen else "")
            raise TargetUnreachable(f"target: {target:.3f} cannot be reached within {TOLERANCE:.0%} (closest "
                                    f"{got:.3f}; layer_cap {self.layer_cap} keeps at least "
                                    f"{1 - self.layer_cap:.0%} of every group's channels{whole})", closest=got)
        return threshold, got

    def layer_widths(self, kept: dict[str, int]) -> dict[str, int]:
        """Output channels of every producer under `kept` (channel counts per group)."""
        return {n: kept.get(g.root, g.size) for g in self.groups for n, _, _ in g.producers}

    def kept_outputs(self, plan: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{layer or norm: the output channels `plan` keeps, as indices into its present outputs} for every
        producer and norm that loses channels (a layer's output channels back to the unpruned ones: what the
        layer-wise compensation matches them to)."""
        modules = dict(self.model.named_modules())
        drops: dict[str, set[int]] = {}
        for g in self.groups:
            keep = set(plan.get(g.root, torch.arange(g.size)).tolist())
            for name, side, idxs, root_idxs in g.slots:
                if side == "out" and name in modules:  # not a bare parameter (a class token, a layer scale)
                    drops.setdefault(name, set()).update(i for i, r in zip(idxs, root_idxs) if r not in keep)
        return {name: torch.tensor([i for i in range(width_of(modules[name], True)) if i not in drop])
                for name, drop in drops.items() if drop}

    def apply(self, plan: dict[str, torch.Tensor]) -> nn.Module:
        """Physically remove every channel not in plan[root] from every coupled layer; returns the model.
        `self.kept` then holds `kept_outputs(plan)`."""
        if self.applied:
            raise ValueError("pruner: already applied; build a new ChannelPruner for the pruned model")
        self.kept = self.kept_outputs(plan)
        modules = dict(self.model.named_modules())
        for g in self.groups:
            keep = set(plan.get(g.root, torch.arange(g.size)).tolist())
            if not keep:
                raise ValueError(f"plan: group '{g.root}' would keep no channel")
            drop = [i for i in range(g.size) if i not in keep]
            if drop and g.attention:
                heads.remove_heads(modules[g.attention], drop)
            elif drop:
                root = modules[g.root]
                group = self.graph.get_pruning_group(root, self.graph.get_pruner_of_module(root).prune_out_channels,
                                                     drop)
                group.prune()
        self.applied = True
        self._check_forward()
        return self.model

    @torch.no_grad()
    def _check_forward(self) -> None:
        """Run the pruned model once; ValueError if it fails. The dependency graph follows additions,
        concatenations and splits, and groups through a channel shuffle are kept whole (`layers.is_channel_shuffle`);
        this is the safety net for another reshaping of the channel dimension it does not follow. Such a model is
        left broken, so prune a copy (pruning_lib.prune does)."""
        try:
            with eval_mode(self.model):
                self.model(torch.zeros(1, *self.input_shape, device=next(self.model.parameters()).device))
        except RuntimeError as e:
            raise ValueError(f"model: its forward pass fails after channel removal ({str(e).splitlines()[0]}): an "
                             "operation reshapes the channel dimension in a way the dependency graph does not "
                             "follow; prune it with the low-rank or magnitude methods") from e
