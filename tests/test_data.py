import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datafiles import write_fashion_mnist, write_idx
from pruning_lib.data import DatasetMissingError, load_dataset, make_loader, random_splits


def test_digits_splits_are_deterministic_and_disjoint():
    a, b = load_dataset("digits", split_seed=0), load_dataset("digits", split_seed=0)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    rows = lambda ds: {tuple(r.flatten().tolist()) for r in ds.tensors[0]}  # noqa: E731
    assert not rows(a.val) & rows(a.test)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    c = load_dataset("digits", split_seed=1)
    assert torch.equal(a.test.tensors[0], c.test.tensors[0])  # test split never moves
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])


def test_loader_order_depends_only_on_seed():
    ds = load_dataset("digits").train
    first = lambda s: next(iter(make_loader(ds, 16, shuffle=True, seed=s)))[1]  # noqa: E731
    assert torch.equal(first(3), first(3)) and not torch.equal(first(3), first(4))


def _write_cifar(root: Path, name: str, n_train: int = 50, n_test: int = 20) -> None:
    """Small files in the official CIFAR pickle layout (5 train batches + test for CIFAR-10)."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, label_key, classes = root / "cifar-10-batches-py", "labels", 10
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta = ("batches.meta", {"label_names": [str(i) for i in range(10)]})
    else:
        folder, label_key, classes = root / "cifar-100-python", "fine_labels", 100
        files = ["train", "test"]
        meta = ("meta", {"fine_label_names": [str(i) for i in range(100)]})
    folder.mkdir(parents=True)
    for f in files:
        n = n_test if "test" in f else n_train // (len(files) - 1)
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, classes, n).tolist()}
        (folder / f).write_bytes(pickle.dumps(batch))
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1]))


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_files_in_the_real_format(tmp_path, name, classes):
    _write_cifar(tmp_path, name)
    s = load_dataset(name, root=tmp_path, val_fraction=0.2, verify_checksums=False)  # generated files: no md5
    assert (len(s.train), len(s.val), len(s.test)) == (40, 10, 20)
    x, y = s.train[0]
    assert x.shape == (3, 32, 32) and 0 <= y < classes and s.num_classes == classes
    # the validation split is not augmented: the same item twice is the same tensor
    assert torch.equal(s.val[0][0], s.val[0][0])


@pytest.mark.parametrize("name,hint", [("cifar100", "cifar-100-python.tar.gz"),
                                       ("fashion_mnist", "apt-get install dataset-fashion-mnist")])
def test_missing_dataset_says_how_to_get_it(tmp_path, name, hint):
    with pytest.raises(DatasetMissingError, match=hint.replace(".", r"\.")):
        load_dataset(name, root=tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset: unknown 'svhn'"):
        load_dataset("svhn")


def test_random_splits_have_the_real_shape():
    s = random_splits("cifar100")
    assert s.train[0][0].shape == (3, 32, 32) and s.num_classes == 100


def test_fashion_mnist_reads_idx_files(tmp_path):
    write_fashion_mnist(tmp_path)
    s = load_dataset("fashion_mnist", root=tmp_path, val_fraction=0.25, train_subset=30)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 15, 20)
    assert s.train[0][0].shape == (1, 28, 28) and s.input_shape == (1, 28, 28)


def _fake_download(calls: list):
    """Stand-in for torchvision's download_and_extract_archive: writes small files in the official layout
    where the real archive would have been extracted (no network in tests)."""
    def fake(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, filename, md5))
        root = Path(download_root)
        if "cifar-10-" in url:
            _write_cifar(root, "cifar10")
        elif "cifar-100-" in url:
            _write_cifar(root, "cifar100")
        else:  # one Fashion-MNIST .gz per call, extracted into raw/
            split, kind = ("train" if filename.startswith("train") else "t10k"), filename.split("-")[1]
            n = 40 if split == "train" else 10
            rng = np.random.default_rng(len(calls))
            array = rng.integers(0, 256, (n, 28, 28)) if kind == "images" else rng.integers(0, 10, n)
            write_idx(root / filename[:-3], array)
    return fake


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "cifar100"])
def test_download_fetches_missing_files_with_torchvisions_downloader(tmp_path, monkeypatch, name):
    from torchvision import datasets
    from torchvision.datasets import utils as tv_utils

    calls = []
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", _fake_download(calls))
    with pytest.raises(DatasetMissingError, match="download=True"):  # off by default, and the error says so
        load_dataset(name, root=tmp_path)
    assert not calls
    splits = load_dataset(name, root=tmp_path, download=True, verify_checksums=False)
    assert len(splits.train) + len(splits.val) > 0 and len(splits.test) > 0
    if name == "fashion_mnist":
        official = {(f"{datasets.FashionMNIST.mirrors[0]}{f}", f, md5) for f, md5 in datasets.FashionMNIST.resources}
    else:
        base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        official = {(base.url, base.filename, base.tgz_md5)}
    assert set(calls) == official  # the official files, with their md5 for torchvision to check
    load_dataset(name, root=tmp_path, download=True, verify_checksums=False)
    assert len(calls) == len(official)  # files present: nothing fetched again


def test_a_failed_download_is_a_missing_dataset_error(tmp_path, monkeypatch):
    from torchvision.datasets import utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetMissingError, match="could not fetch .*network unreachable"):
        load_dataset("cifar10", root=tmp_path, download=True)


def test_config_download_reaches_the_loader(tmp_path, monkeypatch):
    from torchvision.datasets import utils as tv_utils

    from pruning_lib.config import ConfigError, validate
    from pruning_lib.experiment import run

    with pytest.raises(ConfigError, match="'download': 'yes' must be true or false"):
        validate({"exp_name": "x", "download": "yes"})
    calls = []
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", _fake_download(calls))
    cfg = validate({"exp_name": "dl", "dataset": "fashion_mnist", "data_root": str(tmp_path / "data"), "download": True,
                    "methods": ["l1"], "ratios": [0.5], "baseline": {"epochs": 1, "batch_size": 16},
                    "finetune": {"epochs": 1, "batch_size": 16}, "bn_recalibration_batches": 1,
                    "measure_latency": False, "output_dir": str(tmp_path / "runs"), "checkpoint_dir": None})
    df = run(cfg, progress=False)
    assert len(calls) == 4 and (df["status"] == "ok").all()
