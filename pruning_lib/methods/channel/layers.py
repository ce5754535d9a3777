"""Which layers the channel pruner can slice: convolutions (ungrouped or depthwise), Linear, BatchNorm and
one-dimensional LayerNorm; the checks that refuse the rest by name, and the channel widths torch-pruning indexes."""
from __future__ import annotations

from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)  # sliced with the channels they normalise
SUPPORTED = (*CONVS, nn.Linear, *NORMS)


def is_depthwise(module: nn.Module) -> bool:
    """True for a depthwise Conv1d / 2d / 3d (groups = in_channels = out_channels > 1): channel i reads only
    input channel i, so its input and output channels are removed together (torch-pruning couples them)."""
    return (isinstance(module, CONVS) and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


def check_supported(model: nn.Module) -> None:
    """Raise ValueError naming the first layer the channel pruner cannot slice correctly even when its channels
    are coupled to others: a grouped convolution (groups other than 1 or depthwise: its groups would have to
    lose channels equally), a transposed convolution, a LayerNorm over more than one dimension and a GroupNorm
    (whose channel count must stay a multiple of num_groups). Layers it does not know at all (LSTM, attention)
    are checked where the dependency graph couples them to channels: such a group is kept whole."""
    for name, m in model.named_modules():
        label = f"layer '{name or type(m).__name__}' ({type(m).__name__}"
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            raise ValueError(f"{label}): transposed convolutions are not supported by the channel pruner")
        if isinstance(m, CONVS) and m.groups != 1 and not is_depthwise(m):
            raise ValueError(f"{label}, groups={m.groups}, {m.in_channels} -> {m.out_channels}): grouped "
                             "convolutions are not supported by the channel pruner (supported: groups=1, or depthwise "
                             "with groups = in_channels = out_channels); prune it with svd / tucker / cp or "
                             "the magnitude methods")
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
            raise ValueError(f"{label}, normalized_shape={tuple(m.normalized_shape)}): the channel pruner slices "
                             "LayerNorms over one dimension only")
        if isinstance(m, nn.GroupNorm) and any(True for _ in m.parameters(recurse=False)):
            raise ValueError(f"{label}, num_groups={m.num_groups}): its channels must stay a multiple of num_groups, "
                             "which the channel pruner does not enforce")


def width_of(module, out: bool) -> int:
    """Channels of a layer's output (out) or input dimension, as torch-pruning indexes them."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    if is_depthwise(module):  # its input and output channels are the same ones
        return module.out_channels
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
