"""How well a per-layer latency table (pruning_lib.latency) predicts the measured latency of channel-pruned nets,
and what a latency target buys against a parameter target, on this machine's CPU.

    python benchmarks/latency_prediction.py [--threads 2] [--nets resnet8 resnet18 mobilenet_v2]

For each net (resnet8 on Fashion-MNIST's 1x28x28 at batch 128; torchvision ResNet-18 and MobileNetV2 on 3x64x64
at batch 32) the table is measured once on the unpruned net (cached under data/latency/), then L1 channel pruning
removes 50 / 70 / 90 % of the parameters (target_kind params) or of the predicted latency (target_kind latency).
Each row: parameters removed, measured and predicted milliseconds, their ratio, and the measured / predicted
speed-up. Untrained weights: latency depends on the widths, not on the values. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import copy

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib
from pruning_lib.latency import measure_model_ms, measure_table
from pruning_lib.metrics import count_params
from pruning_lib.pruner import TargetUnreachable
from pruning_lib.models import build_model

NETS = {
    "resnet8": (lambda: build_model("resnet8", 1, 1, 10, 28), (1, 28, 28), 128),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 64, 64), 32),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10), (3, 64, 64), 32),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), eval mode, median of blocked repeats\n")
    print("| net | target kind | target | params removed | measured ms | predicted ms | predicted / measured "
          "| measured speed-up | predicted speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.nets:
        build, shape, batch = NETS[name]
        torch.manual_seed(0)
        dense = build().eval()
        table = measure_table(dense, shape, batch, args.threads)
        dense_ms = measure_model_ms(dense, shape, batch, args.threads)
        dense_pred = table.predict()
        print(f"| {name} | - | 0 % | 0.000 | {dense_ms:.2f} | {dense_pred:.2f} | {dense_pred / dense_ms:.3f} | 1.00 | 1.00 |")
        x = torch.randn(64, *shape)
        loader = DataLoader(TensorDataset(x, torch.randint(0, 10, (64,))), batch_size=32)
        for kind in ("params", "latency"):
            for target in args.targets:
                try:
                    r = pruning_lib.prune(copy.deepcopy(dense), "l1", target, loader=loader, target_kind=kind,
                                          latency_batch=batch)
                except TargetUnreachable as e:
                    print(f"| {name} | {kind} | {target:.0%} | unreachable ({str(e)[:60]}) | | | | | |")
                    continue
                ms = measure_model_ms(r.model.eval(), shape, batch, args.threads)
                pred = table.predict_model(r.model)
                removed = 1 - count_params(r.model) / count_params(dense)
                print(f"| {name} | {kind} | {target:.0%} | {removed:.3f} | {ms:.2f} | {pred:.2f} | {pred / ms:.3f} | "
                      f"{dense_ms / ms:.2f} | {dense_pred / pred:.2f} |", flush=True)


if __name__ == "__main__":
    main()
