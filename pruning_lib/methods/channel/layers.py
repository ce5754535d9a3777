"""Which layers the channel pruner can slice: convolutions (ungrouped, grouped or depthwise), Linear, BatchNorm
and one-dimensional LayerNorm; the checks that refuse the rest by name, the channel widths torch-pruning indexes,
the ties a grouped conv puts on its channels, and the channel shuffle the dependency graph cannot follow."""
from __future__ import annotations

import math

import torch_pruning as tp
from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)  # sliced with the channels they normalise
SUPPORTED = (*CONVS, nn.Linear, *NORMS)


def is_depthwise(module: nn.Module) -> bool:
    """True for a depthwise Conv1d / 2d / 3d (groups = in_channels = out_channels > 1): channel i reads only
    input channel i, so its input and output channels are removed together (torch-pruning couples them)."""
    return (isinstance(module, CONVS) and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


def ties(module: nn.Module) -> int:
    """Equal parts a layer splits its channels into: a grouped (not depthwise) conv's `groups` g, a GroupNorm's
    num_groups, else 1. Channel c of a g-part space lives in part c // (C/g); every part must lose the same
    positions, so channels c, c + C/g, ..., c + (g-1)·C/g are removed together (what torch-pruning's MetaPruner
    does for grouped convs, and what keeps the conv's weight slicing right: it slices each group's inputs by the
    first group's kept positions)."""
    if isinstance(module, nn.GroupNorm):
        return module.num_groups
    return module.groups if isinstance(module, CONVS) and module.groups > 1 and not is_depthwise(module) else 1


def combined_ties(parts: list[int]) -> int:
    """Equal parts of a channel space shared by layers splitting it into `parts` (their least common multiple)."""
    return math.lcm(1, *parts)


def is_channel_shuffle(node) -> bool:
    """True for a torch-pruning graph node that transposes a reshaped tensor into another reshape, the channel
    shuffle view(N, g, C/g, ...) -> transpose -> view(N, C, ...) (ShuffleNet). The dependency graph maps
    channels through it as the identity, while it interleaves them: channels it couples downstream are the wrong
    ones. (A patch embedding's flatten -> transpose reaches no second reshape.)"""
    def reshape(n) -> bool:
        return n.type == tp.ops.OPTYPE.RESHAPE

    def reaches_reshape(n) -> bool:  # through element-wise copies (contiguous)
        return any(reshape(o) or ("Clone" in type(o.grad_fn).__name__ and reaches_reshape(o)) for o in n.outputs)

    return ("Transpose" in type(node.grad_fn).__name__ and any(reshape(i) for i in node.inputs)
            and reaches_reshape(node))


def check_supported(model: nn.Module) -> None:
    """Raise ValueError naming the first layer the channel pruner cannot slice correctly even when its channels
    are coupled to others: a transposed convolution and a LayerNorm over more than one dimension. Layers it
    does not know at all (LSTM, attention) are checked where the dependency graph couples them to channels: such
    a group is kept whole. Grouped convs and GroupNorms are pruned by equal parts (`ties`)."""
    for name, m in model.named_modules():
        label = f"layer '{name or type(m).__name__}' ({type(m).__name__}"
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            raise ValueError(f"{label}): transposed convolutions are not supported by the channel pruner")
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
            raise ValueError(f"{label}, normalized_shape={tuple(m.normalized_shape)}): the channel pruner slices "
                             "LayerNorms over one dimension only")


def width_of(module, out: bool) -> int:
    """Channels of a layer's output (out) or input dimension, as torch-pruning indexes them."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    if isinstance(module, CONVS):  # a depthwise conv's input and output channels are the same ones
        return module.out_channels if out or is_depthwise(module) else module.in_channels
    return module.weight.shape[0] if out else module.weight.shape[1]


def check_indices(name: str, width: int, out: bool, idxs: list[int], root: str, kind: str) -> None:
    """Raise ValueError when the dependency graph maps more channels onto a layer than it has (it followed an
    operation it does not understand, e.g. zero-padding or slicing along the channel dimension)."""
    if idxs and max(idxs) >= width:
        side = "output" if out else "input"
        raise ValueError(f"layer '{name}' ({kind}): the dependency graph couples channel "
                         f"{max(idxs)} of the group rooted at '{root}' to its {width} {side} channels; an operation "
                         "next to it (e.g. zero-padding or slicing along channels) is one torch-pruning cannot "
                         "follow. Replace it (e.g. a 1x1 conv shortcut) to prune this model by channels")
