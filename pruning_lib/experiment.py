"""Config-driven sweep: methods x target ratios x seeds -> runs/<exp_name>/{results.csv, results.json, tables.md}.

For each seed a baseline is trained (or loaded from data/checkpoints/). For each method and target a
copy of it is pruned, BatchNorm statistics are re-estimated on training batches (the same for every
method), the test accuracy is taken (`acc_pruned`), the model is fine-tuned with the same recipe for
every method (best validation epoch kept) and tested again (`acc_finetuned`). Each finished row is
appended at once; a re-run skips the rows already there.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import DATA_DIR, DATASETS, load_dataset, make_loader, random_splits
from .metrics import compression_summary, count_macs, count_params
from .models import MODELS
from .pruner import PruneContext
from .registry import METHODS
from .train import TrainRecipe, evaluate, pick_device, recalibrate_bn, seed_everything, train, train_baseline

COLUMNS = ["method", "target_ratio", "seed", "params", "nonzero_params", "param_reduction", "macs", "gflops",
           "acc_pruned", "acc_finetuned", "finetune_epochs", "seconds", "compression", "theoretical_speedup"]


class ConfigError(ValueError):
    """A config field has a value that is not allowed; the message names the field."""


@dataclass
class Config:
    """The JSON config of one experiment (every field is checked by `validate`)."""

    exp_name: str
    dataset: str = "digits"
    model: str = "resnet8"
    width: int = 1
    methods: list[str] = field(default_factory=lambda: ["magnitude_global"])
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.7, 0.8, 0.9])
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    bn_recalibration_batches: int = 20
    score_batch_size: int = 128
    val_fraction: float = 0.1
    train_subset: int | None = None
    data_root: str | None = None  # None: pruning_lib.data.DATA_DIR (<repo>/data)
    checkpoint_dir: str | None = "auto"  # "auto": DATA_DIR/checkpoints; None: no baseline cache
    output_dir: str = "runs"
    device: str = "auto"

    def baseline_recipe(self) -> TrainRecipe:
        """The baseline training recipe (defaults filled in)."""
        return TrainRecipe(**self.baseline)

    def finetune_recipe(self) -> TrainRecipe:
        """The fine-tuning recipe applied after every pruning step (defaults filled in)."""
        return TrainRecipe(**self.finetune)

    @property
    def run_dir(self) -> Path:
        """runs/<exp_name>: where results.csv, results.json and tables.md go."""
        return Path(self.output_dir) / self.exp_name


def _fail(field_name: str, message: str) -> None:
    raise ConfigError(f"config field '{field_name}': {message}")


def _check_recipe(name: str, recipe: Any) -> None:
    if not isinstance(recipe, dict):
        _fail(name, "must be an object of training settings")
    allowed = {f.name: f.type for f in fields(TrainRecipe)}
    for key, value in recipe.items():
        if key not in allowed:
            _fail(f"{name}.{key}", f"unknown key, allowed: {', '.join(allowed)}")
    if not isinstance(recipe.get("epochs", 0), int) or recipe.get("epochs", 0) < 0:
        _fail(f"{name}.epochs", f"{recipe.get('epochs')!r} is not a non-negative integer")
    for key in ("lr", "momentum", "weight_decay"):
        if key in recipe and (not isinstance(recipe[key], (int, float)) or recipe[key] < 0):
            _fail(f"{name}.{key}", f"{recipe[key]!r} is not a non-negative number")
    if "batch_size" in recipe and (not isinstance(recipe["batch_size"], int) or recipe["batch_size"] < 1):
        _fail(f"{name}.batch_size", f"{recipe['batch_size']!r} is not a positive integer")
    if recipe.get("schedule", "cosine") not in ("cosine", "step"):
        _fail(f"{name}.schedule", f"unknown '{recipe['schedule']}', allowed: cosine, step")


def validate(raw: dict[str, Any]) -> Config:
    """Check every field of a raw config dict before any work; raise ConfigError naming the field."""
    if not isinstance(raw, dict):
        raise ConfigError("config: the file must hold one JSON object")
    allowed = [f.name for f in fields(Config)]
    for key in raw:
        if key not in allowed:
            _fail(key, f"unknown key, allowed: {', '.join(allowed)}")
    if not isinstance(raw.get("exp_name"), str) or not raw["exp_name"] or "/" in raw["exp_name"]:
        _fail("exp_name", "required: a non-empty name without '/'")
    cfg = Config(**raw)
    if cfg.dataset not in DATASETS:
        _fail("dataset", f"unknown '{cfg.dataset}', allowed: {', '.join(DATASETS)}")
    if cfg.model not in MODELS:
        _fail("model", f"unknown '{cfg.model}', allowed: {', '.join(MODELS)}")
    if not isinstance(cfg.width, int) or cfg.width < 1:
        _fail("width", f"{cfg.width!r} is not a positive integer (1 = 16/32/64 channels, 4 = 64/128/256)")
    if not isinstance(cfg.methods, list) or not cfg.methods:
        _fail("methods", f"must be a non-empty list, allowed: {', '.join(METHODS)}")
    for i, m in enumerate(cfg.methods):
        if m not in METHODS:
            _fail(f"methods[{i}]", f"unknown '{m}', allowed: {', '.join(METHODS)}")
    if not isinstance(cfg.ratios, list) or not cfg.ratios:
        _fail("ratios", "must be a non-empty list of numbers in [0, 1)")
    for i, r in enumerate(cfg.ratios):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
            _fail(f"ratios[{i}]", f"{r!r} is outside [0, 1) (the fraction of parameters removed)")
    if not isinstance(cfg.seeds, list) or not cfg.seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in cfg.seeds):
        _fail("seeds", "must be a non-empty list of integers")
    _check_recipe("baseline", cfg.baseline)
    _check_recipe("finetune", cfg.finetune)
    if not isinstance(cfg.method_options, dict):
        _fail("method_options", "must be an object {method: {option: value}}")
    for m, opts in cfg.method_options.items():
        if m not in METHODS:
            _fail(f"method_options.{m}", f"unknown method, allowed: {', '.join(METHODS)}")
        if not isinstance(opts, dict):
            _fail(f"method_options.{m}", "must be an object {option: value}")
        for key in opts:
            if key not in METHODS[m].options:
                _fail(f"method_options.{m}.{key}",
                      f"unknown option, allowed: {', '.join(METHODS[m].options) or '(none)'}")
            problem = METHODS[m].option_error(key, opts[key])
            if problem:
                _fail(f"method_options.{m}.{key}", problem)
    if not isinstance(cfg.bn_recalibration_batches, int) or cfg.bn_recalibration_batches < 0:
        _fail("bn_recalibration_batches", f"{cfg.bn_recalibration_batches!r} is not a non-negative integer")
    if not isinstance(cfg.score_batch_size, int) or isinstance(cfg.score_batch_size, bool) or cfg.score_batch_size < 1:
        _fail("score_batch_size", f"{cfg.score_batch_size!r} is not a positive integer")
    for key in ("data_root", "checkpoint_dir"):
        if getattr(cfg, key) is not None and not isinstance(getattr(cfg, key), str):
            _fail(key, f"{getattr(cfg, key)!r} is not null or a path string")
    if not isinstance(cfg.output_dir, str) or not cfg.output_dir:
        _fail("output_dir", f"{cfg.output_dir!r} is not a path string")
    if not isinstance(cfg.val_fraction, (int, float)) or not 0.0 < cfg.val_fraction < 1.0:
        _fail("val_fraction", f"{cfg.val_fraction!r} is outside (0, 1)")
    if cfg.train_subset is not None and (not isinstance(cfg.train_subset, int) or cfg.train_subset < 1):
        _fail("train_subset", f"{cfg.train_subset!r} is not null or a positive integer")
    if cfg.device != "auto" and cfg.device.split(":")[0] not in ("cpu", "cuda", "mps"):
        _fail("device", f"unknown '{cfg.device}', allowed: auto, cpu, cuda, cuda:N, mps")
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config_path: no file at '{path}'")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"config_path: '{path}' is not valid JSON ({e})") from None
    return validate(raw)


# In a smoke run the methods' own loops are cut short too (CP-ALS of a 256-channel kernel takes a minute).
SMOKE_METHOD_OPTIONS = {"cp_iters": 2, "hooi_iters": 2, "num_batches": 1, "num_examples": 8}


def smoke_config(cfg: Config) -> Config:
    """The same experiment on random tensors for a few steps: one seed, tiny recipes, short method loops
    (SMOKE_METHOD_OPTIONS), its own run folder."""
    short = {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2}
    options = {m: {**cfg.method_options.get(m, {}),
                   **{k: v for k, v in SMOKE_METHOD_OPTIONS.items() if k in METHODS[m].options}} for m in cfg.methods}
    return Config(**{**asdict(cfg), "exp_name": cfg.exp_name + "_smoke", "seeds": cfg.seeds[:1],
                     "baseline": {**cfg.baseline, **short}, "finetune": {**cfg.finetune, **short},
                     "bn_recalibration_batches": 2, "score_batch_size": 8, "checkpoint_dir": None,
                     "method_options": options})


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()


def _check_same_experiment(cfg: Config, run_dir: Path) -> None:
    """Refuse to mix results of a different setting into an existing run folder."""
    saved = run_dir / "config.json"
    mine = {k: v for k, v in asdict(cfg).items() if k not in ("methods", "ratios", "seeds", "output_dir", "device")}
    if saved.is_file():
        theirs = {k: v for k, v in json.loads(saved.read_text()).items() if k in mine}
        if theirs != mine:
            diff = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise ConfigError(f"exp_name: '{run_dir}' holds results of a different config (fields {', '.join(diff)}); "
                              "choose another exp_name or delete that folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(asdict(cfg), indent=2))


def run(cfg: Config, smoke: bool = False, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the sweep of `cfg`; returns the results table (one row per method, ratio, seed)."""
    if smoke:
        cfg = smoke_config(cfg)
    run_dir = cfg.run_dir
    _check_same_experiment(cfg, run_dir)
    csv_path = run_dir / "results.csv"
    done = {(r["method"], float(r["target_ratio"]), int(r["seed"])) for r in _read_rows(csv_path)}
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
            result = METHODS[method].fn(copy.deepcopy(base.model), ctx, ratio, **options)
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
                   "theoretical_speedup": round(summary["theoretical_speedup"], 4)}
            _append_row(csv_path, row)
            write_summaries(run_dir)
            bar.update(1)
    bar.close()
    return write_summaries(run_dir)


def _mean_std(values: pd.Series, fmt: str) -> str:
    """'mean ± std' over seeds (std omitted for one seed)."""
    if len(values) == 1 or math.isnan(values.std()):
        return f"{values.mean():{fmt}}"
    return f"{values.mean():{fmt}} ± {values.std():{fmt}}"


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Seed-style tables (method x target ratio): fine-tuned and one-shot accuracy, GFLOPs, compression."""
    order = list(dict.fromkeys(df["method"]))
    pct = lambda r: f"{float(r):.0%}"  # noqa: E731
    out = {}
    for name, col, fmt in [("test accuracy after fine-tuning (%)", "acc_finetuned", ".2f"),
                           ("test accuracy right after pruning, BatchNorm re-estimated (%)", "acc_pruned", ".2f"),
                           ("GFLOPs (2 x MACs)", "gflops", ".4g"),
                           ("achieved parameter reduction", "param_reduction", ".3f")]:
        t = df.groupby(["method", "target_ratio"])[col].apply(lambda v: _mean_std(v, fmt)).unstack()
        t.columns = [pct(c) for c in t.columns]
        out[name] = t.reindex(order)
    comp = df.groupby(["method", "target_ratio"]).agg(
        params=("params", "mean"), nonzero_params=("nonzero_params", "mean"), macs=("macs", "mean"),
        gflops=("gflops", "mean"), param_reduction=("param_reduction", "mean"), compression=("compression", "mean"),
        theoretical_speedup=("theoretical_speedup", "mean"), seeds=("seed", "nunique"))
    comp.index = comp.index.set_levels([comp.index.levels[0], [pct(r) for r in comp.index.levels[1]]])
    out["compression"] = comp.round(4)
    return out


def write_summaries(run_dir: Path) -> pd.DataFrame:
    """Rewrite results.json and tables.md from results.csv; returns the results DataFrame."""
    df = pd.read_csv(run_dir / "results.csv") if (run_dir / "results.csv").is_file() else pd.DataFrame(columns=COLUMNS)
    (run_dir / "results.json").write_text(df.to_json(orient="records", indent=1))
    if len(df):
        md = [f"# {run_dir.name}\n",
              "Mean ± std over seeds. Columns: target fraction of parameters removed. `acc_pruned` is measured "
              "after re-estimating BatchNorm statistics on training batches (no weight update). Weight "
              "(unstructured) pruning keeps dense FLOPs.\n"]
        for title, t in tables(df).items():
            md += [f"## {title}\n", t.to_markdown(), ""]
        (run_dir / "tables.md").write_text("\n".join(md) + "\n")
    return df

