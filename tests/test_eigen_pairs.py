"""Linear layers of the eigen family as rank-r pairs (DESIGN.md §7): the pair against the layer and the
three-factor bottleneck it replaces, its cost against the counted parameters, and EigenDamage / Improved
EigenDamage on a plain MLP (wide first layer, C_in >> C_out) reaching 50 % and 90 %, in one step and two."""
import copy
import math

import pytest
import torch
from torch import nn

from pruning_lib.methods.eigen import basis
from pruning_lib.methods.eigen import rebuild as rb
from pruning_lib.methods.eigen import select as sel
from pruning_lib.methods.eigen import subspaces as sp
from pruning_lib.metrics import count_params
from pruning_lib.pruner import PruneContext
from pruning_lib.registry import METHODS
from test_eigendamage import bases_of, random_loader, spd

SHAPE = (3, 16, 16)
# The issue's 3072 -> 128 -> 64 -> 10 scaled down. NARROW = 768 -> 40 -> 20 -> 10 keeps its C_in / C_out (so
# what the cap allows, ~0.886 without the classifier, ~0.89 with it); but one unit of the first layer's rank is
# then (768 + 40) / 31790 = 2.5 % of the model, too coarse for a second step to land within a point of every
# target. WIDE = 768 -> 128 -> 64 -> 10 has the issue's granularity (0.8 % per unit) and reaches ~0.871.
NARROW, WIDE = (40, 20), (128, 64)


def mlp(seed: int = 0, hidden: tuple[int, int] = NARROW) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(768, hidden[0]), nn.ReLU(), nn.Linear(*hidden), nn.ReLU(),
                         nn.Linear(hidden[1], 10)).eval()


def linear_case(c_in: int = 9, c_out: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lin = nn.Linear(c_in, c_out).double()
    ls = basis.layer_scores(lin, "lin", bases_of(spd(c_in, gen), spd(c_out, gen)))
    return lin, ls


def test_full_rank_pair_reproduces_the_linear_layer():
    lin, ls = linear_case()
    assert ls.pair and ls.kernel == 1
    new = rb.rebuild_layer(lin, ls, rb.top_directions(ls.score_in, 9), rb.top_directions(ls.score_out, 6))
    assert isinstance(new, rb.EigenPair) and new.rank == 6
    assert new.first.bias is None and torch.equal(new.second.bias, lin.bias)
    x = torch.randn(5, 9, dtype=torch.float64)
    with torch.no_grad():
        assert (new(x) - lin(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("ranks", [(7, 3), (2, 5), (4, 4), (9, 1)])
def test_pair_is_the_bottleneck_it_replaces(ranks):
    """Same kept directions (r_in, r_out): the pair (core folded into the larger side, rank min) computes exactly
    the three-factor bottleneck's function, and costs what factored_cost says."""
    lin, ls = linear_case()
    r_in, r_out = ranks
    keep_in, keep_out = rb.top_directions(ls.score_in, r_in), rb.top_directions(ls.score_out, r_out)
    pair = rb.rebuild_layer(lin, ls, keep_in, keep_out)
    three = rb.build_bottleneck(lin, ls.Q_G[:, keep_out], ls.weight_star[keep_out][:, keep_in], ls.Q_A[:, keep_in].T)
    assert isinstance(pair, rb.EigenPair) and pair.rank == min(ranks)
    x = torch.randn(5, 9, dtype=torch.float64)
    with torch.no_grad():
        assert (pair(x) - three(x)).abs().max() <= 1e-5
    assert ls.factored_cost(r_in, r_out)[0] == count_params(pair) == min(ranks) * (9 + 6) + 6
    assert ls.factored_cost(r_in, r_out)[1] == min(ranks) * (9 + 6)


@pytest.mark.parametrize("subspace", ["tucker", "whitened"])
def test_improved_subspaces_fold_into_the_same_function(subspace):
    lin, ls = linear_case(seed=1)
    gen = torch.Generator().manual_seed(3)
    factors = type("F", (), {"A": spd(9, gen), "G": spd(6, gen), "has_bias": False})()
    for ranks in [(5, 3), (2, 4)]:
        parts = sp.subspace_parts(lin, ls, ranks, subspace, factors=factors)
        holder = nn.Sequential()
        holder.add_module("lin", copy.deepcopy(lin))
        sp.rebuild_subspace(holder, [ls], {"lin": ranks}, subspace, factors={"lin": factors})
        assert isinstance(holder.lin, rb.EigenPair) and holder.lin.rank == min(ranks)
        x = torch.randn(5, 9, dtype=torch.float64)
        w_hat = parts[0] @ parts[1][:, :, 0] @ parts[2]
        with torch.no_grad():
            assert (holder.lin(x) - (x @ w_hat.T + lin.bias)).abs().max() <= 1e-5


def test_cap_applies_to_the_rank_and_pairs_never_grow():
    lin, ls = linear_case(c_in=40, c_out=10)
    for cap in (0.5, 0.9, 0.95):
        r = sel.kept_ranks(ls, float("inf"), cap)
        assert min(r) == max(1, math.ceil((1 - cap) * 10 - 1e-9))  # ceil((1 - cap) · min(C_in, C_out))
    plan = sel.plan_layers([ls], float("inf"), 0.9)
    assert plan["lin"] is not None and min(plan["lin"]) == 1
    # at full rank (or any rank whose pair is not smaller than the layer) the layer is left as it is
    assert sel.plan_layers([ls], -float("inf"), 0.9)["lin"] is None
    assert ls.factored_cost(8, 8)[0] >= ls.params and ls.factored_cost(7, 9)[0] < ls.params


def test_budget_marginal_cost_of_a_pair():
    lin, ls = linear_case()
    assert sel.marginal_costs(ls, "per_param") == (15, 15) == sel.marginal_costs(ls, "per_flop")
    assert sel.marginal_costs(ls, "saliency") == (1.0, 1.0)


def loader(n: int = 64):
    return random_loader(n=n, batch=32, shape=SHAPE, classes=10)


def prune(method: str, target: float, hidden: tuple[int, int] = NARROW, **options):
    model = mlp(hidden=hidden)
    ref = copy.deepcopy(model)
    ctx = PruneContext(loader(), SHAPE, count_params(model), 0)
    result = METHODS[method].fn(model, ctx, target, num_batches=2, **options)
    return ref, result


@pytest.mark.parametrize("method", ["eigendamage", "improved_eigendamage"])
def test_target_zero_reproduces_the_mlp(method):
    ref, result = prune(method, 0.0)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.equal(result.model(x), ref(x))


@pytest.mark.parametrize("method", ["eigendamage", "improved_eigendamage"])
@pytest.mark.parametrize("target,options", [(0.5, {}), (0.87, {}), (0.5, {"include_classifier": True}),
                                            (0.9, {"include_classifier": True}),
                                            (0.5, {"steps": 2, "hidden": WIDE}), (0.86, {"steps": 2, "hidden": WIDE}),
                                            (0.87, {"steps": 2, "include_classifier": True})])
def test_mlp_reaches_the_target_as_pairs(method, target, options):
    """Classifier excluded, the cap (0.9) bounds the NARROW MLP at ~0.886 (the issue's 3072 -> 128 -> 64 -> 10 at
    ~0.891); with the classifier, 0.9 within a point. The reported ratio is the counted parameters of the rebuilt
    model; every pruned layer is an EigenPair, also after a second step re-scores the pairs of the first."""
    ref, result = prune(method, target, **options)
    base = count_params(ref)
    assert abs(result.achieved_param_ratio - target) <= 0.01
    assert result.achieved_param_ratio == pytest.approx(1 - count_params(result.model) / base)
    assert result.info["achieved_params"] == pytest.approx(result.achieved_param_ratio)
    assert not any(isinstance(m, rb.EigenBottleneck) for m in result.model.modules())
    pairs = [n for n, m in result.model.named_modules() if isinstance(m, rb.EigenPair)]
    assert pairs and set(pairs) == set(result.info["ranks"])
    assert len(result.info["rounds"]) == options.get("steps", 1)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.isfinite(result.model(x)).all()


def test_second_step_rescores_a_pair_as_the_linear_it_applies():
    """A pair scored again is the Linear it applies: same K-FAC bases as that Linear, its current cost, and
    rebuilt (also with EKFAC eigenvalues) into one pair, never nested."""
    ref, result = prune("eigendamage", 0.5)
    model = result.model
    names = basis.prunable_layers(model)
    assert names == ["1", "3"]
    plain = rb.collapse_pairs(model, names)
    assert isinstance(plain[1], nn.Linear) and isinstance(model[1], rb.EigenPair)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert (plain(x) - model(x)).abs().max() <= 1e-5
    layers, skipped = basis.score_model(model, loader(), names, SHAPE, num_batches=2)
    assert not skipped
    for ls in layers:
        m = model.get_submodule(ls.name)
        assert ls.pair and ls.params == count_params(m) and ls.ranks == (ls.c_in, ls.c_out)
        assert ls.macs == m.rank * (ls.c_in + ls.c_out)
    _, again = prune("improved_eigendamage", 0.6, steps=2, eigenvalues="ekfac", num_examples=32)
    assert abs(again.achieved_param_ratio - 0.6) <= 0.01
    assert all(type(m) is nn.Linear for p in again.model.modules() if isinstance(p, rb.EigenPair) for m in p)


def test_plan_preview_on_pairs_predicts_what_the_rebuild_does():
    """notebook 07's widget (improved.plan_preview) on an MLP whose Linear layers are already pairs."""
    from pruning_lib.methods.eigen import improved as im

    ref, result = prune("eigendamage", 0.5)
    model = result.model
    names = basis.prunable_layers(model)
    layers, _, factors = im.score_layers(model, loader(), names, SHAPE, eigenvalues="kfac", num_examples=32,
                                         fisher="true", num_batches=2)
    before = copy.deepcopy(model.state_dict())
    for subspace in sp.SUBSPACES:
        preview = im.plan_preview(model, layers, factors, subspace, "per_param", 0.7, count_params(ref))
        assert abs(preview["achieved"] - 0.7) <= 0.01 and preview["total"] >= 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------ 1x1 convs as pairs

@pytest.mark.parametrize("conv", [nn.Conv2d(9, 6, 1), nn.Conv2d(9, 6, 1, stride=2, padding=1, bias=False),
                                  nn.Conv2d(9, 6, 1, padding=1, padding_mode="circular")])
def test_full_rank_pair_reproduces_a_pointwise_conv(conv):
    """With pointwise_pairs a 1x1 conv is scored and rebuilt as a pair of 1x1 convs (the first with its stride
    and padding): at full rank it is the conv (≤ 1e-5); at rank r it costs r·(C_in + C_out) (+ bias), what
    factored_cost says; collapsed it is one 1x1 conv with the same outputs."""
    gen = torch.Generator().manual_seed(0)
    conv = conv.double()
    ls = basis.layer_scores(conv, "conv", bases_of(spd(9, gen), spd(6, gen)), (64, 25 if conv.stride[0] > 1 else 64),
                            pointwise_pairs=True)
    assert ls.pair and ls.kernel == 1
    assert basis.layer_scores(conv, "conv", bases_of(spd(9, gen), spd(6, gen))).pair  # the default
    assert not basis.layer_scores(conv, "conv", bases_of(spd(9, gen), spd(6, gen)), pointwise_pairs=False).pair
    x = torch.randn(3, 9, 8, 8, dtype=torch.float64)
    full = rb.rebuild_layer(conv, ls, rb.top_directions(ls.score_in, 9), rb.top_directions(ls.score_out, 6))
    assert isinstance(full, rb.EigenPair) and all(isinstance(p, nn.Conv2d) for p in full) and full.rank == 6
    with torch.no_grad():
        assert (full(x) - conv(x)).abs().max() <= 1e-5
        low = rb.rebuild_layer(conv, ls, rb.top_directions(ls.score_in, 4), rb.top_directions(ls.score_out, 3))
        assert low.rank == 3 and ls.factored_cost(4, 3)[0] == count_params(low) == 3 * (9 + 6) + (6 if conv.bias
                                                                                                   is not None else 0)
        assert (rb.collapsed_pair(low)(x) - low(x)).abs().max() <= 1e-10


@pytest.mark.parametrize("method,steps", [("eigendamage", 1), ("eigendamage", 2), ("improved_eigendamage", 1)])
def test_mobilenet_v2_reaches_half_with_pointwise_pairs(method, steps):
    """MobileNetV2 (torchvision, width 0.25) holds its weights in 1x1 convs: as bottlenecks they cap the eigen
    methods far below 50 % (benchmarks/model_zoo.py), as pairs they reach it, also when a second step re-scores
    the pairs of the first; every 1x1 conv rebuilt is a pair of 1x1 convs."""
    import torchvision
    from torch.utils.data import DataLoader, TensorDataset

    import pruning_lib
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    result = pruning_lib.prune(model, method, 0.5, loader=DataLoader(TensorDataset(x, y), batch_size=16),
                               pointwise_pairs=True, steps=steps)
    assert abs(result.achieved_param_ratio - 0.5) <= 0.01
    pairs = [m for m in model.modules() if isinstance(m, rb.EigenPair)]
    assert pairs and all(isinstance(p.first, nn.Conv2d) and p.first.kernel_size == (1, 1) for p in pairs)
    assert not any(isinstance(m, rb.EigenBottleneck) and rb.is_pointwise(m.core) for m in model.modules())
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x)).all()


def test_an_unreachable_target_with_bottlenecked_pointwise_convs_suggests_pairs():
    """With pointwise_pairs=False MobileNetV2's 1x1 convs are bottlenecks and 50 % is out of reach: the refusal names
    the option that reaches it (and only when 1x1 bottlenecks are what holds the parameters)."""
    import torchvision
    from torch.utils.data import DataLoader, TensorDataset

    import pruning_lib
    from pruning_lib.pruner import TargetUnreachable
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    with pytest.raises(TargetUnreachable, match=r"set pointwise_pairs=True \(\d+ 1x1 convs are rebuilt as three"):
        pruning_lib.prune(model, "eigendamage", 0.5, loader=DataLoader(TensorDataset(x, y), batch_size=16),
                          pointwise_pairs=False)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    data = DataLoader(TensorDataset(torch.randn(16, 12), torch.randint(0, 3, (16,))), batch_size=16)
    with pytest.raises(TargetUnreachable) as refused:  # Linear layers only: pairs already, no hint
        pruning_lib.prune(mlp, "eigendamage", 0.95, loader=data)
    assert "pointwise_pairs" not in str(refused.value)


@pytest.mark.parametrize("method", ["eigendamage", "improved_eigendamage"])
def test_efficientnet_b0_reaches_half_and_nine_tenths_as_pairs(method):
    """torchvision's EfficientNet-B0 at its own width (10 classes): with pointwise_pairs its 1x1 convs are rank-r
    pairs and 50 % is reached; 90 % needs a higher per-layer cap too (layer_cap 0.9 keeps 10 % of every pair's rank,
    which with the depthwise convs, BatchNorms and stem left whole stops at ~0.82)."""
    import torchvision
    from torch.utils.data import DataLoader, TensorDataset

    import pruning_lib
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    for target, options in [(0.5, {}), (0.9, {"layer_cap": 0.97})]:
        torch.manual_seed(0)
        model = torchvision.models.efficientnet_b0(num_classes=10)
        result = pruning_lib.prune(model, method, target, loader=loader, pointwise_pairs=True, **options)
        assert abs(result.achieved_param_ratio - target) <= 0.01, (target, result.achieved_param_ratio)
        with torch.no_grad():
            assert torch.isfinite(model.eval()(x)).all()


class TokenNet(nn.Module):
    """Linear layers on (N, T, D) tokens, mean over tokens, a Linear head."""

    def __init__(self):
        super().__init__()
        self.up, self.mid, self.down = nn.Linear(16, 48), nn.Linear(48, 48), nn.Linear(48, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head((x + self.down(torch.relu(self.mid(torch.relu(self.up(x)))))).mean(1))


@pytest.mark.parametrize("method", ["eigendamage", "improved_eigendamage"])
def test_kfac_approx_option_reaches_the_target_and_changes_the_scores(method):
    """kfac_approx="reduce" (K-FAC of token-shared Linear layers reduced per example) is wired through both eigen
    methods: it prunes to the target, with other direction scores than "expand"; a wrong value is refused by name."""
    from torch.utils.data import DataLoader, TensorDataset

    import pruning_lib
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(32, 6, 16, generator=g), torch.randint(0, 3, (32,), generator=g)),
                        batch_size=16)
    x, outputs = loader.dataset.tensors[0][:8], {}
    for approx in ("expand", "reduce"):
        torch.manual_seed(0)
        result = pruning_lib.prune(TokenNet(), method, 0.5, loader=loader, kfac_approx=approx, fisher="exact")
        assert abs(result.achieved_param_ratio - 0.5) <= 0.01
        with torch.no_grad():
            outputs[approx] = result.model(x)
    assert (outputs["expand"] - outputs["reduce"]).abs().max() > 1e-4  # other scores: another pruned net
    with pytest.raises(ValueError, match=r"kfac_approx: unknown 'mean', allowed: expand, reduce"):
        pruning_lib.prune(TokenNet(), method, 0.5, loader=loader, kfac_approx="mean")
