"""Input second moments of layers from forward passes only: A = (1/rows) Σ_rows a aᵀ, the K-FAC input factor
without the backward pass (kfac.input_rows: a Linear's input vector at every position, a conv's im2col patch at
every output position), with the layer's bias coordinate left out. What activation-aware compression whitens
with (SVD-LLM: W A^½); the K-FAC A of the same layer in im2col form is the same matrix (tested)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..batches import first_batches
from ..distributed import all_reduce_count, all_reduce_sum
from ..modes import eval_mode
from .kfac import input_rows, kfac_layers


@torch.no_grad()
def input_covariances(model: nn.Module, loader: DataLoader, layers: list[str],
                      num_batches: int = 4) -> dict[str, torch.Tensor]:
    """{layer: A} (float64, on the model's device) for the named Linear / Conv1d / Conv2d layers over the first
    `num_batches` batches (eval mode, labels unused): A = Σ a aᵀ / rows over every row of the im2col form, weight
    coordinates only. A layer whose forward never runs as a module is left out."""
    modules, _ = kfac_layers(model, layers)
    sums: dict[str, torch.Tensor] = {}
    rows = dict.fromkeys(modules, 0)

    def hook(name):
        def record(module, inputs, output):
            s, r = input_rows(module, inputs[0].detach().double(), "im2col")
            if module.bias is not None:  # drop the homogeneous coordinate: the bias is not whitened
                s = s[:-1, :-1]
            sums[name] = s if name not in sums else sums[name] + s
            rows[name] += r
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    device = next(model.parameters()).device
    try:
        with eval_mode(model):
            for x, _ in first_batches(loader, num_batches, device=device):
                model(x)
    finally:
        for h in handles:
            h.remove()
    seen = [n for n in modules if rows[n] > 0]
    all_reduce_sum(*(sums[n] for n in seen))  # under torch.distributed: every rank's batches
    return {n: sums[n] / all_reduce_count(rows[n], device) for n in seen}
