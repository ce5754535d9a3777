"""Inputs that are not images: the FIRST dimension of `example_inputs` (and of the loader's batches) is the batch
whatever the rank. Three tiny nets, an MLP on tabular (N, 20) inputs, a Conv1d net on (N, 4, 64) signals and an
LSTM with a Linear head on (N, T, D) sequences, against every registered method: each either prunes to 0.5 within
one point with finite outputs of the right shape, or refuses with a ValueError / TargetUnreachable naming a layer
or the reason. SUPPORT records which pair does which; the oracle tests check the low-rank Conv1d forms."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib
from pruning_lib.api import input_shape_of
from pruning_lib.methods import lowrank
from pruning_lib.methods.lowrank_layers import svd_layers
from pruning_lib.methods.weight import prunable_weights
from pruning_lib.metrics import count_macs, layer_pixels
from pruning_lib.registry import METHODS

TARGET, TOL = 0.5, 0.01


class LSTMNet(nn.Module):
    """LSTM(batch_first) over (N, T, 8), the last step's hidden state into a Linear head."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def mlp():
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))


def conv1d_net():
    return nn.Sequential(nn.Conv1d(4, 16, 5, padding=2), nn.ReLU(), nn.Conv1d(16, 32, 3, padding=1),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 3))


NETS = {"mlp": (mlp, (20,)), "conv1d": (conv1d_net, (4, 64)), "lstm": (LSTMNet, (12, 8))}

# "ok": prunes to 0.5 within a point; "refuse": a ValueError / TargetUnreachable naming a layer or the reason;
CHANNEL = ("l1", "taylor", "random", "obd", "obs")
SUPPORT = {
    # whitened_svd on these two tiny nets: one direction is 2-4 % of the parameters, and in the whitened order the
    # rank sweep stops 1.0-1.3 points short of 0.5 (refused, naming the nearest); the model zoo's nets reach it
    "mlp": {**{m: "ok" for m in METHODS}, "whitened_svd": "refuse"},
    "conv1d": {**{m: "ok" for m in ("magnitude_global", "magnitude_layerwise", "svd", "tucker", "cp")},
               "whitened_svd": "refuse",
               **{m: "ok" for m in CHANNEL}, "eigendamage": "ok", "improved_eigendamage": "ok", "wanda": "ok",
               "sparsegpt": "ok"},
    "lstm": {m: "refuse" for m in METHODS},
}


def batches(shape, n=64, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 3, (n,), generator=g)
    return x, DataLoader(TensorDataset(x, y), batch_size=batch)


def _names_reason(message: str, model: nn.Module) -> bool:
    """The refusal names a layer of the model ('name' or name (Type)) or the argument it is about."""
    names = [n for n, _ in model.named_modules() if n]
    return (any(f"'{n}'" in message or f"{n} (" in message for n in names)
            or message.split(":")[0] in ("target", "model", "loader", "example_inputs"))


def test_support_table_covers_every_method():
    assert all(set(row) == set(METHODS) for row in SUPPORT.values())


@pytest.mark.parametrize("net,method", [(n, m) for n in NETS for m in METHODS])
def test_every_method_prunes_or_refuses(net, method):
    make, shape = NETS[net]
    x, loader = batches(shape)
    torch.manual_seed(0)
    model = make()
    try:
        result = pruning_lib.prune(model, method, TARGET, loader=loader, example_inputs=x[:16])
    except ValueError as e:  # TargetUnreachable is a ValueError
        assert _names_reason(str(e), model), f"{net}/{method}: refusal names no layer or reason: {e}"
        assert SUPPORT[net][method] == "refuse", f"{net}/{method} refused: {type(e).__name__}: {e}"
        return
    assert SUPPORT[net][method] == "ok", f"{net}/{method} pruned; SUPPORT says {SUPPORT[net][method]}"
    assert abs(result.achieved_param_ratio - TARGET) <= TOL, result.achieved_param_ratio
    with torch.no_grad():
        out = model(x[:16])
    assert out.shape == (16, 3) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------ input shapes

def test_input_shape_is_the_batch_without_its_first_dimension():
    assert input_shape_of(torch.zeros(16, 20)) == (20,)
    assert input_shape_of(torch.zeros(16, 4, 64)) == (4, 64)
    assert input_shape_of(torch.zeros(2, 3, 8, 8)) == (3, 8, 8)
    assert input_shape_of(torch.zeros(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)) == (3, 8, 8)
    assert input_shape_of(torch.zeros(1, 3, 8, 8)) == (3, 8, 8)
    with pytest.raises(ValueError, match="example_inputs: .*unsqueeze"):
        input_shape_of(torch.zeros(20))
    with pytest.raises(ValueError, match="example_inputs: expected a tensor"):
        input_shape_of([torch.zeros(2, 3)])


def test_a_conv1d_batch_is_read_as_a_batch_and_macs_are_per_example():
    x, loader = batches((4, 64))
    model = conv1d_net()
    expected = 64 * 16 * 4 * 5 + 64 * 32 * 16 * 3 + 32 * 3
    assert count_macs(model, (4, 64)) == expected
    result = pruning_lib.prune(model, "svd", 0.0, example_inputs=x[:16])
    assert result.achieved_flops == 2 * expected
    result = pruning_lib.prune(conv1d_net(), "magnitude_global", TARGET, loader=loader)  # the loader's first batch
    assert result.achieved_flops == 2 * expected and abs(result.achieved_param_ratio - TARGET) <= TOL


def test_layer_positions_of_conv1d_and_sequence_linear():
    model = nn.Sequential(nn.Conv1d(4, 8, 3, stride=2), nn.Flatten(1), nn.Unflatten(1, (8, 31)), nn.Linear(31, 5))
    assert layer_pixels(model, ["0", "3"], (4, 64)) == {"0": (64, 31), "3": (8, 8)}


def test_magnitude_counts_conv1d_and_conv3d_weights():
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.Conv3d(1, 2, 3), nn.Linear(3, 2))
    assert [type(m) for m, _ in prunable_weights(model)] == [nn.Conv1d, nn.Conv3d]


# ------------------------------------------------------------------------------------------------ low-rank oracles

@pytest.mark.parametrize("conv", [
    nn.Conv1d(4, 16, 5, padding=2), nn.Conv1d(6, 5, 3, stride=2, dilation=2, padding=1, bias=False),
    nn.Conv1d(4, 8, 3, padding="same", padding_mode="circular"), nn.Conv3d(2, 4, 3, padding=1)])
def test_full_rank_svd_of_a_conv_reproduces_it(conv):
    torch.manual_seed(0)
    x = torch.randn(3, conv.in_channels, *([9] * (conv.weight.dim() - 2)))
    w = conv.weight.reshape(conv.out_channels, -1)
    layers = svd_layers(conv, min(w.shape))
    assert type(layers.project) is type(conv) and layers.expand.kernel_size == (1,) * (conv.weight.dim() - 2)
    with torch.no_grad():
        assert (layers(x) - conv(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("form", lowrank.DECOMPOSITIONS)
def test_conv1d_layers_take_the_svd_form_and_target_zero_reproduces_the_net(form):
    x, _ = batches((4, 64))
    torch.manual_seed(0)
    model = conv1d_net().eval()
    with torch.no_grad():
        before = model(x)
    infos = lowrank.analyse(model, (4, 64), form)
    assert [(i.name, i.form, i.in_hw, i.out_hw) for i in infos] == [("0", "svd", (1, 64), (1, 64)),
                                                                     ("2", "svd", (1, 64), (1, 64))]
    pruning_lib.prune(model, form, 0.0, example_inputs=x[:16])
    with torch.no_grad():
        assert (model(x) - before).abs().max() <= 1e-5


def test_pruned_conv1d_layers_are_conv1d_and_exact_on_a_low_rank_kernel():
    """A Conv1d whose kernel has rank 2 keeps its outputs when svd cuts it to rank 2."""
    torch.manual_seed(0)
    model = conv1d_net().eval()
    with torch.no_grad():
        w = model[2].weight
        w.copy_((torch.randn(32, 2) @ torch.randn(2, 16 * 3)).reshape(w.shape))
    x, _ = batches((4, 64))
    with torch.no_grad():
        before = model(x)
    infos = lowrank.analyse(model, (4, 64), "svd")
    ranks = {"0": [infos[0].full_ranks[0]], "2": [2]}
    plan = lowrank.factorise(model, infos, ranks)
    assert plan == {"0": None, "2": [2]}
    assert isinstance(model[2].project, nn.Conv1d) and model[2].project.weight.shape == (2, 16, 3)
    with torch.no_grad():
        assert (model(x) - before).abs().max() <= 1e-5


class SignalNet(nn.Module):
    """conv1d_net's computation with Conv1d layers, or (`as_image`) with Conv2d layers of (1, k) kernels on the
    signal read as an image of height 1."""

    def __init__(self, as_image: bool):
        super().__init__()
        conv = ((lambda i, o, k, p: nn.Conv2d(i, o, (1, k), padding=(0, p))) if as_image
                else (lambda i, o, k, p: nn.Conv1d(i, o, k, padding=p)))
        self.as_image = as_image
        self.c1, self.c2, self.head = conv(4, 16, 5, 2), conv(16, 32, 3, 1), nn.Linear(32, 3)

    def forward(self, x):
        h = self.c2(torch.relu(self.c1(x.unsqueeze(2) if self.as_image else x)))
        return self.head(h.flatten(2).mean(2))


@pytest.mark.parametrize("method", ["eigendamage", "improved_eigendamage"])
def test_eigen_methods_prune_a_conv1d_net_as_its_height_one_conv2d(method):
    """Oracle: EigenDamage / Improved prune a Conv1d net exactly as they prune the same net written with (1, k)
    Conv2d layers (same K-FAC, scores, plan and rebuilt function, float64), and the rebuilt layers stay Conv1d."""
    from pruning_lib.methods.eigen.rebuild import EigenBottleneck
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the kit's probe inputs (torch.zeros) take the default dtype
    try:
        _prune_twins(method, EigenBottleneck)
    finally:
        torch.set_default_dtype(default)


def _prune_twins(method, EigenBottleneck):
    signal, image = SignalNet(False).double(), SignalNet(True).double()
    with torch.no_grad():
        for a, b in [(signal.c1, image.c1), (signal.c2, image.c2), (signal.head, image.head)]:
            b.weight.copy_(a.weight.reshape(b.weight.shape))
            b.bias.copy_(a.bias)
    x, loader = batches((4, 64))
    x, loader = x.double(), DataLoader(TensorDataset(x.double(), torch.randint(0, 3, (len(x),))), batch_size=16)
    results = []
    for m in (signal, image):
        torch.manual_seed(1)  # the true Fisher samples labels: the same draws for both
        results.append(pruning_lib.prune(m, method, TARGET, loader=loader))
    assert results[0].achieved_param_ratio == pytest.approx(results[1].achieved_param_ratio, abs=1e-12)
    assert abs(results[0].achieved_param_ratio - TARGET) <= 0.01
    with torch.no_grad():
        assert (signal(x) - image(x)).abs().max() <= 1e-8
    rebuilt = [m for m in signal.modules() if isinstance(m, EigenBottleneck)]
    assert rebuilt and all(isinstance(p, nn.Conv1d) for m in rebuilt for p in m)
