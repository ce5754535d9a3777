"""A latency target against a parameter target at equal MEASURED latency, from a finished run folder.

    pruning-kit run configs/fashion_mnist_latency.json --jobs 2 --threads 1
    python benchmarks/latency_target.py runs/fashion_mnist_latency

For every method M that also ran as M@latency (`target_kind: "latency"`), each target of M@latency gives a point
(mean measured batch-128 latency over seeds, mean fine-tuned accuracy); M's accuracy at that same measured latency
is read off M's own curve (its targets' mean latency and accuracy, 0 % included) by linear interpolation (empty
outside M's range). Then every point against the other target kind's best point that is no slower, and the
measured / predicted speed-up per method and target (`with_speedups`: mean and std over seeds).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pruning_lib.results import read_rows, results_frame
from pruning_lib.results.tables import percent, with_speedups

SUFFIX = "@latency"


def equal_latency(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, latency target): the latency variant's mean measured ms and accuracy, and the
    parameter-targeted method's accuracy interpolated at the same measured ms."""
    means = df[df["status"] == "ok"].groupby(["method", "target_ratio"])[["latency_ms_b128", "acc_finetuned"]].mean()
    out = []
    for method in sorted({m[:-len(SUFFIX)] for m in df["method"] if m.endswith(SUFFIX)}):
        curve = means.loc[method].sort_values("latency_ms_b128")
        for target, (ms, acc) in means.loc[method + SUFFIX].iterrows():
            if target == 0:
                continue
            inside = curve["latency_ms_b128"].min() <= ms <= curve["latency_ms_b128"].max()
            by_params = np.interp(ms, curve["latency_ms_b128"], curve["acc_finetuned"]) if inside else np.nan
            out.append({"method": method, "latency target": percent(target), "measured ms": round(ms, 2),
                        "accuracy, latency target (%)": round(acc, 2),
                        "accuracy, params target at equal ms (%)": round(by_params, 2),
                        "difference (points)": round(acc - by_params, 2)})
    return pd.DataFrame(out)


def no_slower(df: pd.DataFrame) -> pd.DataFrame:
    """Every (method, target) point of M and of M@latency against the other target kind's best mean accuracy among
    its points with a mean measured latency no higher (none: the other kind has no point as fast)."""
    means = df[df["status"] == "ok"].groupby(["method", "target_ratio"])[["latency_ms_b128", "acc_finetuned"]].mean()
    out = []
    for method in sorted({m[:-len(SUFFIX)] for m in df["method"] if m.endswith(SUFFIX)}):
        for mine, other in ((method, method + SUFFIX), (method + SUFFIX, method)):
            theirs = means.loc[other]
            for target, (ms, acc) in means.loc[mine].iterrows():
                if target == 0:
                    continue
                faster = theirs[(theirs["latency_ms_b128"] <= ms) & (theirs.index > 0)]
                best = faster["acc_finetuned"].idxmax() if len(faster) else None
                out.append({"point": f"{mine} {percent(target)}", "measured ms": round(ms, 2),
                            "accuracy (%)": round(acc, 2),
                            "other kind, best at <= ms": "none" if best is None else f"{other} {percent(best)}",
                            "its ms": None if best is None else round(faster.at[best, "latency_ms_b128"], 2),
                            "its accuracy (%)": None if best is None else round(faster.at[best, "acc_finetuned"], 2)})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if not (args.run_dir / "results.csv").is_file():
        parser.error(f"run_dir: '{args.run_dir}' holds no results.csv (run the config first, see above)")
    df = results_frame(read_rows(args.run_dir / "results.csv"))
    print(equal_latency(df).to_markdown(index=False))
    print("\nagainst the other target kind's best point that is no slower:\n")
    print(no_slower(df).to_markdown(index=False))
    ok = with_speedups(df)
    ok = ok[(ok["status"] == "ok") & (ok["target_ratio"] > 0)]
    ratio = ok.groupby(["method", "target_ratio"])["speedup_vs_predicted"].agg(["mean", "std"]).round(3)
    speedup = ok.groupby(["method", "target_ratio"])["measured_speedup_b128"].mean().round(2)
    print("\nmeasured speed-up and measured / predicted speed-up, batch 128 (mean, std over seeds):\n")
    print(ratio.assign(measured_speedup=speedup).to_markdown())


if __name__ == "__main__":
    main()
