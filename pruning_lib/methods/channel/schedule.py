"""The schedule every channel method shares (Torch-Pruning's pruner loop, apart from its scores and its surgery):
per step, groups (groups.py), group scores from the criterion, the threshold search, an optional correction
of the kept weights, physical removal, BatchNorm re-estimation; then measurement.

Steps. With `steps` S > 1 the target is approached in S prune-and-rescore steps, step k removing
1 - (1 - target)^(k/S) of the unpruned parameters, with BatchNorm statistics re-estimated (STEP_BN_BATCHES
training batches) before the next step scores (pruner.run_steps, the schedule every iterative method shares).
One-shot saliencies measured on the full model say nothing about a channel once its neighbours are gone; on the quickstart at 90 % one-shot Taylor / C-OBD / C-OBS
strip the last stage's residual stream to the 10 % floor on some seeds (7 of 64 channels feed the
classifier) and lose 10-40 points after fine-tuning, while three steps re-score the survivors and keep it
(benchmarks/RESULTS.md, "iterative channel steps"). The floor stays that of the unpruned widths.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ...checks import check_choice, check_positive_int
from ...latency import LatencyTable, measure_table
from ...pruner import STEP_BN_BATCHES, PruneContext, PruneResult, finish, run_steps
from .groups import ChannelPruner


@dataclass
class Selection:
    """A chosen plan: kept channel indices per group, the threshold, achieved fraction and kept counts."""

    plan: dict[str, torch.Tensor]
    threshold: float
    achieved: float
    kept: dict[str, int] = field(default_factory=dict)


TARGET_KINDS = ("params", "latency")


def select(pruner: ChannelPruner, scores: dict[str, torch.Tensor], target: float, base_params: int,
           strict: bool = True, latency: LatencyTable | None = None) -> Selection:
    """Search the global threshold for `target` (ChannelPruner.search) and return the plan it gives: `target`
    the fraction of parameters removed, or with a latency table the fraction of the unpruned network's predicted
    milliseconds."""
    if latency is None:
        threshold, got = pruner.search(scores, target, base_params, strict)
    else:
        threshold, got = pruner.search(scores, target, latency.predict(), strict,
                                       lambda kept: latency.predict(pruner.widths(kept)))
    plan = pruner.plan(scores, threshold)
    return Selection(plan, threshold, got, {r: len(k) for r, k in plan.items()})


def per_millisecond(pruner: ChannelPruner, scores: dict[str, torch.Tensor],
                    latency: LatencyTable) -> dict[str, torch.Tensor]:
    """Group scores divided by the milliseconds one channel of the group saves at the present widths (HALP's
    saliency per latency saved): Δ_g = predicted(now) − predicted(group g one channel narrower)."""
    now = latency.predict(pruner.widths({}))
    out = {}
    for g in pruner.groups:
        saved = now - latency.predict(pruner.widths({g.root: g.size - 1})) if g.size > 1 else 0.0
        out[g.root] = scores[g.root] / max(saved, 1e-9)
    return out


def run_channel_method(model: nn.Module, ctx: PruneContext, target: float, layer_cap: float,
                       score_fn: Callable[[ChannelPruner], dict[str, torch.Tensor]],
                       before_apply: Callable[[ChannelPruner, Selection], None] | None = None,
                       info: dict[str, Any] | None = None, steps: int = 1, round_to: int = 1,
                       target_kind: str = "params", latency_batch: int = 128) -> PruneResult:
    """The shared schedule of every channel method, per step (step_targets): groups, group scores from
    `score_fn(pruner)`, threshold search, optional `before_apply` (e.g. the OBS weight correction), physical
    removal, BatchNorm re-estimation before the next step (if this one removed channels); then measurement.
    info["kept_outputs"]: {layer or norm: its kept output channels, indices into the unpruned ones}.

    `target_kind` "latency": `target` is the fraction of the unpruned network's predicted latency removed, on this
    device for batches of `latency_batch` (pruning_lib.latency: a per-layer table, measured once and cached), and
    channels go by saliency per millisecond saved (per_millisecond); info["latency"] holds the table's figures."""
    check_choice(target_kind, TARGET_KINDS, "target_kind")
    check_positive_int(latency_batch, "latency_batch")
    table = measure_table(model, ctx.input_shape, latency_batch) if target_kind == "latency" else None
    state: dict[str, Any] = {"sizes": None, "floors": None, "kept": {}}

    def step(k: int, goal: float) -> bool:
        pruner = ChannelPruner(model, ctx.input_shape, layer_cap, state["floors"], round_to)
        if state["sizes"] is None:
            state["sizes"], state["floors"] = {g.root: g.size for g in pruner.groups}, pruner.producer_floors()
        scores = score_fn(pruner)
        if table is not None:
            scores = per_millisecond(pruner, scores, table)
        sel = select(pruner, scores, goal, ctx.base_params, strict=k == steps - 1, latency=table)
        if before_apply is not None:
            before_apply(pruner, sel)
        pruner.apply(sel.plan)
        for name, idx in pruner.kept.items():  # composed over steps: indices into the unpruned outputs
            state["kept"][name] = state["kept"][name][idx] if name in state["kept"] else idx
        state["sel"] = sel
        return any(sel.kept[g.root] < g.size for g in pruner.groups)  # removed channels: BatchNorm re-estimated

    run_steps(model, ctx.loader, target, steps, step, rule="geometric", bn_batches=STEP_BN_BATCHES)
    sel, sizes = state["sel"], state["sizes"]
    details = {"threshold": sel.threshold, "achieved_dense": sel.achieved, "kept_channels": sel.kept,
               "group_sizes": sizes, "steps": steps, "round_to": round_to,
               "kept_outputs": {n: idx.tolist() for n, idx in state["kept"].items()},
               "target_kind": target_kind, **(info or {})}
    if table is not None:
        predicted = table.predict(table.widths_of(model))
        details["latency"] = {"batch_size": latency_batch, "threads": table.key["threads"],
                              "dense_measured_ms": table.dense_ms, "dense_predicted_ms": table.predict(),
                              "predicted_ms": predicted, "predicted_speedup": table.predict() / predicted}
    return finish(model, ctx, details)



