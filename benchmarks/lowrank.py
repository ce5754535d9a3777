"""Low-rank factorisation on ResNet-32 (CIFAR shape 3x32x32), CPU by default.

1. Decomposition time per layer type: one 3x3 conv of each stage of narrow (16/32/64) and wide (64/128/256)
   ResNet-32, each factorised to half its parameters: spectra (SVD of the unfoldings + EVBMF), truncated SVD,
   Tucker-2 (HOOI, 10 sweeps, the registry default), CP (ALS, 50 iterations, the registry default).
   Plus the whole `svd` / `tucker` / `cp` step on the narrow net at 50 %.
2. Measured CPU latency speed-up (median forward time of 30, batch 32, unpruned net re-timed next to each
   factorised one) vs theoretical speed-up (MACs) of the
   narrow net factorised to 50 / 70 / 90 % parameter reduction (budget rule).
Random weights: timings do not depend on the weights' values, so CP runs 5 ALS iterations in part 2.
One thread by default: on the shared 2-core machine, 2-thread LAPACK calls on these small matrices stalled
25-300x under load (CP-ALS of a 64x64x3x3 kernel: 1.0 s with 1 thread, 24 s with 2).
Decomposition times: the median of --repeats timed calls (default 1), each after an untimed warm-up call
(benchmarks/timing.py). Usage: python benchmarks/lowrank.py [--device cuda] [--threads 1] [--no-wide] [--repeats 1]
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from pruning_lib.methods import lowrank as lr
from pruning_lib.metrics import count_macs, count_params, measure_latency
from pruning_lib.models import build_model
from pruning_lib.pruner import PruneContext
from timing import median_seconds

SHAPE = (3, 32, 32)


def half_ranks(info: lr.LayerInfo) -> list[int]:
    """Equal ranks per unfolding whose factorised form has about half the layer's parameters."""
    r = max(r for r in range(1, min(info.full_ranks) + 1)
            if lr.factorised_cost(info, [r] * len(info.full_ranks))[0] <= info.params / 2)
    return [r] * len(info.full_ranks)


def layer_times(width: int, device: torch.device, repeats: int = 1) -> list[str]:
    """Markdown rows: one 3x3 conv per stage, time of each decomposition at half the layer's parameters."""
    model = build_model("resnet32", width, 3, 10).to(device)
    names = ["layer1.1.conv1", "layer2.1.conv1", "layer3.1.conv1"]
    rows = []
    timed = lambda fn: median_seconds(fn, repeats)  # noqa: E731
    for name in names:
        conv = model.get_submodule(name)
        sub = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(conv.out_channels, 10)).to(device)
        hw = 32 // conv.stride[0] // (2 ** names.index(name))
        t_spec = timed(lambda: lr.analyse(sub, (conv.in_channels, hw, hw), "tucker"))
        infos = {f: lr.analyse(sub, (conv.in_channels, hw, hw), f)[0] for f in lr.DECOMPOSITIONS}
        ranks = {f: half_ranks(infos[f]) for f in lr.DECOMPOSITIONS}
        t = {"svd": timed(lambda: lr.factorise_layer(infos["svd"], ranks["svd"])),
             "tucker": timed(lambda: lr.factorise_layer(infos["tucker"], ranks["tucker"], hooi_iters=10)),
             "cp": timed(lambda: lr.factorise_layer(infos["cp"], ranks["cp"], cp_iters=50))}
        rows.append(f"| {'wide' if width > 1 else 'narrow'} {name} | {tuple(conv.weight.shape)} | {t_spec:.3f} | "
                    f"{t['svd']:.3f} (r={ranks['svd'][0]}) | {t['tucker']:.3f} (r={ranks['tucker'][0]}) | "
                    f"{t['cp']:.2f} (R={lr.cp_rank(infos['cp'], ranks['cp'])}) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--no-wide", action="store_true", help="skip the wide ResNet-32 layers")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per decomposition (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    print(f"Decomposition time per layer (s), {device}, {torch.get_num_threads()} threads, half the layer's params")
    print("| layer | weight shape | spectra + VBMF | SVD | Tucker-2 (HOOI x10) | CP (ALS x50) |\n|---|---|---|---|---|---|")
    for width in (1,) if args.no_wide else (1, 4):
        print("\n".join(layer_times(width, device, args.repeats)))

    base = build_model("resnet32", 1, 3, 10).to(device).eval()
    params0, macs0 = count_params(base), count_macs(base, SHAPE)
    ctx = PruneContext(None, SHAPE, params0)
    print(f"\nWhole step on narrow ResNet-32 at 50 % ({params0:,} params), seconds: ranks (spectra, VBMF, fit) + decompose")
    print("| method | ranks | decompose | layers factorised |\n|---|---|---|---|")
    for method in lr.DECOMPOSITIONS:
        res = lr.lowrank_prune(copy.deepcopy(base), ctx, 0.5, method)
        done = sum(r is not None for r in res.info["ranks"].values())
        print(f"| {method} | {res.info['seconds_ranks']:.2f} | {res.info['seconds_decompose']:.2f} | "
              f"{done}/{len(res.info['ranks'])} |")

    lat0 = measure_latency(base, SHAPE, args.batch, repeats=30)
    print(f"\nLatency, narrow ResNet-32, batch {args.batch}, {device}: unpruned {lat0:.1f} ms, {macs0 / 1e6:.1f} M MACs")
    print("| method | target | params removed | MACs (M) | theoretical speed-up | measured speed-up | ratio |")
    print("|---|---|---|---|---|---|---|")
    for method in lr.DECOMPOSITIONS:
        for target in (0.5, 0.7, 0.9):
            res = lr.lowrank_prune(copy.deepcopy(base), ctx, target, method, hooi_iters=1, cp_iters=5)
            model = res.model.eval()
            macs = count_macs(model, SHAPE)
            lat = measure_latency(model, SHAPE, args.batch, repeats=30)
            lat_base = measure_latency(base, SHAPE, args.batch, repeats=30)  # re-measured next to it: load drifts
            theory, measured = macs0 / macs, lat_base / lat
            print(f"| {method} | {target:.0%} | {1 - count_params(model) / params0:.3f} | {macs / 1e6:.1f} | "
                  f"{theory:.2f}x | {measured:.2f}x | {measured / theory:.2f} |")


if __name__ == "__main__":
    main()
