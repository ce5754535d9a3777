"""One home for the checks every method shares: the target, option values, counts and fractions.

Every registered method function is wrapped by `checked`, which reads the option defaults and their allowed
values from the function itself (its signature and `choices`) and refuses a bad target or option before any
work with a ValueError that names it. One loop checks a set of options, `check_options` (raising
OptionError "<option>: <why>"): the wrapper uses it, and so does the registry's `Method.check` (pruner.py),
which pruning_lib.prune and the config check (config.py) call, so a value the CLI accepts is one the function
accepts, with the same words everywhere.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

TOLERANCE = 0.01  # every method hits its target within one percentage point
FRACTIONS = {"layer_cap": "the largest fraction of a layer's channels or directions removed",  # in [0, 1)
             "finetune_share": "the share of the runner's fine-tuning steps spent between pruning steps",
             "regrow": "the share of a pruning step planned beyond its target and brought back"}
INT_MINIMUM = {"hooi_iters": 0}  # integer options are counts >= 1 except these (0 HOOI steps = truncated HOSVD)


def is_int(value: Any) -> bool:
    """True for an integer that is not a bool (JSON true would otherwise count as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a finite int or float that is not a bool (NaN and infinities are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_target(target: Any) -> None:
    """Raise ValueError unless 0 <= target < 1 (the fraction of parameters removed)."""
    if not is_number(target) or not 0.0 <= target < 1.0:
        raise ValueError(f"target: {target!r} is outside [0, 1) (the fraction of parameters removed)")


def check_positive_int(value: Any, name: str) -> None:
    """Raise ValueError naming `name` unless value is an int >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name}: {value!r} is not a positive integer")


def check_fraction(value: Any, name: str) -> None:
    """Raise ValueError naming `name` unless 0 <= value < 1."""
    if not is_number(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: {value!r} is outside [0, 1) ({FRACTIONS.get(name, 'a fraction')})")


def check_choice(value: Any, allowed: tuple[str, ...], name: str) -> None:
    """Raise ValueError naming `name` unless value is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name}: unknown {value!r}, allowed: {', '.join(allowed)}")


class OptionError(ValueError):
    """A method option that is unknown or has a value not allowed: str() is "<option>: <why>"; `option` and
    `why` let a caller name it its own way (the config check: method_options.<method>.<option>)."""

    def __init__(self, option: str, why: str):
        super().__init__(f"{option}: {why}")
        self.option, self.why = option, why


def option_error(key: str, value: Any, default: Any, allowed: tuple[str, ...] = ()) -> str | None:
    """Why `value` is not allowed for option `key` whose default is `default`, or None. The value must have
    the default's type (bool; string from `allowed`; integer count >= 1, or INT_MINIMUM; finite number
    >= 0, in [0, 1) for the FRACTIONS)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{value!r} must be true or false"
    if isinstance(default, str):
        if not isinstance(value, str):
            return f"{value!r} must be a string like the default {default!r}"
        return None if value in allowed else f"unknown {value!r}, allowed: {', '.join(allowed)}"
    if is_int(default):
        if not is_int(value):
            return f"{value!r} must be an integer like the default {default!r}"
        low = INT_MINIMUM.get(key, 1)
        return None if value >= low else f"{value!r} must be >= {low}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} must be a number like the default {default!r}"
    if not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if key in FRACTIONS and not 0.0 <= value < 1.0:
        return f"{value!r} is outside [0, 1) ({FRACTIONS[key]})"
    return None if value >= 0 else f"{value!r} must be >= 0"


def check_options(options: dict[str, Any], defaults: dict[str, Any], choices: dict[str, tuple[str, ...]],
                  owner: str = "", renamed: dict[str, str] | None = None,
                  notes: dict[str, str] | None = None) -> None:
    """Raise OptionError for the first option of `options` that is unknown (not in `defaults`) or whose value
    option_error refuses. An unknown option listed in `renamed` (old -> new name) whose new name is an option
    here is refused with "renamed; use <new> (<notes[new]>)"; any other unknown one with the allowed names."""
    for key, value in options.items():
        if key not in defaults:
            new = (renamed or {}).get(key)
            if new in defaults:
                note = (notes or {}).get(new)
                raise OptionError(key, f"renamed; use {new}" + (f" ({note})" if note else ""))
            of = f" of {owner}" if owner else ""
            raise OptionError(key, f"not an option{of}, allowed: {', '.join(defaults) or '(none)'}")
        problem = option_error(key, value, defaults[key], choices.get(key, ()))
        if problem:
            raise OptionError(key, problem)


def checked(**choices: tuple[str, ...]) -> Callable:
    """Decorator for a method function `fn(model, ctx, target, **options)`: before the call, check `target`
    and every option that has a non-None default (option_error, with `choices` the allowed strings), raising
    OptionError (a ValueError) "<option>: <why>" (check_options). The wrapped function carries `defaults` and
    `choices` for the registry
    (which refuses a registered function with a None default: its type could not be checked)."""
    def wrap(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        defaults = {k: p.default for k, p in signature.parameters.items()
                    if p.default is not inspect.Parameter.empty and p.default is not None}
        for key, default in defaults.items():
            if isinstance(default, str) and key not in choices:
                raise TypeError(f"{fn.__name__}: string option '{key}' needs its allowed values in checked(...)")

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs).arguments
            if "target" in bound:
                check_target(bound["target"])
            check_options({k: v for k, v in bound.items() if k in defaults}, defaults, choices)
            return fn(*args, **kwargs)

        run.defaults, run.choices = defaults, choices
        return run
    return wrap
