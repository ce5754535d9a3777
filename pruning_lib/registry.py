"""The method registry: one entry per pruning method, all with the call shape
`fn(model, ctx: PruneContext, target: float, **options) -> PruneResult`. Add a method by adding an entry."""
from __future__ import annotations

from . import weight
from .pruner import Method

METHODS: dict[str, Method] = {
    "magnitude_global": Method(weight.prune_global, "unstructured |w| pruning, one global threshold",
                               {"include_classifier": False}, "weight"),
    "magnitude_layerwise": Method(weight.prune_layerwise, "unstructured |w| pruning, same fraction per layer",
                                  {"include_classifier": False}, "weight"),
}
