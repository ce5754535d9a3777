"""The one loop over "the first batches of a loader, on the model's device" that curvature estimates, saliencies,
evaluation and BatchNorm re-estimation share (a floor module: train.py uses it, so it cannot live in curvature/).

    batches = first_batches(loader, num_batches=4, device=device)
    with eval_mode(model):
        for x, y in batches:
            ...
    n = batches.reduced_examples()      # examples summed over torch.distributed ranks

The model's mode is the caller's (curvature runs under modes.eval_mode, recalibrate_bn in train mode).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from .distributed import all_reduce_count


class Batches:
    """Iterable over (x, y) of the first batches of `loader`: at most `num_batches` batches (None: no limit)
    and at most `num_examples` examples (None: no limit; the last batch is truncated to fit), moved to `device`
    (None: left where they are). It counts what it yielded: `batches`, `examples` (x.shape[0] summed).

    Like the loops it replaces, it draws the next batch from the loader before deciding to stop (one batch
    past the limit, when the loader has one): the loader's random state (shuffling, augmentation) advances
    exactly as before, so seeded runs give the same numbers."""

    def __init__(self, loader: Iterable, num_batches: int | None = None, num_examples: int | None = None,
                 device: torch.device | str | None = None, non_blocking: bool = False):
        self.loader, self.num_batches, self.num_examples = loader, num_batches, num_examples
        self.device, self.non_blocking = device, non_blocking
        self.batches = self.examples = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            if self.num_batches is not None and self.batches >= self.num_batches:
                break
            if self.num_examples is not None:
                if self.examples >= self.num_examples:
                    break
                x, y = x[: self.num_examples - self.examples], y[: self.num_examples - self.examples]
            if self.device is not None:
                x = x.to(self.device, non_blocking=self.non_blocking)
                y = y.to(self.device, non_blocking=self.non_blocking)
            self.batches += 1
            self.examples += x.shape[0]
            yield x, y

    def reduced_examples(self, device: torch.device | str | None = None) -> float:
        """Examples yielded, summed over torch.distributed ranks (this rank's count without a process group)."""
        return all_reduce_count(self.examples, device or self.device)

    def reduced_batches(self, device: torch.device | str | None = None) -> float:
        """Batches yielded, summed over torch.distributed ranks (this rank's count without a process group)."""
        return all_reduce_count(self.batches, device or self.device)


def first_batches(loader: Iterable, num_batches: int | None = None, num_examples: int | None = None,
                  device: torch.device | str | None = None, non_blocking: bool = False) -> Batches:
    """The first `num_batches` batches / `num_examples` examples of `loader` as (x, y) on `device` (see Batches)."""
    return Batches(loader, num_batches, num_examples, device, non_blocking)
