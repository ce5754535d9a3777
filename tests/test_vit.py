"""The kit's vit_tiny (timm's VisionTransformer) through every family: target 0 reproduces the model's outputs for
every registered method that prunes a ViT, and each reaches the benchmark's targets (configs/fashion_mnist_vit.json)
within one point, with every attention's num_heads matching its qkv / proj widths where they stay Linear."""
import copy
import functools

import pytest
import torch

import pruning_lib
from pruning_lib.config import load_config
from pruning_lib.models import build_model
from pruning_lib.notebook import kit_root
from helpers import random_loader, short

SHAPE = (1, 8, 8)
BENCHMARK = load_config(kit_root() / "configs" / "fashion_mnist_vit.json")
METHODS = [m for m in BENCHMARK.methods]


@functools.cache
def base() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("vit_tiny", 1, 1, 10, 8).eval()


def prune(method: str, target: float):
    options = {**short(method), **BENCHMARK.method_options.get(method, {})}
    return pruning_lib.prune(copy.deepcopy(base()), method, target, loader=random_loader(32, SHAPE, 10), **options)


@pytest.mark.parametrize("method", METHODS)
def test_target_zero_reproduces_the_vit(method):
    x = torch.randn(4, *SHAPE)
    model = prune(method, 0.0).model.eval()
    with torch.no_grad():
        assert (model(x) - base()(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_every_benchmark_method_reaches_its_targets_on_the_vit(method, target):
    result = prune(method, target)
    assert abs(result.achieved_param_ratio - target) <= 0.01
    for block in result.model.blocks:
        a = block.attn
        if isinstance(a.qkv, torch.nn.Linear):  # low-rank methods replace it by a pair
            assert a.qkv.out_features == 3 * a.num_heads * a.head_dim and a.proj.in_features == a.num_heads * a.head_dim
    assert torch.isfinite(result.model.eval()(torch.randn(2, *SHAPE))).all()
