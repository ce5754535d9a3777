"""Run a pruning sweep from a JSON config:
python main_prune.py --config_path configs/quickstart.json [--smoke] [--seeds 1 2]."""
from __future__ import annotations

import argparse
import sys

from pruning_lib.data import DatasetMissingError
from pruning_lib.experiment import ConfigError, load_config, run, tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config_path", required=True, help="JSON config, e.g. configs/quickstart.json")
    parser.add_argument("--smoke", action="store_true",
                        help="run every method and ratio for a few steps on random tensors of the right shape")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="run these seeds instead of the config's (rows land in the same run folder)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_path)
        if args.seeds:
            cfg.seeds = args.seeds
        df = run(cfg, smoke=args.smoke)
    except (ConfigError, DatasetMissingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for title, table in tables(df).items():
        print(f"\n## {title}\n{table.to_markdown()}")
    print(f"\nresults: {cfg.run_dir}{'_smoke' if args.smoke else ''}/ (results.csv, results.json, tables.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
