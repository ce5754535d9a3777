"""Config-driven sweep: methods x target ratios x seeds -> runs/<exp_name>/{results.csv, results.json, tables.md}.

For each seed a baseline is trained (or loaded from data/checkpoints/). For each method and target a
copy of it is pruned, BatchNorm statistics are re-estimated on training batches (the same for every
method), the test accuracy is taken (`acc_pruned`), the model is fine-tuned with the same recipe for
every method (best validation epoch kept) and tested again (`acc_finetuned`). Each finished row is
written at once (pruning_lib.results: atomic rewrite, strict reading); a re-run skips the rows already there. A
target a method cannot reach is recorded as a failed row (reason, closest reduction) and the sweep goes on.
"""
from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import Config, ConfigError, smoke_config
from .data import DATA_DIR, load_dataset, make_loader, random_splits
from .distributed import broadcast_state, is_main, local_device, on_main, world_size
from .files import write_text_atomic
from .latency import LatencyTable, measure_table
from .metrics import compression_summary, count_macs, count_params, measure_latency
from .pruner import PruneContext, TargetUnreachable
from .registry import method_of
from .results import (KEY, STAGE_COLUMNS, TIMING, Row, failed_row, read_rows, results_frame, shard_file_name,
                      write_rows, write_summaries)
from .train import (TrainRecipe, distillation_loss, evaluate, pick_device, recalibrate_bn, seed_everything,
                    steps_per_epoch, train, train_baseline, train_steps)


def _setting(cfg: dict) -> dict:
    """What decides a run folder's numbers: every field except the grid (methods, ratios, seeds) and where
    things live or come from (output_dir, checkpoint_dir, device, download), with the recipes' defaults
    filled in, plus the number of processes (a different global batch and curvature data give other numbers) and of
    torch threads per process (CPU kernels split their reductions by thread, so the last digits move with it)."""
    out = {k: v for k, v in cfg.items()
           if k not in ("methods", "ratios", "seeds", "output_dir", "checkpoint_dir", "device", "download")}
    for key in ("baseline", "finetune"):
        if isinstance(out.get(key), dict):
            out[key] = {**asdict(TrainRecipe()), **out[key]}
    out.setdefault("world_size", 1)
    return out


# torch's thread count when this module was imported (before --threads / --jobs set one): what a run folder written
# before folders recorded their threads was computed with
DEFAULT_THREADS = torch.get_num_threads()


def _process() -> dict:
    """This process's share of the setting: the number of processes and of torch threads in each."""
    return {"world_size": world_size(), "threads": torch.get_num_threads()}


def _prepare_run_dir(cfg: Config, run_dir: Path) -> None:
    """Refuse to mix results of a different setting (or number of processes) into an existing run folder;
    create the folder and save the config (a folder that cannot be created or written is a config error,
    found before any work)."""
    saved = run_dir / "config.json"
    mine = _setting({**asdict(cfg), **_process()})
    if saved.is_file():
        try:
            theirs = json.loads(saved.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"exp_name: '{saved}' is damaged ({e}); delete it to adopt this config") from None
        defaults = asdict(Config(exp_name=cfg.exp_name))  # fields added since that folder was written
        theirs = _setting({**defaults, "threads": DEFAULT_THREADS, **theirs}) if isinstance(theirs, dict) else {}
        diff = sorted(k for k in mine if k != "method_options" and mine[k] != theirs.get(k))
        # method_options may change for entries with no rows in the folder (a variant added to a finished run)
        done = {r["method"] for path in [run_dir / "results.csv", *run_dir.glob("results.shard-*.csv")]
                for r in read_rows(path)}
        ours, old = mine["method_options"], theirs.get("method_options") or {}
        changed = sorted(m for m in set(ours) | set(old) if ours.get(m) != old.get(m) and m in done)
        diff += [f"method_options of {', '.join(changed)}"] if changed else []
        if diff == ["threads"]:
            raise ConfigError(f"threads: '{run_dir}' holds rows computed with {theirs['threads']} torch thread(s) per "
                              f"process, this run has {mine['threads']} (rows depend on it); run with --threads "
                              f"{theirs['threads']} (or --jobs N with --threads {theirs['threads']}), or choose another exp_name")
        if diff:
            raise ConfigError(f"exp_name: '{run_dir}' holds results of a different config (fields {', '.join(diff)}); "
                              "choose another exp_name or delete that folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(saved, json.dumps({**asdict(cfg), **_process()}, indent=2))
    except OSError as e:
        raise ConfigError(f"config field 'output_dir': cannot write '{run_dir}' ({e.strerror or e})") from None


def pending(cfg: Config, shard: tuple[int, int] | None = None) -> tuple[list[dict], list[tuple]]:
    """Prepare the run folder (refusing one of a different setting); (the rows of the file this run writes, the
    (seed, method, ratio) keys of the sweep, or of its shard, still to run). A shard skips the rows any file of the
    folder holds (results.csv or another shard's, also of another N), so a sweep resumes under any --jobs / --shard."""
    run_dir = cfg.run_dir
    csv_path = run_dir / ("results.csv" if shard is None else shard_file_name(*shard))
    _prepare_run_dir(cfg, run_dir)
    rows = read_rows(csv_path)
    others = [] if shard is None else [p for p in [run_dir / "results.csv", *run_dir.glob("results.shard-*.csv")]
                                       if p != csv_path]
    done = {tuple(r[c] for c in KEY) for r in rows + [r for p in others for r in read_rows(p)]}
    grid = [(s, m, float(r)) for s in cfg.seeds for m in cfg.methods for r in cfg.ratios]
    return rows, [k for k in (grid if shard is None else shard_rows(grid, *shard)) if (k[1], k[2], k[0]) not in done]


def shard_rows(grid: list, index: int, count: int) -> list:
    """Shard `index` of `count` (0 <= index < count) of the sweep's rows: contiguous blocks of the seed-major
    row list, disjoint and together complete, so a shard trains the baselines of one or two seeds only."""
    if not 0 <= index < count:
        raise ConfigError(f"shard: {index}/{count} is not i/N with 0 <= i < N")
    size = math.ceil(len(grid) / count)
    return grid[index * size:(index + 1) * size]


def run(cfg: Config, smoke: bool = False, progress: bool = True, shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """Run (or resume) the sweep of `cfg`; returns the results table (one row per method, ratio, seed;
    `status` "failed" where the target cannot be reached). With `shard` (i, N) only that share of the rows
    runs, into results.shard-i-of-N.csv (merge with `merge_shards`). Under torch.distributed every rank runs
    this together and rank 0 alone writes."""
    if smoke:
        cfg = smoke_config(cfg)
    run_dir = cfg.run_dir
    csv_path = run_dir / ("results.csv" if shard is None else shard_file_name(*shard))
    rows, todo = on_main(pending, cfg, shard)
    device = local_device() or pick_device(cfg.device)
    splits = random_splits(cfg.dataset) if smoke else load_dataset(
        cfg.dataset, cfg.data_root or DATA_DIR, cfg.val_fraction, split_seed=0, train_subset=cfg.train_subset,
        download=cfg.download)
    progress = progress and is_main()

    def write() -> None:
        write_rows(csv_path, rows)
        if shard is None:
            write_summaries(run_dir)

    def record(row: dict) -> None:
        rows.append(row)
        on_main(write)

    bar = tqdm(total=len(todo), desc=cfg.exp_name, disable=not progress)
    for seed in sorted({s for s, _, _ in todo}):
        cache = DATA_DIR / "checkpoints" if cfg.checkpoint_dir == "auto" else cfg.checkpoint_dir
        base = train_baseline(splits, cfg.model, cfg.width, cfg.baseline_recipe(), seed, device, cache, progress,
                              cfg.sync_batchnorm)
        ref = (count_params(base.model), count_macs(base.model, splits.input_shape))
        loaders = {"val": make_loader(splits.val, 256, shard="eval"), "test": make_loader(splits.test, 256, shard="eval")}
        # the table depends on the architecture and the device only: measured once, then read from its cache
        table = measure_table(base.model, splits.input_shape, 128) if cfg.predict_latency else None
        unpruned = next((r for r in rows if r["seed"] == seed and r["target_ratio"] == 0.0 and r["status"] == "ok"), None)
        for s, method, ratio in todo:
            if s != seed:
                continue
            if ratio == 0.0 and unpruned is not None:  # pruning at 0 is the identity (tests/test_contract.py)
                record({**unpruned, "method": method, **dict.fromkeys(STAGE_COLUMNS, 0.0), "seconds": 0.0})
                bar.update(1)
                continue
            try:
                row = _row(cfg, splits, base.model, method, ratio, seed, ref, loaders, progress, table)
            except TargetUnreachable as e:
                row = failed_row(method, ratio, seed, e, e.closest)
            record(row)
            if ratio == 0.0:
                unpruned = row
            bar.update(1)
    bar.close()
    if is_main() and shard is None:
        return _finish(run_dir)
    return results_frame(rows)


def _finish(run_dir: Path) -> pd.DataFrame:
    """Rewrite the summaries and draw the accuracy / cost plots (matplotlib loads only here)."""
    from .viz.results import save_plots

    df = write_summaries(run_dir)
    if (df["status"] == "ok").any():
        save_plots(df, run_dir)
    return df


def _row(cfg: Config, splits, base: nn.Module, method: str, ratio: float, seed: int, ref: tuple[int, int],
         loaders: dict, progress: bool, table: LatencyTable | None = None) -> dict:
    """One results row (a `Row`, as a dict): prune a copy of `base` (target 0 is the unpruned copy itself),
    re-estimate BatchNorm, test, fine-tune, test, measure latency (and predict it with `table`); the seconds of
    each stage are kept.
    TargetUnreachable passes up."""
    seconds, t0 = {}, time.perf_counter()
    seed_everything(seed)
    # A fresh loader per row: a shared one would advance its shuffle generator, so a row's result would
    # depend on which rows ran before it (and a resumed run would differ from a full one).
    score_loader = make_loader(splits.train, cfg.score_batch_size, shuffle=True, seed=seed, shard="train")
    recipe = cfg.finetune_recipe()
    tune_loader = make_loader(splits.train, recipe.batch_size, shuffle=True, seed=seed, shard="train")
    loss_fn = (distillation_loss(base, recipe.distill_weight, recipe.distill_temperature)
               if recipe.distill_weight else None)
    budget, used = recipe.epochs * steps_per_epoch(tune_loader, recipe), 0
    model = copy.deepcopy(base)
    if ratio > 0:
        # A method with a schedule may spend part of the fine-tuning budget between its steps (ctx.finetune);
        # the final fine-tune gets the rest, so the total is the same for every method.
        ctx = PruneContext(score_loader, splits.input_shape, ref[0], seed,
                           lambda m, n: train_steps(m, tune_loader, recipe, n, loss_fn, cfg.sync_batchnorm), budget)
        spec = method_of(method)  # "name" or a "name@label" variant with its own method_options
        result = spec.fn(model, ctx, ratio, **{**spec.options, **cfg.method_options.get(method, {})})
        model, used = result.model, result.info.get("finetune_steps_used", 0)
    model = broadcast_state(model)
    seconds["seconds_prune"], t = time.perf_counter() - t0, time.perf_counter()
    recalibrate_bn(model, score_loader, cfg.bn_recalibration_batches)
    seconds["seconds_bn"], t = time.perf_counter() - t, time.perf_counter()
    acc_pruned = evaluate(model, loaders["test"])["acc"]
    seconds["seconds_eval"], t = time.perf_counter() - t, time.perf_counter()
    if used:
        recipe = replace(recipe, max_steps_per_epoch=max(1, (budget - used) // max(recipe.epochs, 1)))
    train(model, tune_loader, recipe, loaders["val"], desc=f"{method} {ratio:.0%}", loss_fn=loss_fn,
          progress=progress, sync_batchnorm=cfg.sync_batchnorm)
    seconds["seconds_finetune"], t = time.perf_counter() - t, time.perf_counter()
    acc_finetuned = evaluate(model, loaders["test"])["acc"]
    seconds["seconds_eval"] += time.perf_counter() - t
    summary = compression_summary(model, splits.input_shape, *ref)
    return Row(method=method, target_ratio=ratio, seed=seed, params=summary["params"],
               nonzero_params=summary["nonzero_params"], param_reduction=round(summary["param_reduction"], 6),
               macs=summary["macs"], gflops=round(summary["gflops"], 6), acc_pruned=round(acc_pruned, 4),
               acc_finetuned=round(acc_finetuned, 4), finetune_epochs=recipe.epochs,
               compression=round(summary["compression"], 4),
               theoretical_speedup=round(summary["theoretical_speedup"], 4), status="ok", error="",
               **{k: round(v, 3) for k, v in seconds.items()},
               **(_latency(model, splits.input_shape, table) if cfg.measure_latency else {}),
               seconds=round(time.perf_counter() - t0, 2)).to_dict()


def _latency(model: nn.Module, input_shape: tuple[int, ...], table: LatencyTable | None) -> dict:
    """Median forward time (ms) at batch 1 and 128 in eval mode on the model's device, the thread count, and the
    batch-128 time `table` predicts (None without a table or where it does not apply)."""
    predicted = table.predict_model(model) if table is not None else None
    return {"latency_ms_b1": round(measure_latency(model, input_shape, 1), 4),
            "latency_ms_b128": round(measure_latency(model, input_shape, 128, repeats=5), 4),
            "latency_threads": torch.get_num_threads(),
            "latency_predicted_ms_b128": None if predicted is None else round(predicted, 4)}


def merge_shards(run_dir: str | Path) -> pd.DataFrame:
    """Combine results.csv and every results.shard-*.csv of `run_dir` into results.csv (atomically), in the
    sweep's row order (seed, then the config's methods, then ratio), and rewrite the tables. A row present in
    two files keeps its first copy (results.csv, then the shards in name order); copies that differ are
    reported in a warning."""
    run_dir = Path(run_dir)
    shards = sorted(run_dir.glob("results.shard-*.csv"))
    if not shards:
        raise ConfigError(f"merge: '{run_dir}' holds no results.shard-*.csv files to merge")
    merged: dict[tuple, tuple[dict, str]] = {}
    for path in [run_dir / "results.csv", *shards]:
        for row in read_rows(path):
            key = tuple(row[c] for c in KEY)
            if key in merged:
                first, where = merged[key]
                if {k: v for k, v in first.items() if k not in TIMING} != {k: v for k, v in row.items() if k not in TIMING}:
                    warnings.warn(f"merge: row {key} differs between {where} and {path.name}; kept {where}'s",
                                  stacklevel=2)
                continue
            merged[key] = (row, path.name)
    try:
        methods = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["methods"]
    except (OSError, ValueError, KeyError, TypeError):
        methods = []
    position = {m: i for i, m in enumerate(methods)}
    rows = sorted((r for r, _ in merged.values()),
                  key=lambda r: (r["seed"], position.get(r["method"], len(position)), r["method"], r["target_ratio"]))
    write_rows(run_dir / "results.csv", rows)
    return _finish(run_dir)
