"""The method registry: one entry per pruning method, all with the call shape
`fn(model, ctx: PruneContext, target: float, **options) -> PruneResult`. Add a method by adding an entry."""
from __future__ import annotations

from . import channel, eigendamage, lowrank, second_order, weight
from .pruner import Method

METHODS: dict[str, Method] = {
    "magnitude_global": Method(weight.prune_global, "unstructured |w| pruning, one global threshold",
                               {"include_classifier": False}, "weight"),
    "magnitude_layerwise": Method(weight.prune_layerwise, "unstructured |w| pruning, same fraction per layer",
                                  {"include_classifier": False}, "weight"),
    "eigendamage": Method(eigendamage.prune_eigendamage,
                          "EigenDamage: prune Kronecker-factored eigen-directions by K-FAC loss increase, "
                          "layers become 1x1 -> core -> 1x1",
                          {"include_classifier": False, "fisher": "true", "num_batches": 4, "mode": "oneshot",
                           "iterations": 3, "layer_cap": 0.9, "freeze_rotations": False, "target_kind": "params"},
                          "eigen", {"fisher": eigendamage.FISHERS, "mode": eigendamage.MODES,
                                    "target_kind": eigendamage.TARGET_KINDS}),
    "svd": Method(lowrank.prune_svd,
                  "truncated SVD: conv -> k x k (C_in -> r) + 1x1 (r -> C_out), linear -> two linears; "
                  "ranks by rank_rule (budget | energy | vbmf) fitted to the target",
                  {"rank_rule": "budget", "include_classifier": False}, "lowrank", {"rank_rule": lowrank.RULES}),
    "tucker": Method(lowrank.prune_tucker,
                     "Tucker-2 (HOOI) of k x k convs -> 1x1 -> core -> 1x1; SVD of 1x1 convs; "
                     "ranks by rank_rule (budget | energy | vbmf) fitted to the target",
                     {"rank_rule": "budget", "include_classifier": False, "hooi_iters": 10}, "lowrank",
                     {"rank_rule": lowrank.RULES}),
    "cp": Method(lowrank.prune_cp,
                 "CP (ALS) of k x k convs -> 1x1 -> depthwise kx1 -> depthwise 1xk -> 1x1; SVD of 1x1 convs; "
                 "ranks by rank_rule (budget | energy | vbmf) fitted to the target",
                 {"rank_rule": "budget", "include_classifier": False, "cp_iters": 50}, "lowrank",
                 {"rank_rule": lowrank.RULES}),
    "l1": Method(channel.prune_l1, "channel pruning: smallest summed L1 norm Σ|W_c| per coupled group, "
                 "channels physically removed", {"layer_cap": 0.9, "normalize": False}, "channel"),
    "taylor": Method(channel.prune_taylor, "channel pruning: first-order Taylor |Σ W·∂L/∂W| per channel, "
                     "averaged over batches", {"layer_cap": 0.9, "num_batches": 4, "normalize": False}, "channel"),
    "random": Method(channel.prune_random, "channel pruning: uniformly random channels (baseline)",
                     {"layer_cap": 0.9}, "channel"),
    "obd": Method(second_order.prune_obd, "channel pruning: C-OBD Σ W² F with the diagonal Fisher",
                  {"layer_cap": 0.9, "num_examples": 256, "fisher": "true", "normalize": True}, "channel",
                  {"fisher": second_order.FISHERS}),
    "obs": Method(second_order.prune_obs, "channel pruning: C-OBS Σ W²/([G⁻¹]_cc [A⁻¹]_jj) with im2col K-FAC "
                  "and the OBS weight correction", {"layer_cap": 0.9, "num_batches": 4, "fisher": "true",
                                                    "damping": 1e-2, "saliency": "diag", "correction": True,
                                                    "normalize": True},
                  "channel", {"fisher": second_order.FISHERS, "saliency": second_order.SALIENCIES}),
}
