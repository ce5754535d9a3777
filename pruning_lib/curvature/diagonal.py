"""The diagonal of the Fisher from exact per-example gradients (torch.func), the curvature of C-OBD."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..batches import first_batches
from ..distributed import all_reduce_sum
from ..modes import eval_mode
from .fisher import check_form_and_fisher, sample_labels

PER_EXAMPLE_BUDGET = 2 ** 28  # at most this many per-example gradient entries at once (1 GiB)


def diagonal_fisher(model: nn.Module, loader: DataLoader, num_examples: int = 256, fisher: str = "true",
                    chunk: int = 64) -> dict[str, torch.Tensor]:
    """Diagonal of the Fisher, F_ii = E_n[(∂ℓ_n/∂θ_i)²] (for "exact": E_n Σ_c p_nc (∂ℓ_n(c)/∂θ_i)²), from exact
    per-example gradients
    (torch.func.vmap of torch.func.grad), by parameter name, each shaped like its parameter. `chunk` examples
    at a time, fewer when chunk x parameters would exceed PER_EXAMPLE_BUDGET (VGG-11's 129 M: one at a time)."""
    from torch.func import functional_call, grad, vmap

    check_form_and_fisher("channel_patch", fisher)
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    chunk = max(1, min(chunk, PER_EXAMPLE_BUDGET // max(1, sum(v.numel() for v in params.values()))))
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    batches = first_batches(loader, num_examples=num_examples, device=device)
    with eval_mode(model):
        for x, y in batches:
            with torch.no_grad():
                logits = model(x)
            if fisher == "exact":  # Σ_c p_c (∂ℓ(c)/∂θ)²: one label per class, weighted by its probability
                weights = F.softmax(logits.double(), 1).to(logits.dtype)
                draws = [(torch.full_like(y, c), weights[:, c]) for c in range(logits.shape[1])]
            else:
                draws = [(sample_labels(logits, y, fisher), None)]
            for labels, w in draws:
                for i in range(0, x.shape[0], chunk):
                    grads = per_example(params, x[i:i + chunk], labels[i:i + chunk])
                    for k, g in grads.items():
                        sq = g ** 2 if w is None else g ** 2 * w[i:i + chunk].reshape(-1, *[1] * (g.dim() - 1))
                        sums[k] += sq.sum(0)
    all_reduce_sum(*sums.values())
    seen = batches.reduced_examples()
    return {k: s / seen for k, s in sums.items()}
