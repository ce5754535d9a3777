"""The support matrix: every registered method on today's common networks, through `pruning_lib.prune` as a user
calls it (random weights, 10 classes, 32 random examples, target 0.5), one row per network and method:
"ok" with the achieved reduction and the seconds, "refused" with the refusal's first line (a ValueError raised by
pruning_lib itself, naming the layer or the reason), or "CRASH" with the exception (anything else: a bug).

    python benchmarks/model_zoo.py                    # small widths (what the test runs), prints a Markdown table
    python benchmarks/model_zoo.py --size full        # torchvision's own widths (slow on 2 cores)
    python benchmarks/model_zoo.py --nets mlp,conv1d --methods l1,svd --out zoo.md

`--size small` builds each architecture with its own torchvision class at small widths and depths (the same
layer types, couplings and operations: grouped convs, concatenations, channel shuffle, LayerNorm2d, attention),
so the matrix it gives is the one of the full-size networks, in seconds.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import models as tvm
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.densenet import DenseNet
from torchvision.models.efficientnet import _efficientnet_conf
from torchvision.models.efficientnet import EfficientNet
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.shufflenetv2 import ShuffleNetV2
from torchvision.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pruning_lib  # noqa: E402
from pruning_lib.models import vit_tiny  # noqa: E402
from pruning_lib.registry import METHODS  # noqa: E402

CLASSES, EXAMPLES, TARGET = 10, 32, 0.5


class LSTMNet(nn.Module):
    """LSTM(batch_first) over (N, T, D) sequences, the last step's hidden state into a Linear head."""

    def __init__(self, features: int = 8, hidden: int = 32):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def mlp(inputs: int, hidden: tuple[int, ...]) -> nn.Module:
    """Flatten, then Linear-ReLU layers of widths `hidden`, then a Linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, CLASSES))


def conv1d_net(width: int) -> nn.Module:
    """Two Conv1d-BatchNorm-ReLU layers over (N, 4, 64) signals, global pooling, a Linear head."""
    return nn.Sequential(nn.Conv1d(4, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
                         nn.Conv1d(width, 2 * width, 3, padding=1), nn.BatchNorm1d(2 * width), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(2 * width, CLASSES))


def vgg_small() -> nn.Module:
    """torchvision's VGG with batch norm on a short feature stack and a small classifier."""
    model = tvm.VGG(tvm.vgg.make_layers([8, "M", 16, "M", 32, "M"], batch_norm=True), num_classes=CLASSES)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, CLASSES))
    return model


def timm_vit(name: str) -> nn.Module:
    """A timm model by name, random weights, 10 classes, for 32x32 images."""
    import timm
    return timm.create_model(name, pretrained=False, num_classes=CLASSES, img_size=32)


def vit(image: int, patch: int, layers: int, heads: int, dim: int) -> nn.Module:
    """torchvision's VisionTransformer, its head drawn at random: torchvision initialises it to zero, so no
    gradient would reach any other layer, which no trained model shows."""
    model = VisionTransformer(image, patch, layers, heads, dim, 2 * dim, num_classes=CLASSES)
    nn.init.normal_(model.heads.head.weight, std=dim ** -0.5)
    return model


@dataclass
class Net:
    """A network of the matrix: its builders at small and full (torchvision's own) widths, one input's shape."""

    small: Callable[[], nn.Module]
    full: Callable[[], nn.Module]
    shape: tuple[int, ...]


def _effnet(width: float, depth: float) -> nn.Module:
    settings, last = _efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=depth)
    return EfficientNet(settings, 0.2, last_channel=last, num_classes=CLASSES)


IMAGE = (3, 32, 32)
NETS: dict[str, Net] = {
    "resnet18": Net(partial(ResNet, tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=CLASSES),
                    partial(tvm.resnet18, num_classes=CLASSES), IMAGE),
    "resnext50_32x4d": Net(partial(ResNet, Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4,
                                   num_classes=CLASSES),
                           partial(tvm.resnext50_32x4d, num_classes=CLASSES), IMAGE),
    "vgg11_bn": Net(vgg_small, partial(tvm.vgg11_bn, num_classes=CLASSES), IMAGE),
    "mobilenet_v2": Net(partial(tvm.mobilenet_v2, num_classes=CLASSES, width_mult=0.25),
                        partial(tvm.mobilenet_v2, num_classes=CLASSES), IMAGE),
    "mobilenet_v3_small": Net(partial(tvm.mobilenet_v3_small, num_classes=CLASSES, width_mult=0.25),
                              partial(tvm.mobilenet_v3_small, num_classes=CLASSES), IMAGE),
    "efficientnet_b0": Net(partial(_effnet, 0.25, 0.25), partial(tvm.efficientnet_b0, num_classes=CLASSES), IMAGE),
    "shufflenet_v2_x0_5": Net(partial(ShuffleNetV2, [1, 1, 1], [8, 16, 32, 64, 128], num_classes=CLASSES),
                              partial(tvm.shufflenet_v2_x0_5, num_classes=CLASSES), IMAGE),
    "regnet_x_400mf": Net(partial(RegNet, BlockParams.from_init_params(depth=3, w_0=16, w_a=16.0, w_m=2.0,
                                                                       group_width=8), num_classes=CLASSES),
                          partial(tvm.regnet_x_400mf, num_classes=CLASSES), IMAGE),
    "squeezenet1_1": Net(partial(tvm.squeezenet1_1, num_classes=CLASSES),
                         partial(tvm.squeezenet1_1, num_classes=CLASSES), (3, 64, 64)),
    "densenet121": Net(partial(DenseNet, 8, (2, 2), 16, num_classes=CLASSES),
                       partial(tvm.densenet121, num_classes=CLASSES), IMAGE),
    "convnext_tiny": Net(partial(ConvNeXt, [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)],
                                 num_classes=CLASSES),
                         partial(tvm.convnext_tiny, num_classes=CLASSES), IMAGE),
    "vit": Net(partial(vit, 32, 8, 2, 2, 32), partial(vit, 32, 4, 4, 4, 128), IMAGE),
    "vit_timm": Net(partial(vit_tiny, 1, 3, CLASSES, 32), partial(timm_vit, "vit_tiny_patch16_224"), IMAGE),
    "mlp": Net(partial(mlp, 3 * 32 * 32, (128, 64)), partial(mlp, 3 * 32 * 32, (128, 64)), IMAGE),
    "conv1d": Net(partial(conv1d_net, 16), partial(conv1d_net, 64), (4, 64)),
    "lstm": Net(LSTMNet, LSTMNet, (12, 8)),
}


CHANNEL = ("l1", "taylor", "random", "obd", "obs")
EIGEN = ("eigendamage", "improved_eigendamage")
LOWRANK = ("svd", "tucker", "cp")
# The real limits behind every refusal of the small matrix (the test holds the matrix to them: every pair not
# listed here prunes to the target, every listed pair is refused by pruning_lib in one line, none crashes).
LIMITS: dict[tuple[str, str], str] = {
    **{("regnet_x_400mf", m): "grouped convs have no K-FAC (groups = 1 only), so EigenDamage does not rebuild them; "
       "with them and the stem kept, at most 0.45" for m in EIGEN},
    **{("vit", m): "the residual stream is coupled to nn.MultiheadAttention (packed in_proj), kept whole; the MLP "
       "neurons alone hold under half of the parameters" for m in CHANNEL},
    **{("lstm", m): "no method prunes LSTM weights; the Linear head alone cannot reach the target" for m in METHODS},
}


def outcome(exc: BaseException) -> tuple[str, str]:
    """("refused", first line) for a ValueError raised by pruning_lib itself (a refusal that names its
    reason), ("CRASH", type and message) for anything else, e.g. an error from inside torch."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = frames and "pruning_lib" in Path(frames[-1].filename).parts
    message = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, ValueError) and own:
        return "refused", message
    return "CRASH", f"{type(exc).__name__}: {message}"


def run_case(net: str, method: str, size: str = "small", target: float = TARGET, seed: int = 0) -> dict:
    """Prune one network with one method; {net, method, status, achieved, seconds, reason}."""
    spec = NETS[net]
    torch.manual_seed(seed)
    model = (spec.small if size == "small" else spec.full)()
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(EXAMPLES, *spec.shape, generator=g), torch.randint(0, CLASSES, (EXAMPLES,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    start = time.perf_counter()
    row = {"net": net, "method": method, "achieved": None, "reason": ""}
    try:
        result = pruning_lib.prune(model, method, target, loader=loader, example_inputs=x[:16], seed=seed)
        with torch.no_grad():
            out = model.eval()(x[:16])
        if out.shape != (16, CLASSES) or not torch.isfinite(out).all():
            row.update(status="CRASH", reason=f"pruned outputs of shape {tuple(out.shape)}, finite: "
                                              f"{bool(torch.isfinite(out).all())}")
        else:
            row.update(status="ok", achieved=result.achieved_param_ratio)
    except Exception as e:  # the matrix records every failure; a crash is what the test forbids
        status, reason = outcome(e)
        row.update(status=status, reason=reason)
    row["seconds"] = time.perf_counter() - start
    return row


def markdown(rows: list[dict]) -> str:
    """The matrix as a Markdown table (network × method; ok cells show the reduction and seconds) and the
    refusals and crashes as a list below it."""
    nets = list(dict.fromkeys(r["net"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["net"], r["method"]): r for r in rows}
    lines = ["| network | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    notes = []
    for n in nets:
        cells = []
        for m in methods:
            r = cell.get((n, m))
            if r is None:
                cells.append("")
            elif r["status"] == "ok":
                cells.append(f"ok {r['achieved']:.2f} ({r['seconds']:.1f} s)")
            else:
                cells.append(r["status"])
                notes.append(f"- {n} / {m}: {r['status']}: {r['reason']}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated, from: " + ", ".join(NETS))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated registered methods")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    nets, methods = args.nets.split(","), args.methods.split(",")
    for n in nets:
        if n not in NETS:
            parser.error(f"--nets: unknown {n!r}, allowed: {', '.join(NETS)}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown {m!r}, allowed: {', '.join(METHODS)}")
    rows = []
    for n in nets:
        for m in methods:
            rows.append(run_case(n, m, args.size, args.target))
            r = rows[-1]
            print(f"{n:20s} {m:22s} {r['status']:8s} {r['seconds']:6.1f} s {r['reason'][:100]}", flush=True)
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
