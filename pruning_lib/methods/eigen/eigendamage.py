"""EigenDamage (Wang, Grosse, Fidler & Zhang, ICML 2019): the registry entry `eigendamage`, its schedule and
the options record the whole eigen family shares.

Each step scores every prunable layer's eigen-directions with channel-patch K-FAC (basis.py), searches one
global threshold for the step's target (select.py) and rebuilds the planned layers as EigenBottlenecks
(convolutions) or EigenPairs (Linear layers: rank-r pairs, costed as such; rebuild.py). `steps` S > 1
approaches the target in S steps towards target · k / S (pruner.run_steps, rule "linear"), each re-estimating K-FAC in eval mode (on the cores of layers already factored, rotations merged)
after re-estimating BatchNorm statistics on `num_batches` training batches (the pruned layers changed them); an
EigenPair is re-scored as the Linear it applies and rebuilt as one new pair.

EigenOptions holds the options EigenDamage and Improved EigenDamage share; `with_options` gives a registry
entry those options as keyword arguments (their names and defaults read from the record, so written once).
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from torch import nn

from ...checks import check_choice, check_target, checked, option_error
from ...curvature.fisher import FISHERS, KFAC_APPROXES
from ...curvature.kfac import MAX_FACTOR
from ...metrics import count_params
from ...pruner import PruneContext, PruneResult, finish, run_steps
from .basis import prunable_layers, require_prunable, score_model
from .rebuild import core_ranks, rebuild_layers
from .select import TARGET_KINDS, plan_layers, search_threshold


@dataclass(frozen=True)
class EigenOptions:
    """The options every eigen method shares (checked on construction, each error naming its field).

    include_classifier  also factor the classifier;  fisher  the Fisher K-FAC estimates (curvature.fisher);
    num_batches  batches for K-FAC and for BatchNorm re-estimation between steps;  steps  pruning steps (1: one
    shot);  layer_cap  the largest fraction of a layer's directions removed;  freeze_rotations  rotations not
    trained in fine-tuning;  round_to  kept ranks multiples of it (or the whole width);  max_factor  layers with
    a K-FAC factor side above it are skipped;  pointwise_pairs  rebuild 1x1 convs as rank-r pairs, r·(C_in + C_out)
    parameters, like Linear layers (the same function as 1x1 -> core -> 1x1 at fewer parameters; MobileNetV2 /
    EfficientNet need it to reach 50 %); the configs of the published CNN tables set it false, as they were
    measured;  kfac_approx  "expand" | "reduce": how K-FAC
    treats a Linear layer's extra positions (tokens, channels-last pixels), curvature.kfac (expand, the default:
    like a conv's pixels, so a channels-last Linear and the same 1x1 conv are scored alike)."""

    include_classifier: bool = False
    fisher: str = "true"
    num_batches: int = 4
    steps: int = 1
    layer_cap: float = 0.9
    freeze_rotations: bool = False
    round_to: int = 1
    max_factor: int = MAX_FACTOR
    pointwise_pairs: bool = True
    kfac_approx: str = "expand"

    def __post_init__(self) -> None:
        choices = {"fisher": FISHERS, "kfac_approx": KFAC_APPROXES}
        for f in fields(self):
            problem = option_error(f.name, getattr(self, f.name), f.default, choices.get(f.name, ()))
            if problem:
                raise ValueError(f"{f.name}: {problem}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict[str, Any]:
        """{option: value}."""
        return asdict(self)


def with_options(fn: Callable) -> Callable:
    """For `fn(model, ctx, target, *, <its own options>, options: EigenOptions)`: a function taking every
    EigenOptions field as a keyword option too. Its signature (what checks.checked and the registry read) is
    fn's own parameters followed by the record's fields, keyword-only, with the record's defaults; the call
    builds the record from them and passes it as `options`."""
    own = [p for name, p in inspect.signature(fn).parameters.items() if name != "options"]
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
              for f in fields(EigenOptions)]
    names = set(EigenOptions.names())

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        record = EigenOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})
        return fn(*args, options=record, **kwargs)

    call.__signature__ = inspect.Signature(own + shared, return_annotation=inspect.signature(fn).return_annotation)
    return call


def eigendamage(model: nn.Module, loader, target: float, input_shape: tuple[int, ...],
                options: EigenOptions = EigenOptions(), *, base_params: int | None = None,
                target_kind: str = "params") -> tuple[nn.Module, dict[str, Any]]:
    """Prune `model` in place by EigenDamage; returns (model, info). Each of `options.steps` steps: K-FAC
    (on the cores of layers already factored, after re-estimating BatchNorm statistics), one global threshold
    for target · k / steps (of the parameters, or of the directions with target_kind="directions"), rebuild
    with rotations merged. Kept ranks are multiples of `round_to` (or the layer's whole width). A layer whose
    K-FAC factor side exceeds `max_factor` is left as it is and listed in info["skipped"] (why:
    info["skip_reasons"])."""
    check_target(target)
    check_choice(target_kind, TARGET_KINDS, "target_kind")
    o = options
    base_params = base_params or count_params(model)
    names = prunable_layers(model, o.include_classifier)
    require_prunable(model, names, o.include_classifier)
    info: dict[str, Any] = {"rounds": [], "kfac_seconds": 0.0, "round_to": o.round_to, "skip_reasons": {}}

    def step(k: int, goal: float) -> None:
        t0 = time.perf_counter()
        layers, skipped = score_model(model, loader, names, input_shape, fisher=o.fisher, num_batches=o.num_batches,
                                      max_factor=o.max_factor, reasons=info["skip_reasons"],
                                      pointwise_pairs=o.pointwise_pairs, approx=o.kfac_approx)
        info["kfac_seconds"] += time.perf_counter() - t0
        threshold, got = search_threshold(layers, goal, o.layer_cap, current_params=count_params(model),
                                          base_params=base_params, target_kind=target_kind, round_to=o.round_to)
        plan = plan_layers(layers, threshold, o.layer_cap, round_to=o.round_to)
        rebuild_layers(model, layers, plan, freeze_rotations=o.freeze_rotations)
        info["rounds"].append({"target": goal, "threshold": threshold, "achieved": got,
                               "ranks": {n: list(r) for n, r in plan.items() if r is not None}})
        info["skipped"] = skipped

    run_steps(model, loader, target, o.steps, step, rule="linear", bn_batches=o.num_batches)
    info["ranks"] = core_ranks(model, names)
    info["achieved_" + target_kind] = info["rounds"][-1]["achieved"]
    return model, info


@checked(fisher=FISHERS, target_kind=TARGET_KINDS, kfac_approx=KFAC_APPROXES)
@with_options
def prune_eigendamage(model: nn.Module, ctx: PruneContext, target: float, *, target_kind: str = "params",
                      options: EigenOptions) -> PruneResult:
    """Registry entry: EigenDamage with the threshold searched so that `target` of the parameters is removed
    (kept ranks multiples of `round_to`; layers with a K-FAC factor side above `max_factor` skipped); the
    shared options are EigenOptions'."""
    model, info = eigendamage(model, ctx.loader, target, ctx.input_shape, options, base_params=ctx.base_params,
                              target_kind=target_kind)
    return finish(model, ctx, info)
