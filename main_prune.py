"""Run a pruning sweep from a JSON config (the alias of `pruning-kit run` / `pruning-kit merge`):
python main_prune.py --config_path configs/quickstart.json [--smoke] [--seeds 1 2] [--shard I/N | --jobs N] [--threads T]
python main_prune.py --merge runs/<exp_name>
torchrun --nproc_per_node=N main_prune.py --config_path ...   (N processes, DistributedDataParallel)

Exit codes: 0 every row finished; 2 bad input (config, dataset, results or checkpoint file; one line on
stderr naming what is wrong; the config and the data are checked before any work, a cached baseline when
its seed comes up); 3 the sweep ran but some targets could not be reached (rows marked n/a). Under torchrun
the launcher reports any non-zero code of a worker as 1."""
from __future__ import annotations

import argparse
import sys

from pruning_lib import cli


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
    parser.add_argument("--shard", metavar="I/N",
                        help="run only share I of N of the rows (0 <= I < N), e.g. a SLURM array task; "
                             "then --merge the run folder")
    parser.add_argument("--jobs", metavar="N", help="N worker processes on this machine (pruning-kit run --jobs)")
    parser.add_argument("--threads", metavar="T", help="torch threads per process (rows depend on it)")
    args = parser.parse_args(argv)
    if args.merge:
        return cli.main(["merge", args.merge])
    return cli.main(["run", args.config_path, *(["--smoke"] if args.smoke else []),
                     *(["--seeds", *map(str, args.seeds)] if args.seeds else []),
                     *(["--shard", args.shard] if args.shard else []),
                     *(["--jobs", args.jobs] if args.jobs else []), *(["--threads", args.threads] if args.threads else [])])


if __name__ == "__main__":
    sys.exit(main())
