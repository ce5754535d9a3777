"""Helpers shared by the test files: random data, SPD matrices, relative errors, tiny run configs, result rows.

Plain functions, imported as `from helpers import ...` (pytest puts tests/ on sys.path, as it does for the test
files importing each other; tests/dist_worker.py, run as a script under torchrun, has tests/ as its sys.path[0]).
Each builder takes parameters for what its former copies drew differently, so every test keeps its exact numbers.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib.config import validate
from pruning_lib.registry import METHODS
from pruning_lib.results import TIMING

# ------------------------------------------------------------------------------------------------ random data


def random_dataset(n: int, shape: tuple[int, ...], classes: int, seed: int | None = 0,
                   dtype: torch.dtype | None = None) -> TensorDataset:
    """n inputs ~ N(0, 1) of `shape` (`dtype`, default float32) and n labels uniform in [0, classes).

    Drawn from `torch.Generator().manual_seed(seed)`, the inputs first, then the labels; `seed=None` draws both
    from the global generator instead (in the same order), for tests that seed it with `torch.manual_seed`."""
    g = None if seed is None else torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=dtype)
    return TensorDataset(x, torch.randint(0, classes, (n,), generator=g))


def random_loader(n: int = 32, shape: tuple[int, ...] = (1, 8, 8), classes: int = 10, batch: int | None = 16,
                  seed: int | None = 0, dtype: torch.dtype | None = None) -> DataLoader:
    """A DataLoader (in order, batches of `batch`; None: one batch of all n) over `random_dataset(n, shape,
    classes, seed, dtype)`. The defaults are the 32 MNIST-sized examples of 10 classes most tests use."""
    return DataLoader(random_dataset(n, shape, classes, seed, dtype), batch_size=batch or n)


# ------------------------------------------------------------------------------------------------ linear algebra


def spd(n: int, gen: torch.Generator, ridge: float = 0.05) -> torch.Tensor:
    """A random n x n symmetric positive-definite float64 matrix with spread-out eigenvalues: M Mᵀ / n + ridge·I,
    M ~ N(0, 1) drawn from `gen` (a stand-in for a K-FAC factor A or G)."""
    m = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return m @ m.T / n + ridge * torch.eye(n, dtype=torch.float64)


def rel(a: torch.Tensor, b: torch.Tensor, floor: float | None = None) -> float:
    """The relative error ‖a − b‖ / ‖b‖ (Frobenius norms, detached) as a Python float. `floor`: a lower bound on
    ‖b‖, for references that may be all zeros."""
    den = b.detach().norm()
    if floor is not None:
        den = den.clamp_min(floor)
    return float((a - b).detach().norm() / den)


# ------------------------------------------------------------------------------------------------ pruning calls

SHORT = {"num_batches": 1, "num_examples": 16, "cp_iters": 3, "hooi_iters": 1}


def short(method: str) -> dict:
    """The options of SHORT (few batches and iterations: fast tests) that `method` takes."""
    return {k: v for k, v in SHORT.items() if k in METHODS[method].options}


# ------------------------------------------------------------------------------------------------ tiny runs


def tiny_raw(tmp_path: Path, *, lr: float | None = 0.01, max_steps_per_epoch: int | None = None, **over) -> dict:
    """The raw (JSON-able) config of a tiny run: digits, resnet8, magnitude_global at ratios 0 and 0.5, seed 0,
    one epoch of baseline and fine-tuning at batch 64, runs and checkpoints under `tmp_path`.

    `lr` / `max_steps_per_epoch`: the fine-tuning learning rate and step cap (None: leave the key out, i.e. the
    config's default); `over`: top-level keys, each replacing the default whole (e.g. `finetune={...}`)."""
    finetune = {"epochs": 1, **({} if lr is None else {"lr": lr}), "batch_size": 64}
    if max_steps_per_epoch is not None:
        finetune["max_steps_per_epoch"] = max_steps_per_epoch
    raw = {"exp_name": "tiny", "dataset": "digits", "model": "resnet8", "methods": ["magnitude_global"],
           "ratios": [0.0, 0.5], "seeds": [0], "baseline": {"epochs": 1, "batch_size": 64}, "finetune": finetune,
           "bn_recalibration_batches": 2, "output_dir": str(tmp_path / "runs"),
           "checkpoint_dir": str(tmp_path / "ckpt")}
    return {**raw, **over}


def tiny_config(tmp_path: Path, **kwargs):
    """`tiny_raw(tmp_path, **kwargs)`, validated: the Config `experiment.run` takes."""
    return validate(tiny_raw(tmp_path, **kwargs))


def result_rows(df: pd.DataFrame, sort: bool = False) -> list[dict]:
    """The rows of a results table without the timing columns (which differ between runs), as dicts; `sort`: in
    (method, target_ratio, seed) order, for comparing runs that wrote their rows in different orders."""
    df = df.drop(columns=list(TIMING))
    if sort:
        df = df.sort_values(["method", "target_ratio", "seed"])
    return df.to_dict("records")
