"""One-sided vs two-sided whitening at equal rank, one-shot: every Linear layer of the ViT's blocks truncated to
the same rank by plain SVD, activation-whitened SVD (W A^½, SVD-LLM) and the two-sided whitened SVD
(G^½ W A^½, Improved EigenDamage's subspace), nothing fine-tuned.

    python benchmarks/whitening.py [--config configs/fashion_mnist_vit.json] [--targets 0.5 0.7 0.9] [--seeds 0 1 2]

Per seed: the runner's cached baseline of the config; A = the layer's input second moment, G = its K-FAC
output-gradient factor (true Fisher, "expand" form), both over `--batches` training batches; for a target p, every
block Linear (C_out x d) keeps rank r = round((1 - p)·C_out·d / (C_out + d)), which removes the fraction p of its
weights as a factorised pair, identical for the three factorisations (the classifier, embeddings and norms stay).
Prints test accuracy (%) and test loss, mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pruning_lib.config import load_config  # noqa: E402
from pruning_lib.curvature import compute_kfac  # noqa: E402
from pruning_lib.curvature.activations import input_covariances  # noqa: E402
from pruning_lib.data import DATA_DIR, load_dataset, make_loader  # noqa: E402
from pruning_lib.methods.truncation import FACTORISATIONS, truncations  # noqa: E402
from pruning_lib.models import classifier_of  # noqa: E402
from pruning_lib.train import evaluate, train_baseline  # noqa: E402


def truncated(model: nn.Module, factors: dict, target: float) -> nn.Module:
    """{factorisation: copy of model} with every layer of `factors` replaced by its rank-r truncation."""
    out = {f: copy.deepcopy(model) for f in FACTORISATIONS}
    with torch.no_grad():
        for name, (A, G) in factors.items():
            w = model.get_submodule(name).weight
            c_out, d = w.shape
            rank = max(1, round((1 - target) * c_out * d / (c_out + d)))
            for f, w_r in truncations(w, A, G, rank).items():  # the three at once, each layer's SVDs once
                out[f].get_submodule(name).weight.copy_(w_r.to(w.dtype))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/fashion_mnist_vit.json")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batches", type=int, default=8)
    args = ap.parse_args()
    cfg = load_config(args.config)
    splits = load_dataset(cfg.dataset, cfg.data_root or DATA_DIR, cfg.val_fraction, 0, cfg.train_subset)
    test = make_loader(splits.test, 256)
    results: dict[tuple[str, float], list[dict]] = {}
    for seed in args.seeds:
        base = train_baseline(splits, cfg.model, cfg.width, cfg.baseline_recipe(), seed, torch.device("cpu"),
                              DATA_DIR / "checkpoints", False).model.eval()
        head = classifier_of(base)
        names = [n for n, m in base.named_modules() if isinstance(m, nn.Linear) and m is not head]
        loader = make_loader(splits.train, cfg.score_batch_size, shuffle=True, seed=seed)
        A = input_covariances(base, loader, names, args.batches)
        kfac = compute_kfac(base, loader, fisher="true", num_batches=args.batches, layers=names)
        factors = {n: (A[n], kfac[n].G.double()) for n in names}
        print(f"seed {seed}: unpruned {evaluate(base, test)['acc']:.2f} %", flush=True)
        for target in args.targets:
            for f, m in truncated(base, factors, target).items():
                results.setdefault((f, target), []).append(evaluate(m, test))
                print(f"  {target:.0%} {f:13s} acc {results[(f, target)][-1]['acc']:.2f} "
                      f"loss {results[(f, target)][-1]['loss']:.3f}", flush=True)
    fmt = lambda v: f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"  # noqa: E731
    for key, label in (("acc", "test accuracy (%)"), ("loss", "test loss")):
        print(f"\n{label}, one-shot, equal rank per layer\n\n| factorisation | "
              + " | ".join(f"{t:.0%}" for t in args.targets) + " |\n|:--|" + "--:|" * len(args.targets))
        for f in FACTORISATIONS:
            print(f"| {f} | " + " | ".join(fmt([r[key] for r in results[(f, t)]]) for t in args.targets) + " |")


if __name__ == "__main__":
    main()
