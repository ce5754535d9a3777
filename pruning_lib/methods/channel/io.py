"""Save / load a channel-pruned model. It no longer matches its class's default widths: `save_pruned` stores
the state dict plus the widths of every Conv2d / Linear / BatchNorm ("the architecture" beyond the model
name) and, optionally, the `build_model` arguments; `load_pruned` rebuilds the original model, shrinks those
layers to the stored widths and loads the state dict strictly. Unlike torch.save(model) (a pickle of the
module that needs weights_only=False, i.e. trusting the file with code execution, and breaks when the class
moves), the file holds only tensors and plain values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...files import load_weights, save_torch_atomic
from ...models import build_model

FORMAT = "pruning_lib.channel/1"  # the file format's id (kept when modules move, so old files still load)


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """The architecture a pruned model needs besides its class: [in, out] of every Conv2d / Linear and
    [num_features] of every BatchNorm, by module name."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out[name] = [m.weight.shape[1] * (m.groups if isinstance(m, nn.Conv2d) else 1), m.weight.shape[0]]
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out[name] = [m.num_features]
    return out


def _resize(model: nn.Module, widths: dict[str, list[int]]) -> nn.Module:
    """Shrink (or grow) the named layers in place to the given widths; the values are left uninitialised
    (`load_state_dict` fills them)."""
    modules = dict(model.named_modules())
    for name, w in widths.items():
        if name not in modules:
            raise ValueError(f"widths: layer '{name}' is not in the model (was it saved from another architecture?)")
        m = modules[name]
        if isinstance(m, nn.Conv2d):
            m.in_channels, m.out_channels = w
            m.weight = nn.Parameter(m.weight.new_empty(w[1], w[0] // m.groups, *m.kernel_size))
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.new_empty(w[1]))
        elif isinstance(m, nn.Linear):
            m.in_features, m.out_features = w
            m.weight = nn.Parameter(m.weight.new_empty(w[1], w[0]))
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.new_empty(w[1]))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_features = w[0]
            for attr in ("weight", "bias"):
                if getattr(m, attr) is not None:
                    setattr(m, attr, nn.Parameter(getattr(m, attr).new_empty(w[0])))
            for attr in ("running_mean", "running_var"):
                if getattr(m, attr) is not None:
                    setattr(m, attr, getattr(m, attr).new_empty(w[0]))
    return model


def save_pruned(model: nn.Module, path: str | Path, arch: dict[str, Any] | None = None) -> None:
    """Save a (pruned) model as {format, arch, widths, state_dict}: `arch` holds the `build_model` keyword
    arguments (name, width, in_channels, num_classes) so `load_pruned` can rebuild it without a template."""
    save_torch_atomic({"format": FORMAT, "arch": arch, "widths": layer_widths(model),
                       "state_dict": model.state_dict()}, path)


def load_pruned(path: str | Path, model: nn.Module | None = None, map_location: Any = None) -> nn.Module:
    """Load a model saved by `save_pruned`: take `model` (an unpruned instance of the same architecture) or
    build one from the saved `arch`, resize its layers to the saved widths, load the state dict strictly.
    Reads with torch.load(weights_only=True): the file cannot run code."""
    ckpt = load_weights(path, map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"path: {path} is not a file written by save_pruned (format {FORMAT})")
    if model is None:
        if ckpt["arch"] is None:
            raise ValueError("model: the file has no 'arch'; pass an unpruned instance of its architecture")
        model = build_model(**ckpt["arch"])
    _resize(model, ckpt["widths"])
    model.load_state_dict(ckpt["state_dict"])
    return model
