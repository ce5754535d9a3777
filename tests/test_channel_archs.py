"""Channel removal on today's architectures, against oracles: removing channels equals zeroing them (every
sliced output dimension of a group: conv / linear rows and biases, BatchNorm scale and shift, a raw parameter's
slice) on DenseNet's concatenations, SqueezeNet's concatenations and convolutional classifier, MobileNetV3's
squeeze-excitation, EfficientNet, a Conv1d net and a net with a raw per-channel gain; the closed-form parameter
and MAC counts equal the pruned model's (ConvNeXt's LayerNorm2d and layer_scale, a ViT's MLP neurons included);
what cannot be followed is refused naming the layer (grouped convs, a channel shuffle) or kept whole (groups
coupled to attention)."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pruning_lib.methods import channel as ch
from pruning_lib.metrics import count_macs, count_params
from pruning_lib.models import classifier_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import model_zoo  # noqa: E402


class Scale(nn.Module):
    """A raw per-channel gain (a parameter outside any known layer, like ConvNeXt's layer_scale)."""

    def __init__(self, c: int):
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, c))

    def forward(self, x):
        return x * self.gain[None, :, None, None]


def scaled_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Scale(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


ZEROING = {"densenet121": model_zoo.NETS["densenet121"].small, "squeezenet1_1": model_zoo.NETS["squeezenet1_1"].small,
           "mobilenet_v3_small": model_zoo.NETS["mobilenet_v3_small"].small,
           "efficientnet_b0": model_zoo.NETS["efficientnet_b0"].small, "conv1d": model_zoo.NETS["conv1d"].small,
           "scaled": scaled_net}
SHAPES = {"conv1d": (4, 64), "squeezenet1_1": (3, 64, 64)}


def _zero_slices(model: nn.Module, pruner: ch.ChannelPruner, drop: dict[str, list[int]]) -> None:
    """Zero every output slice a group's dropped channels own: weight rows and biases of producers, BatchNorm
    scales and shifts, a raw parameter's entries along its pruning dimension."""
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    with torch.no_grad():
        for g in pruner.groups:
            gone = set(drop[g.root])
            for name, side, idxs, root_idxs in g.slots:
                rows = [i for i, r in zip(idxs, root_idxs) if r in gone]
                if side != "out" or not rows:
                    continue
                if name in params:
                    p = params[name]
                    p.index_fill_(pruner.param_dim(p), torch.tensor(rows), 0.0)
                    continue
                for p in modules[name].parameters(recurse=False):
                    p[rows] = 0


@pytest.mark.parametrize("net", list(ZEROING))
def test_removing_channels_equals_zeroing_them(net):
    torch.manual_seed(0)
    model = ZEROING[net]().eval()
    shape = SHAPES.get(net, (3, 32, 32))
    for m in model.modules():  # running statistics other than 0 / 1, so that BatchNorm's slicing is exercised
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    pruner = ch.ChannelPruner(model, shape)
    assert pruner.groups and not pruner.frozen
    drop = {g.root: list(range(0, g.size, 3))[: g.size - 1] for g in pruner.groups}
    _zero_slices(model, pruner, drop)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        reference = model(x)
    plan = {g.root: torch.tensor([i for i in range(g.size) if i not in drop[g.root]]) for g in pruner.groups}
    predicted = pruner.cost(plan)
    pruner.apply(plan)
    with torch.no_grad():
        assert (model(x) - reference).abs().max() <= 1e-5 * max(1.0, reference.abs().max().item())
    assert predicted == (count_params(model), count_macs(model, shape))


@pytest.mark.parametrize("net", ["convnext_tiny", "densenet121", "squeezenet1_1", "mobilenet_v2", "resnext50_32x4d",
                                 "vit"])
def test_predicted_counts_equal_the_pruned_models(net):
    """The cost table's (parameters, MACs) for a random plan equal count_params / count_macs after removal
    (ConvNeXt: LayerNorm2d, channels-last Linear layers, layer_scale; the ViT: its MLP groups only)."""
    spec = model_zoo.NETS[net]
    torch.manual_seed(0)
    model = spec.small().eval()
    if net == "resnext50_32x4d":
        with pytest.raises(ValueError, match=r"layer 'layer1.0.conv2' \(Conv2d, groups=4"):
            ch.ChannelPruner(model, spec.shape)
        return
    pruner = ch.ChannelPruner(model, spec.shape)
    g = torch.Generator().manual_seed(1)
    plan = {gr.root: torch.sort(torch.randperm(gr.size, generator=g)[: max(1, gr.size // 2)]).values
            for gr in pruner.groups}
    predicted = pruner.cost(plan)
    pruner.apply(plan)
    assert predicted == (count_params(model), count_macs(model, spec.shape))
    assert model(torch.randn(2, *spec.shape)).shape == (2, 10)


def test_convnext_slices_layer_norms_and_layer_scale_with_their_channels():
    spec = model_zoo.NETS["convnext_tiny"]
    model = spec.small().eval()
    pruner = ch.ChannelPruner(model, spec.shape)
    stream = next(g for g in pruner.groups if "features.0.0" in [n for n, _, _ in g.producers])
    assert "features.0.1" in stream.norms  # the stem's LayerNorm2d
    assert any(n.endswith("layer_scale") for n, _, _, _ in stream.slots)
    pruner.apply({stream.root: torch.arange(stream.size // 2)})
    assert model.features[0][1].weight.shape == (stream.size // 2,)
    assert model.features[1][0].layer_scale.shape == (stream.size // 2, 1, 1)


def test_groups_coupled_to_attention_are_kept_whole_and_named():
    spec = model_zoo.NETS["vit"]
    model = spec.small()
    pruner = ch.ChannelPruner(model, spec.shape)
    assert sorted(n for g in pruner.groups for n, _, _ in g.producers) == [
        "encoder.layers.encoder_layer_0.mlp.0", "encoder.layers.encoder_layer_1.mlp.0"]
    assert any("MultiheadAttention" in why for why in pruner.frozen.values())


def test_a_channel_shuffle_is_refused_after_removal_naming_it():
    spec = model_zoo.NETS["shufflenet_v2_x0_5"]
    model = spec.small()
    pruner = ch.ChannelPruner(model, spec.shape)
    group = next(g for g in pruner.groups if g.root == "stage2.0.branch1.2")  # one half of a shuffled concat
    with pytest.raises(ValueError, match="channel shuffle"):
        pruner.apply({group.root: torch.arange(group.size - 1)})


def test_a_model_with_no_removable_group_is_refused():
    model = model_zoo.NETS["lstm"].small()
    with pytest.raises(ValueError, match="model: no channel group"):
        ch.ChannelPruner(model, (12, 8))


def test_a_fully_convolutional_model_takes_its_last_conv_as_classifier():
    model = model_zoo.NETS["squeezenet1_1"].small()
    assert classifier_of(model) is model.classifier[1]
    pruner = ch.ChannelPruner(model, (3, 64, 64))
    assert all("classifier.1" not in [n for n, _, _ in g.producers] for g in pruner.groups)
