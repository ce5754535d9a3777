"""Notebook conveniences (not training logic): fast mode for CI, the kit's folders wherever a notebook runs from
(notebooks/, the student edition, a copy elsewhere), and the cached digits baseline the notebooks and `make run`
share."""
from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import torch

from .data import Splits, load_dataset
from .train import Baseline, TrainRecipe, pick_device, train_baseline


def fast_mode() -> bool:
    """True when PRUNING_FAST=1: notebooks and tests shrink epochs and batches."""
    return os.environ.get("PRUNING_FAST", "0") not in ("", "0", "false", "False")


def kit_root() -> Path:
    """The kit's checkout, where configs/, docs/ and runs/ live: $PRUNING_ROOT if set, else the folder above the
    imported pruning_lib package (an editable install, `make setup`). Found from the package, never from the
    working directory, so a notebook run from notebooks/, student/ or elsewhere reads the same files.
    Raises FileNotFoundError naming both places when that folder has no configs/ (a non-editable install)."""
    root = Path(os.environ.get("PRUNING_ROOT") or Path(__file__).resolve().parents[1])
    if not (root / "configs").is_dir():
        raise FileNotFoundError(f"kit_root: no configs/ in {root}; set PRUNING_ROOT to the kit's checkout, or "
                                "install it editable from there (make setup, or pip install -e .)")
    return root


QUICKSTART = "configs/quickstart.json"  # under kit_root()


@cache
def digits_recipe() -> TrainRecipe:
    """The baseline recipe of configs/quickstart.json, read from that file (defaults filled in), so notebooks and
    `make run` train, and cache, the same checkpoint (TrainRecipe.key names it). Read as plain JSON: the config
    is validated by `make run` (config.load_config), and this top-level convenience stays below the runner."""
    cfg = json.loads((kit_root() / QUICKSTART).read_text(encoding="utf-8"))
    return TrainRecipe(**cfg["baseline"])


def __getattr__(name: str):
    """DIGITS_RECIPE: `digits_recipe()`, read when first asked for (importing this module reads no file, so
    fast_mode works without the kit's configs/)."""
    if name == "DIGITS_RECIPE":
        return digits_recipe()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def digits_baseline(seed: int = 0, device: torch.device | None = None, progress: bool = False) -> tuple[Splits, Baseline]:
    """The digits splits and the small digits ResNet (resnet8) trained with DIGITS_RECIPE (cached)."""
    splits = load_dataset("digits")
    return splits, train_baseline(splits, "resnet8", 1, digits_recipe(), seed, device or pick_device(), progress=progress)
