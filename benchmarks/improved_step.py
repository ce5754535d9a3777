"""Cost of one Improved EigenDamage step against one EigenDamage step on narrow ResNet-32 (CIFAR shape 3x32x32).

EigenDamage step: channel-patch K-FAC from 1024 images (8 batches of 128, true Fisher), eigendecompositions,
scores, threshold search, rebuild. Improved step (one-shot): the same K-FAC, then EKFAC second moments from
per-example gradients of 1024 images (when eigenvalues=ekfac), the subspace (plain or whitened Tucker-2 / HOOI per layer) and the rebuild.
Random images and an untrained network: the timings do not depend on the weights' values. Each variant is timed
`--repeats` times on a fresh copy, each after an untimed warm-up call (benchmarks/timing.py); the table shows the
median. Run it alone (other jobs on the cores distort it).
Usage: python benchmarks/improved_step.py [--device cuda] [--threads 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib.methods.eigen import eigendamage as ed
from pruning_lib.methods.eigen import improved as im
from pruning_lib.methods.eigen.eigendamage import EigenOptions
from pruning_lib.metrics import count_params
from pruning_lib.models import build_model
from pruning_lib.pruner import PruneContext
from timing import timed as median_timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per variant (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    shape = (3, 32, 32)
    model = build_model("resnet32", 1, 3, 10).to(device).eval()
    data = TensorDataset(torch.randn(1024, *shape), torch.randint(0, 10, (1024,)))
    loader = DataLoader(data, batch_size=128)
    params0 = count_params(model)

    def timed(fn) -> tuple[float, dict]:
        """(median seconds over the repeats, the info of the last call), each call on a fresh copy of the model."""
        return median_timed(fn, args.repeats, fresh=lambda: copy.deepcopy(model))

    rows = {}
    rows["eigendamage (K-FAC)"] = timed(lambda net: ed.eigendamage(net, loader, args.target, shape,
                                                                    EigenOptions(num_batches=8),
                                                                    base_params=params0)[1])
    ctx = PruneContext(loader, shape, params0, 0)
    for label, options in [("improved (default): kfac + whitened", dict(eigenvalues="kfac", subspace="whitened")),
                           ("improved: kfac + tucker", dict(eigenvalues="kfac", subspace="tucker")),
                           ("improved: ekfac + whitened", dict(eigenvalues="ekfac", subspace="whitened")),
                           ("improved: ekfac + tucker (the seed's)", dict(eigenvalues="ekfac", subspace="tucker"))]:
        rows[label] = timed(lambda net, o=options: im.prune_improved_eigendamage(
            net, ctx, args.target, num_examples=1024, num_batches=8, steps=1, **o).info)
    ref = rows["eigendamage (K-FAC)"][0]
    print(f"narrow ResNet-32 ({params0:,} params), target {args.target:.0%}, device {device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print("| step | seconds | ratio to EigenDamage | scores (K-FAC + EKFAC) s | subspace + rebuild s |")
    print("|---|---|---|---|---|")
    for label, (sec, info) in rows.items():
        scores = info.get("seconds_scores", info.get("kfac_seconds", float("nan")))
        sub = info.get("seconds_subspace", float("nan"))
        print(f"| {label} | {sec:.2f} | {sec / ref:.2f} | {scores:.2f} | {sub:.2f} |")


if __name__ == "__main__":
    main()
