"""Improved EigenDamage: EigenDamage (eigen/eigendamage.py) with switchable ingredients, so that an ablation
credits each one (DESIGN.md §4, notebook 07). Every ingredient is an option; with all of them off
(kfac, eigenbasis, saliency, steps=1) the pruned model is exactly eigendamage's. The options it shares
with EigenDamage are EigenOptions (eigen/eigendamage.py).

  eigenvalues  "kfac": a direction's score uses λ_G[i] λ_A[j]; "ekfac": the EKFAC second moments
               s[i, j, p] = E_n[(Q_Gᵀ ∇W_n[:, :, p] Q_A)_ij²] over `num_examples` examples (George et al. 2018),
               score_in[j] = Σ_{i,p} W*[i, j, p]² s[i, j, p] (and likewise score_out).
  subspace     for the ranks the scores choose, which subspace is kept: "eigenbasis" (the top-scoring
               eigen-directions, EigenDamage), "tucker" (the Frobenius Tucker-2 / HOOI of the weight, the seed's
               choice: the Fisher sets only the ranks) or "whitened" (the Tucker-2 of the whitened weight
               W̃_p = G^½ W_p A^½, mapped back with the inverse roots, Ŵ_p = G^-½ U_out C_p U_inᵀ A^-½: it minimises
               the K-FAC loss increase Σ_p ‖G^½ (W − Ŵ)_p A^½‖²_F; for a Linear layer it is the truncated SVD of
               G^½ W A^½). Damping δ · mean(λ) on A and G keeps the roots invertible.
  budget       "saliency": one threshold over raw scores; "per_param" / "per_flop": over scores divided by
               the parameters (MACs) that removing the direction saves, so the target is met where it hurts
               least per unit of cost.
  steps        1 (one shot), or S > 1 steps towards target · k / S (pruner.run_steps, rule "linear"), curvature
               re-estimated each step (BatchNorm re-estimated first); when the runner offers fine-tuning (ctx.finetune)
               a share `finetune_share` of its fine-tuning steps is spent between the steps and the rest after
               the last one, so the total equals every other method's (info["finetune_steps_used"]).
               `regrow` ρ > 0 (any number of steps): each step first plans ρ more than its share of the target, then
               brings back, layer by layer, the cuts with the largest measured loss increase per parameter saved
               (`bring_back`), so the step lands on its target with the measurement correcting the scores.
Knowledge distillation is a fine-tuning option of the runner (finetune.distill_weight), offered to every method.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...batches import first_batches
from ...checks import TOLERANCE, checked
from ...curvature.ekfac import ekfac_correction
from ...curvature.fisher import FISHERS, KFAC_APPROXES
from ...curvature.kfac import KFAC, MAX_FACTOR
from ...metrics import count_params
from ...modes import eval_mode
from ...pruner import PruneContext, PruneResult, TargetUnreachable, finish, run_steps
from .basis import LayerScores, ekfac_scores, prunable_layers, require_prunable, score_model
from .eigendamage import EigenOptions, with_options
from .rebuild import EigenBottleneck, collapse_pairs, core_ranks
from .select import BUDGETS, achieved, budgeted, plan_layers, search_threshold
from .subspaces import SUBSPACES, collapsed_kfac, effective_weight, kfac_increase, rebuild_subspace, subspace_parts

EIGENVALUES = ("kfac", "ekfac")


# ------------------------------------------------------------------------------------------------ scores

def score_layers(model: nn.Module, loader, names: list[str], input_shape: tuple[int, ...], *, eigenvalues: str,
                 num_examples: int, fisher: str, num_batches: int, max_factor: int | None = MAX_FACTOR,
                 reasons: dict[str, str] | None = None,
                 pointwise_pairs: bool = True, approx: str = "expand") -> tuple[list[LayerScores], list[str], dict]:
    """basis.score_model (K-FAC of the layers or their cores, eigenbases, direction scores; skipped layers
    and why), EKFAC-corrected if asked. Returns (scores, layers skipped, {layer: its LayerKFAC})."""
    factors: dict = {}
    plain = collapse_pairs(model, names)  # EigenPairs as the Linear they apply (the model itself when none)
    layers, skipped = score_model(model, loader, names, input_shape, fisher=fisher, num_batches=num_batches,
                                  max_factor=max_factor, reasons=reasons, factors=factors, plain=plain,
                                  pointwise_pairs=pointwise_pairs, approx=approx)
    if eigenvalues == "ekfac":  # keyed by the outer layer's name; the hooks go on the module K-FAC covered
        moments = ekfac_correction(plain, KFAC(factors, [], "channel_patch"), loader, num_examples, fisher,
                                   weight_only=True)
        layers = [ekfac_scores(ls, moments[ls.name]) for ls in layers]
    return layers, skipped, factors


def plan_preview(model: nn.Module, layers: list[LayerScores], factors: dict, subspace: str, budget: str,
                 target: float, base_params: int, layer_cap: float = 0.9, damping: float = 1e-3) -> dict:
    """What one pruning step would do, without touching `model`: {"achieved", "plan" (ranks or None per layer),
    "predicted" (per-layer K-FAC loss increase ½ Σ_p tr(ΔWᵀ G ΔW A)), "total"}. Pure given the cached scores
    `layers` and `factors` ({layer: LayerKFAC}), so a toggle or slider only re-plans (notebook 07)."""
    scored = [budgeted(ls, budget) for ls in layers]
    threshold, got = search_threshold(scored, target, layer_cap, current_params=count_params(model),
                                      base_params=base_params)
    plan = plan_layers(scored, threshold, layer_cap)
    predicted = {}
    for ls in scored:
        if plan[ls.name] is None:
            predicted[ls.name] = 0.0
            continue
        module, lf = model.get_submodule(ls.name), factors[ls.name]
        rot_out, core, rot_in = subspace_parts(module, ls, plan[ls.name], subspace, factors=lf, damping=damping)
        w_hat = torch.einsum("oa,abp,bc->ocp", rot_out, core, rot_in)
        predicted[ls.name] = kfac_increase(effective_weight(module), w_hat, lf.A[:-1, :-1] if lf.has_bias else lf.A,
                                           lf.G)
    return {"achieved": got, "plan": plan, "predicted": predicted, "total": sum(predicted.values())}


# ------------------------------------------------------------------------------------------------ regrow

@torch.no_grad()
def batch_loss(model: nn.Module, loader, num_batches: int) -> float:
    """Mean cross-entropy of `model` (eval mode) over the first `num_batches` batches of `loader`."""
    total, n = 0.0, 0
    with eval_mode(model):
        for x, y in first_batches(loader, num_batches, device=next(model.parameters()).device):
            total += float(F.cross_entropy(model(x), y, reduction="sum"))
            n += len(y)
    return total / max(n, 1)


def bring_back(model: nn.Module, layers: list[LayerScores], plan: dict, target: float, loader, num_batches: int,
               base_params: int, *, subspace: str, factors: dict, damping: float) -> tuple[dict, list]:
    """Give back the part of an overshooting `plan` that the measured loss says hurts most, until `target` of
    the base parameters is removed: each planned layer's cut is tried alone on a copy (rebuilt in `subspace`),
    its damage = measured loss increase on `num_batches` training batches ÷ parameters it saves; layers are
    restored in decreasing damage, whole while the target still holds, the last one partly (its ranks moved
    towards the current ones). Returns (new plan, [(layer, damage, ranks before, ranks after)])."""
    current, base = count_params(model), batch_loss(model, loader, num_batches)
    damage = {}
    for ls in layers:
        if plan[ls.name] is not None:
            trial = copy.deepcopy(model)
            rebuild_subspace(trial, [ls], {ls.name: plan[ls.name]}, subspace, factors=factors, damping=damping,
                             freeze_rotations=False)
            saved = ls.params - ls.factored_cost(*plan[ls.name])[0]
            damage[ls.name] = (batch_loss(trial, loader, num_batches) - base) / max(saved, 1)
    by_name, plan, restored = {ls.name: ls for ls in layers}, dict(plan), []
    removed = lambda p: achieved(layers, p, "params", current, base_params)  # noqa: E731
    for name in sorted(damage, key=damage.get, reverse=True):
        if removed(plan) <= target:
            break
        ls, over = by_name[name], plan[name]
        moves = [tuple(round(o + a / 32 * (f - o)) for o, f in zip(over, ls.ranks)) for a in range(33)]
        candidates = [None if s == ls.ranks or ls.factored_cost(*s)[0] >= ls.params else s for s in moves]
        if removed({**plan, name: None}) >= target:
            plan[name] = None
        else:
            plan[name] = min(candidates, key=lambda o: abs(removed({**plan, name: o}) - target))
        restored.append((name, damage[name], over, plan[name]))
        if plan[name] is not None:
            break
    return plan, restored



# ------------------------------------------------------------------------------------------------ the method

@checked(eigenvalues=EIGENVALUES, subspace=SUBSPACES, budget=BUDGETS, fisher=FISHERS, kfac_approx=KFAC_APPROXES)
@with_options
def prune_improved_eigendamage(model: nn.Module, ctx: PruneContext, target: float, *, eigenvalues: str = "kfac",
                               num_examples: int = 1024, subspace: str = "whitened", budget: str = "saliency",
                               finetune_share: float = 0.5, regrow: float = 0.0, damping: float = 1e-3,
                               options: EigenOptions) -> PruneResult:
    """Registry entry: Improved EigenDamage with the threshold searched so that `target` of the parameters is
    removed (each ingredient an option; all off = eigendamage; the shared options are EigenOptions'). Each step:
    score (K-FAC or EKFAC), divide by the budget's marginal costs, search the global threshold for
    target · k / steps (ranks rounded up to multiples of `round_to`; layers with a K-FAC factor side above
    `max_factor` skipped, why in info["skip_reasons"]), rebuild the planned layers in the chosen subspace
    (regrow's partial restores are not rounded). Between steps: BatchNorm re-estimated, then fine-tuned for its
    share of the runner's steps when ctx.finetune is given (and BatchNorm re-estimated again)."""
    o = options
    names = prunable_layers(model, o.include_classifier)
    require_prunable(model, names, o.include_classifier)
    between = 0
    if o.steps > 1 and ctx.finetune is not None:
        between = int(finetune_share * ctx.finetune_steps) // (o.steps - 1)
    info: dict[str, Any] = {"rounds": [], "seconds_scores": 0.0, "seconds_subspace": 0.0, "finetune_steps_used": 0,
                            "round_to": o.round_to, "skip_reasons": {}}

    def finetune_between(k: int) -> bool:
        if between:
            ctx.finetune(model, between)
            info["finetune_steps_used"] += between
        return bool(between)

    def step(k: int, goal: float) -> None:
        t0 = time.perf_counter()
        layers, skipped, factors = score_layers(model, ctx.loader, names, ctx.input_shape, eigenvalues=eigenvalues,
                                                num_examples=num_examples, fisher=o.fisher,
                                                num_batches=o.num_batches, max_factor=o.max_factor,
                                                reasons=info["skip_reasons"], pointwise_pairs=o.pointwise_pairs,
                                                approx=o.kfac_approx)
        info["seconds_scores"] += time.perf_counter() - t0
        layers = [budgeted(ls, budget) for ls in layers]
        if subspace == "whitened" and any(isinstance(model.get_submodule(n), EigenBottleneck) for n in factors):
            outer = collapsed_kfac(model, list(factors), ctx.loader, fisher=o.fisher, num_batches=o.num_batches,
                                   approx=o.kfac_approx)
            factors = {n: outer[n] for n in factors}
        current = count_params(model)
        search = lambda t: search_threshold(layers, t, o.layer_cap, current_params=current,  # noqa: E731
                                            base_params=ctx.base_params, round_to=o.round_to)
        threshold, got = search(goal)
        plan, restored = plan_layers(layers, threshold, o.layer_cap, round_to=o.round_to), []
        if regrow > 0:  # overshoot by `regrow` of the step, then give back where the measured loss rises most
            over = goal + regrow * (goal - (1 - current / ctx.base_params))
            try:
                over_threshold, _ = search(over)
            except TargetUnreachable as err:
                over_threshold, _ = search(err.closest)
            over_plan = plan_layers(layers, over_threshold, o.layer_cap, round_to=o.round_to)
            regrown, restored = bring_back(model, layers, over_plan, goal, ctx.loader, o.num_batches,
                                           ctx.base_params, subspace=subspace, factors=factors, damping=damping)
            regrown_got = achieved(layers, regrown, "params", current, ctx.base_params)
            if abs(regrown_got - goal) <= TOLERANCE:
                plan, got = regrown, regrown_got
        t0 = time.perf_counter()
        rebuild_subspace(model, layers, plan, subspace, factors=factors, damping=damping,
                         freeze_rotations=o.freeze_rotations)
        info["seconds_subspace"] += time.perf_counter() - t0
        info["rounds"].append({"target": goal, "achieved": got, "regrown": restored,
                               "ranks": {n: list(r) for n, r in plan.items() if r is not None}})
        info["skipped"] = skipped

    run_steps(model, ctx.loader, target, o.steps, step, rule="linear", bn_batches=o.num_batches,
              between=finetune_between)
    info["ranks"] = core_ranks(model, names)
    info["achieved_params"] = info["rounds"][-1]["achieved"]
    return finish(model, ctx, info)
