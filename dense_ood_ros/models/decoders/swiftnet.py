"""SwiftNet ladder decoder (Oršić et al., CVPR 2019) with spatial pyramid pooling.

The coarsest encoder feature goes through SPP, then each ladder step upsamples the
running features to the next finer skip, adds a 1x1 projection of the skip and blends
with a 3x3 convolution. Logits come out at stride 4 and are upsampled to the input.

``blend="separable"`` replaces each dense 3x3 blend by a depthwise 3x3 and a pointwise 1x1
convolution (MobileNet style, pre-activation): the dense blends are 60 % of the network's
FLOPs at 360x480 (``docs/cpu_profile.md``), the separable ones about 8 times fewer.
"""

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BLENDS = ("dense", "separable")


def _bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
    )


def _separable_blend(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        *_bn_relu_conv(channels, channels, 1),
    )


class SpatialPyramidPooling(nn.Module):
    """Average-pool the feature map on a few grids, project, upsample and fuse."""

    def __init__(self, in_channels: int, out_channels: int, grids: Sequence[int] = (8, 4, 2, 1),
                 level_channels: int = 64):
        super().__init__()
        self.grids = tuple(grids)
        self.bottleneck = _bn_relu_conv(in_channels, out_channels, 1)
        self.levels = nn.ModuleList(_bn_relu_conv(out_channels, level_channels, 1)
                                    for _ in self.grids)
        self.fuse = _bn_relu_conv(out_channels + level_channels * len(self.grids), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(x)
        size = x.shape[-2:]
        pyramid = [x]
        for grid, level in zip(self.grids, self.levels):
            pooled = F.adaptive_avg_pool2d(x, grid)
            pyramid.append(F.interpolate(level(pooled), size=size, mode="bilinear",
                                         align_corners=False))
        return self.fuse(torch.cat(pyramid, dim=1))


class LadderUpsample(nn.Module):
    """Upsample coarse features to a skip's size, add the projected skip, blend."""

    def __init__(self, skip_channels: int, channels: int, blend: str = "dense"):
        super().__init__()
        if blend not in BLENDS:
            raise ValueError(f"unknown blend {blend!r}; choose one of {list(BLENDS)}")
        self.project_skip = _bn_relu_conv(skip_channels, channels, 1)
        self.blend = (_bn_relu_conv(channels, channels, 3) if blend == "dense"
                      else _separable_blend(channels))

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.blend(up + self.project_skip(skip))


class SwiftNetDecoder(nn.Module):
    """Features (finest first) -> per-pixel logits at the finest feature's resolution."""

    def __init__(self, encoder_channels: Sequence[int], num_classes: int, channels: int = 128,
                 blend: str = "dense"):
        super().__init__()
        *skip_channels, deepest = encoder_channels
        self.spp = SpatialPyramidPooling(deepest, channels)
        self.ladder = nn.ModuleList(LadderUpsample(c, channels, blend)
                                    for c in reversed(skip_channels))
        self.classifier = _bn_relu_conv(channels, num_classes, 1)
        self.classifier[2].bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        *skips, deepest = features
        x = self.spp(deepest)
        for step, skip in zip(self.ladder, reversed(skips)):
            x = step(x, skip)
        return self.classifier(x)
