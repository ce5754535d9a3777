"""Rebuilding a layer of the eigen family: the EigenBottleneck form and the rank-r rebuild.

A pruned layer becomes rot_in (1x1, Q_A'ᵀ) -> core (W*', original kernel / stride / padding / dilation) ->
rot_out (1x1, Q_G', original bias): its output width is unchanged, so BatchNorm and residual paths are
untouched. A layer factored before is re-factored in place of its core, its rotations merged, so it stays one
1x1 -> core -> 1x1 however often it is pruned. `build_bottleneck` is the one builder every subspace uses.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .basis import LayerScores


class EigenBottleneck(nn.Sequential):
    """A layer rebuilt in its Kronecker-factored eigenbasis: rot_in (Q_A'ᵀ: C_in -> r_in, 1x1), core (W*':
    r_in -> r_out, the original kernel, stride, padding and dilation), rot_out (Q_G': r_out -> C_out, 1x1,
    the original bias). Output = Q_G' W*' Q_A'ᵀ applied like the original layer."""

    def __init__(self, rot_in: nn.Module, core: nn.Module, rot_out: nn.Module):
        super().__init__(OrderedDict(rot_in=rot_in, core=core, rot_out=rot_out))


def core_of(module: nn.Module) -> nn.Module:
    """The layer whose weight is rotated: an EigenBottleneck's core, or the (Conv2d / Linear) layer itself."""
    return module.core if isinstance(module, EigenBottleneck) else module


def core_ranks(model: nn.Module, names: list[str]) -> dict[str, list[int]]:
    """{layer: [r_in, r_out]} of the named layers that are EigenBottlenecks (info["ranks"] of the eigen methods)."""
    return {n: list(core_of(model.get_submodule(n)).weight.shape[:2][::-1]) for n in names
            if isinstance(model.get_submodule(n), EigenBottleneck)}


def top_directions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in decreasing order of score."""
    return torch.argsort(scores, descending=True)[:k]


@torch.no_grad()
def build_bottleneck(module: nn.Module, rot_out: torch.Tensor, core: torch.Tensor, rot_in: torch.Tensor,
                     freeze_rotations: bool = False) -> EigenBottleneck:
    """An EigenBottleneck applying rot_out · core_p · rot_in (rot_out C_out x r_out, core r_out x r_in [x k·k],
    rot_in r_in x C_in) in place of `module` (Conv2d, Linear or an EigenBottleneck), with its kernel, stride,
    padding, dilation, bias, device and dtype; rotations trainable unless frozen."""
    inner = core_of(module)
    bias = module.rot_out.bias if isinstance(module, EigenBottleneck) else module.bias
    c_out, c_in, (r_out, r_in) = rot_out.shape[0], rot_in.shape[1], core.shape[:2]
    like = dict(device=inner.weight.device, dtype=inner.weight.dtype)
    if isinstance(inner, nn.Conv2d):
        parts = (nn.Conv2d(c_in, r_in, 1, bias=False, **like),
                 nn.Conv2d(r_in, r_out, inner.kernel_size, inner.stride, inner.padding, inner.dilation, bias=False,
                           padding_mode=inner.padding_mode, **like),
                 nn.Conv2d(r_out, c_out, 1, bias=bias is not None, **like))
    else:
        parts = (nn.Linear(c_in, r_in, bias=False, **like), nn.Linear(r_in, r_out, bias=False, **like),
                 nn.Linear(r_out, c_out, bias=bias is not None, **like))
    for part, value in zip(parts, (rot_in, core, rot_out)):
        part.weight.copy_(value.reshape(part.weight.shape))
    if bias is not None:
        parts[2].bias.copy_(bias)
    for part in (parts[0], parts[2]):
        part.weight.requires_grad_(not freeze_rotations)
    return EigenBottleneck(*parts)


@torch.no_grad()
def rebuild_layer(module: nn.Module, ls: LayerScores, keep_in: torch.Tensor, keep_out: torch.Tensor,
                  freeze_rotations: bool = False) -> EigenBottleneck:
    """Rebuild `module` (Conv2d, Linear or an EigenBottleneck) keeping input directions `keep_in` and output
    directions `keep_out` of its (core) eigenbasis: rot_in = Q_A[:, keep_in]ᵀ, core = W*[keep_out][:, keep_in],
    rot_out = Q_G[:, keep_out]. An EigenBottleneck's old rotations are merged in (rot_in' = Q_A'ᵀ R_in,
    rot_out' = R_out Q_G'), so a layer stays one 1x1 -> core -> 1x1 however often it is pruned.
    (lowrank.factorise is the low-rank family's model-level counterpart, a different operation.)"""
    rot_in = ls.Q_A[:, keep_in].T
    rot_out = ls.Q_G[:, keep_out]
    if isinstance(module, EigenBottleneck):
        rot_in = rot_in @ module.rot_in.weight.reshape(module.rot_in.weight.shape[0], -1).to(rot_in.dtype)
        rot_out = module.rot_out.weight.reshape(ls.c_out, -1).to(rot_out.dtype) @ rot_out
    return build_bottleneck(module, rot_out, ls.weight_star[keep_out][:, keep_in], rot_in, freeze_rotations)


def rebuild_layers(model: nn.Module, layers: list[LayerScores], plan: dict[str, tuple[int, int] | None],
                   freeze_rotations: bool = False) -> nn.Module:
    """Replace every layer the plan factors by its EigenBottleneck keeping its top-scoring directions (in place)."""
    for ls in layers:
        if plan.get(ls.name) is not None:
            r_in, r_out = plan[ls.name]
            new = rebuild_layer(model.get_submodule(ls.name), ls, top_directions(ls.score_in, r_in),
                                top_directions(ls.score_out, r_out), freeze_rotations)
            model.set_submodule(ls.name, new)
    return model
