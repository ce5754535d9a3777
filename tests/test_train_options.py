"""The training recipe's speed options on the CPU: data_on_device gives the same batches in the same order as the
DataLoader (so the same weights, bit for bit), channels_last the same training up to rounding, bf16 autocast runs
on the CPU and fp16 is refused there; the options at their defaults leave checkpoint keys as they were."""
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from helpers import tiny_raw
from pruning_lib.config import ConfigError, validate
from pruning_lib.data import ImageArrays
from pruning_lib.models import build_model
from pruning_lib.train import DeviceBatches, TrainRecipe, autocast, train

ROOT = Path(__file__).resolve().parents[1]


def loader(n=300, batch=64, seed=0):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return DataLoader(Subset(TensorDataset(x, y), range(n - 20)), batch_size=batch, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


def trained(recipe: TrainRecipe):
    torch.manual_seed(0)
    m = build_model("resnet8", 1, 1, 10, 8)
    train(m, loader(), recipe, progress=False)
    return m


def test_device_batches_are_the_loaders_batches_in_its_order():
    a, b = loader(), loader()
    on_device = DeviceBatches(b, torch.device("cpu"))
    assert len(on_device) == len(a)
    for _ in range(3):  # three epochs: the generator advances alike
        for (xa, ya), (xb, yb) in zip(a, on_device, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_data_on_device_trains_the_same_weights():
    plain, stacked = trained(TrainRecipe(epochs=2, lr=0.05)), trained(TrainRecipe(epochs=2, lr=0.05, data_on_device=True))
    for p, q in zip(plain.state_dict().values(), stacked.state_dict().values()):
        assert torch.equal(p, q)


def test_channels_last_trains_the_same_up_to_rounding():
    plain, nhwc = trained(TrainRecipe(epochs=1, lr=0.05)), trained(TrainRecipe(epochs=1, lr=0.05, channels_last=True))
    for (name, p), q in zip(plain.named_parameters(), nhwc.parameters()):
        assert q.is_contiguous(), name
        assert (p - q).norm() <= 1e-3 * p.norm() + 1e-6, name


def test_bf16_autocast_runs_on_the_cpu_and_fp16_is_refused_there():
    m = trained(TrainRecipe(epochs=1, lr=0.05, precision="bf16"))
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in m.parameters())
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "auto"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        autocast(torch.device("cpu"), "fp16")


def test_config_refuses_fp16_without_cuda_and_data_on_device_with_augmentation(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"'finetune.precision': 'fp16' needs a CUDA device"):
            validate(tiny_raw(tmp_path, finetune={"epochs": 1, "precision": "fp16"}))
    with pytest.raises(ConfigError, match=r"'baseline.data_on_device': cifar10's training split draws a random crop"):
        validate(tiny_raw(tmp_path, dataset="cifar10", baseline={"epochs": 1, "data_on_device": True}))
    with pytest.raises(ConfigError, match=r"'baseline.channels_last'.*true or false"):
        validate(tiny_raw(tmp_path, baseline={"epochs": 1, "channels_last": "yes"}))
    with pytest.raises(ConfigError, match=r"'baseline.precision'"):
        validate(tiny_raw(tmp_path, baseline={"epochs": 1, "precision": "fp8"}))


def test_device_batches_refuse_a_random_augmentation():
    from torchvision import transforms as T
    images = ImageArrays(torch.zeros(4, 8, 8, 3, dtype=torch.uint8).numpy(), [0, 1, 2, 3],
                         T.Compose([T.RandomHorizontalFlip(), T.ToTensor()]))
    with pytest.raises(ValueError, match="data_on_device: .*random augmentation"):
        DeviceBatches(DataLoader(Subset(images, range(4)), batch_size=2), torch.device("cpu"))


def test_defaults_keep_the_checkpoint_keys_written_before_the_options():
    # the quickstart's, the ranking benchmark's and the ViT's baseline keys, as named by checkpoints written before
    assert TrainRecipe(epochs=30, lr=0.05, batch_size=64).key() == TrainRecipe(epochs=30, lr=0.05, batch_size=64,
                                                                             precision="auto").key()
    from pruning_lib.config import load_config
    from pruning_lib.notebook import digits_recipe
    assert digits_recipe().key() == "c5b566e5b5"
    assert load_config(ROOT / "configs" / "fashion_mnist_ranking.json").baseline_recipe().key() == "b2c70803ce"
    assert load_config(ROOT / "configs" / "fashion_mnist_vit.json").baseline_recipe().key() == "65c5c12844"
    assert TrainRecipe(channels_last=True).key() != TrainRecipe().key()
