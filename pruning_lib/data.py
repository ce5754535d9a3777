"""Datasets with deterministic train / validation / test splits.

`digits` (scikit-learn's bundled 8x8 digits) is the offline default. `fashion_mnist`, `cifar10` and
`cifar100` are read from files under `data/`; a missing dataset raises `DatasetMissingError` saying where
the files go (or, with `download=True`, is fetched first by torchvision's own download code), a damaged one
`DatasetError` naming the file. Dataset
files are only as safe as their source: CIFAR's pickles are checked against the official md5 sums and read
with a restricted unpickler, so a crafted file cannot run code. The validation split is carved from
the training set with a seeded permutation; the test split is never used for model selection.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from .distributed import is_distributed, rank, world_size

# The kit's data folder (datasets, cached checkpoints): <repo>/data, or $PRUNING_DATA_DIR. Absolute, so
# notebooks (run from notebooks/) and main_prune.py (run from the repo root) share it.
DATA_DIR = Path(os.environ.get("PRUNING_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))

DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")
AUGMENTED = ("cifar10", "cifar100")  # training splits with a random crop and flip per epoch

# (channels, height/width, classes) of each dataset's images.
SHAPES = {
    "digits": (1, 8, 10),
    "fashion_mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
}

# Per-channel normalisation statistics of the training sets.
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
FASHION_STATS = ((0.2860,), (0.3530,))

HOW_TO_GET = {
    "fashion_mnist": (
        "Fashion-MNIST files not found in {root}/FashionMNIST/raw/. Get them offline with "
        "`sudo apt-get install dataset-fashion-mnist && mkdir -p {root}/FashionMNIST/raw && "
        "for f in /usr/share/datasets/fashion-mnist/*.gz; do gunzip -c $f > {root}/FashionMNIST/raw/$(basename $f .gz); done`"
        ", or online pass download=True (config: \"download\": true)"
    ),
    "cifar10": (
        "CIFAR-10 files not found in {root}/cifar-10-batches-py/. Download "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and untar it into {root}/, or pass "
        "download=True (config: \"download\": true)"
    ),
    "cifar100": (
        "CIFAR-100 files not found in {root}/cifar-100-python/. Download "
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and untar it into {root}/, or pass "
        "download=True (config: \"download\": true)"
    ),
}


class DatasetMissingError(FileNotFoundError):
    """A dataset's files are not on disk; the message says how to get them."""


@dataclass
class Splits:
    """Train / validation / test datasets plus the image shape and class count."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    in_channels: int
    image_size: int
    num_classes: int
    key: str = ""  # hash of the split's provenance (dataset, val_fraction, split seed, subset, root): cache key

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one example."""
        return (self.in_channels, self.image_size, self.image_size)


def _split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation of range(n) cut into (train, val) index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _subset(train_idx: np.ndarray, train_subset: int | None, split_seed: int) -> np.ndarray:
    """A seeded random `train_subset` of the training indices (all of them when None or larger)."""
    if train_subset is None or train_subset >= len(train_idx):
        return train_idx
    return np.sort(np.random.default_rng(split_seed + 1).choice(train_idx, train_subset, replace=False))


def _digits(val_fraction: float, split_seed: int, train_subset: int | None) -> Splits:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(y, dtype=torch.long)
    # Fixed 20 % test split (independent of split_seed so every run tests on the same images).
    rest, test_idx = _split_indices(len(y), 0.2, seed=12345)
    mean, std = x[rest].mean(), x[rest].std()
    x = (x - mean) / std
    tr, va = _split_indices(len(rest), val_fraction, split_seed)
    train_idx, val_idx = rest[_subset(tr, train_subset, split_seed)], rest[va]
    ds = lambda idx: TensorDataset(x[idx], y[idx])  # noqa: E731
    subset = () if train_subset is None else (train_subset,)  # keys of runs without a subset stay as they were
    return Splits("digits", ds(train_idx), ds(val_idx), ds(test_idx), 1, 8, 10,
                  _split_key("digits", val_fraction, split_seed, *subset))


class DatasetError(ValueError):
    """A dataset file on disk is damaged, truncated, of the wrong format or fails its checksum; the message
    names the file."""


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the official CIFAR pickles hold: dicts, lists, strings, numbers
    and numpy arrays. Any other global (os.system, builtins.eval, ...) is refused, so a crafted file cannot
    run code (see https://docs.python.org/3/library/pickle.html#restricting-globals)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays and builtin types "
                                         "may appear in a CIFAR file")
        if module == "numpy.core.multiarray":  # numpy 1 name of numpy 2's numpy._core (no deprecation warning)
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict:
    """One CIFAR python-format file as a dict with str keys, read by `_ArrayUnpickler` (no code can run)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetError(f"{path}: not a CIFAR file in the official format ({e}); re-extract the archive") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: not a CIFAR file in the official format (holds {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


class ImageArrays(Dataset):
    """Images held as a uint8 array (N, H, W) or (N, H, W, C) with integer labels; item i is
    (transform(PIL image), label), as torchvision's datasets give."""

    def __init__(self, data: np.ndarray, targets: list[int], transform=None):
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        return (self.transform(img) if self.transform else img), self.targets[i]


def read_cifar(root: str | os.PathLike, name: str, train: bool, verify_checksums: bool = True) -> tuple[np.ndarray, list]:
    """CIFAR-10 / CIFAR-100 images (N, 32, 32, 3) and labels from the official python-format files, like
    torchvision.datasets.CIFAR10/100 but read with a restricted unpickler: torchvision unpickles with
    `pickle.load`, which runs whatever code a crafted file holds. The md5 sums are torchvision's list of the
    official files; `verify_checksums` False (for small generated test files) skips only that check, never
    the restricted unpickler."""
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = Path(root) / base.base_folder
    files = base.train_list if train else base.test_list
    for filename, md5 in files:
        path = folder / filename
        if not path.is_file():
            raise DatasetMissingError(f"{path} is missing. " + HOW_TO_GET[name].format(root=root))
        if verify_checksums and not check_integrity(str(path), md5):
            raise DatasetError(f"{path}: md5 differs from the official file's ({md5}); the file is damaged or "
                               "not the official one: re-download it (dataset files are only as safe as their source)")
    label_key = "labels" if name == "cifar10" else "fine_labels"
    data, labels = [], []
    for filename, _ in files:
        entry = read_cifar_pickle(folder / filename)
        x, y = np.asarray(entry.get("data")), entry.get(label_key)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or not isinstance(y, list) or len(y) != len(x):
            raise DatasetError(f"{folder / filename}: expected 'data' uint8 (N, 3072) and '{label_key}' a list of "
                               f"N labels, got data {x.dtype} {x.shape}")
        data.append(x)
        labels += y
    classes = SHAPES[name][2]
    if labels and not all(isinstance(t, int) and 0 <= t < classes for t in labels):
        raise DatasetError(f"{folder}: labels outside 0..{classes - 1}")
    return np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_header(path: Path, ndim: int) -> tuple[int, ...]:
    """Dimensions of an IDX file (the MNIST format: bytes 0, 0, 0x08 = uint8, ndim; big-endian int32 dims),
    checked against the file size."""
    raw = path.read_bytes()[: 4 + 4 * ndim]
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DatasetError(f"{path}: not an IDX file of uint8 with {ndim} dimensions (magic {raw[:4].hex() or 'missing'}, "
                           f"expected 000008{ndim:02x}); re-extract it from the .gz")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if path.stat().st_size != expected:
        raise DatasetError(f"{path}: {path.stat().st_size} bytes, but its header {dims} needs {expected} "
                           "(truncated or damaged); re-extract it from the .gz")
    return dims


def read_fashion_mnist(root: str | os.PathLike, train: bool) -> tuple[np.ndarray, list]:
    """Fashion-MNIST images (N, 28, 28) and labels straight from the raw IDX files, each checked first:
    present, magic number, size against its header, 28x28 images, as many labels as images, labels in 0..9
    (raises naming the file at fault). Read here rather than by torchvision, whose loader prefers any
    `processed/*.pt` file it finds, a pickle the checks would not see."""
    raw = Path(root) / "FashionMNIST" / "raw"
    if not raw.is_dir():
        raise DatasetMissingError(HOW_TO_GET["fashion_mnist"].format(root=root))
    for images, labels in FASHION_FILES.values():  # both splits, so a damaged test file is found up front
        for f in (images, labels):
            if not (raw / f).is_file():
                raise DatasetMissingError(f"{raw / f} is missing. " + HOW_TO_GET["fashion_mnist"].format(root=root))
    images, labels = FASHION_FILES["train" if train else "t10k"]
    n, h, w = _idx_header(raw / images, 3)
    if (h, w) != (28, 28):
        raise DatasetError(f"{raw / images}: images are {h}x{w}, Fashion-MNIST's are 28x28")
    (m,) = _idx_header(raw / labels, 1)
    if m != n:
        raise DatasetError(f"{raw / labels}: {m} labels for {n} images in {images}")
    y = np.frombuffer((raw / labels).read_bytes()[8:], dtype=np.uint8)
    if y.size and y.max() > 9:
        raise DatasetError(f"{raw / labels}: label {int(y.max())} is outside 0..9")
    x = np.frombuffer((raw / images).read_bytes()[16:], dtype=np.uint8).reshape(n, 28, 28)
    return x, y.astype(np.int64).tolist()


def _from_files(name: str, root: str, val_fraction: float, split_seed: int, train_subset: int | None,
                 augment: bool, verify_checksums: bool) -> Splits:
    from torchvision import transforms as T

    c, size, classes = SHAPES[name]
    if name == "fashion_mnist":
        norm = T.Normalize(*FASHION_STATS)
        train_tf = eval_tf = T.Compose([T.ToTensor(), norm])
        read = lambda train: read_fashion_mnist(root, train)  # noqa: E731
    else:
        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        if not (Path(root) / folder).is_dir():
            raise DatasetMissingError(HOW_TO_GET[name].format(root=root))
        norm = T.Normalize(*CIFAR_STATS[name])
        eval_tf = T.Compose([T.ToTensor(), norm])
        train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        read = lambda train: read_cifar(root, name, train, verify_checksums)  # noqa: E731
    train_x, train_y = read(True)
    train_full = ImageArrays(train_x, train_y, train_tf if augment else eval_tf)
    train_eval = ImageArrays(train_x, train_y, eval_tf)  # the same images, without augmentation
    test = ImageArrays(*read(False), eval_tf)
    tr, va = _split_indices(len(train_full), val_fraction, split_seed)
    tr = _subset(tr, train_subset, split_seed)
    key = _split_key(name, val_fraction, split_seed, train_subset, Path(root).resolve())
    return Splits(name, Subset(train_full, tr.tolist()), Subset(train_eval, va.tolist()), test, c, size, classes, key)


def _split_key(*provenance) -> str:
    """A short hash of everything that decides which images land in which split."""
    return hashlib.sha1(repr(provenance).encode()).hexdigest()[:10]


def random_splits(name: str, n_train: int = 16, n_eval: int = 8, seed: int = 0) -> Splits:
    """Random tensors with `name`'s image shape and class count (for --smoke runs and tests)."""
    c, size, classes = SHAPES[name]
    g = torch.Generator().manual_seed(seed)
    make = lambda n: TensorDataset(torch.randn(n, c, size, size, generator=g),  # noqa: E731
                                   torch.randint(0, classes, (n,), generator=g))
    return Splits(name, make(n_train), make(n_eval), make(n_eval), c, size, classes,
                  _split_key("random", name, n_train, n_eval, seed))


def download_dataset(name: str, root: str | os.PathLike = DATA_DIR) -> None:
    """Fetch the official files of `name` (fashion_mnist, cifar10, cifar100) into `root` with torchvision's
    download code (`download_and_extract_archive`: the official URLs and mirrors, the archive's md5, extraction).

    Why not `torchvision.datasets.CIFAR10(root, download=True)`: after downloading, its constructor reads the
    batches with `pickle.load`, which the kit never lets touch a file (read_cifar's restricted unpickler reads
    them instead), and FashionMNIST's would prefer a `processed/*.pt` pickle."""
    from torchvision import datasets
    from torchvision.datasets import utils as tv_utils

    if name == "fashion_mnist":
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for filename, md5 in datasets.FashionMNIST.resources:
            errors = []
            for mirror in datasets.FashionMNIST.mirrors:
                try:
                    tv_utils.download_and_extract_archive(f"{mirror}{filename}", str(raw), filename=filename, md5=md5)
                    break
                except (RuntimeError, OSError) as e:  # urllib's URLError is an OSError
                    errors.append(f"{mirror}: {e}")
            else:
                raise DatasetMissingError(f"download: could not fetch {filename} ({'; '.join(errors)})")
    elif name in ("cifar10", "cifar100"):
        base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            tv_utils.download_and_extract_archive(base.url, str(root), filename=base.filename, md5=base.tgz_md5)
        except (RuntimeError, OSError) as e:
            raise DatasetMissingError(f"download: could not fetch {base.url} ({e})") from None
    else:
        raise ValueError(f"download: '{name}' has no files to fetch (allowed: fashion_mnist, cifar10, cifar100)")


def load_dataset(name: str, root: str | os.PathLike = DATA_DIR, val_fraction: float = 0.1, split_seed: int = 0,
                 train_subset: int | None = None, augment: bool = True, verify_checksums: bool = True,
                 download: bool = False) -> Splits:
    """Load `name` as deterministic train / val / test splits (val carved from the training set).

    Files are checked before use (CIFAR: the official md5 sums, unless `verify_checksums` is False, and a
    restricted unpickler; Fashion-MNIST: sizes, magic numbers, label range); a damaged file raises
    DatasetError naming it, a missing one DatasetMissingError saying how to get it, unless `download` (off
    by default) fetches the missing files first (`download_dataset`)."""
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown '{name}', allowed: {', '.join(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: {val_fraction} is outside (0, 1)")
    if name == "digits":
        return _digits(val_fraction, split_seed, train_subset)
    try:
        return _from_files(name, str(root), val_fraction, split_seed, train_subset, augment, verify_checksums)
    except DatasetMissingError:
        if not download:
            raise
    download_dataset(name, root)
    return _from_files(name, str(root), val_fraction, split_seed, train_subset, augment, verify_checksums)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, shard: str | None = None) -> DataLoader:
    """A DataLoader whose order depends only on `seed`. Under torch.distributed, `shard` splits the data
    across ranks: "train", a DistributedSampler (disjoint equal shares, padded by repeating a few examples so
    every rank takes the same number of steps; train() reshuffles it per epoch); "eval", every
    world_size-th example from the rank's offset (no padding, so counts reduced over ranks are exact).
    None, or a single process: every example."""
    if shard not in (None, "train", "eval"):
        raise ValueError(f"shard: unknown {shard!r}, allowed: None, train, eval")
    sampler, g = None, torch.Generator().manual_seed(seed)
    if shard == "train" and is_distributed():
        sampler, shuffle = DistributedSampler(dataset, shuffle=shuffle, seed=seed), False
    elif shard == "eval" and is_distributed():
        dataset = Subset(dataset, range(rank(), len(dataset), world_size()))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, generator=g,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available())
