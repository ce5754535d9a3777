"""Cost of the curvature toolkit on narrow ResNet-32 (3x32x32, batch 128), as time and as a ratio to one
plain forward+backward. Random images and labels: the costs do not depend on the values.
Each step: the median of --repeats timed calls, each after an untimed warm-up call (benchmarks/timing.py).
Usage: python benchmarks/curvature.py [--device cuda] [--threads 2] [--repeats 3]"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib.curvature import HessianOperator, compute_kfac, ekfac_correction, spectral_density
from pruning_lib.models import build_model
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per step (median reported)")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model("resnet32", 1, 3, 10).to(device).eval()
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch)
    xd, yd = x.to(device), y.to(device)

    def fwd_bwd():
        model.zero_grad()
        F.cross_entropy(model(xd), yd).backward()

    rows = {}
    rows["plain forward+backward"] = median_seconds(fwd_bwd, args.repeats)
    kfac = {}
    for form in ("channel_patch", "im2col"):
        rows[f"K-FAC pass, {form}"] = median_seconds(
            lambda f=form: kfac.__setitem__(f, compute_kfac(model, loader, form=f, num_batches=1)), args.repeats)
    cp = kfac["channel_patch"]

    def eig_all():
        for lf in cp.values():
            lf._eig = None
            lf.eig()

    rows["eigh of all channel-patch factors"] = median_seconds(eig_all, args.repeats)
    rows[f"EKFAC correction ({args.batch} examples)"] = median_seconds(
        lambda: ekfac_correction(model, cp, loader, num_examples=args.batch), 1)
    op = HessianOperator(model, loader, 1)
    v = torch.randn(op.dim, device=device)
    rows["one Hessian-vector product"] = median_seconds(lambda: op.matvec(v), args.repeats)
    rows["20-step Lanczos spectral density"] = median_seconds(lambda: spectral_density(op, steps=20), 1)
    base = rows["plain forward+backward"]
    print(f"narrow ResNet-32, batch {args.batch}, device {device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} timed calls (EKFAC, Lanczos: 1)\n")
    print("| step | time (s) | ratio to forward+backward |\n|---|---|---|")
    for name, t in rows.items():
        print(f"| {name} | {t:.3f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
