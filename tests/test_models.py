import pytest
import torch
from torch import nn

from pruning_lib.metrics import count_macs, count_params, gflops
from pruning_lib.models import build_model, classifier_of


def test_narrow_resnet32_counts():
    # Option B shortcuts (1x1 conv + BN): 0.467 M params; MACs 68.86 M of 3x3 convs + FC plus 0.26 M
    # of the two 1x1 shortcut convs = 69.12 M.
    m = build_model("resnet32", 1, 3, 10)
    assert 0.46e6 <= count_params(m) <= 0.47e6
    assert 68.9e6 <= count_macs(m, (3, 32, 32)) <= 69.15e6


def test_wide_resnet32_counts():
    m = build_model("resnet32", 4, 3, 100)
    assert abs(count_params(m) - 7.45e6) < 0.02e6
    assert abs(gflops(count_macs(m, (3, 32, 32))) - 2.20) < 0.01


def test_macs_of_one_conv_match_the_formula():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (3, 10, 10)) == 8 * 3 * 9 * 10 * 10


@pytest.mark.parametrize("name,c,size,classes", [("resnet8", 1, 8, 10), ("resnet56", 3, 32, 100),
                                                 ("vgg19", 3, 32, 10), ("resnet20", 1, 28, 10)])
def test_shapes_and_classifier(name, c, size, classes):
    m = build_model(name, 1, c, classes).eval()
    assert m(torch.randn(2, c, size, size)).shape == (2, classes)
    assert classifier_of(m).out_features == classes


def test_digits_resnet_is_small():
    assert 70e3 < count_params(build_model("resnet8", 1, 1, 10)) < 80e3


@pytest.mark.parametrize("kwargs,field", [({"name": "resnet31"}, "model"), ({"name": "resnet32", "width": 0}, "width")])
def test_bad_model_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        build_model(**kwargs)


@pytest.mark.parametrize("image_size,channels,tokens", [(28, 1, 17), (8, 1, 17), (32, 3, 17)])
def test_vit_tiny_cuts_any_small_image_into_sixteen_patches(image_size, channels, tokens):
    """timm's VisionTransformer, patches of image_size / 4: 16 tokens and the class token; 100-300 k parameters."""
    model = build_model("vit_tiny", 1, channels, 10, image_size).eval()
    assert model(torch.randn(2, channels, image_size, image_size)).shape == (2, 10)
    assert model.pos_embed.shape[1] == tokens
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 300_000
    assert all(isinstance(b.attn.qkv, nn.Linear) for b in model.blocks)  # projections are Linear modules
    with pytest.raises(ValueError, match="image_size: 30 is not a multiple of 4"):
        build_model("vit_tiny", 1, 1, 10, 30)
