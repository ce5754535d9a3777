"""CIFAR-style ResNets (any depth 6n+2, width multiplier), VGG-19 and a tiny Vision Transformer (timm's), for any
input channels / classes.

ResNet shortcuts use option B (1x1 conv + BatchNorm when the shape changes), which every pruning
method can follow (option A's zero-padding shortcut hides channels from a dependency graph).
Width 1 gives channels 16/32/64 (the narrow ResNet-32, 0.47 M params); width 4 gives 64/128/256
(the seed's wide ResNet-32, 7.4 M params, 2.2 GFLOPs at 32x32).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

MODELS = ("resnet8", "resnet20", "resnet32", "resnet56", "vgg19", "vit_tiny")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (identity, or 1x1 conv + BN when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images (He et al. 2016, CIFAR variant): 3 stages of n blocks, depth = 6n + 2."""

    def __init__(self, depth: int = 32, width: int = 1, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth: {depth} is not 6n+2 with n >= 1 (allowed: 8, 14, 20, 32, 56, ...)")
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, in_planes = [], widths[0]
        for stage, planes in enumerate(widths):
            stages = []
            for i in range(n):
                stages.append(BasicBlock(in_planes, planes, 2 if (stage > 0 and i == 0) else 1))
                in_planes = planes
            blocks.append(nn.Sequential(*stages))
        self.layer1, self.layer2, self.layer3 = blocks
        self.fc = nn.Linear(widths[2], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: stem, three stages, global average pooling, classifier."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


class VGG(nn.Module):
    """VGG-19 with BatchNorm for 32x32 images (4 max-pools, global average pool, one linear layer)."""

    def __init__(self, width: int = 1, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        layers, c = [], in_channels
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = v * width
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: conv features, global average pooling, classifier."""
        out = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(out)


def vit_tiny(width: int = 1, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """timm's VisionTransformer for small images: patches of image_size / 4 (16 tokens and a class token), embedding
    64·width, 4 blocks of 4 heads, MLP ratio 2 (≈ 140 k parameters at width 1 on 28×28 Fashion-MNIST). timm's rather
    than torchvision's: its attention projections (qkv, proj) are nn.Linear modules that K-FAC, the low-rank
    rebuild and Torch-Pruning's head pruning see, where torchvision's nn.MultiheadAttention keeps in_proj as a raw
    parameter read functionally."""
    from timm.models.vision_transformer import VisionTransformer  # imported here: only the ViT needs timm
    if image_size % 4:
        raise ValueError(f"image_size: {image_size} is not a multiple of 4 (vit_tiny cuts it into 4 x 4 patches)")
    return VisionTransformer(img_size=image_size, patch_size=image_size // 4, in_chans=in_channels,
                             num_classes=num_classes, embed_dim=64 * width, depth=4, num_heads=4, mlp_ratio=2.0)


def build_model(name: str, width: int = 1, in_channels: int = 3, num_classes: int = 10,
                image_size: int = 32) -> nn.Module:
    """Instantiate a model by name ("resnet8" is the small digits ResNet, 78 k params at width 1); `image_size`
    matters for the ViT only (its patch grid and position embedding)."""
    if name not in MODELS:
        raise ValueError(f"model: unknown '{name}', allowed: {', '.join(MODELS)}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width: {width!r} is not a positive integer multiplier (1 = 16/32/64, 4 = 64/128/256)")
    if name == "vit_tiny":
        return vit_tiny(width, in_channels, num_classes, image_size)
    if name == "vgg19":
        return VGG(width, in_channels, num_classes)
    return CifarResNet(int(name[len("resnet"):]), width, in_channels, num_classes)


def classifier_of(model: nn.Module) -> nn.Module:
    """The classifier: the model's last Linear layer in module order or, in a fully convolutional model (no
    Linear, e.g. SqueezeNet's 1x1 conv to the classes), its last convolution."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not linears and not convs:
        raise ValueError("model: no Linear or convolution layer to take as the classifier")
    return (linears or convs)[-1]
