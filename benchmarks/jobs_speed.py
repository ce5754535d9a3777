"""Rows per minute of a sweep as one process with T threads against N processes with one thread each
(`pruning-kit run --jobs N`), on a subset of the Fashion-MNIST ranking benchmark, measured in one session.

    python benchmarks/jobs_speed.py [--seeds 0 1] [--methods l1 obs eigendamage svd] [--ratios 0.5 0.9]

Both runs start from an empty baseline cache of their own (so each trains its baselines) and an empty run folder
under build/jobs_speed/. Prints a Markdown table: layout, wall minutes, rows, rows per minute, and where a row's
time goes (mean seconds of each stage per method, from the rows themselves). Run it on a quiet machine: the two
layouts are timed one after the other, never side by side.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RANKING = ROOT / "configs" / "fashion_mnist_ranking.json"
STAGES = ["seconds_prune", "seconds_bn", "seconds_finetune", "seconds_eval"]


def subset(tag: str, seeds: list[int], methods: list[str], ratios: list[float], out: Path) -> Path:
    """The ranking config cut to these seeds, methods and ratios, with its own run folder and baseline cache."""
    cfg = json.loads(RANKING.read_text())
    cfg.update(exp_name=f"jobs_speed_{tag}", seeds=seeds, methods=methods, ratios=ratios,
               output_dir=str(out / "runs"), checkpoint_dir=str(out / f"checkpoints_{tag}"))
    cfg["method_options"] = {m: o for m, o in cfg["method_options"].items() if m in methods}
    path = out / f"{tag}.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=["l1", "obs", "eigendamage", "svd"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--cores", type=int, default=2, help="threads of the one process = number of workers")
    args = parser.parse_args()
    out = ROOT / "build" / "jobs_speed"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    layouts = {f"1x{args.cores}": ["--threads", str(args.cores)],
               f"{args.cores}x1": ["--jobs", str(args.cores), "--threads", "1"]}
    lines, stages = [], []
    for tag, flags in layouts.items():
        path = subset(tag, args.seeds, args.methods, args.ratios, out)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pruning_lib.cli", "run", str(path), "--quiet", *flags], check=True)
        minutes = (time.perf_counter() - t0) / 60
        df = pd.read_csv(out / "runs" / f"jobs_speed_{tag}" / "results.csv")
        lines.append(f"| {tag} | {minutes:.2f} | {len(df)} | {len(df) / minutes:.2f} |")
        stages.append(df.groupby("method")[STAGES].mean().round(2).add_prefix(f"{tag} ").T)
    print("| processes x threads | wall min (baselines included) | rows | rows / min |\n|---|---|---|---|")
    print("\n".join(lines))
    print("\nmean seconds per row, by stage and method:\n")
    print(pd.concat(stages).to_markdown())


if __name__ == "__main__":
    main()
