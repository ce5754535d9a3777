"""Config-driven sweep: methods x target ratios x seeds -> runs/<exp_name>/{results.csv, results.json, tables.md}.

For each seed a baseline is trained (or loaded from data/checkpoints/). For each method and target a
copy of it is pruned, BatchNorm statistics are re-estimated on training batches (the same for every
method), the test accuracy is taken (`acc_pruned`), the model is fine-tuned with the same recipe for
every method (best validation epoch kept) and tested again (`acc_finetuned`). Each finished row is
written at once (results.py: atomic rewrite, strict reading); a re-run skips the rows already there. A
target a method cannot reach is recorded as a failed row (reason, closest reduction) and the sweep goes on.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .config import Config, ConfigError, smoke_config
from .data import DATA_DIR, load_dataset, make_loader, random_splits
from .files import write_text_atomic
from .metrics import compression_summary, count_macs, count_params
from .pruner import PruneContext, TargetUnreachable
from .registry import METHODS
from .results import failed_row, read_rows, write_rows, write_summaries
from .train import evaluate, pick_device, recalibrate_bn, seed_everything, train, train_baseline


def _prepare_run_dir(cfg: Config, run_dir: Path) -> None:
    """Refuse to mix results of a different setting into an existing run folder; create the folder and
    save the config (a folder that cannot be created or written is a config error, found before any work)."""
    saved = run_dir / "config.json"
    mine = {k: v for k, v in asdict(cfg).items() if k not in ("methods", "ratios", "seeds", "output_dir", "device")}
    if saved.is_file():
        try:
            theirs = json.loads(saved.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"exp_name: '{saved}' is damaged ({e}); delete it to adopt this config") from None
        theirs = {k: v for k, v in theirs.items() if k in mine} if isinstance(theirs, dict) else {}
        if theirs != mine:
            diff = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise ConfigError(f"exp_name: '{run_dir}' holds results of a different config (fields {', '.join(diff)}); "
                              "choose another exp_name or delete that folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(saved, json.dumps(asdict(cfg), indent=2))
    except OSError as e:
        raise ConfigError(f"config field 'output_dir': cannot write '{run_dir}' ({e.strerror or e})") from None


def run(cfg: Config, smoke: bool = False, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the sweep of `cfg`; returns the results table (one row per method, ratio, seed;
    `status` "failed" where the target cannot be reached)."""
    if smoke:
        cfg = smoke_config(cfg)
    run_dir = cfg.run_dir
    _prepare_run_dir(cfg, run_dir)
    csv_path = run_dir / "results.csv"
    rows = read_rows(csv_path)
    done = {(r["method"], r["target_ratio"], r["seed"]) for r in rows}
    todo = [(s, m, float(r)) for s in cfg.seeds for m in cfg.methods for r in cfg.ratios
            if (m, float(r), s) not in done]
    device = pick_device(cfg.device)
    splits = random_splits(cfg.dataset) if smoke else load_dataset(
        cfg.dataset, cfg.data_root or DATA_DIR, cfg.val_fraction, split_seed=0, train_subset=cfg.train_subset)
    bar = tqdm(total=len(todo), desc=cfg.exp_name, disable=not progress)
    for seed in sorted({s for s, _, _ in todo}):
        cache = DATA_DIR / "checkpoints" if cfg.checkpoint_dir == "auto" else cfg.checkpoint_dir
        base = train_baseline(splits, cfg.model, cfg.width, cfg.baseline_recipe(), seed, device, cache, progress)
        base_params, base_macs = count_params(base.model), count_macs(base.model, splits.input_shape)
        val_loader, test_loader = make_loader(splits.val, 256), make_loader(splits.test, 256)
        for s, method, ratio in todo:
            if s != seed:
                continue
            t0 = time.perf_counter()
            seed_everything(seed)
            # A fresh loader per row: a shared one would advance its shuffle generator, so a row's result
            # would depend on which rows ran before it (and a resumed run would differ from a full one).
            score_loader = make_loader(splits.train, cfg.score_batch_size, shuffle=True, seed=seed)
            ctx = PruneContext(score_loader, splits.input_shape, base_params, seed)
            options = {**METHODS[method].options, **cfg.method_options.get(method, {})}
            try:
                result = METHODS[method].fn(copy.deepcopy(base.model), ctx, ratio, **options)
            except TargetUnreachable as e:
                rows.append(failed_row(method, ratio, seed, e, e.closest))
                write_rows(csv_path, rows)
                write_summaries(run_dir)
                bar.update(1)
                continue
            model = recalibrate_bn(result.model, score_loader, cfg.bn_recalibration_batches)
            acc_pruned = evaluate(model, test_loader)["acc"]
            recipe = cfg.finetune_recipe()
            train(model, make_loader(splits.train, recipe.batch_size, shuffle=True, seed=seed), recipe, val_loader,
                  desc=f"{method} {ratio:.0%}", progress=progress)
            summary = compression_summary(model, splits.input_shape, base_params, base_macs)
            row = {"method": method, "target_ratio": ratio, "seed": seed, "params": summary["params"],
                   "nonzero_params": summary["nonzero_params"],
                   "param_reduction": round(summary["param_reduction"], 6), "macs": summary["macs"],
                   "gflops": round(summary["gflops"], 6), "acc_pruned": round(acc_pruned, 4),
                   "acc_finetuned": round(evaluate(model, test_loader)["acc"], 4),
                   "finetune_epochs": recipe.epochs, "seconds": round(time.perf_counter() - t0, 2),
                   "compression": round(summary["compression"], 4),
                   "theoretical_speedup": round(summary["theoretical_speedup"], 4), "status": "ok", "error": ""}
            rows.append(row)
            write_rows(csv_path, rows)
            write_summaries(run_dir)
            bar.update(1)
    bar.close()
    return write_summaries(run_dir)
