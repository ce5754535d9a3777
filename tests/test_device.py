"""What the GPU check (scripts/gpu_check.py) runs on the device: every family prunes there as on the CPU, K-FAC
agrees with the CPU's, pruning at 0 is the identity there, and the training options (autocast, channels_last,
data kept on the device) train. The device is $PRUNING_TEST_DEVICE (default cpu, where CI runs it: the same
checks, CPU against CPU)."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib
from pruning_lib.curvature import compute_kfac
from pruning_lib.models import build_model
from pruning_lib.train import TrainRecipe, train

DEVICE = torch.device(os.environ.get("PRUNING_TEST_DEVICE", "cpu"))


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off on CUDA for these comparisons (cuDNN's convolutions use it by default)."""
    if DEVICE.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, :, :4].mean((1, 2, 3)) > 0).long()  # learnable labels
    return x, y


def model(seed=0):
    torch.manual_seed(seed)
    return build_model("resnet8", 1, 1, 10, 8).eval()


@pytest.mark.parametrize("method", ["magnitude_global", "l1", "obs", "svd", "eigendamage", "improved_eigendamage"])
def test_every_family_prunes_on_the_device_as_on_the_cpu(method):
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    on_cpu, on_device = model(), model().to(DEVICE)
    torch.manual_seed(0)  # the sampled Fisher labels: the same draws on both
    a = pruning_lib.prune(on_cpu, method, 0.5, loader=loader, seed=0)
    torch.manual_seed(0)
    b = pruning_lib.prune(on_device, method, 0.5, loader=loader, seed=0)
    assert next(on_device.parameters()).device.type == DEVICE.type
    assert abs(a.achieved_param_ratio - b.achieved_param_ratio) < 0.02
    with torch.no_grad():
        want, got = on_cpu(x[:64]), on_device(x[:64].to(DEVICE)).cpu()
    assert torch.isfinite(got).all()
    assert (got - want).norm() <= 0.05 * want.norm() + 1e-6, f"{method}: outputs differ from the CPU's"


def test_pruning_at_zero_is_the_identity_on_the_device():
    x, y = data()
    m = model().to(DEVICE)
    with torch.no_grad():
        before = m(x[:32].to(DEVICE))
    pruning_lib.prune(m, "l1", 0.0, loader=DataLoader(TensorDataset(x, y), batch_size=64))
    with torch.no_grad():
        assert torch.allclose(m(x[:32].to(DEVICE)), before, atol=1e-6)


def test_kfac_factors_agree_with_the_cpu():
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    torch.manual_seed(0)
    cpu = compute_kfac(model(), loader, fisher="empirical", num_batches=2)
    torch.manual_seed(0)
    dev = compute_kfac(model().to(DEVICE), loader, fisher="empirical", num_batches=2)
    for name, f in cpu.items():
        for mine, theirs in ((f.A, dev[name].A), (f.G, dev[name].G)):
            assert (mine - theirs.cpu()).norm() <= 1e-4 * mine.norm() + 1e-12, name


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"channels_last": True}, {"data_on_device": True},
                                     {"precision": "bf16", "channels_last": True, "data_on_device": True}])
def test_the_training_options_train(options):
    x, y = data(512)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    m = model().to(DEVICE)
    with torch.no_grad():
        before = F.cross_entropy(m(x.to(DEVICE)), y.to(DEVICE)).item()
    train(m, loader, TrainRecipe(epochs=4, lr=0.05, select_on_val=False, **options), progress=False)
    m.eval()
    with torch.no_grad():
        after = F.cross_entropy(m(x.to(DEVICE)), y.to(DEVICE)).item()
    assert after < 0.7 * before
    assert all(p.is_contiguous() for p in m.parameters())  # handed back in the default layout
