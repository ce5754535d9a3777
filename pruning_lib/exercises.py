"""Course exercises in the notebooks: compare a student's function with the library's on fresh random inputs.

An exercise cell holds the student's function; its solution sits between nbgrader's markers
`### BEGIN SOLUTION` / `### END SOLUTION`, which `make student` (scripts/make_student.py) replaces by a
`raise NotImplementedError` stub. The check cell after it calls `check_exercise`, which prints a pass, or raises
`ExerciseError` whose whole text is one line: "not done yet", or the first trial and output where the two
functions differ. In Jupyter the cell then ends with that line alone, not with a traceback through the kit.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def _differences(got: Any, want: Any, where: str, rtol: float, atol: float) -> str | None:
    """The first place where `got` and `want` differ (tensors / numbers within rtol, atol; containers by
    structure; anything else by ==), or None when they agree."""
    if isinstance(want, torch.Tensor) or isinstance(got, torch.Tensor):
        if not isinstance(got, torch.Tensor) or not isinstance(want, torch.Tensor):
            return f"{where}: got a {type(got).__name__}, expected a {type(want).__name__}"
        if got.shape != want.shape:
            return f"{where}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if want.dtype == torch.bool or got.dtype == torch.bool:
            wrong = int((got.bool() != want.bool()).sum())
            return f"{where}: {wrong} of {want.numel()} entries differ" if wrong else None
        g, w = got.detach().double().cpu(), want.detach().double().cpu()
        if not torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
            return f"{where}: max |difference| {float((g - w).abs().max()):.3g} (expected values of size " \
                   f"up to {float(w.abs().max()):.3g})"
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{where}: keys {sorted(got) if isinstance(got, dict) else type(got).__name__}, " \
                   f"expected {sorted(want)}"
        return next((d for k in want if (d := _differences(got[k], want[k], f"{where}[{k!r}]", rtol, atol))), None)
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"{where}: {len(got) if isinstance(got, (list, tuple)) else type(got).__name__} items, " \
                   f"expected {len(want)}"
        return next((d for i, (a, b) in enumerate(zip(got, want))
                     if (d := _differences(a, b, f"{where}[{i}]", rtol, atol))), None)
    if isinstance(want, (int, float)) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return None if abs(got - want) <= atol + rtol * abs(want) else f"{where}: {got!r}, expected {want!r}"
    return None if got == want else f"{where}: {got!r}, expected {want!r}"


class ExerciseError(AssertionError):
    """An exercise check that did not pass; IPython shows its message alone (`_render_traceback_`), without the
    traceback through check_exercise that would only distract a student."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def check_exercise(name: str, student: Callable, reference: Callable, make_inputs: Callable[[torch.Generator], tuple],
                   trials: int = 3, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Call `student(*inputs)` and `reference(*inputs)` on `trials` fresh inputs `make_inputs(generator)`
    (generator seeded 0, 1, ...); print a pass and return True when every trial matched, else raise
    ExerciseError saying "not done yet" (the stub still raises NotImplementedError) or the first difference."""
    for trial in range(trials):
        inputs = make_inputs(torch.Generator().manual_seed(trial))
        try:
            got = student(*inputs)
        except NotImplementedError:
            raise ExerciseError(f"[ ] {name}: not done yet (write the exercise cell above, run it, then run this "
                                "check again)") from None
        want = reference(*inputs)
        problem = _differences(got, want, "output", rtol, atol)
        if problem:
            raise ExerciseError(f"[x] {name}: trial {trial} differs from the library, {problem}")
    print(f"[ok] {name}: matches the library on {trials} random inputs")
    return True
