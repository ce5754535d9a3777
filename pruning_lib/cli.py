"""The `pruning-kit` command line.

  pruning-kit run CONFIG [--smoke] [--seeds S ...] [--shard I/N | --jobs N] [--threads T]
                                                                   a config sweep (main_prune.py is its alias)
  pruning-kit merge RUN_DIR                                        combine the shards of a run folder
  pruning-kit methods [NAME]                                       the registry: options, defaults, allowed values
  pruning-kit support                                              which method works on which network
  pruning-kit prune --model torchvision:resnet18 --weights FILE --method l1 --target 0.5 --data digits --out m.pt2

Exit codes: 0 done; 2 bad input (one line on stderr naming the argument or field, found before any work);
3 a sweep ran but some targets could not be reached (rows marked n/a)."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

BAD_INPUT_CODE, UNREACHED_CODE = 2, 3
MODEL_SOURCES = ("torchvision", "timm", "kit")
OUT_SUFFIXES = (".pt2", ".onnx")


class BadInput(Exception):
    """A wrong argument: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line and exit code 2 (its usage text stays behind --help)."""

    def error(self, message: str) -> None:
        raise BadInput(f"{self.prog}: {message}")


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise argparse.ArgumentTypeError(f"'{text}' is not I/N with 0 <= I < N (e.g. 0/4)")
    return int(m.group(1)), int(m.group(2))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer >= 1")
    return int(text)


def _print_tables(df) -> None:
    from .results import tables
    for title, table in (tables(df).items() if len(df) else []):
        print(f"\n## {title}\n{table.to_markdown()}")


def sweep(config_path: str, smoke: bool = False, seeds: list[int] | None = None,
          shard: tuple[int, int] | None = None, jobs: int = 1, threads: int | None = None,
          progress: bool = True) -> int:
    """Run a config's sweep (pruning_lib.experiment.run, or pruning_lib.jobs.run_jobs with jobs > 1) with `threads`
    torch threads per process (None: torch's default in one process, the cores shared among the jobs), print its
    tables; the exit code (module docstring). Under torchrun `main` has joined the process group first."""
    import torch

    from . import distributed
    from .config import load_config
    from .experiment import run
    from .jobs import run_jobs
    if jobs > 1 and shard is not None:
        raise BadInput("run: --jobs splits the sweep itself; leave out --shard (or run each shard with --jobs 1)")
    if jobs > 1 and distributed.is_distributed():
        raise BadInput("run: --jobs starts its own processes; under torchrun leave it out")
    cfg = load_config(config_path, **({"seeds": seeds} if seeds else {}))
    if jobs > 1:
        df = run_jobs(cfg, config_path, jobs, threads, smoke, seeds, progress)
    else:
        if threads:
            torch.set_num_threads(threads)
        df = run(cfg, smoke=smoke, shard=shard, progress=progress)
    if not distributed.is_main():
        return 0
    _print_tables(df)
    where = cfg.run_dir.with_name(cfg.run_dir.name + "_smoke") if smoke else cfg.run_dir
    print(f"\nresults: {where}/ (results.csv, results.json, tables.md)" if shard is None else
          f"\nresults: {where}/results.shard-{shard[0]}-of-{shard[1]}.csv (then: merge {where})")
    mine = df[df["method"].isin(cfg.methods) & df["target_ratio"].isin([float(r) for r in cfg.ratios])
              & df["seed"].isin(cfg.seeds)]
    failed = mine[mine["status"] == "failed"]
    if len(failed):
        print(f"{len(failed)} row(s) failed (target cannot be reached; n/a in the tables):", file=sys.stderr)
        for r in failed.itertuples():
            print(f"  {r.method} {r.target_ratio:.0%} seed {r.seed}: {r.error}", file=sys.stderr)
        return UNREACHED_CODE
    return 0


def merge(run_dir: str) -> int:
    """Merge a run folder's shard files (experiment.merge_shards) and print its tables."""
    from . import distributed
    from .experiment import merge_shards
    df = distributed.on_main(merge_shards, run_dir)
    if distributed.is_main():
        _print_tables(df)
        print(f"\nmerged into {run_dir}/results.csv ({len(df)} rows)")
    return 0


def methods_text(name: str | None = None) -> str:
    """Every registered method (or the one named): family, summary, when it reads data, and each option with its
    default and allowed values (read from the registry, so it cannot drift)."""
    from .registry import METHODS
    if name is not None and name not in METHODS:
        raise BadInput(f"methods: unknown {name!r}, allowed: {', '.join(METHODS)}")
    lines = []
    for n, m in METHODS.items():
        if name not in (None, n):
            continue
        data = m.data_reason()
        lines.append(f"{n} ({m.family}): {m.summary}" + (f"\n  reads data: {data}" if data else ""))
        for option, default in m.options.items():
            allowed = m.choices.get(option)
            lines.append(f"  {option} = {json.dumps(default)}" + (f"  ({' | '.join(allowed)})" if allowed else ""))
    return "\n".join(lines)


def support_text() -> str:
    """The support matrix page (docs/guide/support_matrix.md of the checkout)."""
    from .notebook import kit_root
    path = kit_root() / "docs" / "guide" / "support_matrix.md"
    if not path.is_file():
        raise BadInput(f"support: {path} not found (the support matrix ships with the checkout, not the package)")
    return path.read_text(encoding="utf-8")


def _option(text: str) -> tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (VALUE in JSON: 3, 0.1, true, \"sum\")")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string: --option normalize=mean


def build_user_model(spec: str, num_classes: int, in_channels: int, image_size: int):
    """A model from "torchvision:NAME" (torchvision.models.get_model), "timm:NAME" (timm.create_model) or
    "kit:NAME" (pruning_lib.models.build_model), randomly initialised (no download)."""
    source, _, name = spec.partition(":")
    if source not in MODEL_SOURCES or not name:
        raise BadInput(f"--model: {spec!r} is not SOURCE:NAME with SOURCE one of {', '.join(MODEL_SOURCES)} "
                       "(e.g. torchvision:resnet18)")
    try:
        if source == "torchvision":
            import torchvision
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if source == "timm":
            import timm
            return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
        from .models import build_model
        return build_model(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    except (ValueError, RuntimeError, KeyError) as e:
        raise BadInput(f"--model: {spec!r}: {str(e).splitlines()[0]}") from None


def prune_file(args: argparse.Namespace) -> int:
    """`pruning-kit prune`: every argument checked first, then the model built, its weights loaded, pruned with
    pruning_lib.prune on the dataset's training split, and exported (torch.export .pt2 or ONNX)."""
    import torch

    from .api import prune
    from .data import DATASETS, load_dataset, make_loader
    from .export import export_onnx, export_program, save_program
    from .registry import METHODS
    if args.method not in METHODS:
        raise BadInput(f"--method: unknown {args.method!r}, allowed: {', '.join(METHODS)}")
    options = dict(args.option or [])
    try:
        METHODS[args.method].check(options)
    except ValueError as e:
        raise BadInput(f"--option {e}") from None
    if not 0 <= args.target < 1:
        raise BadInput(f"--target: {args.target} is outside [0, 1) (the fraction of parameters removed)")
    if args.data not in DATASETS:
        raise BadInput(f"--data: unknown {args.data!r}, allowed: {', '.join(DATASETS)}")
    out = Path(args.out)
    if out.suffix not in OUT_SUFFIXES or not out.parent.is_dir():
        raise BadInput(f"--out: {args.out!r} must end in {' or '.join(OUT_SUFFIXES)} in an existing folder")
    if args.weights and not Path(args.weights).is_file():
        raise BadInput(f"--weights: {args.weights!r} is not a file")
    try:
        splits = load_dataset(args.data)
    except (ValueError, OSError) as e:
        raise BadInput(f"--data: {str(e).splitlines()[0]}") from None
    model = build_user_model(args.model, splits.num_classes, splits.in_channels, splits.image_size)
    if args.weights:
        try:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except (RuntimeError, ValueError, KeyError, AttributeError) as e:
            raise BadInput(f"--weights: {args.weights!r} does not fit {args.model} ({str(e).splitlines()[0]})") from None
    loader = make_loader(splits.train, args.batch_size, shuffle=True, seed=args.seed)
    example = next(iter(loader))[0][:2]
    try:
        with torch.no_grad():
            model.eval()(example)
    except RuntimeError as e:
        raise BadInput(f"--model: {args.model} does not run on {args.data}'s inputs of shape {tuple(example.shape[1:])} "
                       f"({str(e).splitlines()[0]})") from None
    result = prune(model, args.method, args.target, loader=loader, seed=args.seed, **options)
    if out.suffix == ".pt2":
        save_program(export_program(model, (example,), dynamic_batch=True), out)
    else:
        export_onnx(model, (example,), out)
    print(f"{args.method}: removed {result.achieved_param_ratio:.1%} of the parameters, "
          f"{result.achieved_flops / 1e6:.2f} MFLOPs per example; wrote {out}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of `pruning-kit` and its subcommands."""
    p = _Parser(prog="pruning-kit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a config sweep (see docs/reference/config.md)")
    run.add_argument("config", help="JSON config, e.g. configs/quickstart.json")
    run.add_argument("--smoke", action="store_true", help="every method and ratio for a few steps on random tensors")
    run.add_argument("--seeds", type=int, nargs="+", help="these seeds instead of the config's")
    run.add_argument("--shard", type=_shard, metavar="I/N", help="share I of N of the rows; then merge the folder")
    run.add_argument("--jobs", type=_positive, default=1, metavar="N",
                     help="N worker processes on this machine, one progress bar, shards merged at the end")
    run.add_argument("--threads", type=_positive, metavar="T",
                     help="torch threads per process (rows depend on it; default: the cores shared by the jobs)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    mg = sub.add_parser("merge", help="combine RUN_DIR/results.shard-*.csv into RUN_DIR/results.csv")
    mg.add_argument("run_dir")
    me = sub.add_parser("methods", help="the registered methods with their options")
    me.add_argument("name", nargs="?")
    sub.add_parser("support", help="the support matrix: which method works on which network")
    pr = sub.add_parser("prune", help="prune a model file and export it")
    pr.add_argument("--model", required=True, help="torchvision:NAME | timm:NAME | kit:NAME")
    pr.add_argument("--weights", help="a state dict file (torch.save(model.state_dict(), FILE)); none: random")
    pr.add_argument("--method", required=True)
    pr.add_argument("--target", type=float, required=True, help="fraction of the parameters removed, in [0, 1)")
    pr.add_argument("--data", required=True, help="a kit dataset whose training split scores / calibrates")
    pr.add_argument("--out", required=True, help="FILE.pt2 (torch.export) or FILE.onnx")
    pr.add_argument("--option", type=_option, action="append", metavar="KEY=VALUE", help="a method option")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pruning-kit` console script; returns the exit code."""
    from .config import ConfigError
    from .data import DatasetError, DatasetMissingError
    from .files import DamagedFileError
    from .jobs import WorkerFailed
    from .results import ResultsFileError
    from . import distributed
    bad = (BadInput, ConfigError, DatasetMissingError, DatasetError, DamagedFileError, ResultsFileError)
    main_rank = True
    try:
        args = parser().parse_args(argv)
        if args.command in ("run", "merge"):  # under torchrun: every rank joins, rank 0 alone reports
            distributed.init_from_env()
            main_rank = distributed.is_main()
            try:
                return (sweep(args.config, args.smoke, args.seeds, args.shard, args.jobs, args.threads,
                              not args.quiet) if args.command == "run"
                        else merge(args.run_dir))
            finally:
                distributed.shutdown()
        if args.command == "methods":
            print(methods_text(args.name))
        elif args.command == "support":
            print(support_text())
        else:
            return prune_file(args)
        return 0
    except bad as e:
        if main_rank:  # under torchrun: once
            print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT_CODE
    except WorkerFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
