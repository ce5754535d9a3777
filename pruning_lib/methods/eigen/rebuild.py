"""Rebuilding a layer of the eigen family: the EigenBottleneck and EigenPair forms and the rank-r rebuild.

A pruned convolution (Conv1d or Conv2d, groups = 1, 1x1 included) becomes rot_in (1x1, Q_A'ᵀ) -> core (W*',
original kernel / stride / padding / dilation) -> rot_out (1x1, Q_G', original bias): its output width is
unchanged, so BatchNorm and residual paths are untouched. A layer factored before is re-factored in place of its core, its rotations
merged, so it stays one 1x1 -> core -> 1x1 however often it is pruned.

A pruned Linear layer (and, with the eigen option `pointwise_pairs`, on by default, a 1x1 conv; the configs of the
CNN tables measured with bottlenecks turn it off) becomes an EigenPair: the same three factors Q_G' W*' Q_A'ᵀ
with the core folded into the side of larger rank, first (C_in -> r, no bias; a conv's stride and padding) ->
second (r -> C_out, original bias),
r = min(r_in, r_out). It computes exactly the bottleneck's function (DESIGN.md §7) and costs r·(C_in + C_out)
(+ C_out bias) instead of C_in·r_in + r_in·r_out + r_out·C_out. A pair is re-scored as the plain Linear it
applies (`collapse_pairs`) and rebuilt from scratch, so it stays one pair however often it is pruned.
`build_layer` is the one builder every subspace uses (bottleneck or pair by the layer's kind).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from torch import nn

from ...curvature.kfac import CONVS  # the convolutions K-FAC covers (groups = 1) are the ones rebuilt here

if TYPE_CHECKING:
    from .basis import LayerScores


class EigenBottleneck(nn.Sequential):
    """A layer rebuilt in its Kronecker-factored eigenbasis: rot_in (Q_A'ᵀ: C_in -> r_in, 1x1), core (W*':
    r_in -> r_out, the original kernel, stride, padding and dilation), rot_out (Q_G': r_out -> C_out, 1x1,
    the original bias). Output = Q_G' W*' Q_A'ᵀ applied like the original layer."""

    def __init__(self, rot_in: nn.Module, core: nn.Module, rot_out: nn.Module):
        super().__init__(OrderedDict(rot_in=rot_in, core=core, rot_out=rot_out))


class EigenPair(nn.Sequential):
    """A Linear (or 1x1 conv) layer rebuilt as a rank-r pair: first (C_in -> r, no bias; a conv's stride and
    padding), second (r -> C_out, the original bias), both Linear or both 1x1 convs of the layer's class. Output = second.W ·
    first.W · x + b; one of the two factors is a pure rotation (Q_A'ᵀ or Q_G'), the other carries the folded
    core."""

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__(OrderedDict(first=first, second=second))

    @property
    def rank(self) -> int:
        return self.first.weight.shape[0]


def pair_weight(pair: EigenPair) -> torch.Tensor:
    """The (C_out, C_in) weight a pair applies: second.W · first.W (detached)."""
    return (pair.second.weight.flatten(1) @ pair.first.weight.flatten(1)).detach()


def is_pointwise(module: nn.Module) -> bool:
    """A 1x1 Conv1d / Conv2d with groups = 1: a Linear map of the channels at every position (stride and padding
    aside)."""
    return isinstance(module, CONVS) and module.groups == 1 and all(k == 1 for k in module.kernel_size)


def core_of(module: nn.Module) -> nn.Module:
    """The layer whose weight is rotated: an EigenBottleneck's core, or the (Conv2d / Linear) layer itself
    (an EigenPair is scored as the Linear it applies, `collapse_pairs`)."""
    return module.core if isinstance(module, EigenBottleneck) else module


def scored_weight(module: nn.Module) -> torch.Tensor:
    """The weight that is rotated and scored: an EigenBottleneck's core weight, an EigenPair's second.W · first.W,
    or the layer's own weight."""
    return pair_weight(module) if isinstance(module, EigenPair) else core_of(module).weight.detach()


def is_pair_layer(module: nn.Module) -> bool:
    """Whether `module` is rebuilt as an EigenPair: a Linear layer, an EigenPair, or (made before pairs existed)
    an EigenBottleneck with a Linear core."""
    return isinstance(module, (nn.Linear, EigenPair)) or (isinstance(module, EigenBottleneck)
                                                           and isinstance(module.core, nn.Linear))


@torch.no_grad()
def collapsed_pair(module: EigenPair) -> nn.Module:
    """The plain Linear (or 1x1 conv, with the first factor's stride and padding) applying the same function as
    an EigenPair (weight second.W · first.W, its bias)."""
    w, first = pair_weight(module), module.first
    bias = module.second.bias
    if isinstance(first, CONVS):
        new = type(first)(w.shape[1], w.shape[0], 1, first.stride, first.padding, bias=bias is not None,
                          padding_mode=first.padding_mode)
    else:
        new = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    new = new.to(w.device, w.dtype)
    new.weight.copy_(w.reshape(new.weight.shape))
    if bias is not None:
        new.bias.copy_(bias)
    return new


def collapse_pairs(model: nn.Module, names: list[str]) -> nn.Module:
    """`model` itself when none of the named layers is an EigenPair; otherwise a copy with every named EigenPair
    replaced by the plain layer it applies (same outputs, so the same K-FAC factors of the outer layer)."""
    if not any(isinstance(model.get_submodule(n), EigenPair) for n in names):
        return model
    plain = copy.deepcopy(model)
    for n in names:
        if isinstance(plain.get_submodule(n), EigenPair):
            plain.set_submodule(n, collapsed_pair(plain.get_submodule(n)))
    return plain


def core_ranks(model: nn.Module, names: list[str]) -> dict[str, list[int]]:
    """{layer: [r_in, r_out]} of the named layers that are EigenBottlenecks, [r, r] of EigenPairs (info["ranks"]
    of the eigen methods)."""
    out = {}
    for n in names:
        m = model.get_submodule(n)
        if isinstance(m, EigenBottleneck):
            out[n] = list(m.core.weight.shape[:2][::-1])
        elif isinstance(m, EigenPair):
            out[n] = [m.rank, m.rank]
    return out


def top_directions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in decreasing order of score."""
    return torch.argsort(scores, descending=True)[:k]


def bias_of(module: nn.Module) -> torch.Tensor | None:
    """The output bias of a layer, an EigenBottleneck (rot_out's) or an EigenPair (second's)."""
    if isinstance(module, EigenBottleneck):
        return module.rot_out.bias
    if isinstance(module, EigenPair):
        return module.second.bias
    return module.bias


@torch.no_grad()
def build_pair(module: nn.Module, rot_out: torch.Tensor, core: torch.Tensor, rot_in: torch.Tensor,
               freeze_rotations: bool = False) -> EigenPair:
    """The EigenPair applying rot_out · core · rot_in (rot_out C_out x r_out, core r_out x r_in [x 1], rot_in
    r_in x C_in) in place of `module` (Linear, 1x1 conv, EigenPair or a Linear EigenBottleneck), its parts
    Linear or 1x1 convs like the layer (the first with a conv's stride and padding): the core is folded into
    the side of larger rank, r = min(r_in, r_out): r_out <= r_in: first = core · rot_in, second = rot_out;
    otherwise first = rot_in, second = rot_out · core. The factor that is a pure rotation is frozen with
    `freeze_rotations`. Bias, device and dtype from `module`."""
    bias = bias_of(module)
    ref = pair_weight_ref(module)
    like = dict(device=ref.device, dtype=ref.dtype)
    core = core.reshape(core.shape[0], core.shape[1])
    c_out, c_in, (r_out, r_in) = rot_out.shape[0], rot_in.shape[1], core.shape
    if r_out <= r_in:
        first_w, second_w, rotation = core @ rot_in, rot_out, 1
    else:
        first_w, second_w, rotation = rot_in, rot_out @ core, 0
    r = first_w.shape[0]
    conv = module.first if isinstance(module, EigenPair) else core_of(module)
    if isinstance(conv, CONVS):
        Conv = type(conv)
        first = Conv(c_in, r, 1, conv.stride, conv.padding, bias=False, padding_mode=conv.padding_mode, **like)
        second = Conv(r, c_out, 1, bias=bias is not None, **like)
    else:
        first = nn.Linear(c_in, r, bias=False, **like)
        second = nn.Linear(r, c_out, bias=bias is not None, **like)
    first.weight.copy_(first_w.reshape(first.weight.shape))
    second.weight.copy_(second_w.reshape(second.weight.shape))
    if bias is not None:
        second.bias.copy_(bias)
    (first, second)[rotation].weight.requires_grad_(not freeze_rotations)
    return EigenPair(first, second)


def pair_weight_ref(module: nn.Module) -> torch.Tensor:
    """A weight of `module` giving the device and dtype of its rebuilt form."""
    if isinstance(module, EigenPair):
        return module.first.weight
    return core_of(module).weight


def build_layer(module: nn.Module, rot_out: torch.Tensor, core: torch.Tensor, rot_in: torch.Tensor,
                freeze_rotations: bool = False, pair: bool | None = None) -> nn.Module:
    """rot_out · core · rot_in in place of `module`: an EigenPair when `pair` (the LayerScores' decision; None:
    `is_pair_layer`, a Linear layer or a pair), an EigenBottleneck otherwise (`build_bottleneck`)."""
    build = build_pair if (is_pair_layer(module) if pair is None else pair) else build_bottleneck
    return build(module, rot_out, core, rot_in, freeze_rotations)


@torch.no_grad()
def build_bottleneck(module: nn.Module, rot_out: torch.Tensor, core: torch.Tensor, rot_in: torch.Tensor,
                     freeze_rotations: bool = False) -> EigenBottleneck:
    """An EigenBottleneck applying rot_out · core_p · rot_in (rot_out C_out x r_out, core r_out x r_in [x k·k],
    rot_in r_in x C_in) in place of `module` (Conv2d, Linear or an EigenBottleneck), with its kernel, stride,
    padding, dilation, bias, device and dtype; rotations trainable unless frozen."""
    inner = core_of(module)
    bias = bias_of(module)
    c_out, c_in, (r_out, r_in) = rot_out.shape[0], rot_in.shape[1], core.shape[:2]
    like = dict(device=inner.weight.device, dtype=inner.weight.dtype)
    if isinstance(inner, CONVS):
        Conv = type(inner)
        parts = (Conv(c_in, r_in, 1, bias=False, **like),
                 Conv(r_in, r_out, inner.kernel_size, inner.stride, inner.padding, inner.dilation, bias=False,
                      padding_mode=inner.padding_mode, **like),
                 Conv(r_out, c_out, 1, bias=bias is not None, **like))
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
                  freeze_rotations: bool = False) -> nn.Module:
    """Rebuild `module` (Conv2d, Linear, an EigenBottleneck or an EigenPair) keeping input directions `keep_in`
    and output directions `keep_out` of its (core) eigenbasis: rot_in = Q_A[:, keep_in]ᵀ, core = W*[keep_out][:, keep_in],
    rot_out = Q_G[:, keep_out]. An EigenBottleneck's old rotations are merged in (rot_in' = Q_A'ᵀ R_in,
    rot_out' = R_out Q_G'), so a layer stays one 1x1 -> core -> 1x1 however often it is pruned. A Linear layer
    (or an EigenPair, scored as the layer it applies; a 1x1 conv when `ls.pair`) becomes the EigenPair of the
    same three factors (`build_pair`: the same function at rank min(r_in, r_out)).
    (lowrank.factorise is the low-rank family's model-level counterpart, a different operation.)"""
    rot_in = ls.Q_A[:, keep_in].T
    rot_out = ls.Q_G[:, keep_out]
    if isinstance(module, EigenBottleneck):
        rot_in = rot_in @ module.rot_in.weight.reshape(module.rot_in.weight.shape[0], -1).to(rot_in.dtype)
        rot_out = module.rot_out.weight.reshape(ls.c_out, -1).to(rot_out.dtype) @ rot_out
    return build_layer(module, rot_out, ls.weight_star[keep_out][:, keep_in], rot_in, freeze_rotations, ls.pair)


def rebuild_layers(model: nn.Module, layers: list[LayerScores], plan: dict[str, tuple[int, int] | None],
                   freeze_rotations: bool = False) -> nn.Module:
    """Replace every layer the plan factors by its EigenBottleneck (EigenPair for a Linear layer) keeping its
    top-scoring directions (in place)."""
    for ls in layers:
        if plan.get(ls.name) is not None:
            r_in, r_out = plan[ls.name]
            new = rebuild_layer(model.get_submodule(ls.name), ls, top_directions(ls.score_in, r_in),
                                top_directions(ls.score_out, r_out), freeze_rotations)
            model.set_submodule(ls.name, new)
    return model
