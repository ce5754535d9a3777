import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datafiles import write_fashion_mnist
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
