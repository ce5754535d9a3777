"""Channel criteria: a saliency per output channel, small = safe to remove. The group engine (groups.py)
sums them over coupled producers, thresholds globally and removes the channels.

A criterion has one signature, like Torch-Pruning's `Importance(group) -> scores`:

    criterion(model, names, ...) -> {layer name: tensor of one saliency per output channel}

for the named Conv2d / Linear producers (the extra arguments are its data and options). Random scores the
group channels directly (`random_group_scores`). The second-order criteria C-OBD / C-OBS are in
second_order.py.

L1: s_c = Σ|W_c|. Taylor (Molchanov et al. 2017): s_c = mean over batches b of |Σ_{w ∈ W_c} w · ∂L_b/∂w|,
L_b the mean cross-entropy of batch b (data labels, eval mode). Random: uniform scores per group channel
(ShrinkBench's advice: always show the random baseline).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_positive_int, checked
from ...batches import first_batches
from ...distributed import all_reduce_sum
from ...modes import eval_mode
from ...pruner import PruneContext, PruneResult
from .groups import GROUP_REDUCTIONS, NORMALIZATIONS, ChannelPruner
from .schedule import TARGET_KINDS, run_channel_method


def l1_scores(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """L1 norm of every output channel's weights, s_c = Σ|W_c|, for the named Conv2d / Linear layers."""
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach().abs().flatten(1).sum(1) for n in names}


def taylor_scores(model: nn.Module, names: list[str], loader, num_batches: int = 4) -> dict[str, torch.Tensor]:
    """First-order Taylor saliency per output channel: s_c = (1/B) Σ_b |Σ_{w ∈ W_c} w · ∂L_b/∂w| over B
    batches, L_b the batch's mean cross-entropy (data labels, eval mode: BatchNorm uses running statistics)."""
    check_positive_int(num_batches, "num_batches")
    modules = dict(model.named_modules())
    device = next(model.parameters()).device
    sums = {n: torch.zeros(modules[n].weight.shape[0], device=device) for n in names}
    batches = first_batches(loader, num_batches, device=device)
    with eval_mode(model):
        try:
            for x, y in batches:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                for n in names:
                    w = modules[n].weight
                    sums[n] += (w.detach() * w.grad).flatten(1).sum(1).abs()
        finally:
            model.zero_grad(set_to_none=True)
    all_reduce_sum(*sums.values())  # under torch.distributed: every rank's batches
    seen = batches.reduced_batches()
    return {n: s / seen for n, s in sums.items()}


def random_group_scores(pruner: ChannelPruner, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform random scores per group channel (the random baseline), reproducible from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return {gr.root: torch.rand(gr.size, generator=g, dtype=torch.float64) for gr in pruner.groups}


@checked(group_reduce=GROUP_REDUCTIONS, normalize=NORMALIZATIONS, target_kind=TARGET_KINDS)
def prune_l1(model: nn.Module, ctx: PruneContext, target: float, layer_cap: float = 0.9,
             normalize: str = "mean", group_reduce: str = "sum", steps: int = 1,
             round_to: int = 1, target_kind: str = "params",
             latency_batch: int = 128) -> PruneResult:
    """Registry entry: remove the channels with the smallest summed L1 norm (global threshold)."""
    return run_channel_method(model, ctx, target, layer_cap,
                              lambda p: p.group_scores(l1_scores(model, p.producers), normalize, group_reduce),
                              info={"criterion": "l1", "normalize": normalize, "group_reduce": group_reduce},
                              steps=steps, round_to=round_to,
                              target_kind=target_kind, latency_batch=latency_batch)


@checked(group_reduce=GROUP_REDUCTIONS, normalize=NORMALIZATIONS, target_kind=TARGET_KINDS)
def prune_taylor(model: nn.Module, ctx: PruneContext, target: float, layer_cap: float = 0.9,
                 num_batches: int = 4, normalize: str = "sum", group_reduce: str = "sum",
                 steps: int = 3, round_to: int = 1, target_kind: str = "params",
                 latency_batch: int = 128) -> PruneResult:
    """Registry entry: remove the channels with the smallest first-order Taylor saliency."""
    return run_channel_method(model, ctx, target, layer_cap,
                              lambda p: p.group_scores(taylor_scores(model, p.producers, ctx.loader, num_batches),
                                                       normalize, group_reduce),
                              info={"criterion": "taylor", "normalize": normalize, "group_reduce": group_reduce},
                              steps=steps, round_to=round_to,
                              target_kind=target_kind, latency_batch=latency_batch)


@checked(target_kind=TARGET_KINDS)
def prune_random(model: nn.Module, ctx: PruneContext, target: float, layer_cap: float = 0.9,
                 steps: int = 1, round_to: int = 1, target_kind: str = "params",
                 latency_batch: int = 128) -> PruneResult:
    """Registry entry: remove uniformly random channels (seeded by ctx.seed), same threshold machinery."""
    return run_channel_method(model, ctx, target, layer_cap, lambda p: random_group_scores(p, ctx.seed),
                              info={"criterion": "random"}, steps=steps, round_to=round_to,
                              target_kind=target_kind, latency_batch=latency_batch)
