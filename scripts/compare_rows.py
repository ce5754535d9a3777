"""Rows that must not change under a refactor: run part of a config with the pruning_lib on PYTHONPATH and write
its rows without the timing columns, to compare two checkouts byte for byte.

    git worktree add /tmp/before <old commit>
    for w in /tmp/before $PWD; do (cd $w && OMP_NUM_THREADS=1 PYTHONPATH=$w python scripts/compare_rows.py \\
        --config configs/quickstart.json --methods l1,eigendamage --ratios 0.5,0.9 --seeds 0 \\
        --out /tmp/rows_$(basename $w)); done
    cmp /tmp/rows_before/nontiming.csv /tmp/rows_$(basename $PWD)/nontiming.csv

Each run trains its own baselines (checkpoints under --out), so the baseline code is compared too. Use the same
thread count for both runs: torch's reductions, and so the last digits, depend on it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pruning_lib.config import load_config
from pruning_lib.experiment import run


def main(argv: list[str] | None = None) -> int:
    """Run the chosen methods x ratios x seeds of --config into --out; write --out/nontiming.csv (sorted rows, no
    `seconds*` / `latency*` columns)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--methods", required=True, help="comma-separated entries of the config (name or name@label)")
    p.add_argument("--ratios", required=True, help="comma-separated targets, e.g. 0.5,0.9")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--out", required=True, help="a folder for the run, its checkpoints and nontiming.csv")
    a = p.parse_args(argv)
    out = Path(a.out)
    cfg = load_config(a.config, exp_name="compare_rows", output_dir=str(out), methods=a.methods.split(","),
                      ratios=[float(r) for r in a.ratios.split(",")], seeds=[int(s) for s in a.seeds.split(",")],
                      checkpoint_dir=str(out / "checkpoints"))
    df = run(cfg, progress=False)
    keep = [c for c in df.columns if not c.startswith(("seconds", "latency"))]
    df[keep].sort_values(["method", "target_ratio", "seed"]).to_csv(out / "nontiming.csv", index=False)
    print(f"{len(df)} rows -> {out / 'nontiming.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
