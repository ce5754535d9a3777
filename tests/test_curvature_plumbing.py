"""The shared curvature plumbing: batches.first_batches, curvature.damping.damp, curvature.quadratic."""
import pytest
import torch

from pruning_lib.batches import first_batches
from pruning_lib.curvature.damping import damp
from pruning_lib.curvature.quadratic import kfac_predicted_increase, kfac_quadratic_form


def _psd(n: int, g: torch.Generator) -> torch.Tensor:
    m = torch.randn(n, n + 2, generator=g, dtype=torch.float64)
    return m @ m.T


def test_quadratic_form_of_a_linear_weight_matches_the_explicit_kronecker_product():
    g = torch.Generator().manual_seed(0)
    dW, A, G = torch.randn(3, 5, generator=g, dtype=torch.float64), _psd(5, g), _psd(3, g)
    v = dW.reshape(-1)  # row-major vec(ΔW)
    oracle = float(v @ torch.kron(G, A) @ v)
    assert abs(kfac_quadratic_form(dW, A, G) - oracle) <= 1e-10 * max(1.0, abs(oracle))
    assert kfac_predicted_increase(dW, A, G) == 0.5 * kfac_quadratic_form(dW, A, G)


def test_quadratic_form_of_a_conv_weight_matches_the_explicit_kronecker_product():
    """Channel-patch form: Fisher of vec(W) (C_out, C_in, k·k row-major) ≈ G ⊗ A ⊗ I_{k·k}."""
    g = torch.Generator().manual_seed(1)
    dW, A, G = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64), _psd(3, g), _psd(4, g)
    v = dW.reshape(-1)
    oracle = float(v @ torch.kron(torch.kron(G, A), torch.eye(9, dtype=torch.float64)) @ v)
    for w in (dW, dW.reshape(4, 3, 9)):
        assert abs(kfac_quadratic_form(w, A, G) - oracle) <= 1e-10 * max(1.0, abs(oracle))
    # = Σ_p tr(G ΔW_p A ΔW_pᵀ)
    d = dW.reshape(4, 3, 9)
    per_p = sum(float(torch.trace(G @ d[:, :, p] @ A @ d[:, :, p].T)) for p in range(9))
    assert abs(kfac_quadratic_form(dW, A, G) - per_p) <= 1e-10 * max(1.0, abs(oracle))


def test_damp_relative_adds_gamma_times_the_mean_eigenvalue_in_either_basis():
    g = torch.Generator().manual_seed(2)
    M = _psd(6, g)
    damped = damp(M.float(), 0.1)
    assert damped.dtype == torch.float64
    torch.testing.assert_close(damped, M.float().double() + 0.1 * M.float().double().diagonal().mean() * torch.eye(6,
                                                                                                  dtype=torch.float64))
    eig = torch.linalg.eigvalsh(M)
    torch.testing.assert_close(torch.linalg.eigvalsh(damp(M, 0.1)), damp(eig, 0.1, "values"), rtol=1e-10, atol=1e-10)
    assert damp(eig, 0.1, "values", eps=1e-300).dtype == eig.dtype
    assert torch.linalg.matrix_rank(damp(torch.zeros(3, 3), 0.1)) == 3  # a zero factor still becomes invertible


def test_damp_absolute_sqrt_is_compute_kfacs_convention():
    M = torch.randn(4, 4)
    assert torch.equal(damp(M, 0.04, "absolute_sqrt"), M + 0.2 * torch.eye(4))
    with pytest.raises(ValueError):
        damp(M, 0.1, "nonsense")
    with pytest.raises(ValueError, match="kind='values'"):  # eigenvalues are never mistaken for a matrix
        damp(torch.rand(3, 4, 9), 0.1)
    moments = torch.rand(3, 4, 9, dtype=torch.float64)
    assert torch.equal(damp(moments, 0.1, "values"), moments + 0.1 * moments.mean())


def test_first_batches_limits_truncates_and_counts():
    data = [(torch.full((4, 2), float(i)), torch.full((4,), i)) for i in range(5)]
    b = first_batches(data, num_batches=3)
    assert [int(y[0]) for _, y in b] == [0, 1, 2] and (b.batches, b.examples) == (3, 12)
    b = first_batches(data, num_examples=10)
    assert [x.shape[0] for x, _ in b] == [4, 4, 2] and b.reduced_examples() == 10 and b.reduced_batches() == 3
    b = first_batches(data, device="cpu")
    assert len(list(b)) == 5 and b.examples == 20


def test_first_batches_draws_one_batch_past_the_limit_like_the_loops_it_replaced():
    """The loader's state (shuffling, augmentation) must advance as before: seeded numbers stay identical."""
    drawn = []

    def loader():
        for i in range(5):
            drawn.append(i)
            yield torch.zeros(2, 1), torch.zeros(2)

    list(first_batches(loader(), num_batches=2))
    assert drawn == [0, 1, 2]
