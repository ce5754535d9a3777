"""Low-rank factorisation: exact reproductions, Tucker-2 error identities, CP layer algebra, VBMF, counts, targets."""
import copy
import warnings

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from pruning_lib.methods import lowrank as lr
from pruning_lib.metrics import count_macs, count_params
from pruning_lib.models import build_model
from pruning_lib.pruner import PruneContext
from pruning_lib.registry import METHODS
from pruning_lib.methods.vbmf import evbmf_rank

from helpers import rel


def one_layer_info(layer: nn.Module, form: str, shape=(4, 9, 11)) -> lr.LayerInfo:
    head = nn.Linear(layer.out_channels, 3).to(layer.weight.dtype)
    return lr.analyse(nn.Sequential(layer, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head), shape, form)[0]


@pytest.fixture
def conv():
    torch.manual_seed(0)
    return nn.Conv2d(4, 6, 3, stride=2, padding=(1, 2), bias=True).double()


@pytest.mark.parametrize("form", lr.DECOMPOSITIONS)
def test_full_rank_reproduces_conv_and_linear(conv, form):
    x = torch.randn(2, 4, 9, 11, dtype=torch.double)
    info = one_layer_info(conv, form)
    if form == "cp":
        # CP rank of a generic kernel is not computable; plant an exact rank-3 kernel with orthonormal factor
        # columns (a unique, well-conditioned CP) and decompose it at that rank.
        gen = torch.Generator().manual_seed(1)
        a, b, v, h = (torch.linalg.qr(torch.randn(d, 3, generator=gen, dtype=torch.double))[0] for d in (6, 4, 3, 3))
        with torch.no_grad():
            conv.weight.copy_(torch.einsum("tr,sr,yr,xr->tsyx", a * torch.tensor([3.0, 2.0, 1.0]).double(), b, v, h))
        layer = lr.cp_layers(conv, lr.cp4(conv.weight, 3, n_iter=200))
    else:
        layer = lr.factorise_layer(info, info.full_ranks, hooi_iters=2)
    assert rel(layer(x), conv(x)) < 1e-4
    torch.manual_seed(0)
    linear = nn.Linear(7, 5).double()
    z = torch.randn(3, 7, dtype=torch.double)
    assert rel(lr.svd_layers(linear, 5)(z), linear(z)) < 1e-10


def test_tucker2_error_equals_tail_energy():
    torch.manual_seed(0)
    w = torch.randn(12, 10, 3, 3, dtype=torch.double)
    tails = []
    for mode in (0, 1):
        s2 = torch.linalg.svdvals(w.movedim(mode, 0).reshape(w.shape[mode], -1)) ** 2
        tails.append(lambda r, s2=s2: float(s2[r:].sum()))
    err2 = lambda core, uo, ui: float((w - torch.einsum("oipq,ao,bi->abpq", core, uo, ui)).norm() ** 2)
    for r_out, r_in in [(5, 4), (3, 7), (12, 2)]:
        for iters in (0, 5):  # HOSVD, HOOI
            core, uo, ui = lr.tucker2(w, (r_out, r_in), iters)
            # Exact for HOSVD and HOOI: orthonormal factors and core = projection, so the error is the energy
            # the core does not hold.
            assert err2(core, uo, ui) == pytest.approx(float(w.norm() ** 2 - core.norm() ** 2), rel=1e-9)
            # Bounds: each mode's SVD tail is a lower bound; HOSVD is at most the sum of the tails.
            assert max(tails[0](r_out), tails[1](r_in)) <= err2(core, uo, ui) * (1 + 1e-9)
            assert err2(core, uo, ui) <= (tails[0](r_out) + tails[1](r_in)) * (1 + 1e-9)
        hosvd, hooi = lr.tucker2(w, (r_out, r_in), 0), lr.tucker2(w, (r_out, r_in), 5)
        assert err2(*hooi) <= err2(*hosvd) * (1 + 1e-9)
    # Exact: truncating one mode only is that mode's truncated SVD, error = its tail energy.
    for iters in (0, 5):
        assert err2(*lr.tucker2(w, (4, 10), iters)) == pytest.approx(tails[0](4), rel=1e-9)
        assert err2(*lr.tucker2(w, (12, 3), iters)) == pytest.approx(tails[1](3), rel=1e-9)


@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
@pytest.mark.parametrize("padding,dilation", [((1, 2), 1), ((2, 0), (2, 1)), ("valid", 1)])
def test_cp_layers_equal_reconstructed_kernel_conv(stride, padding, dilation):
    torch.manual_seed(0)
    layer = nn.Conv2d(5, 4, (3, 5), stride=stride, padding=padding, dilation=dilation, bias=True).double()
    factors = [torch.randn(d, 6, dtype=torch.double) for d in (4, 5, 3, 5)]
    kernel = torch.einsum("tr,sr,yr,xr->tsyx", *factors)
    x = torch.randn(2, 5, 13, 12, dtype=torch.double)
    expected = F.conv2d(x, kernel, layer.bias, layer.stride, layer.padding, layer.dilation)
    got = lr.cp_layers(layer, factors)(x)
    assert got.shape == expected.shape and rel(got, expected) < 1e-12


def test_cp4_factors_reconstruct_the_decomposed_kernel():
    torch.manual_seed(0)
    w = torch.randn(6, 5, 3, 3, dtype=torch.double)
    a, b, v, h = lr.cp4(w, 8, n_iter=30)
    approx = torch.einsum("tr,sr,yr,xr->tsyx", a, b, v, h)
    assert rel(approx, w) < 0.9  # ALS at rank 8 < generic rank: a real approximation
    norms = torch.stack([f.norm(dim=0) for f in (a, b, v, h)])  # balanced: every factor column has the same norm
    assert torch.allclose(norms, norms[0].expand_as(norms), rtol=1e-9)


@pytest.mark.parametrize("shape,rank", [((40, 100), 5), ((60, 60), 3), ((120, 30), 8)])
def test_vbmf_recovers_planted_rank(shape, rank):
    gen = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(shape[0], rank, generator=gen, dtype=torch.double))[0]
    v = torch.linalg.qr(torch.randn(shape[1], rank, generator=gen, dtype=torch.double))[0]
    signal = u @ torch.diag(torch.linspace(6, 12, rank, dtype=torch.double)) @ v.T
    y = signal + 0.1 * torch.randn(*shape, generator=gen, dtype=torch.double)
    found, sigma2 = evbmf_rank(torch.linalg.svdvals(y), shape)
    assert found == rank
    assert sigma2 == pytest.approx(0.01, rel=0.25)
    pure_noise = 0.1 * torch.randn(*shape, generator=gen, dtype=torch.double)
    assert evbmf_rank(torch.linalg.svdvals(pure_noise), shape)[0] == 0


def direct_counts(model: nn.Module, shape) -> tuple[int, int]:
    """Parameters by summing every leaf module's tensors; MACs from each conv / linear output shape (hooks)."""
    params = sum(p.numel() for m in model.modules() for p in m.parameters(recurse=False))
    macs = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs.append(out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])
        else:
            macs.append(out.numel() * m.in_features)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return params, sum(macs)


@pytest.mark.parametrize("form", lr.DECOMPOSITIONS)
def test_param_and_mac_counts_match_direct_count(form):
    torch.manual_seed(0)
    shape = (1, 8, 8)
    model = build_model("resnet8", 1, 1, 10)
    base_params, base_macs = direct_counts(model, shape)
    infos = lr.analyse(model, shape, form)
    ranks = lr.fit_ranks(infos, "budget", 0.5 * base_params, base_params - sum(i.params for i in infos))
    plan = lr.factorise(model, infos, ranks, hooi_iters=1, cp_iters=2)
    assert any(p is not None for p in plan.values()) and any(p is None for p in plan.values())
    predicted_params = base_params + sum(lr.factorised_cost(i, ranks[i.name])[0] - i.params
                                         for i in infos if plan[i.name] is not None)
    saved_macs = sum(lr.factorised_cost(i, ranks[i.name])[1] - i.module.weight.numel() * i.out_hw[0] * i.out_hw[1]
                     for i in infos if plan[i.name] is not None)
    params, macs = direct_counts(model, shape)
    assert params == predicted_params == count_params(model)
    assert macs == base_macs + saved_macs == count_macs(model, shape)
    assert all(type(m).__module__.startswith(("torch.nn", "pruning_lib.models")) for m in model.modules())
    assert abs(1 - params / base_params - 0.5) <= 0.01


@pytest.mark.parametrize("name,shape", [("resnet8", (1, 8, 8)), ("resnet32", (3, 32, 32))])
def test_target_within_one_point(name, shape):
    torch.manual_seed(0)
    base = build_model(name, 1, shape[0], 10)
    for p in base.parameters():  # nonzero everywhere so the kit's nonzero count equals the dense count
        p.data.add_(0.01)
    ctx = PruneContext(None, shape, count_params(base))
    for method in ("svd", "tucker", "cp"):
        for rule in lr.RULES:
            for target in (0.0, 0.5, 0.7, 0.9):
                model = copy.deepcopy(base)
                opts = {**METHODS[method].options, "rank_rule": rule}
                opts.update({"cp_iters": 1} if method == "cp" else {"hooi_iters": 0} if method == "tucker" else {})
                res = METHODS[method].fn(model, ctx, target, **opts)
                assert abs(res.achieved_param_ratio - target) <= 0.01, (method, rule, target, res.achieved_param_ratio)
                assert abs(1 - count_params(model) / ctx.base_params - target) <= 0.01
                if target == 0.0:
                    assert all(r is None for r in res.info["ranks"].values())
                assert isinstance(model.fc, nn.Linear)  # the classifier is kept (include_classifier=False)


def test_rule_ranks_and_larger_layers_left_alone():
    torch.manual_seed(0)
    info = one_layer_info(nn.Conv2d(8, 16, 3, padding=1), "tucker", (8, 6, 6))
    s2 = info.spectra[0]
    r = lr.rule_ranks(info, "energy", 0.9)[0]
    assert s2[:r].sum() >= 0.9 * s2.sum() > s2[:r - 1].sum()
    assert lr.rule_ranks(info, "vbmf", 1.0) == info.vbmf
    assert lr.rule_ranks(info, "energy", 1.0) == info.full_ranks
    assert not lr.is_factorised(info, info.full_ranks)  # Tucker-2 at full rank is larger than the conv
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 36, 3))
    plan = lr.factorise(model, lr.analyse(model, (8, 6, 6), "tucker"), {"0": [16, 8]})
    assert plan == {"0": None} and isinstance(model[0], nn.Conv2d)


def test_tucker_ranks_beyond_the_core_rank_are_clamped():
    # a 2-channel core of a 3x3 kernel has mode-0 rank <= 2*9 = 18: r_out = 40 would only add zero columns
    torch.manual_seed(0)
    info = one_layer_info(nn.Conv2d(64, 64, 3, padding=1), "tucker", (64, 6, 6))
    assert lr.tucker_ranks(info.module, [40, 2]) == (18, 2)
    model = nn.Sequential(info.module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tensorly warns when asked for more singular vectors than exist
        plan = lr.factorise(model, [info], {info.name: [40, 2]}, hooi_iters=2)
    assert plan == {info.name: [18, 2]}
    assert count_params(model) == lr.factorised_cost(info, [40, 2])[0]


def test_bad_input_is_rejected_before_work():
    model = build_model("resnet8", 1, 1, 10)
    before = copy.deepcopy(model)
    ctx = PruneContext(None, (1, 8, 8), count_params(model))
    with pytest.raises(ValueError, match="rank_rule"):
        lr.prune_tucker(model, ctx, 0.5, rank_rule="frobenius")
    with pytest.raises(ValueError, match="target"):
        lr.prune_svd(model, ctx, 1.0)
    with pytest.raises(ValueError, match="cp_iters"):
        lr.prune_cp(model, ctx, 0.5, cp_iters=0)
    with pytest.raises(ValueError, match="target"):  # unreachable: rank 1 everywhere still keeps more
        lr.prune_svd(model, ctx, 0.995)
    assert [type(m) for m in model.modules()] == [type(m) for m in before.modules()]


def test_saved_and_loaded_factorised_model_gives_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet8", 1, 1, 10)
    ctx = PruneContext(None, (1, 8, 8), count_params(model))
    lr.prune_tucker(model, ctx, 0.5, hooi_iters=1)
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def _rank_widths(model: nn.Module) -> list[tuple[int, int]]:
    """(rank, full width) of every factorised layer: the inner width of each svd / tucker / cp Sequential (its
    first layer's outputs, and a Tucker core's outputs), with the width of the layer it replaced."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.Sequential) and set(dict(m.named_children())) & {"project", "reduce_in", "pointwise_in"}:
            first, last = m[0], m[-1]
            c_in = first.in_channels if isinstance(first, nn.Conv2d) else first.in_features
            c_out = last.out_channels if isinstance(last, nn.Conv2d) else last.out_features
            if hasattr(m, "core"):
                out += [(m.core.in_channels, c_in), (m.core.out_channels, c_out)]
            elif hasattr(m, "pointwise_in"):
                out.append((m.pointwise_in.out_channels, 10 ** 9))  # a CP rank has no full width
            else:
                out.append((first.out_channels if isinstance(first, nn.Conv2d) else first.out_features,
                            min(c_out, c_in * (first.kernel_size[0] * first.kernel_size[1]
                                               if isinstance(first, nn.Conv2d) else 1))))
    return out


@pytest.mark.parametrize("method", ["svd", "tucker", "cp"])
@pytest.mark.parametrize("q,target", [(4, 0.5), (8, 0.5), (8, 0.9)])
def test_round_to_gives_multiples_and_still_hits_the_target(method, q, target):
    """round_to q: every kept rank (svd r, Tucker-2 r_in / r_out, CP R) is a multiple of q, or the layer's full
    width, counted in the pruned model's own layers; the target is met within one point (resnet8 at width 4:
    64 / 128 / 256 channels)."""
    torch.manual_seed(0)
    model = build_model("resnet8", 4, 1, 10)
    ctx = PruneContext(None, (1, 8, 8), count_params(model))
    opts = {"cp_iters": 2} if method == "cp" else {"hooi_iters": 0} if method == "tucker" else {}
    res = METHODS[method].fn(model, ctx, target, **{**METHODS[method].options, **opts, "round_to": q})
    assert abs(res.achieved_param_ratio - target) <= 0.01 and res.info["round_to"] == q
    widths = _rank_widths(res.model)
    assert widths and all(r % q == 0 or r == full for r, full in widths), widths


@pytest.mark.parametrize("method", ["svd", "tucker", "cp"])
def test_round_to_one_is_the_default_to_the_last_digit(method):
    torch.manual_seed(0)
    base = build_model("resnet8", 1, 1, 10)
    ctx = PruneContext(None, (1, 8, 8), count_params(base))
    opts = {"cp_iters": 2} if method == "cp" else {}
    a = METHODS[method].fn(copy.deepcopy(base), ctx, 0.6, **opts)
    b = METHODS[method].fn(copy.deepcopy(base), ctx, 0.6, **opts, round_to=1)
    assert a.info["ranks"] == b.info["ranks"] and a.achieved_param_ratio == b.achieved_param_ratio
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_to_is_checked():
    ctx = PruneContext(None, (1, 8, 8), 1)
    for method in ("svd", "tucker", "cp"):
        with pytest.raises(ValueError, match="round_to"):
            METHODS[method].fn(build_model("resnet8", 1, 1, 10), ctx, 0.5, round_to=0)
    assert METHODS["svd"].option_error("round_to", 2.5) and METHODS["cp"].option_error("round_to", True)
