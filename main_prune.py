"""Run a pruning sweep from a JSON config:
python main_prune.py --config_path configs/quickstart.json [--smoke] [--seeds 1 2] [--shard I/N]
python main_prune.py --merge runs/<exp_name>
torchrun --nproc_per_node=N main_prune.py --config_path ...   (N processes, DistributedDataParallel)

Exit codes: 0 every row finished; 2 bad input (config, dataset, results or checkpoint file; one line on
stderr naming what is wrong; the config and the data are checked before any work, a cached baseline when
its seed comes up); 3 the sweep ran but some targets could not be reached (rows marked n/a). Under torchrun
the launcher reports any non-zero code of a worker as 1."""
from __future__ import annotations

import argparse
import re
import sys

from pruning_lib import distributed
from pruning_lib.config import ConfigError, load_config
from pruning_lib.data import DatasetError, DatasetMissingError
from pruning_lib.experiment import merge_shards, run
from pruning_lib.files import DamagedFileError
from pruning_lib.results import ResultsFileError, tables

BAD_INPUT = (ConfigError, DatasetMissingError, DatasetError, DamagedFileError, ResultsFileError)


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise argparse.ArgumentTypeError(f"'{text}' is not I/N with 0 <= I < N (e.g. 0/4)")
    return int(m.group(1)), int(m.group(2))


def _print_tables(df) -> None:
    if not len(df):
        return
    for title, table in tables(df).items():
        print(f"\n## {title}\n{table.to_markdown()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config_path", help="JSON config, e.g. configs/quickstart.json")
    what.add_argument("--merge", metavar="RUN_DIR",
                      help="combine RUN_DIR/results.shard-*.csv into RUN_DIR/results.csv and rewrite the tables")
    parser.add_argument("--smoke", action="store_true",
                        help="run every method and ratio for a few steps on random tensors of the right shape")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="run these seeds instead of the config's (rows land in the same run folder)")
    parser.add_argument("--shard", type=_shard, metavar="I/N",
                        help="run only share I of N of the rows (0 <= I < N), e.g. a SLURM array task; "
                             "then --merge the run folder")
    args = parser.parse_args(argv)
    distributed.init_from_env()
    main_rank = distributed.is_main()
    try:
        if args.merge:
            df = distributed.on_main(merge_shards, args.merge)
            if main_rank:
                _print_tables(df)
                print(f"\nmerged into {args.merge}/results.csv ({len(df)} rows)")
            return 0
        cfg = load_config(args.config_path, **({"seeds": args.seeds} if args.seeds else {}))
        df = run(cfg, smoke=args.smoke, shard=args.shard)
    except BAD_INPUT as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    if not main_rank:
        return 0
    _print_tables(df)
    where = cfg.run_dir.with_name(cfg.run_dir.name + "_smoke") if args.smoke else cfg.run_dir
    print(f"\nresults: {where}/ (results.csv, results.json, tables.md)" if args.shard is None else
          f"\nresults: {where}/results.shard-{args.shard[0]}-of-{args.shard[1]}.csv (then: --merge {where})")
    mine = df[df["method"].isin(cfg.methods) & df["target_ratio"].isin([float(r) for r in cfg.ratios])
              & df["seed"].isin(cfg.seeds)]
    failed = mine[mine["status"] == "failed"]
    if len(failed):
        print(f"{len(failed)} row(s) failed (target cannot be reached; n/a in the tables):", file=sys.stderr)
        for r in failed.itertuples():
            print(f"  {r.method} {r.target_ratio:.0%} seed {r.seed}: {r.error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
