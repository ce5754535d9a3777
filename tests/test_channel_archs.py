"""Channel removal on today's architectures, against oracles: removing channels equals zeroing them (every
sliced output dimension of a group: conv / linear rows and biases, BatchNorm scale and shift, a raw parameter's
slice) on DenseNet's concatenations, SqueezeNet's concatenations and convolutional classifier, MobileNetV3's
squeeze-excitation, EfficientNet, ResNeXt's and RegNet's grouped convs (tied channels removed from every group
alike), ShuffleNet's unshuffled groups, a Conv1d net and a net with a raw per-channel gain; the closed-form
parameter and MAC counts equal the pruned model's (ConvNeXt's LayerNorm2d and layer_scale, GroupNorm, a ViT's MLP
neurons included); what cannot be followed is kept whole and named (groups through a channel shuffle, groups
coupled to nn.MultiheadAttention); a head-pruned timm ViT equals the unpruned one with those heads zeroed."""
import copy
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
           "resnext50_32x4d": model_zoo.NETS["resnext50_32x4d"].small,
           "regnet_x_400mf": model_zoo.NETS["regnet_x_400mf"].small,
           "shufflenet_v2_x0_5": model_zoo.NETS["shufflenet_v2_x0_5"].small, "scaled": scaled_net}


def group_norm_net():
    """GroupNorms (4 and 2 groups) and a conv with groups=2 on the same channels."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
                         nn.Conv2d(16, 24, 3, padding=1, groups=2), nn.GroupNorm(2, 24), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))


def tied_drop(g: ch.ChannelGroup, every: int) -> list[int]:
    """Every `every`-th position of a group's part (all but one), in every part alike (its ties)."""
    period = g.size // g.ties
    positions = set(list(range(0, period, every))[: period - 1])
    return [i for i in range(g.size) if i % period in positions]
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
    assert pruner.groups and (not pruner.frozen or net == "shufflenet_v2_x0_5")
    if net in ("resnext50_32x4d", "regnet_x_400mf"):
        assert any(g.ties > 1 for g in pruner.groups)
    drop = {g.root: tied_drop(g, 3) for g in pruner.groups}
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
                                 "regnet_x_400mf", "vit", "group_norm"])
def test_predicted_counts_equal_the_pruned_models(net):
    """The cost table's (parameters, MACs) for a random plan (tied channels together) equal count_params /
    count_macs after removal (ConvNeXt: LayerNorm2d, channels-last Linear layers, layer_scale; grouped convs and
    GroupNorms; the ViT: its MLP groups only)."""
    build, shape = ((group_norm_net, (3, 16, 16)) if net == "group_norm" else
                    (model_zoo.NETS[net].small, model_zoo.NETS[net].shape))
    torch.manual_seed(0)
    model = build().eval()
    pruner = ch.ChannelPruner(model, shape)
    g = torch.Generator().manual_seed(1)
    plan = {gr.root: torch.sort(gr.order(torch.rand(gr.size, generator=g))[: gr.ties * max(1, gr.size // gr.ties // 2)]
                                ).values for gr in pruner.groups}
    predicted = pruner.cost(plan)
    pruner.apply(plan)
    assert predicted == (count_params(model), count_macs(model, shape))
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_tied_channels_are_scored_alike_and_kept_or_removed_together():
    """A grouped conv / GroupNorm group: scores averaged over tied channels, plans keep whole tied sets, so every
    part (conv group, GroupNorm group) keeps the same positions; kept counts are multiples of the ties."""
    model = group_norm_net().eval()
    pruner = ch.ChannelPruner(model, (3, 16, 16))
    ties = {g.root: g.ties for g in pruner.groups}
    assert ties == {"0": 4, "3": 2}  # GroupNorm(4, 16) and conv groups=2; GroupNorm(2, 24)
    first = next(g for g in pruner.groups if g.root == "0")
    scores = {g.root: torch.rand(g.size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
              for g in pruner.groups}
    tied = pruner.tied(scores)["0"]
    assert torch.allclose(tied[:4], scores["0"].reshape(4, 4).mean(0))
    assert torch.equal(tied, tied[:4].repeat(4))
    threshold = tied.median().item()  # half of the positions in group "0" score below it
    kept = pruner.plan(scores, threshold)["0"]
    assert len(kept) % first.ties == 0 and len(kept) < first.size
    parts = kept.reshape(first.ties, -1)
    assert torch.equal(parts - parts[:1], 4 * torch.arange(4)[:, None].expand_as(parts))  # same positions per part
    pruner.apply(pruner.plan(scores, threshold))
    assert model[1].num_groups == 4 and model[1].num_channels == len(kept) and model[3].groups == 2


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


def test_groups_through_a_channel_shuffle_are_kept_whole_and_named():
    """The dependency graph maps ShuffleNet's view -> transpose -> view as the identity; the groups on either
    half of a shuffled concatenation are kept whole, the rest are pruned (the zeroing oracle covers them)."""
    spec = model_zoo.NETS["shufflenet_v2_x0_5"]
    pruner = ch.ChannelPruner(spec.small(), spec.shape)
    assert {"stage2.0.branch1.2", "stage2.0.branch2.5"} <= set(pruner.frozen)
    assert all("channel shuffle" in why for why in pruner.frozen.values())
    assert "stage2.0.branch2.3" in [g.root for g in pruner.groups]


def test_a_model_whose_forward_fails_after_removal_is_refused():
    """The last safety net: an operation the graph cannot follow that breaks the pruned forward pass (a
    hand-written shuffle through reshape alone) is refused, naming it."""
    class Shuffle(nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], 2, -1, *x.shape[2:]).flip(1).reshape(x.shape)

    model = nn.Sequential(nn.Conv2d(3, 8, 3), Shuffle(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10))
    pruner = ch.ChannelPruner(model, (3, 16, 16))
    with pytest.raises(ValueError, match="forward pass fails after channel removal"):
        pruner.apply({"0": torch.arange(7)})


def test_a_model_with_no_removable_group_is_refused():
    model = model_zoo.NETS["lstm"].small()
    with pytest.raises(ValueError, match="model: no channel group"):
        ch.ChannelPruner(model, (12, 8))


def test_a_fully_convolutional_model_takes_its_last_conv_as_classifier():
    model = model_zoo.NETS["squeezenet1_1"].small()
    assert classifier_of(model) is model.classifier[1]
    pruner = ch.ChannelPruner(model, (3, 64, 64))
    assert all("classifier.1" not in [n for n, _, _ in g.producers] for g in pruner.groups)


def test_a_head_pruned_vit_equals_the_unpruned_one_with_those_heads_zeroed():
    """timm's attention: removing heads (their qkv rows and proj columns, num_heads lowered) and MLP neurons gives
    the outputs of the unpruned model with those heads' query / key / value rows and those neurons zeroed (a zero
    value makes a head's output 0 whatever its attention weights); the cost table predicts the counts."""
    torch.manual_seed(0)
    model = model_zoo.NETS["vit_timm"].small().eval()
    pruner = ch.ChannelPruner(model, (3, 32, 32))
    heads = [g for g in pruner.groups if g.attention]
    assert [g.attention for g in heads] == [f"blocks.{i}.attn" for i in range(4)] and not pruner.frozen
    assert all(g.size == 4 and g.producers[0][0] == f"{g.attention}.qkv" for g in heads)
    drop = {g.root: ([0, 2] if g.attention else list(range(0, g.size, 3))) for g in pruner.groups
            if g.attention or ".mlp.fc1" in g.root}  # the residual stream's LayerNorms make zeroing differ
    drop.update({g.root: [] for g in pruner.groups if g.root not in drop})
    _zero_slices(model, pruner, drop)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    plan = {g.root: torch.tensor([i for i in range(g.size) if i not in drop[g.root]]) for g in pruner.groups}
    predicted = pruner.cost(plan)
    pruner.apply(plan)
    attn = model.blocks[1].attn
    assert (attn.num_heads, attn.qkv.out_features, attn.proj.in_features) == (2, 96, 32)
    with torch.no_grad():
        assert (model(x) - reference).abs().max() <= 1e-5 * max(1.0, reference.abs().max().item())
    assert predicted == (count_params(model), count_macs(model, (3, 32, 32)))


def test_a_head_score_is_the_sum_of_its_query_key_value_rows():
    """ChannelPruner.group_scores on a head group: head h's score is the sum of the 3·head_dim qkv row scores it
    owns (rows s·H·d + h·d + j), checked by a loop over the rows."""
    model = model_zoo.NETS["vit_timm"].small().eval()
    pruner = ch.ChannelPruner(model, (3, 32, 32))
    row_scores = ch.l1_scores(model, pruner.producers)
    scores = pruner.group_scores(row_scores)
    s = row_scores["blocks.2.attn.qkv"].double()
    H, d = 4, 16
    expected = [sum(s[t * H * d + h * d + j] for t in range(3) for j in range(d)) for h in range(H)]
    assert torch.allclose(scores["blocks.2.attn.qkv"], torch.stack(expected))
    assert torch.allclose(ch.head_scores(s, H), torch.stack(expected))  # the same rule from the rows alone


def test_every_channel_criterion_prunes_a_vit_by_heads_and_neurons():
    """L1, Taylor, C-OBD, C-OBS and random reach 70 % on timm's ViT; every attention keeps num_heads equal to its
    qkv / proj widths, and the pruned model runs."""
    import pruning_lib
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(0)
    base = model_zoo.NETS["vit_timm"].small().eval()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    for method in ("l1", "taylor", "obd", "obs", "random"):
        model = copy.deepcopy(base)
        result = pruning_lib.prune(model, method, 0.7, loader)
        assert abs(result.achieved_param_ratio - 0.7) <= 0.01, method
        for block in model.blocks:
            a = block.attn
            assert a.qkv.out_features == 3 * a.num_heads * a.head_dim and a.proj.in_features == a.num_heads * a.head_dim
        assert model(x[:2]).shape == (2, 10)
