"""Pruning speed-up: theoretical (MACs) vs measured CPU latency, narrow ResNet-32 (CIFAR shape), L1 channel
pruning by default or any registered method (`--method`).

    python benchmarks/channel_speedup.py [--repeats-1 50] [--repeats-128 7] [--threads 2] [--round-to 8]
                                         [--fuse-bn] [--channels-last] [--method tucker]

L1 channel pruning at 50 / 70 / 90 % of the parameters removed (the channels physically removed), then the
median forward latency (eval mode, torch.no_grad) at batch 1 and batch 128 against the unpruned network.
Models are timed in interleaved rounds (one forward of each model per round) after a warm-up of every
model, so load from other processes hits all of them alike; the very first forward passes of a process
are much slower (one-time kernel set-up) and are excluded by the warm-up.
Untrained weights: latency depends on the widths, not on the values (data-driven methods score on 256 random
images). Prints a Markdown table.
--round-to keeps widths multiples of it (the channel methods' option); --fuse-bn folds every BatchNorm into the
conv before it (torch.fx.experimental.optimization.fuse, eval mode) and --channels-last stores activations NHWC
(oneDNN's preferred layout), for the unpruned and the pruned models alike, so the ratios compare like with like.
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib.metrics import count_macs, count_params, measure_latency
from pruning_lib.models import build_model
from pruning_lib.pruner import PruneContext
from pruning_lib.registry import METHODS

SHAPE = (3, 32, 32)


def interleaved_latency(models: list, batch: int, rounds: int, warmup: int = 5,
                        channels_last: bool = False) -> list[float]:
    """Median forward time (ms) of each model at `batch`, timed one model after another for `rounds` rounds."""
    kw = {"memory_format": torch.channels_last} if channels_last else {}  # NHWC inputs for NHWC models
    for m in models:
        measure_latency(m, SHAPE, batch, repeats=1, warmup=warmup, **kw)
    times = [[] for _ in models]
    for _ in range(rounds):
        for i, m in enumerate(models):
            times[i].append(measure_latency(m, SHAPE, batch, repeats=1, warmup=0, **kw))
    return [statistics.median(t) for t in times]


def deployed(model, fuse_bn: bool, channels_last: bool):
    """The model as it would be deployed: BatchNorm folded into the convs (torch.fx) and / or NHWC weights."""
    model = copy.deepcopy(model).eval()
    if fuse_bn:
        from torch.fx.experimental.optimization import fuse
        model = fuse(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats-1", type=int, default=50, help="timed runs at batch 1 (median reported)")
    parser.add_argument("--repeats-128", type=int, default=7, help="timed runs at batch 128 (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--round-to", type=int, default=1, help="kept widths multiples of this")
    parser.add_argument("--fuse-bn", action="store_true", help="fold BatchNorm into the convs before timing")
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs")
    parser.add_argument("--method", default="l1", choices=list(METHODS), help="the pruning method timed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_model("resnet32", 1, 3, 10).eval()
    base_params, base_macs = count_params(base), count_macs(base, SHAPE)
    targets = (0.5, 0.7, 0.9)
    data = TensorDataset(torch.randn(256, *SHAPE), torch.randint(0, 10, (256,)))
    ctx = PruneContext(DataLoader(data, batch_size=128), SHAPE, base_params)
    spec = METHODS[args.method]
    options = {"round_to": args.round_to} if args.round_to > 1 else {}
    models = [base] + [spec.fn(copy.deepcopy(base), ctx, t, **{**spec.options, **options}).model.eval()
                       for t in targets]
    timed = [deployed(m, args.fuse_bn, args.channels_last) for m in models]
    lat = {b: interleaved_latency(timed, b, r, channels_last=args.channels_last)
           for b, r in ((1, args.repeats_1), (128, args.repeats_128))}
    print(f"{args.method}, narrow ResNet-32, {base_params:,} params, {base_macs / 1e6:.1f} M MACs; threads={args.threads}; "
          f"round_to={args.round_to}, fuse_bn={args.fuse_bn}, channels_last={args.channels_last}; "
          f"unpruned latency: batch 1 {lat[1][0]:.2f} ms, batch 128 {lat[128][0]:.1f} ms "
          f"(medians of {args.repeats_1} / {args.repeats_128} interleaved rounds)\n")
    print("| removed (params) | params | MACs (M) | theoretical speed-up | batch 1: ms | measured | measured / "
          "theoretical | batch 128: ms | measured | measured / theoretical |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, model in enumerate(models[1:], 1):
        macs = count_macs(model, SHAPE)
        theory = base_macs / macs
        row = [f"{1 - count_params(model) / base_params:.1%}", f"{count_params(model):,}", f"{macs / 1e6:.1f}",
               f"{theory:.2f}x"]
        for b in (1, 128):
            ms = lat[b][k]
            row += [f"{ms:.2f}" if b == 1 else f"{ms:.1f}", f"{lat[b][0] / ms:.2f}x", f"{lat[b][0] / ms / theory:.2f}"]
        print("| " + " | ".join(row) + " |")

if __name__ == "__main__":
    main()
