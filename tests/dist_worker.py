"""Run under torchrun (2 gloo ranks) by tests/test_distributed.py; also imported there for the one-process
references. The ranks split the same data (through make_loader(shard=...), as the runner does, or every
second batch for Taylor), so together they see exactly the examples a single process sees."""
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import random_dataset

from pruning_lib import distributed
from pruning_lib.curvature import compute_kfac, diagonal_fisher, ekfac_correction
from pruning_lib.data import make_loader
from pruning_lib.methods.channel.criteria import taylor_scores
from pruning_lib.train import TrainRecipe, evaluate, train

BATCH, BATCHES = 8, 6


def data() -> TensorDataset:
    """The examples every rank splits: BATCHES batches of BATCH 2x6x6 inputs, 3 classes."""
    return random_dataset(BATCH * BATCHES, (2, 6, 6), 3)


def model() -> nn.Module:
    """A tiny CNN without BatchNorm (DDP then equals one process on the combined batch)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 3))


def batches(rank: int = 0, world: int = 1) -> DataLoader:
    """Batches rank, rank + world, ... of the data (a single process: all of them)."""
    ds = data()
    idx = [i for b in range(rank, BATCHES, world) for i in range(b * BATCH, (b + 1) * BATCH)]
    return DataLoader(torch.utils.data.Subset(ds, idx), batch_size=BATCH)


def statistics(loader: DataLoader, num_batches: int, taylor_loader: DataLoader | None = None) -> dict:
    """Every curvature statistic the kit sums over ranks, on `model()`. All but Taylor's are sums over examples
    (eval mode, no BatchNorm), so any split of the examples over ranks gives them; Taylor's |Σ w ∂L_b/∂w| is
    per batch, so its batches must be the single process's (`taylor_loader`, default `loader`)."""
    m = model()
    kfac = compute_kfac(m, loader, form="channel_patch", fisher="empirical", num_batches=num_batches)
    im2col = compute_kfac(m, loader, form="im2col", fisher="empirical", num_batches=num_batches)
    out = {f"{k}.{f}": getattr(kfac[k], f) for k in kfac for f in ("A", "G")}
    out |= {f"im2col.{k}.{f}": getattr(im2col[k], f) for k in im2col for f in ("A", "G")}
    out |= {f"ekfac.{k}": v for k, v in ekfac_correction(m, kfac, loader, num_examples=num_batches * BATCH,
                                                           fisher="empirical").items()}
    out |= {f"fisher.{k}": v for k, v in diagonal_fisher(m, loader, num_examples=num_batches * BATCH,
                                                          fisher="empirical").items()}
    out |= {f"taylor.{k}": v for k, v in taylor_scores(m, ["0", "2", "5"], taylor_loader or loader,
                                                          num_batches=num_batches).items()}
    out["eval"] = torch.tensor(list(evaluate(m, loader).values()))
    return out


RECIPE = TrainRecipe(epochs=2, lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=BATCH, select_on_val=False)


def finetuned(loader: DataLoader) -> dict:
    m = model()
    train(m, loader, RECIPE, progress=False)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


if __name__ == "__main__":
    distributed.init_from_env()
    r, w = distributed.rank(), distributed.world_size()
    # the runner's score loader: each rank its DistributedSampler share (half of every example batch here)
    stats = statistics(make_loader(data(), BATCH, shuffle=True, seed=3, shard="train"), num_batches=BATCHES // w,
                       taylor_loader=batches(r, w))
    # the evaluation shard: every w-th example, counts summed over ranks
    stats["eval_shard"] = torch.tensor(list(evaluate(model(), make_loader(data(), BATCH, shard="eval")).values()))
    # DDP: each rank's DistributedSampler share of every global batch of 2 x BATCH examples
    weights = finetuned(make_loader(data(), BATCH, shuffle=False, shard="train"))
    if r == 0:
        torch.save({"stats": stats, "weights": weights, "world": w}, sys.argv[1])
    distributed.shutdown()
