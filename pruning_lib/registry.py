"""The method registry: one entry per pruning method, all with the call shape
`fn(model, ctx: PruneContext, target: float, **options) -> PruneResult`. Add a method by adding an entry."""
from __future__ import annotations

from . import eigendamage, weight
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
                          "eigen"),
}
