"""Activation-whitened SVD against oracles: the input second moments equal K-FAC's im2col A (its weight block); at
full rank the whitened factors reproduce the layer; at rank r the output error on the calibration inputs is
Σ_{i>r} s_i² and equals the best rank-r error found independently (the SVD of W X on the stacked input rows),
never above plain SVD's; a singular input moment without damping is refused naming the layer."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib
from pruning_lib.curvature import compute_kfac
from pruning_lib.curvature.activations import input_covariances
from pruning_lib.methods.lowrank_layers import svd_layers

from helpers import rel


class Net(nn.Module):
    """A conv (stride 2, padding 1) on images, then a Linear on its pixels as tokens (N, T, C), pooled, a head."""

    def __init__(self):
        super().__init__()
        self.conv, self.mix, self.head = nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        tokens = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)
        return self.head(torch.relu(self.mix(tokens)).mean(1))


def data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float64)
    return DataLoader(TensorDataset(x, torch.randint(0, 3, (n,), generator=g)), batch_size=8)


def rows_of(module, x):
    """The stacked input rows a layer reads (d x rows): im2col patches of a conv, token vectors of a Linear."""
    if isinstance(module, nn.Conv2d):
        return F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride).transpose(1, 2) \
            .reshape(-1, module.weight[0].numel()).T
    return x.reshape(-1, x.shape[-1]).T


def test_input_covariances_are_the_kfac_input_factor():
    torch.manual_seed(0)
    model, loader = Net().double(), data()
    ours = input_covariances(model, loader, ["conv", "mix"], num_batches=3)
    kfac = compute_kfac(model, loader, form="im2col", fisher="exact", num_batches=3, layers=["conv", "mix"])
    for name in ("conv", "mix"):
        assert rel(ours[name], kfac[name].A[:-1, :-1]) <= 1e-12  # K-FAC's A carries the bias coordinate last


@pytest.mark.parametrize("layer", [nn.Linear(6, 5), nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv1d(3, 4, 3)])
def test_full_rank_whitened_factors_reproduce_the_layer(layer):
    torch.manual_seed(0)
    layer = layer.double()
    d = layer.weight[0].numel()
    a = torch.randn(d, 2 * d, dtype=torch.float64)
    whitening = torch.linalg.cholesky(a @ a.T / (2 * d))
    x = torch.randn(2, 6, dtype=torch.float64) if isinstance(layer, nn.Linear) else \
        torch.randn(2, 3, *((7, 7) if isinstance(layer, nn.Conv2d) else (9,)), dtype=torch.float64)
    full = svd_layers(layer, min(layer.weight.shape[0], d), whitening)
    with torch.no_grad():
        assert (full(x) - layer(x)).abs().max() <= 1e-10


@pytest.mark.parametrize("name", ["conv", "mix"])
def test_truncation_error_is_the_dropped_whitened_spectrum_and_the_best_rank_r(name):
    """On the calibration inputs themselves (damping 0): ‖(W − W') X‖² / rows = Σ_{i>r} s_i(W L)², the same as
    the best rank-r error computed from the SVD of W X, and at most the plain SVD's."""
    torch.manual_seed(0)
    model, loader = Net().double(), data()
    a = input_covariances(model, loader, [name], num_batches=3)[name]
    module = model.get_submodule(name)
    seen = []
    handle = module.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    handle.remove()
    X = torch.cat([rows_of(module, x) for x in seen], 1)
    w = module.weight.detach().reshape(module.weight.shape[0], -1)
    L = torch.linalg.cholesky(a)
    s = torch.linalg.svdvals(w @ L)
    best = torch.linalg.svdvals(w @ X) ** 2 / X.shape[1]
    for r in (1, 2, 4):
        low, plain = svd_layers(module, r, L), svd_layers(module, r)
        error = lambda net: ((w - effective(net, module)) @ X).pow(2).sum() / X.shape[1]  # noqa: E731
        assert error(low).item() == pytest.approx(s[r:].pow(2).sum().item(), rel=1e-8)
        assert error(low).item() == pytest.approx(best[r:].sum().item(), rel=1e-8)
        assert error(low) <= error(plain) * (1 + 1e-12)


def effective(factored: nn.Sequential, like: nn.Module) -> torch.Tensor:
    """The C_out x d weight a factorised (project, expand) pair applies."""
    first = factored.project.weight.detach().reshape(factored.project.weight.shape[0], -1)
    second = factored.expand.weight.detach().reshape(factored.expand.weight.shape[0], -1)
    return second @ first


def test_prune_reaches_the_target_and_a_singular_moment_needs_damping():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g)),
                        batch_size=32)
    result = pruning_lib.prune(model, "whitened_svd", 0.5, loader=loader)
    assert abs(result.achieved_param_ratio - 0.5) <= 0.01 and result.info["unwhitened"] == []
    few = DataLoader(TensorDataset(torch.randn(4, 12, generator=g), torch.randint(0, 3, (4,), generator=g)))
    fresh = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    with pytest.raises(ValueError, match=r"layer '0': its input second moment is singular .* raise damping"):
        pruning_lib.prune(fresh, "whitened_svd", 0.5, loader=few, damping=0.0, num_batches=4)


def test_layers_over_max_factor_fall_back_to_plain_svd_exactly():
    """Oracle: with every layer's input side above max_factor nothing is whitened, and whitened_svd prunes exactly
    as svd does (same ranks, same weights); the layers are listed as unwhitened."""
    import copy
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g)),
                        batch_size=32)
    plain, whitened = copy.deepcopy(model), copy.deepcopy(model)
    a = pruning_lib.prune(plain, "svd", 0.5, loader=loader)
    b = pruning_lib.prune(whitened, "whitened_svd", 0.5, loader=loader, max_factor=8)
    assert b.info["unwhitened"] == ["0", "2"] and a.info["ranks"] == b.info["ranks"]
    for p, q in zip(plain.parameters(), whitened.parameters()):
        assert torch.equal(p, q)
