"""Wanda (Sun et al., ICLR 2024, "A Simple and Effective Pruning Approach for Large Language Models"): prune weight
W_ij by its score |W_ij| · ‖X_j‖₂, X_j the j-th input feature over the calibration inputs, compared within each
output row (or within each N:M group); no weight update. ‖X_j‖₂ = √(rows · A_jj) with A = XᵀX / rows the layer's
input second moment, so √A_jj ranks the same."""
from __future__ import annotations

import torch
from torch import nn

from ...checks import checked
from ...curvature.kfac import MAX_FACTOR
from ...pruner import PruneContext, PruneResult
from .calibration import prune_sequentially
from ..patterns import PATTERNS, nm_mask, row_mask


def wanda_scores(w: torch.Tensor, A: torch.Tensor | None) -> torch.Tensor:
    """|W_ij| · √A_jj (w: C_out x d, A: d x d); |W_ij| where no input statistics exist (A None)."""
    w = w.detach().abs().double()
    return w if A is None else w * A.diagonal().double().clamp_min(0).sqrt()


def wanda_mask(w: torch.Tensor, A: torch.Tensor | None, count: int, nm: tuple[int, int] | None) -> torch.Tensor:
    """Pruned entries: `count` lowest Wanda scores compared per output row, or the N:M pattern of them."""
    scores = wanda_scores(w, A)
    return row_mask(scores, count) if nm is None else nm_mask(scores, *nm)


def _layer(w: torch.Tensor, A: torch.Tensor | None, count: int, nm) -> tuple[torch.Tensor, torch.Tensor]:
    return w, wanda_mask(w, A, count, nm)


@checked(pattern=PATTERNS)
def prune_wanda(model: nn.Module, ctx: PruneContext, target: float, calibration: int = 256,
                pattern: str = "unstructured", include_classifier: bool = False,
                max_factor: int = MAX_FACTOR) -> PruneResult:
    """Registry entry: Wanda masks, layer after layer on `calibration` examples of the loader (labels unused)."""
    return prune_sequentially(model, ctx, target, calibration, pattern, include_classifier, _layer, "wanda",
                              max_factor)
