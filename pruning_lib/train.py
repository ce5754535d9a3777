"""Training, fine-tuning, evaluation and BatchNorm re-estimation (device-agnostic, seeded, AMP on GPU)."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .batches import first_batches
from .data import DATA_DIR, Splits, make_loader
from .distributed import (all_reduce_count, all_reduce_sum, broadcast_state, is_distributed, is_main, on_main,
                          world_size)
from .files import DamagedFileError, load_weights, save_torch_atomic
from .models import build_model


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; otherwise torch.device(name)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so the same seed gives the same numbers on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# options whose default leaves a recipe's key (and so its cached checkpoints) as it was before they existed
_KEY_NEUTRAL = {"optimizer": "sgd", "precision": "auto", "channels_last": False, "data_on_device": False}


@dataclass
class TrainRecipe:
    """SGD with momentum ("sgd") or AdamW ("adamw": decoupled weight decay, betas (0.9, 0.999); the usual recipe for
    vision transformers, which SGD trains poorly from scratch) and a cosine or step learning-rate schedule."""

    epochs: int = 10
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine"  # "cosine" | "step" (x0.1 at 50 % and 75 % of the epochs)
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke runs)
    select_on_val: bool = True  # keep the epoch with the best validation accuracy
    distill_weight: float = 0.0  # > 0: fine-tune with knowledge distillation from the unpruned model
    distill_temperature: float = 4.0
    optimizer: str = "sgd"  # "sgd" | "adamw" (momentum is SGD's only)
    precision: str = "auto"  # autocast: "auto" (bf16 on CUDA, fp32 elsewhere) | "fp32" | "bf16" | "fp16" (+ GradScaler)
    channels_last: bool = False  # train in the NHWC memory format (faster convs on recent GPUs)
    data_on_device: bool = False  # stack the training set on the device once (small datasets without augmentation)

    def key(self) -> str:
        """Short hash of the recipe, used to name cached checkpoints (the distillation fields count only when
        distillation is on, the options of _KEY_NEUTRAL when they are not their default, so the keys of recipes
        written before they existed are unchanged)."""
        fields_ = asdict(self)
        for name, default in _KEY_NEUTRAL.items():
            if fields_[name] == default:
                fields_.pop(name)
        if not self.distill_weight:
            fields_.pop("distill_weight")
            fields_.pop("distill_temperature")
        return hashlib.sha1(json.dumps(fields_, sort_keys=True).encode()).hexdigest()[:10]


def distillation_loss(teacher: nn.Module, weight: float, temperature: float):
    """loss_fn(model, x, y) for `train`: (1 − w) · CE(s, y) + w · T² · KL(softmax(t / T) ‖ softmax(s / T)) with s the
    student's logits and t the frozen teacher's (Hinton, Vinyals & Dean 2015; T² keeps the gradient scale)."""
    teacher.eval()

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        with torch.no_grad():
            target = F.softmax(teacher(x).float() / temperature, 1)
        kl = F.kl_div(F.log_softmax(logits.float() / temperature, 1), target, reduction="batchmean")
        return (1 - weight) * F.cross_entropy(logits, y) + weight * temperature ** 2 * kl
    return loss_fn


def train_steps(model: nn.Module, train_loader: DataLoader, recipe: TrainRecipe, steps: int, loss_fn=None,
                sync_batchnorm: bool = False) -> None:
    """Train `model` in place for `steps` optimizer steps with `recipe`'s optimizer and schedule (over those steps,
    no validation selection): the fine-tuning between the steps of an iterative pruning schedule."""
    epochs = -(-steps // max(steps_per_epoch(train_loader, recipe), 1))
    short = replace(recipe, epochs=epochs, max_steps_per_epoch=-(-steps // epochs), select_on_val=False)
    train(model, train_loader, short, None, desc="between steps", loss_fn=loss_fn, progress=False,
          sync_batchnorm=sync_batchnorm)


def steps_per_epoch(train_loader: DataLoader, recipe: TrainRecipe) -> int:
    """Optimizer steps in one epoch of `recipe` on `train_loader`."""
    return len(train_loader) if recipe.max_steps_per_epoch is None else min(len(train_loader),
                                                                            recipe.max_steps_per_epoch)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy over `loader`, in eval mode. Under torch.distributed the
    counts are summed over ranks (each rank evaluating its shard="eval" share gives the whole set's numbers)."""
    device = next(model.parameters()).device
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct, total, summed loss
    for x, y in first_batches(loader, device=device, non_blocking=True):
        with autocast(device):
            logits = model(x)
        sums += torch.stack([(logits.argmax(1) == y).sum().double(), torch.tensor(y.numel(), device=device).double(),
                             F.cross_entropy(logits.float(), y, reduction="sum").double()])
    all_reduce_sum(sums)
    correct, total, loss = sums.tolist()
    return {"acc": 100.0 * correct / total, "loss": loss / total}


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of `precision` on `device`: "auto" is bf16 on CUDA and fp32 elsewhere, "bf16" bf16 on
    any device (CPU too), "fp16" fp16 on CUDA only, "fp32" none."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown {precision!r}, allowed: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision: 'fp16' needs a CUDA device (this one is {device.type}); use bf16 or fp32")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    enabled = precision in ("bf16", "fp16") or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


class DeviceBatches:
    """The batches of `loader`, in exactly its order (its sampler and generator drive a twin loader over the
    indices), indexed out of a copy of its dataset stacked once on `device`: no host-to-device copy per step.
    For datasets that give the same tensors every epoch (no random augmentation)."""

    def __init__(self, loader: DataLoader, device: torch.device):
        dataset = loader.dataset
        if _augments(dataset):
            raise ValueError("data_on_device: this training set draws a random augmentation per epoch, which a "
                             "stacked copy would freeze; use false")
        xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
        self.x, self.y = torch.stack(xs).to(device), torch.as_tensor(ys).to(device)
        self.indices = DataLoader(range(len(dataset)), batch_sampler=loader.batch_sampler, generator=loader.generator)
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        for idx in self.indices:
            idx = idx.to(self.x.device)
            yield self.x[idx], self.y[idx]


def _augments(dataset) -> bool:
    """Whether `dataset` (through Subsets) applies a torchvision Random* transform."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    transform = getattr(dataset, "transform", None)
    parts = getattr(transform, "transforms", [transform])
    return any(type(t).__name__.startswith("Random") for t in parts if t is not None)


def train(model: nn.Module, train_loader: DataLoader, recipe: TrainRecipe, val_loader: DataLoader | None = None,
          desc: str = "train", loss_fn=None, progress: bool = True,
          sync_batchnorm: bool = False) -> list[dict[str, float]]:
    """Train `model` in place with `recipe`; returns per-epoch history (loss, val acc).

    With `select_on_val` and a validation loader the weights of the best validation epoch are kept.
    `loss_fn(model, x, y) -> loss` replaces cross-entropy (e.g. knowledge distillation).
    Pruning masks (torch.nn.utils.prune) stay applied: the forward pass multiplies by them.
    `precision` picks the autocast dtype (fp16 with a GradScaler), `channels_last` the memory format while training
    (the model is returned in the default one), `data_on_device` batches indexed from a stacked copy of the training
    set on the device (DeviceBatches: the same batches, in the same order).
    Under torch.distributed the model trains as DistributedDataParallel (gradients averaged over ranks, each
    reading its shard="train" share, reshuffled per epoch with set_epoch); `sync_batchnorm` then normalises
    over the ranks' whole batch (nn.SyncBatchNorm, CUDA only) and converts back afterwards.
    """
    device = next(model.parameters()).device
    net = model
    if is_distributed():
        if sync_batchnorm:
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place: BatchNorms share their tensors
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    progress = progress and is_main()
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    else:
        raise ValueError(f"optimizer: unknown '{recipe.optimizer}', allowed: {', '.join(OPTIMIZERS)}")
    per_epoch = steps_per_epoch(train_loader, recipe)
    total = max(1, recipe.epochs * per_epoch)
    if recipe.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    elif recipe.schedule == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.5 * total), int(0.75 * total)], 0.1)
    else:
        raise ValueError(f"schedule: unknown '{recipe.schedule}', allowed: cosine, step")
    loss_fn = loss_fn or (lambda m, x, y: F.cross_entropy(m(x), y))
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.precision == "fp16")  # fp16 gradients underflow
    layout = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    batches = DeviceBatches(train_loader, device) if recipe.data_on_device else train_loader
    history, best = [], (-1.0, None)
    bar = tqdm(total=total, desc=desc, leave=False, disable=not progress)
    sampler = train_loader.sampler if isinstance(train_loader.sampler, DistributedSampler) else None
    for epoch in range(recipe.epochs):
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        running, seen = 0.0, 0
        for x, y in first_batches(batches, per_epoch, device=device, non_blocking=True):
            if x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            with autocast(device, recipe.precision):
                loss = loss_fn(net, x, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            running += loss.item() * y.numel()
            seen += y.numel()
            bar.update(1)
        running, seen = all_reduce_count(running, device), all_reduce_count(seen, device)
        record = {"epoch": epoch + 1, "train_loss": running / max(seen, 1)}
        if val_loader is not None:
            record["val_acc"] = evaluate(model, val_loader)["acc"]
            if recipe.select_on_val and record["val_acc"] > best[0]:
                best = (record["val_acc"], copy.deepcopy(model.state_dict()))
        history.append(record)
    bar.close()
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.to(memory_format=torch.contiguous_format)  # pruning surgery and export expect the default layout
    if is_distributed() and sync_batchnorm:
        revert_sync_batchnorm(model)
    return history


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every nn.SyncBatchNorm of `model` (in place) by a BatchNorm2d sharing its parameters and
    running statistics: the inverse of nn.SyncBatchNorm.convert_sync_batchnorm, which torch does not offer."""
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                child.track_running_stats, device=child.running_mean.device)
            bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(model, name, bn)
        else:
            revert_sync_batchnorm(child)
    return model


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: DataLoader, num_batches: int = 20) -> nn.Module:
    """Re-estimate every BatchNorm's running mean / variance from `num_batches` training batches.

    Train-mode forward passes with a cumulative average (momentum=None) and no weight update. After
    structured pruning the old statistics no longer fit; this makes one-shot accuracy meaningful.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or num_batches <= 0:
        return model
    device = next(model.parameters()).device
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for x, _ in first_batches(loader, num_batches, device=device):
        model(x)
    for bn, m in zip(bns, saved):
        bn.momentum = m
        if is_distributed():  # every rank averaged the same number of batches: the mean over ranks is exact
            all_reduce_sum(bn.running_mean, bn.running_var)
            bn.running_mean /= world_size()
            bn.running_var /= world_size()
    model.eval()
    return model


@dataclass
class Baseline:
    """A trained model with where it came from and its validation / test accuracy."""

    model: nn.Module
    path: Path
    val_acc: float
    test_acc: float
    history: list = field(default_factory=list)


def train_baseline(splits: Splits, model_name: str, width: int, recipe: TrainRecipe, seed: int,
                   device: torch.device, cache_dir: str | os.PathLike | None = DATA_DIR / "checkpoints",
                   progress: bool = True, sync_batchnorm: bool = False) -> Baseline:
    """Train (or load the cached) baseline, keyed by dataset + split (val_fraction, split seed, train subset,
    data folder: `splits.key`) + model + width + seed + recipe hash (+ the number of ranks and SyncBatchNorm
    under torch.distributed, which change the training batches, + on CPU the number of torch threads, which changes
    the rounding of the reductions). Says which file it loaded or wrote. Under
    torch.distributed all ranks train together; rank 0 alone reads and writes the file and hands its weights
    to the others."""
    path = None
    if cache_dir is not None:
        ranks = f"_ws{world_size()}{'_syncbn' if sync_batchnorm else ''}" if is_distributed() else ""
        threads = f"_t{torch.get_num_threads()}" if device.type == "cpu" else ""  # CPU rounding depends on it
        path = Path(cache_dir) / f"{splits.name}-{splits.key}_{model_name}_w{width}_s{seed}_{recipe.key()}{ranks}{threads}.pt"
    seed_everything(seed)
    model = build_model(model_name, width, splits.in_channels, splits.num_classes, splits.image_size).to(device)
    val_loader = make_loader(splits.val, 256, shard="eval")
    test_loader = make_loader(splits.test, 256, shard="eval")
    progress = progress and is_main()
    cached = on_main(_read_baseline, path, model, f"{model_name} w{width}") if path is not None else None
    if cached is not None:
        broadcast_state(model)
        if progress:
            tqdm.write(f"baseline seed {seed}: loaded {path} (val {cached['val_acc']:.2f} %, test {cached['test_acc']:.2f} %)")
        return Baseline(model, path, cached["val_acc"], cached["test_acc"], cached["history"])
    train_loader = make_loader(splits.train, recipe.batch_size, shuffle=True, seed=seed, shard="train")
    history = train(model, train_loader, recipe, val_loader, desc=f"baseline seed {seed}", progress=progress,
                    sync_batchnorm=sync_batchnorm)
    val_acc, test_acc = evaluate(model, val_loader)["acc"], evaluate(model, test_loader)["acc"]
    if path is not None:
        on_main(_write_baseline, path, {"model": model.state_dict(), "val_acc": val_acc, "test_acc": test_acc,
                                        "history": history})
        if progress:
            tqdm.write(f"baseline seed {seed}: trained and saved {path} (val {val_acc:.2f} %, test {test_acc:.2f} %)")
    return Baseline(model, path, val_acc, test_acc, history)


def _read_baseline(path: Path, model: nn.Module, what: str) -> dict | None:
    """Load a cached baseline into `model` and return its accuracies and history; None when there is none."""
    if not path.is_file():
        return None
    state = load_weights(path, map_location="cpu")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise DamagedFileError(f"{path}: not a baseline of {what} ({str(e).splitlines()[0]}); delete it to retrain") from None
    return {k: state.get(k) for k in ("val_acc", "test_acc", "history")}


def _write_baseline(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(state, path)
