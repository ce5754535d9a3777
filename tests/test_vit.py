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


def test_full_rank_factorisations_reproduce_every_linear_of_the_vit():
    """Every Linear of the ViT (qkv, proj, MLP, head) on token inputs (N, T, D): the SVD pair, the activation-
    whitened SVD pair (A from the layer's real inputs) and the three truncations of methods/truncation.py at full
    rank reproduce the layer, ≤ 1e-5."""
    from pruning_lib.curvature.activations import input_covariances
    from pruning_lib.methods.lowrank_layers import svd_layers
    from pruning_lib.methods.truncation import truncations
    model = base()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    A = input_covariances(model, random_loader(32, SHAPE, 10), names, 2)
    x = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: x.__setitem__(n, i[0])) for n in names]
    with torch.no_grad():
        model(torch.randn(4, *SHAPE))
    for h in hooks:
        h.remove()
    assert len(names) == 4 * 4 + 1 and x["blocks.0.attn.qkv"].dim() == 3  # (N, tokens, D)
    for n in names:
        layer = model.get_submodule(n)
        full = min(layer.weight.shape)
        L = torch.linalg.cholesky(A[n] + 1e-6 * A[n].diagonal().mean() * torch.eye(len(A[n]), dtype=torch.float64))
        with torch.no_grad():
            want = layer(x[n])
            for pair in (svd_layers(layer, full), svd_layers(layer, full, whitening=L)):
                assert (pair(x[n]) - want).abs().max() <= 1e-5, n
        eye = torch.eye(layer.weight.shape[0], dtype=torch.float64)
        for form, w_r in truncations(layer.weight.detach(), A[n], eye, full).items():
            assert (w_r - layer.weight.double()).abs().max() <= 1e-5, (n, form)
