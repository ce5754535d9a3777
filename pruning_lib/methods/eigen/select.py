"""Which eigen-directions go: one global threshold, the per-layer cap and the cost budgets.

Scores of different layers share units (basis.py), so one global threshold removes every direction scoring at
or below it, except that a per-layer cap keeps at least max(1, ceil((1 - layer_cap) · C)) directions per side.
A layer whose factored form would have at least as many parameters as now is left as it is ("never grows").
A Linear layer is costed as the rank-r EigenPair it becomes (r = min of its kept ranks; LayerScores.factored_cost):
since r >= min of the two per-side minima, the cap keeps at least max(1, ceil((1 - layer_cap) · min(C_in, C_out)))
of its rank.

`target` is the fraction of all parameters of the unpruned model removed (rotations included), hit within
one percentage point by searching the threshold (parameters counted densely, as they are reported: an exact
zero in a rotation, e.g. an eigenvector of a dead channel, is still stored and computed). target_kind=
"directions" instead removes that fraction of all eigen-directions of the prunable layers (the paper's
"pruning ratio"): the parameter reduction it gives is different (usually larger, as the core shrinks in both
ranks) and is reported, not targeted. A budget ("per_param" / "per_flop") divides the scores by what removing
a direction saves before thresholding (Improved EigenDamage).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ...checks import TOLERANCE
from ...pruner import TargetUnreachable, closest_threshold, rounded_width
from .basis import LayerScores

TARGET_KINDS = ("params", "directions")
BUDGETS = ("saliency", "per_param", "per_flop")


def kept_ranks(ls: LayerScores, threshold: float, layer_cap: float, round_to: int = 1) -> tuple[int, int]:
    """(input, output) directions kept when every direction scoring <= threshold is removed, within the cap,
    each rounded up to a multiple of round_to or the current rank (`rounded_width`; never rises with the
    threshold, so the bisection holds)."""
    rounded = lambda count, full: rounded_width(count, full, round_to)  # noqa: E731
    (lo_in, lo_out), (r_in, r_out) = ls.min_keep(layer_cap), ls.ranks
    return (max(rounded(lo_in, r_in), rounded(int((ls.score_in > threshold).sum()), r_in)),
            max(rounded(lo_out, r_out), rounded(int((ls.score_out > threshold).sum()), r_out)))


def plan_layers(layers: list[LayerScores], threshold: float, layer_cap: float,
                round_to: int = 1) -> dict[str, tuple[int, int] | None]:
    """{layer: (r_in, r_out) to factor it to (`kept_ranks`), or None to leave it as it is (nothing removed, or
    the factored form would not have fewer parameters than the layer has now: "never grows")}."""
    plan = {}
    for ls in layers:
        r = kept_ranks(ls, threshold, layer_cap, round_to)
        plan[ls.name] = None if r == ls.ranks or ls.factored_cost(*r)[0] >= ls.params else r
    return plan


def plan_totals(layers: list[LayerScores], plan: dict[str, tuple[int, int] | None]) -> dict[str, int]:
    """Change in parameters and MACs and the directions left ({"params_delta", "macs_delta", "directions",
    "directions_total"}) if `plan` is applied; directions count core ranks against the outer widths."""
    out = {"params_delta": 0, "macs_delta": 0, "directions": 0, "directions_total": 0}
    for ls in layers:
        r = plan[ls.name]
        out["directions_total"] += ls.c_in + ls.c_out
        if r is None:
            out["directions"] += sum(ls.ranks)
            continue
        params, macs = ls.factored_cost(*r)
        out["params_delta"] += params - ls.params
        out["macs_delta"] += macs - ls.macs
        out["directions"] += sum(r)
    return out


def achieved(layers: list[LayerScores], plan: dict, target_kind: str, current_params: int, base_params: int) -> float:
    """Fraction removed under `plan`: of the base model's parameters, or of all directions of the layers."""
    t = plan_totals(layers, plan)
    if target_kind == "directions":
        return 1.0 - t["directions"] / t["directions_total"]
    return 1.0 - (current_params + t["params_delta"]) / base_params


def search_threshold(layers: list[LayerScores], target: float, layer_cap: float, current_params: int,
                     base_params: int, target_kind: str = "params", round_to: int = 1) -> tuple[float, float]:
    """(threshold, achieved fraction) closest to `target` among all score values (bisection: the fraction
    removed never decreases as the threshold rises), ranks rounded by `round_to`. Raise TargetUnreachable
    (a ValueError) when it misses by more than 1 point."""
    scores = torch.cat([torch.cat([ls.score_in, ls.score_out]).double().cpu() for ls in layers])
    candidates = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), scores.unique()]).tolist()
    value = lambda t: achieved(layers, plan_layers(layers, t, layer_cap, round_to),  # noqa: E731
                               target_kind, current_params, base_params)
    threshold, got = closest_threshold(candidates, value, target)
    if abs(got - target) > TOLERANCE:
        bottlenecks = sum(ls.kernel == 1 and not ls.pair for ls in layers)  # 1x1 convs as 1x1 -> core -> 1x1
        hint = (f", or set pointwise_pairs=True ({bottlenecks} 1x1 convs are rebuilt as three 1x1 convs; as rank-r "
                "pairs they cost r·(C_in + C_out))" if bottlenecks else "")
        raise TargetUnreachable(f"target: {target} cannot be reached within 1 point by eigendamage "
                                f"(target_kind={target_kind}, layer_cap={layer_cap}, round_to={round_to}): "
                                f"the nearest is {got:.4f} "
                                f"(at most {value(candidates[-1]):.4f}); raise layer_cap or include the classifier"
                                f"{hint}", closest=got)
    return threshold, got


def marginal_costs(ls: LayerScores, budget: str) -> tuple[float, float]:
    """What removing one (input, output) direction of the factored layer saves at its current ranks:
    per_param: C_in + r_out·k², r_in·k² + C_out; per_flop (MACs): C_in·P_in + r_out·k²·P_out,
    (r_in·k² + C_out)·P_out; saliency: 1, 1. A Linear layer (`ls.pair`, rebuilt as a rank-r pair) saves
    C_in + C_out parameters (times P_out MACs) per unit of rank, whichever side the direction is on."""
    r_in, r_out = ls.ranks
    if ls.pair and budget in ("per_param", "per_flop"):
        cost = (ls.c_in + ls.c_out) * (ls.out_pixels if budget == "per_flop" else 1)
        return cost, cost
    if budget == "per_param":
        return ls.c_in + r_out * ls.kernel, r_in * ls.kernel + ls.c_out
    if budget == "per_flop":
        return (ls.c_in * ls.in_pixels + r_out * ls.kernel * ls.out_pixels,
                (r_in * ls.kernel + ls.c_out) * ls.out_pixels)
    return 1.0, 1.0


def budgeted(ls: LayerScores, budget: str) -> LayerScores:
    """`ls` with scores divided by their marginal costs (within a side the cost is one number, so a layer's own
    order of directions is unchanged; only the calibration across layers and sides moves)."""
    cost_in, cost_out = marginal_costs(ls, budget)
    return replace(ls, score_in=ls.score_in / cost_in, score_out=ls.score_out / cost_out)
