"""The three rank-r truncations of one layer (methods/truncation.py) against oracles: full rank reproduces W; each is
optimal in its own metric (no random rank-r matrix, nor the other two, does better; the two-sided one attains the
tail of its spectrum exactly); one-sided equals the kit's whitened_svd factorisation; predicted = ½ tr(G ΔW A ΔWᵀ)
from the dense definition; the measured curve restores the layer."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib.methods.eigen.subspaces import matrix_roots
from pruning_lib.methods.truncation import FACTORISATIONS, spectra, truncation_curve, truncations


def spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    return m @ m.T / n + 0.1 * torch.eye(n, dtype=torch.float64)


def problem():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 9, generator=g, dtype=torch.float64), spd(9, 1), spd(6, 2)


def metric(name, dw, A, G):
    """Each factorisation's own error, computed from its definition with the same damped roots."""
    a_half, g_half = matrix_roots(A, 1e-3)[0], matrix_roots(G, 1e-3)[0]
    return {"svd": dw.norm() ** 2, "whitened_svd": (dw @ a_half).norm() ** 2,
            "two_sided": (g_half @ dw @ a_half).norm() ** 2}[name]


def test_full_rank_reproduces_the_weight():
    w, A, G = problem()
    for name, w_r in truncations(w, A, G, 6).items():
        assert (w_r - w).abs().max() <= 1e-10, name


def test_each_truncation_is_optimal_in_its_own_metric():
    w, A, G = problem()
    r = 2
    found = truncations(w, A, G, r)
    g = torch.Generator().manual_seed(3)
    for name in FACTORISATIONS:
        best = metric(name, w - found[name], A, G)
        assert all(best <= metric(name, w - other, A, G) + 1e-10 for other in found.values()), name
        for _ in range(50):  # random rank-r matrices near the optimum never beat it
            noise = 0.05 * torch.randn(6, r, generator=g, dtype=torch.float64) @ torch.randn(r, 9, generator=g,
                                                                                            dtype=torch.float64)
            u, s, vh = torch.linalg.svd(found[name] + noise, full_matrices=False)
            assert best <= metric(name, w - (u[:, :r] * s[:r]) @ vh[:r], A, G) + 1e-10, name
    tail = spectra(w, A, G)["two_sided"][r:].pow(2).sum()
    assert abs(metric("two_sided", w - found["two_sided"], A, G) - tail) <= 1e-10 * tail


def test_one_sided_is_the_whitened_svd_of_the_kit():
    """The kit's whitened_svd truncates W L (L the Cholesky factor of A); any square root of A gives the same W'."""
    w, A, G = problem()
    L = torch.linalg.cholesky(A + 1e-3 * A.diagonal().mean() * torch.eye(9, dtype=torch.float64))
    u, s, vh = torch.linalg.svd(w @ L, full_matrices=False)
    reference = (u[:, :3] * s[:3]) @ vh[:3] @ torch.linalg.inv(L)
    assert (truncations(w, A, G, 3)["whitened_svd"] - reference).abs().max() <= 1e-10


def test_the_curve_predicts_from_the_kfac_form_and_restores_the_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    A, G = spd(5, 4), spd(4, 5)
    before = model[0].weight.detach().clone()
    rows = truncation_curve(model, "0", loader, A, G, [1, 4])
    assert len(rows) == 6 and torch.equal(model[0].weight, before)
    for row in rows:
        dw = before.double() - truncations(before, A, G, row["rank"])[row["factorisation"]]
        dense = 0.5 * dw.flatten() @ torch.kron(G, A) @ dw.flatten()  # ½ vec(ΔW)ᵀ (G ⊗ A) vec(ΔW), row-major
        assert abs(row["predicted"] - float(dense)) <= 1e-8 * max(1.0, float(dense))
    assert all(abs(r["measured"]) < 1e-5 for r in rows if r["rank"] == 4)


def test_the_curve_measures_every_truncation_on_the_same_batches():
    """With a shuffling loader, each measurement still sees the batches the baseline loss was taken on: at full
    rank the measured increase is 0 up to rounding, not the difference between two random draws."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    loader = DataLoader(TensorDataset(torch.randn(64, 5), torch.randint(0, 3, (64,))), batch_size=8, shuffle=True)
    rows = truncation_curve(model, "0", loader, spd(5, 4), spd(4, 5), [4], num_batches=2)
    assert all(abs(r["measured"]) < 1e-6 for r in rows)
