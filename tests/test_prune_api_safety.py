"""pruning_lib.prune never damages the user's model, and every option is checked by one Method.check.

For every registered method a failure is injected at each stage it has (scoring, threshold selection: an
unreachable target and a patched search, surgery, BatchNorm re-estimation between steps); the model passed in
must come back bit-for-bit: parameters and buffers (BatchNorm running statistics, num_batches_tracked), the module
tree (names, types, the very same objects), hooks, gradients and every module's training flag. A stage patch
replaces a function where the method modules use it (every loaded pruning_lib module holding that object), so it
follows the code wherever a function is defined; each injected failure is checked to have been reached (the
test expects the injected exception itself). Tiny model and data: the whole file runs in well under a minute.
"""
from __future__ import annotations

import math
import re
import sys

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import pruning_lib
from pruning_lib.checks import OptionError
from pruning_lib.config import ConfigError, validate
from pruning_lib.models import build_model
from pruning_lib.pruner import RENAMED_OPTIONS, Method, TargetUnreachable
from pruning_lib.registry import METHODS

from helpers import random_loader, short

INPUT = (1, 8, 8)


class Injected(RuntimeError):
    """The failure a stage patch raises."""


def multi_step(method: str) -> dict | None:
    """Options that make `method` prune in two steps with BatchNorm re-estimated between them, or None when it
    has no such schedule (works before and after the mode / iterations / schedule -> steps rename)."""
    opts = METHODS[method].options
    if "schedule" in opts:
        return {"schedule": "iterative", "steps": 2}
    if "mode" in opts:
        return {"mode": "iterative", "iterations": 2}
    return {"steps": 2} if "steps" in opts else None


# ---------------------------------------------------------------------------------------- the user's model

def user_model() -> nn.Module:
    """The kit's ResNet-8 as a user would hand it over: BatchNorm statistics that are not the reset values,
    a forward hook of their own, the stem BatchNorm frozen in eval mode while the rest trains."""
    torch.manual_seed(0)
    model = build_model("resnet8", 1, 1, 10)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)
    model.register_forward_hook(lambda mod, inp, out: None)
    model.train()
    model.bn1.eval()
    return model


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
              "_load_state_dict_post_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


def snapshot(model: nn.Module) -> dict:
    """Everything prune must leave as it was, as comparable values (tensors cloned)."""
    return {
        "tensors": {k: (v.dtype, tuple(v.shape), v.detach().clone()) for k, v in
                    [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]},
        "tree": [(n, type(m), id(m), m.training) for n, m in model.named_modules(remove_duplicate=False)],
        "objects": [id(p) for p in model.parameters()] + [id(b) for b in model.buffers()],
        "hooks": {n: {h: [(k, id(f)) for k, f in getattr(m, h, {}).items()] for h in HOOK_DICTS}
                  for n, m in model.named_modules()},
        "attributes": {n: sorted(vars(m)) for n, m in model.named_modules()},
        "grads": [p.grad is None for p in model.parameters()],
        "pruned": [n for n, m in model.named_modules() if any(isinstance(h, torch_prune.BasePruningMethod)
                                                              for h in m._forward_pre_hooks.values())],
    }


def assert_unchanged(before: dict, model: nn.Module) -> None:
    after = snapshot(model)
    assert list(after["tensors"]) == list(before["tensors"])
    for k, (dtype, shape, value) in before["tensors"].items():
        dtype2, shape2, value2 = after["tensors"][k]
        assert (dtype2, shape2) == (dtype, shape), k
        assert torch.equal(value2.view(-1).view(torch.uint8) if value2.dtype != torch.bool else value2,
                           value.view(-1).view(torch.uint8) if value.dtype != torch.bool else value), k  # bitwise
    for key in ("tree", "objects", "hooks", "attributes", "grads", "pruned"):
        assert after[key] == before[key], key


# ---------------------------------------------------------------------------------------- stage patches

def _pruning_lib_modules() -> list:
    return [m for name, m in list(sys.modules.items()) if name.startswith("pruning_lib") and m is not None]


def resolve(method: str, name: str):
    """The function or class called `name` that `method` uses: the one object of that name in the loaded
    pruning_lib modules, or, when several differ (several modules define one of that name), the one in the
    method function's own module."""
    found = {id(getattr(m, name)): getattr(m, name) for m in _pruning_lib_modules() if callable(getattr(m, name, None))}
    if len(found) > 1:
        own = METHODS[method].fn.__wrapped__.__globals__
        found = {id(own[name]): own[name]} if name in own else found
    assert len(found) == 1, f"stage patch {name!r} for {method}: found {len(found)} candidates; update the test"
    return next(iter(found.values()))


def patch_everywhere(monkeypatch, original, replacement) -> int:
    """Replace `original` in every loaded pruning_lib module that holds it (its use sites); returns how many."""
    count = 0
    for module in _pruning_lib_modules():
        for attr, value in list(vars(module).items()):
            if value is original:
                monkeypatch.setattr(module, attr, replacement)
                count += 1
    return count


def fail_on_call(original, n: int = 1):
    """`original`, except that call n (1-based) runs it and then raises Injected (the damage it did stays)."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        out = original(*args, **kwargs)
        if len(calls) >= n:
            raise Injected(f"{original.__name__} (call {len(calls)})")
        return out
    return wrapper


def zero_bn_then_fail(model, *args, **kwargs):
    """What a crash in the middle of BatchNorm re-estimation leaves: statistics reset, train mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    model.train()
    raise Injected("recalibrate_bn")


SCORING = {"magnitude_global": "amount_to_remove", "magnitude_layerwise": "amount_to_remove", "svd": "analyse", "tucker": "analyse",
           "cp": "analyse", "whitened_svd": "input_covariances", "l1": "l1_scores", "taylor": "taylor_scores",
           "random": "random_group_scores",
           "obd": "obd_scores", "obs": "obs_factors", "eigendamage": "score_model",
           "improved_eigendamage": "score_layers", "wanda": "input_covariances", "sparsegpt": "input_covariances"}
SEARCH = {"channel": "closest_threshold", "lowrank": "fit_ranks", "eigen": "search_threshold"}
# (name, failing call): surgery fails after part of the model is already rebuilt where it goes layer by layer
SURGERY = {"magnitude_global": ("torch:global_unstructured", 1), "magnitude_layerwise": ("torch:l1_unstructured", 2),
           "svd": ("factorise_layer", 2), "whitened_svd": ("factorise_layer", 2), "tucker": ("factorise_layer", 2),
           "cp": ("factorise_layer", 2),
           "eigendamage": ("rebuild_layer", 2), "improved_eigendamage": ("rebuild_subspace", 1),
           "wanda": ("torch:custom_from_mask", 2), "sparsegpt": ("torch:custom_from_mask", 2)}


def stages(method: str) -> list[str]:
    family = METHODS[method].family
    out = ["scoring", "unreachable"] + (["search"] if family in SEARCH else []) + ["surgery"]
    return out + (["batchnorm"] if multi_step(method) else [])


def inject(monkeypatch, method: str, stage: str) -> tuple[dict, float, type]:
    """Install the stage's failure; returns (options, target, expected exception)."""
    options, target = short(method), 0.5
    if stage == "scoring":
        f = resolve(method, SCORING[method])
        assert patch_everywhere(monkeypatch, f, fail_on_call(f))
    elif stage == "unreachable":  # a channel method keeps half of every group: 99 % is out of reach
        cap = {"layer_cap": 0.5} if "layer_cap" in METHODS[method].options else {}
        return {**options, **cap}, 0.99, TargetUnreachable
    elif stage == "search":
        f = resolve(method, SEARCH[METHODS[method].family])
        assert patch_everywhere(monkeypatch, f, fail_on_call(f))
    elif stage == "surgery":
        if METHODS[method].family == "channel":  # the whole removal of the first step, then the failure
            pruner = resolve(method, "ChannelPruner")
            monkeypatch.setattr(pruner, "apply", fail_on_call(pruner.apply))
        else:
            name, n = SURGERY[method]
            if name.startswith("torch:"):
                name = name[len("torch:"):]
                monkeypatch.setattr(torch_prune, name, fail_on_call(getattr(torch_prune, name), n))
            else:
                f = resolve(method, name)
                assert patch_everywhere(monkeypatch, f, fail_on_call(f, n))
    elif stage == "batchnorm":
        options = {**options, **multi_step(method)}
        assert patch_everywhere(monkeypatch, resolve(method, "recalibrate_bn"), zero_bn_then_fail)
    return options, target, Injected


CASES = [(m, s) for m in METHODS for s in stages(m)]


@pytest.mark.parametrize("method,stage", CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_a_failure_at_any_stage_leaves_the_model_as_it_was(monkeypatch, method, stage):
    model, data = user_model(), random_loader(32, INPUT, 10)
    before = snapshot(model)
    options, target, expected = inject(monkeypatch, method, stage)
    with pytest.raises(expected):
        pruning_lib.prune(model, method, target, loader=data, **options)
    assert_unchanged(before, model)


def test_the_checks_see_the_damage_they_guard_against(monkeypatch):
    """Without prune's copy the same failure does damage the model, and the comparison sees it."""
    model, data = user_model(), random_loader(32, INPUT, 10)
    before = snapshot(model)
    monkeypatch.setattr(pruning_lib.api, "_working_copy", lambda m: m)
    inject(monkeypatch, "l1", "batchnorm")
    with pytest.raises(Injected):
        pruning_lib.prune(model, "l1", 0.5, loader=data, steps=2)
    with pytest.raises(AssertionError):
        assert_unchanged(before, model)


@pytest.mark.parametrize("method", ["magnitude_global", "l1", "svd", "eigendamage"])
def test_success_prunes_the_users_object_in_place(method):
    """result.model is the object passed in; it holds the pruned net, its hooks and its training flags."""
    model, data = user_model(), random_loader(32, INPUT, 10)
    hook_ids = [id(h) for h in model._forward_hooks.values()]
    result = pruning_lib.prune(model, method, 0.5, loader=data, **short(method))
    assert result.model is model and abs(result.achieved_param_ratio - 0.5) <= 0.01
    assert [id(h) for h in model._forward_hooks.values()] == hook_ids
    assert model.training and not model.bn1.training
    assert torch.isfinite(model.eval()(next(iter(data))[0])).all()


def test_a_hook_method_keeps_feeding_the_users_object():
    class Recorder:
        def __init__(self):
            self.calls = 0

        def hook(self, module, inputs, output):
            self.calls += 1

    model, recorder = user_model(), Recorder()
    model.register_forward_hook(recorder.hook)
    pruning_lib.prune(model, "l1", 0.5, example_inputs=torch.zeros(1, *INPUT))
    model(torch.zeros(2, *INPUT))
    assert recorder.calls >= 1


# ---------------------------------------------------------------------------------------- needs a loader

EXPECTED_DATA = {"magnitude_global": False, "magnitude_layerwise": False, "svd": False, "tucker": False,
                 "cp": False, "whitened_svd": True, "l1": False, "random": False, "taylor": True, "obd": True,
                 "obs": True, "eigendamage": True, "improved_eigendamage": True, "wanda": True, "sparsegpt": True}


@pytest.mark.parametrize("method", list(METHODS))
def test_needs_data_follows_the_options(method):
    assert METHODS[method].needs_data() is EXPECTED_DATA[method]
    steps = multi_step(method)
    if steps:  # two steps re-estimate BatchNorm on training batches
        assert METHODS[method].needs_data(steps)
    if "rank_rule" in METHODS[method].options and not EXPECTED_DATA[method]:  # the weights' own spectra
        assert not any(METHODS[method].needs_data({"rank_rule": r}) for r in METHODS[method].choices["rank_rule"])


@pytest.mark.parametrize("method,options", [("l1", {"steps": 3}), ("random", {"steps": 2}), ("taylor", {}),
                                            ("eigendamage", {}), ("improved_eigendamage", {}),
                                            ("whitened_svd", {}), ("wanda", {}), ("sparsegpt", {})])
def test_a_method_that_reads_batches_is_refused_without_a_loader_before_any_work(method, options):
    model = user_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"^loader: {method} .*training batches"):
        pruning_lib.prune(model, method, 0.5, example_inputs=torch.zeros(1, *INPUT), **options)
    assert_unchanged(before, model)


def test_l1_one_shot_needs_no_loader():
    result = pruning_lib.prune(user_model(), "l1", 0.5, example_inputs=torch.zeros(1, *INPUT), steps=1)
    assert abs(result.achieved_param_ratio - 0.5) <= 0.01


def test_api_keeps_no_hand_kept_list():
    assert not hasattr(pruning_lib.api, "NEEDS_DATA")


# ---------------------------------------------------------------------------------------- Method.check

def test_check_names_the_option_and_what_is_allowed():
    l1 = METHODS["l1"]
    l1.check({"steps": 2, "round_to": 8})
    with pytest.raises(OptionError, match=r"^sparsity: not an option of l1, allowed: layer_cap, "):
        l1.check({"sparsity": 0.5})
    with pytest.raises(ValueError, match=r"^round_to: 0 must be >= 1$"):
        l1.check({"round_to": 0})
    with pytest.raises(ValueError, match=r"^normalize: unknown 'median', allowed: "):
        l1.check({"normalize": "median"})
    with pytest.raises(ValueError, match=r"^layer_cap: nan is not a finite number$"):
        l1.check({"layer_cap": math.nan})


@pytest.mark.parametrize("old", list(RENAMED_OPTIONS))
def test_a_renamed_option_names_the_new_one(old):
    """An option a method no longer has, listed in RENAMED_OPTIONS, is refused naming its new name (when the
    method has it); l1 has `steps` and none of the old names."""
    with pytest.raises(OptionError, match=rf"^{old}: renamed; use steps \(1 = one shot\)$"):
        METHODS["l1"].check({old: 3})
    with pytest.raises(ValueError, match=rf"^{old}: renamed; use steps"):
        pruning_lib.prune(user_model(), "l1", 0.5, example_inputs=torch.zeros(1, *INPUT), **{old: 3})
    with pytest.raises(ConfigError, match=rf"'method_options.l1@a.{old}': renamed; use steps \(1 = one shot\)"):
        validate({"exp_name": "x", "methods": ["l1@a"], "method_options": {"l1@a": {old: 3}}})


def test_a_renamed_option_without_its_new_name_is_just_unknown():
    """svd has no `steps`: an old name is an unknown option there, with the allowed names."""
    with pytest.raises(OptionError, match=r"^mode: not an option of svd, allowed: rank_rule"):
        METHODS["svd"].check({"mode": "oneshot"})


def test_a_method_that_still_has_an_old_name_checks_its_value():
    """A method not yet renamed keeps its option: Method.check checks the value, not the name."""
    for m in METHODS.values():
        for old in RENAMED_OPTIONS:
            if old in m.options:
                m.check({old: m.options[old]})


def test_the_function_wrapper_and_the_config_use_the_same_words():
    entry = METHODS["obs"]
    with pytest.raises(OptionError) as direct:
        entry.check({"damping": -1.0})
    with pytest.raises(OptionError) as wrapped:
        entry.fn(nn.Linear(2, 2), None, 0.5, damping=-1.0)
    with pytest.raises(ConfigError) as config:
        validate({"exp_name": "x", "methods": ["obs"], "method_options": {"obs": {"damping": -1.0}}})
    assert str(direct.value) == str(wrapped.value) == "damping: -1.0 must be >= 0"
    assert re.search(r"'method_options\.obs\.damping': -1\.0 must be >= 0$", str(config.value))


def test_a_method_record_without_a_name_still_checks():
    @pruning_lib.checks.checked()
    def fn(model, ctx, target, steps: int = 1):
        return None

    entry = Method(fn, "test")
    with pytest.raises(OptionError, match=r"^iterations: renamed; use steps \(1 = one shot\)$"):
        entry.check({"iterations": 2})
    with pytest.raises(OptionError, match=r"^other: not an option, allowed: steps$"):
        entry.check({"other": 2})
    assert not entry.needs_data({"steps": 5})
