"""Parameter counts, MACs / GFLOPs (torch.utils.flop_counter), measured latency, compression.

Convention (the seed's): one multiply-add = 1 MAC = 2 FLOPs, so GFLOPs = 2 x MACs / 1e9.
FlopCounterMode counts convolutions and matrix products; BatchNorm, ReLU, pooling and additions are
not counted (they are < 1 % of a ResNet's MACs).
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .modes import eval_mode


def count_params(model: nn.Module) -> int:
    """Total number of parameters (dense; a pruning mask does not shrink it)."""
    return sum(t.numel() for t in effective_parameters(model))


def count_nonzero_params(model: nn.Module) -> int:
    """Number of nonzero parameters, reading masked weights through torch.nn.utils.prune's masks."""
    return sum(int(torch.count_nonzero(t)) for t in effective_parameters(model))


def has_masks(model: nn.Module) -> bool:
    """True when torch.nn.utils.prune masks are applied (a `weight_orig` parameter with its `weight_mask`)."""
    return any(name.endswith("_orig") for name, _ in model.named_parameters())


def count_remaining_params(model: nn.Module) -> int:
    """The parameters a pruned model still has: nonzero ones under pruning masks (unstructured pruning keeps
    dense tensors), tensor sizes otherwise (structured pruning removed the rest; an exact zero that a
    rotation happens to hold is still stored and computed)."""
    return count_nonzero_params(model) if has_masks(model) else count_params(model)


def effective_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Each parameter as the forward pass sees it: `weight` (= weight_orig * mask) for pruned ones."""
    out = []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            out.append(getattr(module, name[: -len("_orig")]) if name.endswith("_orig") else p)
    return out


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one example of shape `input_shape` (without the batch
    dimension, any rank: (D,), (C, L), (T, D), (C, H, W), ...); the model sees a batch of one."""
    device = next(model.parameters()).device
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    return counter.get_total_flops() // 2


def gflops(macs: int) -> float:
    """GFLOPs under the seed's convention: 2 FLOPs per MAC."""
    return 2.0 * macs / 1e9


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 20,
                    warmup: int = 3, memory_format: torch.memory_format = torch.contiguous_format) -> float:
    """Median wall time of one forward pass in milliseconds (eval mode, no autograd, synchronised on CUDA); the
    input in `memory_format` (torch.channels_last: NHWC, for a model converted with .to(memory_format=...))."""
    device = next(model.parameters()).device
    model.eval()
    x = torch.randn(batch_size, *input_shape, device=device)
    if x.dim() == 4:
        x = x.contiguous(memory_format=memory_format)
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def compression_summary(model: nn.Module, input_shape: tuple[int, ...], base_params: int,
                        base_macs: int) -> dict[str, float]:
    """Params, nonzero params, parameter reduction 1 - remaining / base (count_remaining_params: nonzero under
    masks, tensor sizes otherwise), compression base / remaining, MACs, GFLOPs and theoretical speed-up."""
    params, nonzero, macs = count_params(model), count_nonzero_params(model), count_macs(model, input_shape)
    remaining = count_remaining_params(model)
    return {
        "params": params,
        "nonzero_params": nonzero,
        "param_reduction": 1.0 - remaining / base_params,
        "compression": base_params / max(remaining, 1),
        "macs": macs,
        "gflops": gflops(macs),
        "theoretical_speedup": base_macs / max(macs, 1),
    }


def positions(module: nn.Module, t: torch.Tensor) -> int:
    """Positions a layer's weight is applied at, per example: the spatial size of a conv's input / output
    (Conv1d: L, Conv2d: H·W, Conv3d: D·H·W), the leading dimensions of a Linear's (N, *, features) tensor
    other than the batch (1 for (N, features), T for a sequence (N, T, features)), 1 otherwise."""
    if isinstance(module, nn.modules.conv._ConvNd):
        spatial = t.shape[2:]
    elif isinstance(module, nn.Linear):
        spatial = t.shape[1:-1]
    else:
        return 1
    n = 1
    for d in spatial:
        n *= int(d)
    return n


def on_one_example(model: nn.Module, names: list[str], input_shape: tuple[int, ...], read) -> dict[str, Any]:
    """{name: read(module, its input, its output)} for the named modules that run in one forward pass (eval mode,
    no autograd) on a zero example of `input_shape`."""
    modules, out, hooks = dict(model.named_modules()), {}, []
    for name in names:
        def hook(m, inputs, output, name=name):
            out[name] = read(m, inputs[0], output)
        hooks.append(modules[name].register_forward_hook(hook))
    device = next(model.parameters()).device
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    return out


def layer_pixels(model: nn.Module, names: list[str], input_shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """{name: (input positions, output positions)} of the named modules on one example of `input_shape` (any
    rank): a Conv2d's pixels H·W, a Conv1d's length L, a Linear's leading positions (1, or T on (N, T, D))."""
    return on_one_example(model, names, input_shape, lambda m, x, y: (positions(m, x), positions(m, y)))
