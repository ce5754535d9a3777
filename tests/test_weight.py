import copy

import pytest
import torch

from pruning_lib.data import load_dataset, make_loader
from pruning_lib.metrics import count_nonzero_params, count_params
from pruning_lib.models import build_model, classifier_of
from pruning_lib.pruner import PruneContext
from pruning_lib.train import TrainRecipe, train
from pruning_lib.methods.weight import magnitude_prune, masks_of, prune_global, prune_layerwise


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("resnet8", 1, 1, 10)


@pytest.mark.parametrize("fn", [prune_global, prune_layerwise])
@pytest.mark.parametrize("target", [0.0, 0.5, 0.7, 0.8, 0.9])
def test_target_is_hit_within_one_point(model, fn, target):
    ctx = PruneContext(None, (1, 8, 8), count_params(model))
    res = fn(model, ctx, target)
    assert abs(res.achieved_param_ratio - target) < 0.01
    assert abs(1 - count_nonzero_params(res.model) / ctx.base_params - target) < 0.01


def test_classifier_and_batchnorm_are_untouched(model):
    head = copy.deepcopy(classifier_of(model).weight)
    magnitude_prune(model, 0.9, count_params(model))
    assert torch.equal(classifier_of(model).weight, head)
    assert all(torch.count_nonzero(m.weight) == m.weight.numel()
               for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_global_threshold_keeps_the_largest_weights(model):
    from pruning_lib.methods.weight import prunable_weights
    before = torch.cat([m.weight.detach().abs().flatten() for m, _ in prunable_weights(model)])
    magnitude_prune(model, 0.5, count_params(model), "global")
    after = torch.cat([m.weight.detach().abs().flatten() for m, _ in prunable_weights(model)])
    kept, dropped = before[after != 0], before[after == 0]
    assert kept.min() >= dropped.max()


def test_ratio_zero_reproduces_outputs(model):
    x = torch.randn(4, 1, 8, 8)
    ref = copy.deepcopy(model).eval()(x)
    res = prune_global(model, PruneContext(None, (1, 8, 8), count_params(model)), 0.0)
    assert torch.allclose(res.model.eval()(x), ref, atol=0, rtol=0)


def test_masks_hold_during_and_after_finetuning(model):
    magnitude_prune(model, 0.8, count_params(model))
    masks = {k: v.clone() for k, v in masks_of(model).items()}
    seen_nonzero_in_pruned = []

    def hook(module, _inp, _out):
        seen_nonzero_in_pruned.append(int(torch.count_nonzero(module.weight[module.weight_mask == 0])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if hasattr(m, "weight_mask")]
    splits = load_dataset("digits")
    train(model, make_loader(splits.train, 64, shuffle=True), TrainRecipe(epochs=1, lr=0.05, batch_size=64),
          progress=False)
    for h in handles:
        h.remove()
    assert seen_nonzero_in_pruned and max(seen_nonzero_in_pruned) == 0
    for name, m in model.named_modules():
        if name in masks:
            assert torch.equal(m.weight_mask, masks[name])
            assert torch.count_nonzero(m.weight[masks[name] == 0]) == 0


def test_impossible_target_is_a_clear_error(model):
    with pytest.raises(ValueError, match="target: 0.99 removes"):
        magnitude_prune(model, 0.99, count_params(model))
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        magnitude_prune(model, 1.0, count_params(model))
