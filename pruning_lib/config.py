"""The experiment config: its fields, and `validate`, which checks every one of them before any work.

A wrong value raises ConfigError with one line naming the field and what is allowed (the CLI exits 2).
Besides types and ranges (numbers must be finite: JSON's NaN / Infinity are refused), the checks that
need the machine run here too: the device is asked of torch, and the model is run once on a tiny input
of the dataset's shape (a model too deep for the image size fails here, not after the baseline).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .checks import OptionError, is_int, is_number
from .data import AUGMENTED, DATASETS, SHAPES
from .models import MODELS, build_model
from .registry import METHODS, entry_error, method_of
from .train import OPTIMIZERS, PRECISIONS, TrainRecipe

SEED_LIMIT = 2**32  # numpy's seeds are 32-bit
SCHEDULES = ("cosine", "step")
EXP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
    download: bool = False  # fetch missing dataset files with torchvision's downloader (data.download_dataset)
    checkpoint_dir: str | None = "auto"  # "auto": DATA_DIR/checkpoints; None: no baseline cache
    output_dir: str = "runs"
    device: str = "auto"
    measure_latency: bool = True  # median forward time at batch 1 and 128 per row (eval mode, this device)
    predict_latency: bool = False  # also the batch-128 time the unpruned model's per-layer latency table predicts
    sync_batchnorm: bool = False  # under torchrun: BatchNorm over all ranks' batches (nn.SyncBatchNorm, CUDA only)

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



# What each field means and allows, for docs/reference/config.md (pruning_lib.reference generates it; a test holds
# these to the fields of Config and TrainRecipe, so a new field cannot go undocumented). `validate` enforces them.
FIELD_HELP: dict[str, tuple[str, str]] = {
    "exp_name": ("letters, digits, '.', '_', '-' (required)", "the run folder's name: results go to output_dir/exp_name"),
    "dataset": (" | ".join(DATASETS), "the dataset (data/README.md: how to get the files)"),
    "model": (" | ".join(MODELS), "the network trained as the baseline (vit_tiny: train it with optimizer adamw)"),
    "width": ("integer in [1, 64]", "channel multiplier: 1 = 16/32/64 channels, 4 = 64/128/256"),
    "methods": ("registry names, or name@label variants", "the methods of the sweep (docs/reference/methods.md)"),
    "ratios": ("numbers in [0, 1), no repeats", "targets: fractions of the unpruned model's parameters removed"),
    "seeds": ("integers in [0, 2^32), no repeats", "one baseline and one row per method x ratio per seed"),
    "baseline": ("a training recipe (below)", "how the unpruned model is trained (cached in data/checkpoints)"),
    "finetune": ("a training recipe (below)", "fine-tuning after pruning, the same for every method (epochs 0: none)"),
    "method_options": ("{method or variant: {option: value}}", "options per entry, checked against the registry"),
    "bn_recalibration_batches": ("integer >= 0", "training batches that re-estimate BatchNorm after pruning"),
    "score_batch_size": ("integer >= 1", "batch size of the loader the methods score / calibrate on"),
    "val_fraction": ("number in (0, 1)", "share of the training set held out for model selection"),
    "train_subset": ("null or integer >= 1", "train on the first N examples of the training split (null: all)"),
    "data_root": ("null or a path", "where the dataset files are (null: <repo>/data)"),
    "download": ("true | false", "fetch missing dataset files with torchvision's downloader"),
    "checkpoint_dir": ("\"auto\", null or a path", "baseline cache (auto: data/checkpoints; null: no cache)"),
    "output_dir": ("a path", "where run folders go"),
    "device": ("auto | cpu | cuda | cuda:N | mps", "where everything runs (auto: CUDA if present)"),
    "measure_latency": ("true | false", "median forward time at batch 1 and 128 per row"),
    "predict_latency": ("true | false (needs measure_latency)",
                        "also the batch-128 time predicted by a per-layer latency table (pruning_lib.latency)"),
    "sync_batchnorm": ("true | false", "under torchrun: BatchNorm over all ranks' batches (CUDA only)"),
}
RECIPE_HELP: dict[str, tuple[str, str]] = {
    "epochs": ("integer >= 0", "passes over the training set"),
    "lr": ("number >= 0", "peak learning rate"),
    "momentum": ("number in [0, 1)", "SGD momentum"),
    "weight_decay": ("number >= 0", "L2 (SGD) or decoupled (AdamW) weight decay"),
    "batch_size": ("integer >= 1", "examples per step"),
    "schedule": (" | ".join(SCHEDULES), "cosine, or x0.1 at 50 % and 75 % of the epochs"),
    "optimizer": (" | ".join(OPTIMIZERS), "SGD with momentum, or AdamW (the usual recipe for ViTs)"),
    "max_steps_per_epoch": ("null or integer >= 1", "cut epochs short (smoke runs)"),
    "select_on_val": ("true | false", "keep the epoch with the best validation accuracy"),
    "distill_weight": ("number in [0, 1)", "w > 0: (1 − w)·CE + w·T²·KL from the unpruned model"),
    "distill_temperature": ("number > 0", "T of the distillation loss"),
    "precision": (" | ".join(PRECISIONS), "autocast: auto = bf16 on CUDA, fp32 elsewhere; fp16 (CUDA only) adds a GradScaler"),
    "channels_last": ("true | false", "train in the NHWC memory format (faster convolutions on recent GPUs)"),
    "data_on_device": ("true | false", "keep the training set on the device (small datasets without augmentation)"),
}

def _fail(field_name: str, message: str) -> None:
    raise ConfigError(f"config field '{field_name}': {message}")


def _int(name: str, value: Any, low: int, high: int | None = None, null: bool = False) -> None:
    if null and value is None:
        return
    if not is_int(value) or value < low or (high is not None and value >= high):
        span = f">= {low}" if high is None else f"in [{low}, {high})"
        _fail(name, f"{value!r} is not {'null or ' if null else ''}an integer {span}")


def _number(name: str, value: Any, low: float, high: float | None = None, what: str = "") -> None:
    ok = is_number(value) and value >= low and (high is None or value < high)
    if not ok:
        span = f">= {low:g}" if high is None else f"[{low:g}, {high:g})"
        _fail(name, f"{value!r} is outside {span}{what}" if is_number(value) else
              f"{value!r} is not a finite number {span}{what}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(name, f"unknown {value!r}, allowed: {', '.join(allowed)}")


def _unique_list(name: str, value: Any, what: str) -> None:
    if not isinstance(value, list) or not value:
        _fail(name, f"must be a non-empty list of {what}")
    seen = set()
    for i, v in enumerate(value):
        key = float(v) if is_number(v) else json.dumps(v)
        if key in seen:
            _fail(f"{name}[{i}]", f"{v!r} is listed twice (it would run twice and fake a spread)")
        seen.add(key)


def _check_recipe(name: str, recipe: Any) -> None:
    if not isinstance(recipe, dict):
        _fail(name, "must be an object of training settings")
    allowed = [f.name for f in fields(TrainRecipe)]
    for key in recipe:
        if key not in allowed:
            _fail(f"{name}.{key}", f"unknown key, allowed: {', '.join(allowed)}")
    r = {**asdict(TrainRecipe()), **recipe}
    if not is_int(r["epochs"]) or r["epochs"] < 0:
        _fail(f"{name}.epochs", f"{r['epochs']!r} is not a non-negative integer")
    _number(f"{name}.lr", r["lr"], 0.0)
    _number(f"{name}.momentum", r["momentum"], 0.0, 1.0)
    _number(f"{name}.weight_decay", r["weight_decay"], 0.0)
    _int(f"{name}.batch_size", r["batch_size"], 1)
    _choice(f"{name}.schedule", r["schedule"], SCHEDULES)
    _choice(f"{name}.optimizer", r["optimizer"], OPTIMIZERS)
    _int(f"{name}.max_steps_per_epoch", r["max_steps_per_epoch"], 1, null=True)
    if not isinstance(r["select_on_val"], bool):
        _fail(f"{name}.select_on_val", f"{r['select_on_val']!r} must be true or false")
    _number(f"{name}.distill_weight", r["distill_weight"], 0.0, 1.0,  " (0 = no distillation)")
    _number(f"{name}.distill_temperature", r["distill_temperature"], 1e-6)
    _choice(f"{name}.precision", r["precision"], PRECISIONS)
    for flag in ("channels_last", "data_on_device"):
        if not isinstance(r[flag], bool):
            _fail(f"{name}.{flag}", f"{r[flag]!r} must be true or false")


def _check_device(device: Any) -> None:
    if not isinstance(device, str):
        _fail("device", f"{device!r} is not a string: auto, cpu, cuda, cuda:N, mps")
    kind, _, index = device.partition(":")
    if device in ("auto", "cpu"):
        return
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            _fail("device", f"'{device}' but torch sees no CUDA device on this machine; use auto or cpu")
        if index and int(index) >= torch.cuda.device_count():
            _fail("device", f"'{device}' but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return
    if device == "mps":
        if not torch.backends.mps.is_available():
            _fail("device", "'mps' but torch sees no MPS device on this machine; use auto or cpu")
        return
    _fail("device", f"unknown {device!r}, allowed: auto, cpu, cuda, cuda:N, mps")


@torch.no_grad()
def _check_model_fits(cfg: Config) -> None:
    """One forward pass of the untrained model on a zero image of the dataset's shape (CPU, eval mode)."""
    c, size, classes = SHAPES[cfg.dataset]
    model = build_model(cfg.model, cfg.width, c, classes, size).eval()
    try:
        out = model(torch.zeros(1, c, size, size))
    except RuntimeError as e:
        _fail("model", f"'{cfg.model}' cannot take {cfg.dataset}'s {c}x{size}x{size} images "
                       f"({str(e).splitlines()[0]}); choose one of {', '.join(MODELS)} that fits")
    if out.shape != (1, classes):
        _fail("model", f"'{cfg.model}' gives outputs of shape {tuple(out.shape)} for {cfg.dataset}, not (1, {classes})")


def validate(raw: dict[str, Any]) -> Config:
    """Check every field of a raw config dict before any work; raise ConfigError naming the field."""
    if not isinstance(raw, dict):
        raise ConfigError("config: the file must hold one JSON object")
    allowed = [f.name for f in fields(Config)]
    for key in raw:
        if key not in allowed:
            _fail(key, f"unknown key, allowed: {', '.join(allowed)}")
    name = raw.get("exp_name")
    if not isinstance(name, str) or not EXP_NAME.fullmatch(name):
        _fail("exp_name", f"{name!r}: required, a folder name of letters, digits, '.', '_', '-' "
                          "that does not start with '.' (it becomes <output_dir>/<exp_name>)")
    cfg = Config(**raw)
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("model", cfg.model, MODELS)
    _int("width", cfg.width, 1, 65)
    _unique_list("methods", cfg.methods, f"method names (or name@label variants), allowed: {', '.join(METHODS)}")
    for i, m in enumerate(cfg.methods):
        if entry_error(m):
            _fail(f"methods[{i}]", entry_error(m))
    _unique_list("ratios", cfg.ratios, "numbers in [0, 1)")
    for i, r in enumerate(cfg.ratios):
        _number(f"ratios[{i}]", r, 0.0, 1.0, " (the fraction of parameters removed)")
    _unique_list("seeds", cfg.seeds, "integers")
    for i, s in enumerate(cfg.seeds):
        _int(f"seeds[{i}]", s, 0, SEED_LIMIT)
    _check_recipe("baseline", cfg.baseline)
    _check_recipe("finetune", cfg.finetune)
    if not isinstance(cfg.method_options, dict):
        _fail("method_options", "must be an object {method: {option: value}}")
    for m, opts in cfg.method_options.items():
        if entry_error(m):
            _fail(f"method_options.{m}", entry_error(m))
        if not isinstance(opts, dict):
            _fail(f"method_options.{m}", "must be an object {option: value}")
        try:
            method_of(m).check(opts)  # the method's own check (pruner.Method.check), named by its field path
        except OptionError as e:
            _fail(f"method_options.{m}.{e.option}", e.why)
    _int("bn_recalibration_batches", cfg.bn_recalibration_batches, 0)
    _int("score_batch_size", cfg.score_batch_size, 1)
    if not is_number(cfg.val_fraction) or not 0.0 < cfg.val_fraction < 1.0:
        _fail("val_fraction", f"{cfg.val_fraction!r} is outside (0, 1)")
    _int("train_subset", cfg.train_subset, 1, null=True)
    for key in ("data_root", "checkpoint_dir"):
        if getattr(cfg, key) is not None and (not isinstance(getattr(cfg, key), str) or not getattr(cfg, key)):
            _fail(key, f"{getattr(cfg, key)!r} is not null or a path string")
    if not isinstance(cfg.output_dir, str) or not cfg.output_dir:
        _fail("output_dir", f"{cfg.output_dir!r} is not a path string")
    _check_device(cfg.device)
    for name in ("baseline", "finetune"):
        r = {**asdict(TrainRecipe()), **getattr(cfg, name)}
        on_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        if r["precision"] == "fp16" and not on_cuda:
            _fail(f"{name}.precision", "'fp16' needs a CUDA device (torch's fp16 autocast and GradScaler); use bf16 "
                                       "or fp32 here")
        if r["data_on_device"] and cfg.dataset in AUGMENTED:
            _fail(f"{name}.data_on_device", f"{cfg.dataset}'s training split draws a random crop and flip per epoch, "
                                            "which a copy kept on the device would freeze; use false")
    if not isinstance(cfg.download, bool):
        _fail("download", f"{cfg.download!r} must be true or false")
    if not isinstance(cfg.measure_latency, bool):
        _fail("measure_latency", f"{cfg.measure_latency!r} must be true or false")
    if not isinstance(cfg.predict_latency, bool):
        _fail("predict_latency", f"{cfg.predict_latency!r} must be true or false")
    if cfg.predict_latency and not cfg.measure_latency:
        _fail("predict_latency", "true needs measure_latency true (a prediction is reported next to the measurement)")
    if not isinstance(cfg.sync_batchnorm, bool):
        _fail("sync_batchnorm", f"{cfg.sync_batchnorm!r} must be true or false")
    if cfg.sync_batchnorm and not torch.cuda.is_available():
        _fail("sync_batchnorm", "true needs CUDA devices (torch's nn.SyncBatchNorm runs on GPUs only); use false")
    _check_model_fits(cfg)
    return cfg


def load_config(path: str | Path, **overrides: Any) -> Config:
    """Read and validate a JSON config file (UTF-8); `overrides` replace fields before validation."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config_path: no file at '{path}'")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config_path: '{path}' is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config_path: '{path}' is not valid JSON ({e})") from None
    if isinstance(raw, dict):
        raw.update(overrides)
    return validate(raw)


# In a smoke run the methods' own loops are cut short too (CP-ALS of a 256-channel kernel takes a minute).
SMOKE_METHOD_OPTIONS = {"cp_iters": 2, "hooi_iters": 2, "num_batches": 1, "num_examples": 8}


def smoke_config(cfg: Config) -> Config:
    """The same experiment on random tensors for a few steps: one seed, tiny recipes, short method loops
    (SMOKE_METHOD_OPTIONS), its own run folder."""
    short = {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2}
    options = {m: {**cfg.method_options.get(m, {}),
                   **{k: v for k, v in SMOKE_METHOD_OPTIONS.items() if k in method_of(m).options}} for m in cfg.methods}
    return Config(**{**asdict(cfg), "exp_name": cfg.exp_name + "_smoke", "seeds": cfg.seeds[:1],
                     "baseline": {**cfg.baseline, **short}, "finetune": {**cfg.finetune, **short},
                     "bn_recalibration_batches": 2, "score_batch_size": 8, "checkpoint_dir": None,
                     "measure_latency": False,
                     "method_options": options})
