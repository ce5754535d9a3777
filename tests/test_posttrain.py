"""Post-training pruning (methods/posttrain) against independent oracles: SparseGPT equals an explicit-inverse OBS
loop (every weight removal the exact OBS update of the columns not yet visited, no Cholesky trick, no lazy block
updates), never reconstructs worse than zeroing the same mask, and is the identity at count 0; Wanda equals a plain
loop over rows; N:M masks keep exactly N of every M; the sequential loop measures each layer on the inputs the
pruned layers before it produce; an N:M target other than the pattern's own fraction is refused with it."""
import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib
from pruning_lib.curvature.damping import damp
from pruning_lib.methods.patterns import nm_mask, row_mask
from pruning_lib.methods.posttrain import sparsegpt_layer, wanda_mask
from pruning_lib.metrics import count_params
from pruning_lib.pruner import TargetUnreachable


def problem(rows=5, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(rows, d, generator=g, dtype=torch.float64), x.T @ x / len(x), x


def obs_loop(W, H, count, nm, blocksize, damping):
    """The same choices as SparseGPT, computed the slow way: inv(H_F) for every set F = columns i.. of the damped H."""
    W, (rows, d) = W.clone(), W.shape
    Hd = damp(H, damping)
    tail = [torch.linalg.inv(Hd[i:, i:]) for i in range(d)]
    mask, done = torch.zeros(rows, d, dtype=torch.bool), 0
    for i1 in range(0, d, blocksize):
        i2 = min(i1 + blocksize, d)
        if nm is None:
            cost = torch.stack([W[:, j] ** 2 / tail[j][0, 0] for j in range(i1, i2)], 1)
            k = round(count / W.numel() * rows * i2) - done
            done += k
            flat = sorted(range(cost.numel()), key=lambda f: (float(cost.flatten()[f]), f))[:k]
            for f in flat:
                mask[f // (i2 - i1), i1 + f % (i2 - i1)] = True
        for i in range(i1, i2):
            if nm is not None and (i - i1) % nm[1] == 0:
                for r in range(rows):
                    cost = [float(W[r, j] ** 2 / tail[j][0, 0]) for j in range(i, i + nm[1])]
                    for j in sorted(range(nm[1]), key=lambda j: (cost[j], j))[: nm[1] - nm[0]]:
                        mask[r, i + j] = True
            for r in range(rows):
                if mask[r, i]:
                    W[r, i:] -= W[r, i] / tail[i][0, 0] * tail[i][0]
    return W, mask


@pytest.mark.parametrize("count,nm,blocksize", [(30, None, 4), (30, None, 128), (17, None, 5), (0, (2, 4), 8),
                                                (0, (1, 2), 4)])
def test_sparsegpt_is_the_obs_loop(count, nm, blocksize):
    W, H, _ = problem()
    got, mask = sparsegpt_layer(W, H, count, nm, blocksize=blocksize, damping=0.01)
    want, want_mask = obs_loop(W, H, count, nm, blocksize, 0.01)
    assert torch.equal(mask, want_mask)
    assert (got - want).abs().max() <= 1e-10 * W.abs().max()
    assert bool((got[mask] == 0).all()) and int(mask.sum()) == (count if nm is None else W.numel() * (nm[1] - nm[0])
                                                                   // nm[1])


def test_sparsegpt_reconstructs_better_than_zeroing_its_mask_and_is_the_identity_at_zero():
    W, H, x = problem(8, 16, seed=1)
    got, mask = sparsegpt_layer(W, H, 64, damping=1e-8)
    assert ((W - got) @ x.T).norm() < ((W * ~mask) - W).matmul(x.T).norm()
    same, none = sparsegpt_layer(W, H, 0)
    assert not none.any() and (same - W).abs().max() <= 1e-12


def test_wanda_is_a_loop_over_rows():
    W, H, x = problem(6, 10, seed=2)
    mask = wanda_mask(W, H, 23, None)
    norms = x.norm(dim=0)  # ‖X_j‖₂ over the 40 inputs
    per_row = [23 // 6 + (r < 23 % 6) for r in range(6)]
    for r in range(6):
        scores = [float(W[r, j].abs() * norms[j]) for j in range(10)]
        lowest = sorted(range(10), key=lambda j: (scores[j], j))[: per_row[r]]
        assert [bool(mask[r, j]) for j in range(10)] == [j in lowest for j in range(10)]


def test_nm_masks_keep_exactly_n_of_every_m():
    scores = torch.rand(7, 24, generator=torch.Generator().manual_seed(3))
    for n, m in [(2, 4), (4, 8), (1, 2)]:
        kept = (~nm_mask(scores, n, m)).reshape(7, 24 // m, m).sum(-1)
        assert bool((kept == n).all())
    assert int(row_mask(scores, 10).sum()) == 10


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def loader(n=64):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)),
                      batch_size=16)


def test_each_layer_is_measured_on_the_inputs_of_the_pruned_layers_before_it():
    """Layer b's SparseGPT update uses H of relu(a'(x)) with a' the pruned a: redoing it by hand gives b's weights."""
    torch.manual_seed(0)
    model = MLP()
    dl = loader()
    pruned = pruning_lib.prune(copy.deepcopy(model), "sparsegpt", 0.5, loader=dl, calibration=64).model
    x = torch.cat([b[0] for b in dl])
    with torch.no_grad():
        hidden = torch.relu(pruned.a(x))
    H = hidden.double().T @ hidden.double() / len(hidden)
    count = int((pruned.b.weight == 0).sum())
    want, _ = sparsegpt_layer(model.b.weight.detach(), H, count)
    assert (pruned.b.weight - want).abs().max() <= 1e-6


def test_an_nm_target_must_be_the_patterns_fraction():
    """2:4 on the MLP prunes half of a and b: the target that gives is named; at it, every group of 4 keeps 2."""
    torch.manual_seed(0)
    model = MLP()
    with pytest.raises(TargetUnreachable, match=r"pattern 2:4 .* set target to 0\.4\d+"):
        pruning_lib.prune(copy.deepcopy(model), "wanda", 0.3, loader=loader(), pattern="2:4")
    fraction = 0.5 * (model.a.weight.numel() + model.b.weight.numel()) / count_params(model)
    for method in ("wanda", "sparsegpt"):
        result = pruning_lib.prune(copy.deepcopy(model), method, round(fraction, 4), loader=loader(), pattern="2:4")
        for layer in (result.model.a, result.model.b):
            assert bool(((layer.weight != 0).reshape(16, -1, 4).sum(-1) == 2).all())
        assert torch.equal(result.model.head.weight, model.head.weight)


def test_magnitude_takes_the_nm_pattern_too():
    """magnitude_global with pattern 2:4 keeps the 2 largest |w| of every 4 inputs, the same mask as Wanda with no
    input statistics; its default (unstructured) is unchanged."""
    torch.manual_seed(0)
    model = MLP()
    fraction = round(0.5 * (model.a.weight.numel() + model.b.weight.numel()) / count_params(model), 4)
    result = pruning_lib.prune(copy.deepcopy(model), "magnitude_global", fraction, example_inputs=torch.zeros(1, 8),
                               pattern="2:4")
    for name in ("a", "b"):
        w = getattr(model, name).weight.detach()
        assert torch.equal(getattr(result.model, name).weight == 0, wanda_mask(w, None, 0, (2, 4)))


def test_an_nm_pattern_needs_blocks_that_hold_whole_groups():
    W, H, _ = problem(4, 16)
    with pytest.raises(ValueError, match="blocksize: 6 is not a multiple of M = 4"):
        sparsegpt_layer(W, H, 0, (2, 4), blocksize=6)


def test_obc_row_is_the_exact_greedy_obs_sequence():
    """Every step removes the weight whose best-compensated removal costs least (exhaustive search with an explicit
    solve of the kept weights), and the final kept weights are the least-squares optimum given the removed ones."""
    from pruning_lib.methods.posttrain import obc_row
    W, H, _ = problem(rows=1, d=8)
    w, Hd = W[0], damp(H, 0.01)

    def best_kept(removed):  # argmin_v (v − w)ᵀ H (v − w) with v_removed = 0
        keep = [j for j in range(len(w)) if j not in removed]
        v = torch.zeros_like(w)
        v[keep] = w[keep] + torch.linalg.solve(Hd[keep][:, keep], Hd[keep][:, removed] @ w[removed])
        return v

    def cost(v):
        return float((v - w) @ Hd @ (v - w))

    removed = []
    for count in range(1, 6):
        candidates = [j for j in range(len(w)) if j not in removed]
        removed.append(min(candidates, key=lambda j: cost(best_kept(removed + [j]))))
        got, mask = obc_row(w, H, count, damping=0.01)
        assert sorted(torch.nonzero(mask).flatten().tolist()) == sorted(removed)
        assert torch.allclose(got, best_kept(removed), atol=1e-10)


def test_sparsegpt_equals_the_channel_obs_correction_where_they_coincide():
    """Removing one whole input column is the kit's C-OBS correction of removed rows (methods.channel.second_order.
    obs_correction) applied to Wᵀ under H⁻¹: the first column SparseGPT visits sees the full inverse, so pruning all of
    column 0 moves the other columns by −W[:, 0] H⁻¹[0, :] / H⁻¹[0, 0]."""
    from pruning_lib.methods.channel.second_order import obs_correction
    W, H, _ = problem(rows=5, d=12)
    W[:, 0] *= 1e-3  # the cheapest weights: the unstructured mask of `rows` weights is exactly column 0
    got, mask = sparsegpt_layer(W, H, count=W.shape[0], blocksize=128, damping=0.01)
    assert mask[:, 0].all() and mask.sum() == W.shape[0]
    want = W + obs_correction(W.T, torch.linalg.inv(damp(H, 0.01)), torch.tensor([0])).T
    assert torch.allclose(got, want, atol=1e-10)
