"""Hessian tools against a dense Hessian (torch.func.hessian) and torch.linalg.eigh on a ~300-parameter model."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from pruning_lib.curvature.hessian import (HessianOperator, hutchinson_trace, lanczos, layer_operator,
                                           spectral_density, top_eigenpairs)

from helpers import random_loader


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double()
    loader = random_loader(64, (1, 6, 6), 5, batch=32, seed=None, dtype=torch.float64)
    x, y = loader.dataset.tensors
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(flat):
        ps, i = {}, 0
        for n, s in zip(names, shapes):
            ps[n] = flat[i:i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(functional_call(model, ps, (x,)), y)

    H = hessian(loss)(flat0)
    return model, loader, H, torch.linalg.eigvalsh(H)


def test_hvp_equals_the_dense_product(setup):
    model, loader, H, _ = setup
    op = HessianOperator(model, loader, num_batches=2)
    assert op.dim == H.shape[0] and 250 < op.dim < 400
    v = torch.randn(op.dim, dtype=torch.float64)
    assert torch.allclose(op.matvec(v), H @ v, atol=1e-10)


def test_block_operator_is_the_dense_sub_block(setup):
    model, loader, H, _ = setup
    op = layer_operator(model, "0", loader, num_batches=2)  # conv weight (27) + bias (3)
    v = torch.randn(op.dim, dtype=torch.float64)
    assert torch.allclose(op.matvec(v), H[:30, :30] @ v, atol=1e-10)


def test_lanczos_basis_is_orthonormal_and_tridiagonalises(setup):
    model, loader, H, _ = setup
    T, Q = lanczos(HessianOperator(model, loader, 2), 30)
    assert torch.allclose(Q.T @ Q, torch.eye(Q.shape[1], dtype=torch.float64), atol=1e-8)
    assert torch.allclose(Q.T @ H @ Q, T, atol=1e-8)


def test_top_eigenvalues_within_one_percent(setup):
    model, loader, H, evals = setup
    theta, vecs = top_eigenpairs(HessianOperator(model, loader, 2), k=3, steps=80)
    ref = evals.flip(0)[:3]
    assert torch.all((theta - ref).abs() <= 0.01 * ref.abs())
    residual = (H @ vecs[:, 0] - theta[0] * vecs[:, 0]).norm()
    assert residual < 0.01 * theta[0]


def test_hutchinson_trace_within_three_standard_errors(setup):
    model, loader, H, _ = setup
    est, se = hutchinson_trace(HessianOperator(model, loader, 2), num_probes=100, seed=3)
    assert se > 0 and abs(est - torch.trace(H).item()) <= 3 * se


def test_spectral_density_integrates_to_one_and_sits_on_the_spectrum(setup):
    model, loader, H, evals = setup
    grid, dens = spectral_density(HessianOperator(model, loader, 2), steps=40, num_runs=4)
    assert abs(torch.trapezoid(dens, grid).item() - 1) < 1e-3
    # its mean is an unbiased estimate of tr(H)/dim, and its mass lies inside the true spectrum's range
    mean = torch.trapezoid(grid * dens, grid).item()
    spread = (evals.max() - evals.min()).item()
    assert abs(mean - evals.mean().item()) < 0.05 * spread
    inside = (grid >= evals.min() - 0.03 * spread) & (grid <= evals.max() + 0.03 * spread)
    assert torch.trapezoid(dens * inside, grid).item() > 0.99


def test_bad_arguments(setup):
    model, loader, _, _ = setup
    with pytest.raises(ValueError, match="num_batches"):
        HessianOperator(model, loader, 0)
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_trace(HessianOperator(model, loader), 1)
