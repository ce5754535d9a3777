"""Dense oracles used by notebook 04: checked against exact identities."""
import torch
import torch.nn.functional as F
from torch import nn

from pruning_lib.curvature import compute_kfac
from pruning_lib.curvature.dense import dense_fisher, dense_hessian, kfac_dense

from helpers import random_loader


def test_fisher_equals_hessian_for_softmax_regression():
    """For logits linear in θ, the cross-entropy Hessian is exactly the Gauss-Newton matrix = true Fisher."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4)).double()
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 4, (10,))
    assert torch.allclose(dense_fisher(model, x), dense_hessian(model, x, y), atol=1e-10)


def test_kfac_dense_is_in_parameter_order():
    """One example, empirical Fisher, one output position: each layer's Fisher block is exactly G ⊗ A, so
    kfac_dense equals the outer product of the flat gradient on the layer blocks, and is zero elsewhere."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.Flatten(), nn.Linear(3, 4)).double()
    loader = random_loader(1, (2, 3, 3), 4, batch=1, seed=None, dtype=torch.float64)
    x, y = loader.dataset.tensors
    kfac = compute_kfac(model, loader, form="im2col", fisher="empirical", num_batches=1)
    F.cross_entropy(model(x), y).backward()
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    layer = torch.tensor([0] * 54 + [1] * 16)  # conv weight (3x2x3x3), then Linear weight (4x3) + bias (4)
    same = layer[:, None] == layer[None, :]
    K = kfac_dense(model, kfac)
    assert torch.allclose(K[same], torch.outer(g, g)[same], atol=1e-10)
    assert torch.count_nonzero(K[~same]) == 0
