"""Notebook conveniences (not training logic): fast mode for CI, and the cached digits baseline the notebooks
and `make run` share."""
from __future__ import annotations

import os

import torch

from .data import Splits, load_dataset
from .train import Baseline, TrainRecipe, pick_device, train_baseline


def fast_mode() -> bool:
    """True when PRUNING_FAST=1: notebooks and tests shrink epochs and batches."""
    return os.environ.get("PRUNING_FAST", "0") not in ("", "0", "false", "False")


# The baseline recipe of configs/quickstart.json: notebooks and `make run` share its cached checkpoint.
DIGITS_RECIPE = TrainRecipe(epochs=15, lr=0.1, batch_size=64, weight_decay=5e-4, schedule="cosine")


def digits_baseline(seed: int = 0, device: torch.device | None = None, progress: bool = False) -> tuple[Splits, Baseline]:
    """The digits splits and the small digits ResNet (resnet8) trained with DIGITS_RECIPE (cached)."""
    splits = load_dataset("digits")
    return splits, train_baseline(splits, "resnet8", 1, DIGITS_RECIPE, seed, device or pick_device(), progress=progress)
