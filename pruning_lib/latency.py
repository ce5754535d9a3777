"""Per-layer latency lookup tables (HALP, Shen et al., NeurIPS 2022): what a network of given channel widths costs
on THIS device, as the sum of its conv / Linear layers' measured latencies plus the rest of the forward pass.

Parameter counts cannot see that thin convolutions and depthwise factors run far below peak on a CPU; a table
measured on the device can. For every conv / Linear layer of a model the table times a standalone copy of the
layer (same kernel, stride, padding, groups, input size) at a grid of input x output widths (FRACTIONS of the
unpruned ones), in eval mode without autograd, the median of blocked repeats (torch.utils.benchmark.Timer, with
the thread count given). A width between grid points is read by bilinear interpolation. The rest of the forward
pass (norms, activations, additions, pooling) is the measured whole-network time minus the layers' sum, scaled
with the activations the convs and Linear layers output:

    predicted(widths) = Σ_l T_l(c_in_l, c_out_l) + rest · Σ_l c_out_l · P_l / Σ_l c_out_l⁰ · P_l

with P_l the output positions of layer l. Tables are cached as JSON under data/latency/, keyed by the device, torch
version, thread count, batch size, grid and every layer's shape: a change of any of them measures a new table.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .data import DATA_DIR
from .files import write_text_atomic
from .metrics import on_one_example, positions as tensor_positions
from .modes import eval_mode

FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)  # of the unpruned widths, per dimension
MIN_RUN_TIME = 0.05  # seconds of repeats per timed point (torch.utils.benchmark blocked_autorange)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class LayerSpec:
    """A conv / Linear layer as the table times it: its class, unpruned widths, the input of one example without
    the channel dimension (`in_shape`: spatial size of a conv, leading positions of a Linear), and for a conv its
    kernel, stride, padding, dilation and groups (depthwise: groups == channels, one width)."""

    kind: str
    c_in: int
    c_out: int
    in_shape: list[int]
    out_positions: int
    bias: bool
    kernel: list[int] | None = None
    stride: list[int] | None = None
    padding: list[int] | str | None = None
    dilation: list[int] | None = None
    groups: int = 1

    @property
    def depthwise(self) -> bool:
        return self.kind != "Linear" and self.groups == self.c_in == self.c_out and self.groups > 1

    def build(self, c_in: int, c_out: int) -> tuple[nn.Module, tuple[int, ...]]:
        """A standalone layer of these widths and the shape of its input of one example."""
        if self.kind == "Linear":
            return nn.Linear(c_in, c_out, bias=self.bias), (*self.in_shape, c_in)
        groups = c_in if self.depthwise else self.groups
        conv = getattr(nn, self.kind)(c_in, c_out, self.kernel, self.stride, self.padding, self.dilation, groups,
                                      self.bias)
        return conv, (c_in, *self.in_shape)


def layer_specs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerSpec]:
    """LayerSpec of every conv / Linear layer of `model` that runs on an input of one example of `input_shape`."""
    names = [n for n, m in model.named_modules() if isinstance(m, (*CONVS, nn.Linear))]
    modules = dict(model.named_modules())
    seen = on_one_example(model, names, input_shape, lambda m, x, y: (list(x.shape[1:]), tensor_positions(m, y)))
    shapes = {n: shape for n, (shape, _) in seen.items()}
    positions = {n: (None, out) for n, (_, out) in seen.items()}
    specs = {}
    for name in names:
        if name not in shapes:
            continue
        m = modules[name]
        if isinstance(m, nn.Linear):
            specs[name] = LayerSpec("Linear", m.in_features, m.out_features, shapes[name][:-1], positions[name][1],
                                    m.bias is not None)
        else:
            specs[name] = LayerSpec(type(m).__name__, m.in_channels, m.out_channels, shapes[name][1:],
                                    positions[name][1], m.bias is not None, list(m.kernel_size), list(m.stride),
                                    m.padding if isinstance(m.padding, str) else list(m.padding), list(m.dilation),
                                    m.groups)
    return specs


def time_ms(module: nn.Module, x: torch.Tensor, threads: int) -> float:
    """Median milliseconds of module(x), eval mode, no autograd (torch.utils.benchmark; CUDA synchronised)."""
    from torch.utils.benchmark import Timer  # imported here: it loads cpp_extension, which warns on CPU-only torch
    module.eval()
    with torch.no_grad():
        module(x)  # warm-up: allocator, oneDNN primitive creation
        timer = Timer(stmt="m(x)", globals={"m": module, "x": x}, num_threads=threads)
        return timer.blocked_autorange(min_run_time=MIN_RUN_TIME).median * 1e3


def grid_widths(full: int, multiple: int = 1) -> list[int]:
    """The table's widths of one dimension: FRACTIONS of `full`, rounded up to a multiple of `multiple`, distinct."""
    return sorted({min(full, max(multiple, math.ceil(f * full / multiple) * multiple)) for f in FRACTIONS})


def _interpolate(xs: list[int], x: float) -> tuple[int, int, float]:
    """Indices (i, j) of the grid points around x and the weight of j (clamped to the grid's ends)."""
    if x <= xs[0]:
        return 0, 0, 0.0
    if x >= xs[-1]:
        return len(xs) - 1, len(xs) - 1, 0.0
    j = next(k for k, v in enumerate(xs) if v >= x)
    return j - 1, j, (x - xs[j - 1]) / (xs[j] - xs[j - 1])


@dataclass
class LatencyTable:
    """Measured milliseconds per layer on a grid of (input, output) widths, and the rest of the forward pass."""

    specs: dict[str, LayerSpec]
    grids: dict[str, tuple[list[int], list[int]]]  # per layer: input widths, output widths
    ms: dict[str, list[list[float]]]  # per layer: ms[i][j] at (grids[0][i], grids[1][j])
    dense_ms: float  # the whole unpruned network, measured
    rest_ms: float  # dense_ms minus the layers' sum at the unpruned widths
    key: dict

    def layer_ms(self, name: str, c_in: float, c_out: float) -> float:
        """T_l(c_in, c_out): bilinear between the grid points (a depthwise layer: one width, read at c_out)."""
        ins, outs = self.grids[name]
        if self.specs[name].depthwise:
            i, j, w = _interpolate(outs, c_out)
            return (1 - w) * self.ms[name][0][i] + w * self.ms[name][0][j]
        i0, i1, wi = _interpolate(ins, c_in)
        o0, o1, wo = _interpolate(outs, c_out)
        t = self.ms[name]
        return ((1 - wi) * ((1 - wo) * t[i0][o0] + wo * t[i0][o1]) + wi * ((1 - wo) * t[i1][o0] + wo * t[i1][o1]))

    def predict(self, widths: dict[str, tuple[int, int]] | None = None) -> float:
        """Predicted milliseconds of the network with these (input, output) widths per layer (the unpruned width
        of a layer not named): the module docstring's formula."""
        widths = widths or {}
        layers = activations = dense_activations = 0.0
        for name, spec in self.specs.items():
            c_in, c_out = widths.get(name, (spec.c_in, spec.c_out))
            layers += self.layer_ms(name, c_in, c_out)
            activations += c_out * spec.out_positions
            dense_activations += spec.c_out * spec.out_positions
        return layers + self.rest_ms * activations / dense_activations

    def matches(self, model: nn.Module) -> bool:
        """Whether `model` has exactly the table's conv / Linear layers, each of the same class, kernel and stride
        (a channel-pruned or masked copy of the unpruned model; a low-rank one replaced its layers)."""
        layers = {n: m for n, m in model.named_modules() if isinstance(m, (*CONVS, nn.Linear))}
        return set(layers) == set(self.specs) and all(
            type(m).__name__ == self.specs[n].kind and (isinstance(m, nn.Linear) or (
                list(m.kernel_size), list(m.stride)) == (self.specs[n].kernel, self.specs[n].stride))
            for n, m in layers.items())

    def predict_model(self, model: nn.Module) -> float | None:
        """Predicted milliseconds of `model` (predict at its widths), or None where the table does not apply."""
        return self.predict(self.widths_of(model)) if self.matches(model) else None

    def widths_of(self, model: nn.Module) -> dict[str, tuple[int, int]]:
        """(input, output) widths of the table's layers as they are in `model` (a channel-pruned copy keeps the
        layer names)."""
        out = {}
        for name, m in model.named_modules():
            if name in self.specs:
                out[name] = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels,
                                                                                             m.out_channels)
        return out


def device_name(device: torch.device) -> str:
    """What the cache key calls the device: the GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{platform.processor() or platform.machine()}"


def measure_table(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 128, threads: int | None = None,
                  cache_dir: str | Path | None = "auto") -> LatencyTable:
    """The latency table of `model` (unpruned) on its device for batches of `batch_size` with `threads` torch
    threads (default: the current count), loaded from `cache_dir` ("auto": data/latency/; None: no cache) when a
    table of the same key is there, else measured (one timed point per layer and grid width pair: seconds to a
    minute on a CPU) and saved."""
    cache_dir = DATA_DIR / "latency" if cache_dir == "auto" else cache_dir
    threads = threads or torch.get_num_threads()
    device = next(model.parameters()).device
    specs = layer_specs(model, input_shape)
    key = {"device": device_name(device), "torch": torch.__version__, "threads": threads, "batch_size": batch_size,
           "fractions": list(FRACTIONS), "input_shape": list(input_shape),
           "layers": {n: asdict(s) for n, s in specs.items()}}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"latency-{digest}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        return LatencyTable(specs, {n: tuple(g) for n, g in saved["grids"].items()}, saved["ms"], saved["dense_ms"],
                            saved["rest_ms"], key)
    grids, ms = {}, {}
    for name, spec in specs.items():
        multiple = 1 if spec.depthwise or spec.kind == "Linear" else spec.groups
        outs = grid_widths(spec.c_out, multiple)
        ins = [0] if spec.depthwise else grid_widths(spec.c_in, multiple)
        grids[name], ms[name] = (ins, outs), []
        for c_in in ins:
            row = []
            for c_out in outs:
                layer, shape = spec.build(c_out if spec.depthwise else c_in, c_out)
                row.append(time_ms(layer.to(device), torch.randn(batch_size, *shape, device=device), threads))
            ms[name].append(row)
    x = torch.randn(batch_size, *input_shape, device=device)
    with eval_mode(model):
        dense_ms = time_ms(model, x, threads)
    table = LatencyTable(specs, grids, ms, dense_ms, 0.0, key)
    table.rest_ms = max(0.0, dense_ms - table.predict())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"key": key, "grids": grids, "ms": ms, "dense_ms": dense_ms,
                                            "rest_ms": table.rest_ms}, indent=1))
    return table


def measure_model_ms(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 128,
                     threads: int | None = None) -> float:
    """Measured milliseconds of one forward pass of `model` on a batch (eval mode, no autograd), as the table
    times its layers."""
    device = next(model.parameters()).device
    with eval_mode(model):
        return time_ms(model, torch.randn(batch_size, *input_shape, device=device), threads or torch.get_num_threads())
