"""Improved EigenDamage against independent oracles: EKFAC moments vs torch.func per-example gradients, the
whitened subspace vs the K-FAC quadratic model, the cost budget vs brute force, all-off == eigendamage, and the
runner's fine-tuning budget shared between the steps of the iterative schedule."""
import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning_lib.curvature import compute_kfac
from pruning_lib.curvature import ekfac_correction
from pruning_lib.methods.eigen import basis
from pruning_lib.methods.eigen import improved as im
from pruning_lib.methods.eigen import rebuild as rb
from pruning_lib.methods.eigen import select as sel
from pruning_lib.methods.eigen import subspaces as sp
from pruning_lib.metrics import count_params
from pruning_lib.pruner import PruneContext, closest_threshold
from pruning_lib.registry import METHODS
from helpers import random_loader, rel, spd
from test_eigendamage import INPUT, bases_of, tiny_resnet

OFF = dict(eigenvalues="kfac", subspace="eigenbasis", budget="saliency", steps=1)


def kfac_loss(w: torch.Tensor, w_hat: torch.Tensor, A: torch.Tensor, G: torch.Tensor) -> float:
    """Σ_p tr((W − Ŵ)_pᵀ G (W − Ŵ)_p A): the K-FAC quadratic form (G ⊗ A ⊗ I) of the change, by a plain loop."""
    d = (w - w_hat).double()
    return sum(float(torch.trace(d[:, :, p].T @ G @ d[:, :, p] @ A)) for p in range(d.shape[2]))


def test_ekfac_weight_basis_matches_torch_func_per_example_gradients():
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=True), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(16, 5)).eval()
    dl = random_loader(6, (2, 6, 6), 5, batch=3, seed=1)
    x, y = dl.dataset.tensors
    kfac = compute_kfac(model, dl, fisher="empirical", num_batches=2)
    moments = ekfac_correction(model, kfac, dl, num_examples=6, fisher="empirical", weight_only=True)
    params = {k: v.detach() for k, v in model.named_parameters()}
    per_example = vmap(grad(lambda p, xi, yi: F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])),
                       in_dims=(None, 0, 0))(params, x, y)
    for name in ("0", "2", "5"):
        _, qa, _, qg = kfac[name].weight_eig()
        g = per_example[f"{name}.weight"]
        g = g.reshape(*g.shape[:3], -1) if g.dim() == 5 else g[..., None]  # (N, C_out, C_in, k·k)
        ref = torch.einsum("oi,noap,ab->nibp", qg, g, qa).pow(2).mean(0)
        assert moments[name].shape == ref.shape
        assert rel(moments[name], ref) < 1e-4


def layer_case(seed: int, conv: bool):
    """A random layer (Conv2d 6->5 3x3 or Linear 7->6), random SPD factors and its LayerScores."""
    torch.manual_seed(seed)
    module = (nn.Conv2d(6, 5, 3, padding=1, bias=False) if conv else nn.Linear(7, 6, bias=False)).double()
    gen = torch.Generator().manual_seed(seed)
    w = module.weight
    A, G = spd(w.shape[1], gen), spd(w.shape[0], gen)
    return module, A, G, basis.layer_scores(module, "layer", bases_of(A, G))


class _Factors:
    def __init__(self, A, G):
        self.A, self.G, self.has_bias = A, G, False


def rebuilt_weight(module, A, G, ls, ranks, subspace):
    """Effective weight of `module` rebuilt at (r_in, r_out) keeping `subspace` (undamped whitening)."""
    holder = nn.Sequential()
    holder.add_module("layer", copy.deepcopy(module))
    sp.rebuild_subspace(holder, [ls], {"layer": ranks}, subspace, factors={"layer": _Factors(A, G)}, damping=0.0)
    return sp.effective_weight(holder.layer)


@pytest.mark.parametrize("conv", [True, False])
def test_whitened_subspace_never_predicts_a_larger_loss_increase(conv):
    for seed in range(12):
        module, A, G, ls = layer_case(seed, conv)
        w = sp.effective_weight(module)
        c_out, c_in = w.shape[:2]
        gen = torch.Generator().manual_seed(100 + seed)
        ranks = (int(torch.randint(1, c_in, (1,), generator=gen)), int(torch.randint(1, c_out, (1,), generator=gen)))
        loss = {s: kfac_loss(w, rebuilt_weight(module, A, G, ls, ranks, s), A, G) for s in sp.SUBSPACES}
        assert loss["whitened"] <= min(loss["eigenbasis"], loss["tucker"]) * (1 + 1e-9), (seed, ranks, loss)
        if not conv:  # a Linear layer at equal ranks: the truncated SVD of G^½ W A^½ (Eckart-Young) is optimal
            r = min(ranks)
            a_half, g_half = sp.matrix_roots(A, 0.0)[0], sp.matrix_roots(G, 0.0)[0]
            sv = torch.linalg.svdvals(g_half @ w[:, :, 0].double() @ a_half)
            w_r = rebuilt_weight(module, A, G, ls, (r, r), "whitened")
            assert kfac_loss(w, w_r, A, G) == pytest.approx(float(sv[r:].pow(2).sum()), rel=1e-6)


@pytest.mark.parametrize("subspace", sp.SUBSPACES)
@pytest.mark.parametrize("conv", [True, False])
def test_full_rank_reproduces_the_layer(subspace, conv):
    module, A, G, ls = layer_case(3, conv)
    holder = nn.Sequential()
    holder.add_module("layer", copy.deepcopy(module))
    full = (module.weight.shape[1], module.weight.shape[0])
    sp.rebuild_subspace(holder, [ls], {"layer": full}, subspace, factors={"layer": _Factors(A, G)}, damping=1e-3)
    assert isinstance(holder.layer, rb.EigenBottleneck if conv else rb.EigenPair)  # a Linear layer: a rank-r pair
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64) if conv else torch.randn(4, 7, dtype=torch.float64)
    with torch.no_grad():
        assert (holder(x) - module(x)).abs().max() <= 1e-5


def greedy_removal(saliency: list[torch.Tensor], cost: list[float], target: float, budget: str) -> list[int]:
    """Directions removed per layer by one threshold over saliency (÷ cost for per_param), the method's rule:
    `budgeted` divides by the marginal cost, `closest_threshold` finds the threshold whose removed cost is
    closest to target · total cost."""
    scaled = [s / (c if budget == "per_param" else 1.0) for s, c in zip(saliency, cost)]
    total = sum(c * len(s) for s, c in zip(saliency, cost))
    removed = lambda t: sum(c * int((s <= t).sum()) for s, c in zip(scaled, cost)) / total  # noqa: E731
    candidates = [-math.inf] + sorted(torch.cat(scaled).unique().tolist())
    t, _ = closest_threshold(candidates, removed, target)
    return [int((s <= t).sum()) for s in scaled]


def test_saliency_per_parameter_matches_a_brute_force_search_over_rank_pairs():
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        sal = [torch.rand(6, generator=gen).sort().values * 10 ** float(torch.rand(1, generator=gen) * 3)
               for _ in range(2)]
        cost = [float(torch.randint(1, 9, (1,), generator=gen)) for _ in range(2)]
        for target in (0.2, 0.4, 0.6):
            k = greedy_removal(sal, cost, target, "per_param")
            spent = k[0] * cost[0] + k[1] * cost[1]
            # brute force: every pair (k1, k2) removing at least as much cost; removal within a layer is in
            # saliency order, so it loses the k smallest saliencies
            best = min(float(sal[0][:a].sum() + sal[1][:b].sum()) for a, b in itertools.product(range(7), repeat=2)
                       if a * cost[0] + b * cost[1] >= spent)
            assert float(sal[0][:k[0]].sum() + sal[1][:k[1]].sum()) <= best * (1 + 1e-9) + 1e-12, (trial, target)
    # and where the raw threshold is not optimal: it spends four directions (three cheap ones) where one
    # costly direction of slightly higher saliency meets the target
    sal, cost = [torch.tensor([1.0, 1.1, 1.2]), torch.tensor([1.5, 1.6, 1.7])], [1.0, 10.0]
    assert greedy_removal(sal, cost, 0.3, "saliency") == [3, 1]  # loses 4.8
    assert greedy_removal(sal, cost, 0.3, "per_param") == [0, 1]  # loses 1.5, removes 10 of 33 (30.3 %)


def test_budgeted_divides_by_the_marginal_cost():
    module, A, G, ls = layer_case(0, True)
    for budget in sel.BUDGETS:
        b = sel.budgeted(ls, budget)
        c_in, c_out = sel.marginal_costs(ls, budget)
        assert torch.allclose(b.score_in * c_in, ls.score_in) and torch.allclose(b.score_out * c_out, ls.score_out)
        p_in = ls.factored_cost(ls.c_in, ls.c_out)[0] - ls.factored_cost(ls.c_in - 1, ls.c_out)[0]
        p_out = ls.factored_cost(ls.c_in, ls.c_out)[0] - ls.factored_cost(ls.c_in, ls.c_out - 1)[0]
        if budget == "per_param":
            assert (c_in, c_out) == (p_in, p_out)


def test_every_ingredient_off_gives_exactly_eigendamage():
    ctx = lambda m: PruneContext(random_loader(64, batch=32), INPUT, count_params(m), 0)  # noqa: E731
    torch.manual_seed(5)
    a = tiny_resnet()
    ref = METHODS["eigendamage"].fn(a, ctx(a), 0.5, num_batches=2).model
    torch.manual_seed(5)
    b = tiny_resnet()
    got = METHODS["improved_eigendamage"].fn(b, ctx(b), 0.5, num_batches=2, **OFF).model
    sa, sb = ref.state_dict(), got.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("options", [
    dict(),
    dict(eigenvalues="ekfac", subspace="eigenbasis", budget="per_flop"),
    dict(eigenvalues="kfac", subspace="tucker", budget="per_param", steps=2),
    dict(subspace="whitened", steps=3),
])
def test_registry_hits_the_target_and_counts_fine_tuning_steps(options):
    model = tiny_resnet()
    x = torch.randn(3, *INPUT)
    calls = []
    ctx = PruneContext(random_loader(64, batch=32), INPUT, count_params(model), 0,
                       lambda m, n: calls.append(n), finetune_steps=40)
    entry = METHODS["improved_eigendamage"]
    result = entry.fn(model, ctx, 0.6, **{**entry.options, "num_batches": 2, "num_examples": 64, **options})
    assert abs(result.achieved_param_ratio - 0.6) <= 0.01
    assert torch.isfinite(result.model(x)).all()
    steps = options.get("steps", 1)
    assert len(result.info["rounds"]) == steps
    assert calls == [int(0.5 * 40) // (steps - 1)] * (steps - 1) if steps > 1 else calls == []
    assert result.info["finetune_steps_used"] == sum(calls)
    for b in (m for m in result.model.modules() if isinstance(m, rb.EigenBottleneck)):
        assert [type(m) for m in b] == [nn.Conv2d] * 3


@pytest.mark.parametrize("field,value", [("eigenvalues", "exact"), ("subspace", "cp"), ("budget", "flops"),
                                         ("steps", 0), ("num_examples", 0), ("finetune_share", 1.0)])
def test_bad_options_name_the_field(field, value):
    model = tiny_resnet()
    ctx = PruneContext(random_loader(64, batch=32), INPUT, count_params(model), 0)
    with pytest.raises(ValueError, match=field):
        METHODS["improved_eigendamage"].fn(model, ctx, 0.5, **{field: value})


def test_distillation_loss_matches_its_formula():
    from pruning_lib.train import distillation_loss

    torch.manual_seed(0)
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    t = 3.0
    p_t = F.softmax(teacher(x) / t, 1)
    log_p_s = F.log_softmax(student(x) / t, 1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    expected = 0.7 * F.cross_entropy(student(x), y) + 0.3 * t ** 2 * kl
    assert distillation_loss(teacher, 0.3, t)(student, x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert distillation_loss(teacher, 0.0, t)(student, x, y).item() == pytest.approx(
        F.cross_entropy(student(x), y).item(), rel=1e-6)


def test_regrow_lands_on_the_target_and_gives_back_the_most_damaging_cuts_first():
    model = tiny_resnet()
    loader = random_loader(64, batch=32)
    ctx = PruneContext(loader, INPUT, count_params(model), 0)
    reference = copy.deepcopy(model)
    result = METHODS["improved_eigendamage"].fn(model, ctx, 0.5, **{**OFF, "subspace": "tucker", "regrow": 0.3,
                                                                     "num_batches": 2})
    assert abs(result.achieved_param_ratio - 0.5) <= 0.01
    restored = result.info["rounds"][0]["regrown"]
    assert restored, "an overshoot of 30 % of the step must give something back"
    damages = [d for _, d, _, _ in restored]
    assert damages == sorted(damages, reverse=True)
    # the first restored layer's damage, measured independently: that cut alone, mean loss over the two batches
    name, damage, over, _ = restored[0]
    layers, _, factors = im.score_layers(reference, loader, basis.prunable_layers(reference), INPUT,
                                         eigenvalues="kfac", num_examples=64, fisher="true", num_batches=2)
    ls = next(ls for ls in layers if ls.name == name)
    trial = copy.deepcopy(reference)
    sp.rebuild_subspace(trial, [ls], {name: over}, "tucker", factors=factors, damping=1e-3)

    def loss(net):
        with torch.no_grad():
            return sum(F.cross_entropy(net.eval()(x), y, reduction="sum").item() for x, y in loader) / 64

    saved = ls.params - ls.factored_cost(*over)[0]
    assert damage == pytest.approx((loss(trial) - loss(reference)) / saved, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("subspace", sp.SUBSPACES)
def test_round_to_gives_multiples_and_still_hits_the_target(subspace):
    """round_to 8 on resnet8 at width 4 (64 / 128 / 256 channels): every core rank a multiple of 8 or the
    layer's whole width, whatever subspace is kept, and the target met within one point."""
    from test_eigendamage import bottleneck_ranks

    from pruning_lib.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet8", 4, INPUT[0], 10)
    ctx = PruneContext(random_loader(32, batch=16), INPUT, count_params(model), 0)
    result = METHODS["improved_eigendamage"].fn(model, ctx, 0.6, subspace=subspace, num_batches=1, round_to=8)
    assert abs(result.achieved_param_ratio - 0.6) <= 0.01 and result.info["round_to"] == 8
    ranks = bottleneck_ranks(result.model)
    assert ranks and all(r % 8 == 0 or r == full for r, full in ranks), ranks


def test_plan_preview_predicts_the_rebuilt_layers_and_leaves_the_model_alone():
    """plan_preview (the notebook 07 toggles): the plan it shows is the one the rebuild applies (same parameter
    count), each layer's predicted increase is half the K-FAC quadratic form of the rebuilt layer's change (loop
    oracle), and the model itself is untouched."""
    model = tiny_resnet()
    before = copy.deepcopy(model.state_dict())
    factors = {}
    layers, _ = basis.score_model(model, random_loader(64, batch=32), basis.prunable_layers(model), INPUT,
                                  num_batches=2, factors=factors)
    base = count_params(model)
    view = im.plan_preview(model, layers, factors, "whitened", "saliency", 0.5, base)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    trial = copy.deepcopy(model)
    sp.rebuild_subspace(trial, layers, view["plan"], "whitened", factors=factors, damping=1e-3)
    assert 1 - count_params(trial) / base == pytest.approx(view["achieved"], abs=1e-9)
    assert abs(view["achieved"] - 0.5) <= 0.01
    planned = [n for n, r in view["plan"].items() if r is not None]
    assert planned
    for n in planned:
        lf = factors[n]
        w, w_hat = sp.effective_weight(model.get_submodule(n)), sp.effective_weight(trial.get_submodule(n))
        expected = kfac_loss(w, w_hat, lf.A.double(), lf.G.double()) / 2  # the float32 rebuild rounds Ŵ
        assert view["predicted"][n] == pytest.approx(expected, rel=1e-3, abs=1e-12)
    assert view["total"] == pytest.approx(sum(view["predicted"].values()))
