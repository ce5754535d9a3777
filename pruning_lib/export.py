"""Deployable pruned models: `torch.export` programs and ONNX files that run without the kit.

Every pruned model of the kit is made of standard layers (Conv2d / Linear / BatchNorm; low-rank and
EigenDamage models nest them in nn.Sequential subclasses; weight-pruned ones carry
`torch.nn.utils.prune` masks, made permanent in the exported copy), so both exporters trace it as is:

- `export_program` -> `torch.export.ExportedProgram` (save with `save_program`, reload with
  `load_program` = `torch.export.load`: no class of the kit or of the model is needed to run it);
- `export_onnx` -> an ONNX file (`torch.onnx.export`, dynamo exporter); `onnx_max_error` runs it in
  onnxruntime and returns the largest difference from the PyTorch outputs.

Safety of the save / load paths: `torch.export.load` reads its own archive format (a serialized graph and
tensors, no pickled Python objects to run), and an ONNX file is a protobuf graph; both are safe to load from
an untrusted source in the sense that loading runs no Python code from the file. `channel.load_pruned`
reads with `torch.load(weights_only=True)`. A whole module saved with `torch.save(model)` can only be read
back by unpickling its classes, which runs code from the file: keep that for files you made yourself.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune


def deployable_copy(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of `model` with every pruning mask made permanent (`prune.remove`: the weight
    becomes the plain tensor weight_orig * weight_mask), so exporters see standard layers only."""
    out = copy.deepcopy(model).eval()
    for m in out.modules():
        for name, hook in list(m._forward_pre_hooks.items()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(m, hook._tensor_name)
    return out


def export_program(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                   dynamic_batch: bool = False) -> torch.export.ExportedProgram:
    """`torch.export.export` of the deployable copy of `model` (eval mode) on `example_inputs`; with
    `dynamic_batch` the first dimension of every input is symbolic (export with a batch of at least 2)."""
    shapes = tuple({0: torch.export.Dim("batch")} for _ in example_inputs) if dynamic_batch else None
    with torch.no_grad():
        return torch.export.export(deployable_copy(model), tuple(example_inputs), dynamic_shapes=shapes)


def save_program(program: torch.export.ExportedProgram, path: str | Path) -> Path:
    """Write an exported program to `path` (`torch.export.save`; conventionally *.pt2)."""
    path = Path(path)
    torch.export.save(program, str(path))
    return path


def load_program(path: str | Path) -> torch.export.ExportedProgram:
    """Read a program written by `save_program`; `.module()` gives a runnable nn.Module without the kit."""
    return torch.export.load(str(path))


# protobuf caps one file at 2 GiB: models whose weights fit below this go into the .onnx file itself
ONNX_EMBED_LIMIT = 1_800_000_000


def export_onnx(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | Path) -> Path:
    """Write the deployable copy of `model` as ONNX to `path` (torch.onnx.export with the dynamo exporter,
    which needs the onnx and onnxscript packages: `pip install -e ".[export]"`). The weights are embedded in the
    file when they take less than ONNX_EMBED_LIMIT bytes, else written beside it as `<path>.data` (ONNX's external
    data); `exported_size` counts both."""
    path = Path(path)
    out = deployable_copy(model)
    weight_bytes = sum(t.numel() * t.element_size() for t in [*out.parameters(), *out.buffers()])
    with torch.no_grad():
        torch.onnx.export(out, tuple(example_inputs), str(path), dynamo=True, verbose=False,
                          external_data=weight_bytes >= ONNX_EMBED_LIMIT)
    return path


def exported_size(path: str | Path) -> int:
    """Bytes on disk of an exported model: the file and, for ONNX with external data, its `<path>.data` file."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def onnx_max_error(path: str | Path, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    """max |ONNX output − PyTorch output| of the ONNX file at `path` run in onnxruntime (CPU) on `inputs`,
    against `model` in eval mode (needs the onnxruntime package)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.detach().cpu().numpy() for i, x in zip(session.get_inputs(), inputs)}
    got = torch.from_numpy(session.run(None, feed)[0])
    with torch.no_grad():
        want = deployable_copy(model)(*inputs)
    return float((got - want.detach().cpu()).abs().max())
