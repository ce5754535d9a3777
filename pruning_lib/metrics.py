"""Parameter counts, MACs / GFLOPs (torch.utils.flop_counter), measured latency, compression.

Convention (the seed's): one multiply-add = 1 MAC = 2 FLOPs, so GFLOPs = 2 x MACs / 1e9.
FlopCounterMode counts convolutions and matrix products; BatchNorm, ReLU, pooling and additions are
not counted (they are < 1 % of a ResNet's MACs).
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Total number of parameters (dense; a pruning mask does not shrink it)."""
    return sum(t.numel() for t in effective_parameters(model))


def count_nonzero_params(model: nn.Module) -> int:
    """Number of nonzero parameters, reading masked weights through torch.nn.utils.prune's masks."""
    return sum(int(torch.count_nonzero(t)) for t in effective_parameters(model))


def effective_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Each parameter as the forward pass sees it: `weight` (= weight_orig * mask) for pruned ones."""
    out = []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            out.append(getattr(module, name[: -len("_orig")]) if name.endswith("_orig") else p)
    return out


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one image of shape (C, H, W)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def gflops(macs: int) -> float:
    """GFLOPs under the seed's convention: 2 FLOPs per MAC."""
    return 2.0 * macs / 1e9


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 20,
                    warmup: int = 3) -> float:
    """Median wall time of one forward pass in milliseconds (eval mode, synchronised on CUDA)."""
    device = next(model.parameters()).device
    model.eval()
    x = torch.randn(batch_size, *input_shape, device=device)
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
    """Params, nonzero params, parameter reduction (1 - nonzero / base), MACs, GFLOPs and speed-up."""
    params, nonzero, macs = count_params(model), count_nonzero_params(model), count_macs(model, input_shape)
    return {
        "params": params,
        "nonzero_params": nonzero,
        "param_reduction": 1.0 - nonzero / base_params,
        "compression": base_params / max(nonzero, 1),
        "macs": macs,
        "gflops": gflops(macs),
        "theoretical_speedup": base_macs / max(macs, 1),
    }


def layer_pixels(model: nn.Module, names: list[str], input_shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """{name: (input pixels, output pixels)} of the named modules on one input of `input_shape`."""
    modules, out, hooks = dict(model.named_modules()), {}, []
    for name in names:
        def hook(m, inputs, output, name=name):
            x = inputs[0]
            out[name] = (x.shape[-2] * x.shape[-1] if x.dim() == 4 else 1,
                         output.shape[-2] * output.shape[-1] if output.dim() == 4 else 1)
        hooks.append(modules[name].register_forward_hook(hook))
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return out
