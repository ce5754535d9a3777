"""Layer-wise least-squares compensation (methods/posttrain/compensation.py) against independent oracles: the refit
equals torch.linalg.lstsq on the explicit rows (the damped fit as lstsq of the augmented system [Z; √λI], [Y; √λWᵀ]),
a whole sequential pass equals a brute-force loop that gathers every layer's rows with hooks and calls lstsq, the
refit never increases any layer's reconstruction error, and nothing changes when nothing was pruned. The channel
methods' kept output channels slice the dense weights exactly (one step and composed over steps)."""
import copy

import pytest
import torch
from torch import nn

import pruning_lib
from pruning_lib.curvature.kfac import layer_rows
from pruning_lib.methods.posttrain import compensate_layers, least_squares_refit
from pruning_lib.methods.posttrain.compensation import DAMPING, counterparts, reconstruction_error
from pruning_lib.registry import METHODS

from helpers import random_loader, rel

STRUCTURED = [n for n, m in METHODS.items() if m.family != "weight"]


def augmented_lstsq(z, y, w, damping):
    """argmin ‖W'Z − Y‖² + λ‖W' − W‖² as an ordinary least-squares problem on stacked rows."""
    lam = damping * float((z.T @ z).diagonal().mean())
    a = torch.cat([z, lam ** 0.5 * torch.eye(z.shape[1], dtype=z.dtype)])
    b = torch.cat([y, lam ** 0.5 * w.T])
    return torch.linalg.lstsq(a, b, driver="gelsd").solution.T


@pytest.mark.parametrize("damping", [0.0, 0.01, 1.0])
def test_refit_is_lstsq(damping):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 9, generator=g, dtype=torch.float64) @ torch.randn(9, 9, generator=g, dtype=torch.float64)
    y = torch.randn(200, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 9, generator=g, dtype=torch.float64)
    got = least_squares_refit(w, z.T @ z, z.T @ y, damping)
    want = torch.linalg.lstsq(z, y).solution.T if damping == 0 else augmented_lstsq(z, y, w, damping)
    assert rel(got, want) <= 1e-6
    before, after = (reconstruction_error(v, z.T @ z, z.T @ y, float((y * y).sum())) for v in (w, got))
    assert after <= before
    assert after == pytest.approx(float(((z @ got.T - y) ** 2).sum() / (y * y).sum()), rel=1e-9)


def test_refit_of_exact_weights_is_the_identity():
    g = torch.Generator().manual_seed(1)
    z, w = torch.randn(50, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    assert rel(least_squares_refit(w, z.T @ z, z.T @ (z @ w.T)), w) <= 1e-12


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 4)).double()


def cnn():
    """A small conv net whose BatchNorms hold non-trivial running statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 24, 3, stride=2),
                         nn.BatchNorm2d(24), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5)).double()
    for bn in (net[1], net[4]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return net


def brute_force(dense, model, kept, loader, damping):
    """Refit every layer of `model` in order with lstsq on rows gathered by hooks (the explicit Z and Y)."""
    x = torch.cat([xb for xb, _ in loader])
    pairs, _ = counterparts(dense, model, kept)
    modules, dense_modules = dict(model.named_modules()), dict(dense.named_modules())
    for name, (source, outputs) in pairs.items():  # named_modules order is the call order of these Sequentials
        seen = {}
        h = [modules[name].register_forward_hook(lambda m, i, o: seen.__setitem__("z", i[0])),
             dense_modules[source].register_forward_hook(lambda m, i, o: seen.__setitem__("x", i[0]))]
        with torch.no_grad():
            model.eval()(x), dense.eval()(x)
        for handle in h:
            handle.remove()
        layer, src = modules[name], dense_modules[source]
        z = layer_rows(layer, seen["z"])
        wd = torch.cat([src.weight.flatten(1), src.bias[:, None]], 1)
        y = layer_rows(src, seen["x"]) @ (wd if outputs is None else wd[outputs]).T
        w = torch.cat([layer.weight.detach().flatten(1), layer.bias.detach()[:, None]], 1)
        new = augmented_lstsq(z, y, w, damping)
        with torch.no_grad():
            layer.weight.copy_(new[:, :-1].reshape(layer.weight.shape))
            layer.bias.copy_(new[:, -1])


@pytest.mark.parametrize("build,shape,method,target", [(mlp, (8,), "l1", 0.5), (mlp, (8,), "svd", 0.5),
                                                       (cnn, (1, 8, 8), "l1", 0.5), (cnn, (1, 8, 8), "tucker", 0.41)])
def test_sequential_pass_is_the_brute_force_loop(build, shape, method, target):
    torch.set_default_dtype(torch.float64)
    try:
        loader = random_loader(48, shape, batch=16, dtype=torch.float64)
        dense = build()
        model = copy.deepcopy(dense)
        info = pruning_lib.prune(model, method, target, loader=loader).info
        oracle = copy.deepcopy(model)
        dense_modules = dict(dense.named_modules())
        for name, bn in oracle.named_modules():  # the pass starts from the dense BatchNorm statistics
            if isinstance(bn, nn.BatchNorm2d):
                idx = torch.as_tensor(info.get("kept_outputs", {}).get(name, range(bn.num_features)))
                bn.running_mean.copy_(dense_modules[name].running_mean[idx])
                bn.running_var.copy_(dense_modules[name].running_var[idx])
        report = compensate_layers(dense, model, loader, 48, info.get("kept_outputs"))
        brute_force(dense, oracle, info.get("kept_outputs", {}), loader, DAMPING)
        assert report["layers"] and not report["skipped"]
        for (name, p), q in zip(model.named_parameters(), oracle.parameters()):
            assert rel(p, q, floor=1e-12) <= 1e-6, name
        for before, after in report["layer_errors"].values():
            assert after <= before + 1e-12
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("steps", [1, 2])
def test_kept_outputs_slice_the_dense_weights(steps):
    dense = cnn().float()
    model = copy.deepcopy(dense)
    info = pruning_lib.prune(model, "l1", 0.4, loader=random_loader(32, (1, 8, 8)), steps=steps).info
    kept, layers = info["kept_outputs"], dict(dense.named_modules())
    assert set(kept) == {"0", "1", "3", "4"}  # both convs and their BatchNorms lost channels
    assert torch.equal(model[3].weight, layers["3"].weight[kept["3"]][:, kept["0"]])
    assert torch.equal(model[4].weight, layers["4"].weight[kept["4"]])
    assert torch.equal(model[8].weight, layers["8"].weight[:, kept["3"]])


@pytest.mark.parametrize("method", STRUCTURED)
def test_compensation_never_worsens_a_layer_and_keeps_the_target(method):
    from helpers import short
    from pruning_lib.models import build_model
    torch.manual_seed(0)
    model = build_model("resnet8", in_channels=1, num_classes=10)
    loader = random_loader(32, (1, 16, 16))
    dense = copy.deepcopy(model)
    torch.manual_seed(1)  # the true Fisher samples labels
    plain = pruning_lib.prune(dense, method, 0.5, loader=loader, **short(method))
    torch.manual_seed(1)
    result = pruning_lib.prune(model, method, 0.5, loader=loader, compensate=True, calibration=32, **short(method))
    report = result.info["compensation"]
    assert report["layers"] and report["calibration"] == 32 and report["seconds"] >= 0
    assert all(after <= before + 1e-9 for before, after in report["layer_errors"].values())
    assert sum(a for _, a in report["layer_errors"].values()) < sum(b for b, _ in report["layer_errors"].values())
    assert result.achieved_param_ratio == plain.achieved_param_ratio  # refits change values, never shapes


@pytest.mark.parametrize("method", ["l1", "svd", "improved_eigendamage"])
def test_nothing_pruned_nothing_changes(method):
    torch.set_default_dtype(torch.float64)
    try:
        dense = cnn()
        model = copy.deepcopy(dense)
        loader = random_loader(32, (1, 8, 8), dtype=torch.float64)
        result = pruning_lib.prune(model, method, 0.0, loader=loader, compensate=True, calibration=32)
        x = next(iter(loader))[0]
        with torch.no_grad():
            assert rel(model.eval()(x), dense.eval()(x)) <= 1e-9
        assert all(b <= 1e-12 and a <= 1e-12 for b, a in result.info["compensation"]["layer_errors"].values())
    finally:
        torch.set_default_dtype(torch.float32)


def test_compensation_needs_a_loader_and_a_positive_count():
    assert not METHODS["svd"].needs_data() and "compensate" in METHODS["svd"].data_reason({"compensate": True})
    with pytest.raises(ValueError, match="loader: svd refits each layer on calibration examples"):
        pruning_lib.prune(cnn().float(), "svd", 0.5, example_inputs=torch.zeros(1, 1, 8, 8), compensate=True)
    with pytest.raises(ValueError, match="calibration"):
        pruning_lib.prune(cnn().float(), "l1", 0.5, loader=random_loader(8, (1, 8, 8)), compensate=True,
                          calibration=0)
    for name in STRUCTURED:
        assert {"compensate": False, "calibration": 256}.items() <= METHODS[name].options.items()


@pytest.mark.parametrize("net", ["vit_tiny", "densenet", "mobilenet_v2"])
def test_compensation_on_heads_concatenations_and_depthwise_layers(net):
    """A ViT (heads removed with their qkv rows), a DenseNet (concatenated channels) and MobileNetV2 (depthwise convs,
    left as they are): every readable layer is refit, none gets worse, and the model still runs."""
    import torchvision
    from pruning_lib.models import build_model
    torch.manual_seed(0)
    shape = (1, 16, 16) if net == "vit_tiny" else (3, 32, 32)
    model = {"vit_tiny": lambda: build_model("vit_tiny", in_channels=1, num_classes=10, image_size=16),
             "densenet": lambda: torchvision.models.DenseNet(8, (2, 2), 16, num_classes=10),
             "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)}[net]()
    report = pruning_lib.prune(model, "l1", 0.5, loader=random_loader(16, shape, batch=8), compensate=True,
                               calibration=16).info["compensation"]
    assert report["layers"] and all(a <= b + 1e-9 for b, a in report["layer_errors"].values())
    assert all(why == "grouped / depthwise or 3-d convolution" for why in report["skipped"].values())
    assert bool(report["skipped"]) == (net == "mobilenet_v2")
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, *shape)).shape == (2, 10)
