"""Time of the whole EigenDamage step on narrow ResNet-32 (CIFAR shape 3x32x32), CPU by default.

Steps: channel-patch K-FAC factors from 1024 images (8 batches of 128, true Fisher), eigendecompositions and
rotation / scoring of every layer, the threshold search, the rebuild. Random images and an untrained network:
the timings do not depend on the weights' values. Each stage: the median of --repeats timed calls (default 1),
each after an untimed warm-up call (benchmarks/timing.py; the rebuild on a fresh copy of the network each time).
Usage: python benchmarks/eigendamage.py [--device cuda] [--repeats 1]
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib.curvature import compute_kfac
from pruning_lib.methods.eigen import basis
from pruning_lib.methods.eigen import rebuild as rb
from pruning_lib.methods.eigen import select as sel
from pruning_lib.metrics import count_macs, count_params, layer_pixels
from pruning_lib.models import build_model
from timing import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per stage (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    shape = (3, 32, 32)
    model = build_model("resnet32", 1, 3, 10).to(device)
    data = TensorDataset(torch.randn(1024, *shape), torch.randint(0, 10, (1024,)))
    loader = DataLoader(data, batch_size=128)
    params0, macs0 = count_params(model), count_macs(model, shape)
    names = basis.prunable_layers(model)

    r = args.repeats

    def eigh_all() -> dict:
        for n in names:  # drop the cached eigendecompositions, so every call computes them
            kfac[n]._eig = kfac[n]._weight_eig = None
        return {n: kfac[n].weight_eig() for n in names}

    def scores() -> list:
        pixels = layer_pixels(model, names, shape)
        return [basis.layer_scores(model.get_submodule(n), n, bases[n], pixels[n]) for n in names]

    t = {}
    t["K-FAC factors (1024 images)"], kfac = timed(
        lambda: compute_kfac(model, loader, form="channel_patch", fisher="true", num_batches=8, layers=names), r)
    t["eigendecompositions (eigh)"], bases = timed(eigh_all, r)
    t["rotation + direction scores"], layers = timed(scores, r)
    t["threshold search"], (threshold, got) = timed(lambda: sel.search_threshold(layers, args.target, 0.9, params0,
                                                                               params0), r)
    plan = sel.plan_layers(layers, threshold, 0.9)
    t["rebuild"], pruned = timed(lambda net: rb.rebuild_layers(net, layers, plan), r, fresh=lambda: copy.deepcopy(model))
    total = sum(t.values())

    print(f"EigenDamage step, narrow ResNet-32, {device}, {torch.get_num_threads()} threads, "
          f"{len(names)} prunable layers, target {args.target:.0%}, median of {r} timed call(s) per stage")
    print("| step | seconds | share |\n|---|---|---|")
    for k, v in t.items():
        print(f"| {k} | {v:.2f} | {v / total:.0%} |")
    print(f"| **whole step** | **{total:.2f}** | 100% |")
    params1, macs1 = count_params(pruned), count_macs(pruned, shape)
    print(f"\nparams {params0:,} -> {params1:,} (removed {1 - params1 / params0:.1%}, search said {got:.1%}); "
          f"MACs {macs0 / 1e6:.1f} M -> {macs1 / 1e6:.1f} M (GFLOPs {2 * macs0 / 1e9:.3f} -> {2 * macs1 / 1e9:.3f})")


if __name__ == "__main__":
    main()
