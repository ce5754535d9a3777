"""The Fisher's label side, shared by every curvature estimate: which labels the per-example gradients are taken
for ("true": drawn from the model's softmax; "exact": every class weighted by its probability; "empirical": the
data's), and a quiet backward pass."""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..checks import check_choice

KFAC_FORMS = ("channel_patch", "im2col")
FISHERS = ("true", "exact", "empirical")
KFAC_APPROXES = ("expand", "reduce")  # a Linear layer on (N, *, D): Eschenhagen et al. 2023 (compute_kfac)


def check_form_and_fisher(form: str, fisher: str) -> None:
    """Raise a ValueError naming `form` / `fisher` when either is not one of KFAC_FORMS / FISHERS."""
    check_choice(form, KFAC_FORMS, "form")
    check_choice(fisher, FISHERS, "fisher")


def quiet_backward(loss: torch.Tensor, retain_graph: bool = False) -> None:
    """loss.backward(), silencing the warning that the first layer's full backward hook fires although its
    input needs no gradient (the output gradient is all the hook needs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward(retain_graph=retain_graph)


def sample_labels(logits: torch.Tensor, y: torch.Tensor, fisher: str) -> torch.Tensor:
    """Labels for the Fisher: drawn from softmax(logits) ("true") or the data's own ("empirical")."""
    if fisher == "empirical":
        return y
    return torch.multinomial(F.softmax(logits.detach().float(), 1), 1).squeeze(1)


def fisher_losses(logits: torch.Tensor, y: torch.Tensor, fisher: str, mc_samples: int = 1) -> Iterator[torch.Tensor]:
    """The batch losses whose per-example gradients, squared and summed, give the Fisher: `mc_samples` losses
    ℓ(logits, ŷ)/√mc_samples with ŷ ~ softmax ("true"), the data's labels ("empirical"), or for "exact" one loss
    per class c, √p_c · ℓ(logits, c) with p = softmax(logits) held fixed, so that
    Σ_c p_c ∇ℓ_c ∇ℓ_cᵀ = E_{y~p}[∇ℓ ∇ℓᵀ]. Each loss is a mean over the batch (multiply gradients by its size)."""
    if fisher == "exact":
        root_p = F.softmax(logits.detach().double(), 1).sqrt().to(logits.dtype)
        for c in range(logits.shape[1]):
            labels = torch.full_like(y, c)
            yield (root_p[:, c] * F.cross_entropy(logits, labels, reduction="none")).mean()
        return
    draws = mc_samples if fisher == "true" else 1
    for _ in range(draws):
        yield F.cross_entropy(logits, sample_labels(logits, y, fisher)) / draws ** 0.5


