"""Run a pruning sweep from a JSON config:
python main_prune.py --config_path configs/quickstart.json [--smoke] [--seeds 1 2].

Exit codes: 0 every row finished; 2 bad input (config, dataset or results file; one line on stderr naming
what is wrong, before any work); 3 the sweep ran but some targets could not be reached (rows marked n/a)."""
from __future__ import annotations

import argparse
import sys

from pruning_lib.config import ConfigError, load_config
from pruning_lib.data import DatasetError, DatasetMissingError
from pruning_lib.experiment import run
from pruning_lib.files import DamagedFileError
from pruning_lib.results import ResultsFileError, tables

BAD_INPUT = (ConfigError, DatasetMissingError, DatasetError, DamagedFileError, ResultsFileError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_path", required=True, help="JSON config, e.g. configs/quickstart.json")
    parser.add_argument("--smoke", action="store_true",
                        help="run every method and ratio for a few steps on random tensors of the right shape")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="run these seeds instead of the config's (rows land in the same run folder)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_path, **({"seeds": args.seeds} if args.seeds else {}))
        df = run(cfg, smoke=args.smoke)
    except BAD_INPUT as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for title, table in tables(df).items():
        print(f"\n## {title}\n{table.to_markdown()}")
    print(f"\nresults: {cfg.run_dir}{'_smoke' if args.smoke else ''}/ (results.csv, results.json, tables.md)")
    mine = df[df["method"].isin(cfg.methods) & df["target_ratio"].isin([float(r) for r in cfg.ratios])]
    failed = mine[mine["status"] == "failed"]
    if len(failed):
        print(f"{len(failed)} row(s) failed (target cannot be reached; n/a in the tables):", file=sys.stderr)
        for r in failed.itertuples():
            print(f"  {r.method} {r.target_ratio:.0%} seed {r.seed}: {r.error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
