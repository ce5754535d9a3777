"""The one timer of the benchmarks: torch.utils.benchmark.Timer, a stated number of repeats, the median.

    from timing import median_seconds, timed
    seconds = median_seconds(fn, repeats=3)                     # fn() timed 3 times, median in seconds
    seconds, out = timed(fn, repeats=2, fresh=lambda: copy.deepcopy(model))   # fn(fresh()) and its last result

Each repeat is one `Timer.blocked_autorange(min_run_time=0)` measurement: Timer calls fn once untimed (its
block-size estimate, which doubles as the warm-up), then times one call; so `repeats` timed calls cost 2 x
`repeats` calls. Timer synchronises CUDA around each timed block and runs with `threads` torch threads (default:
the current torch.get_num_threads(), not Timer's default of one). `fresh()` builds fn's argument in Timer's
setup, outside the timed region, anew before every call (a step that changes its model in place gets a new
copy each time). The report is the median of the `repeats` timed calls. The benchmarks time steps of
milliseconds to minutes, where one call per block is the right block.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable

import torch
from torch.utils.benchmark import Timer


def timed(fn: Callable[..., Any], repeats: int = 3, fresh: Callable[[], Any] | None = None,
          threads: int | None = None) -> tuple[float, Any]:
    """(median seconds per call over `repeats` measurements, fn's last result); fn() or fn(fresh())."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, not {repeats}")
    last: list[Any] = [None]

    def call(*args: Any) -> None:
        last[0] = fn(*args)

    timer = Timer(stmt="call(arg)" if fresh else "call()", setup="arg = fresh()" if fresh else "pass",
                  globals={"call": call, "fresh": fresh},
                  num_threads=threads or torch.get_num_threads())
    times = [timer.blocked_autorange(min_run_time=0.0).median for _ in range(repeats)]
    return statistics.median(times), last[0]


def median_seconds(fn: Callable[..., Any], repeats: int = 3, fresh: Callable[[], Any] | None = None,
                   threads: int | None = None) -> float:
    """Median seconds per call of fn() (or fn(fresh())) over `repeats` Timer measurements (see the module)."""
    return timed(fn, repeats, fresh, threads)[0]
