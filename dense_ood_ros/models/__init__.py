"""Model factory: ``build_model(name, num_classes, pretrained)``.

One plain function per architecture; adding an encoder is one more entry in ``MODELS``.
"""

from typing import Callable, Dict

from torch import nn

from dense_ood_ros.models.decoders.swiftnet import SwiftNetDecoder
from dense_ood_ros.models.encoders.efficientnet_lite import (EfficientNetLite,
                                                             load_imagenet_weights)
from dense_ood_ros.models.segmenter import Segmenter


def _efficientnet_lite(variant: str, pretrained: bool) -> EfficientNetLite:
    """EfficientNet-Lite without its ImageNet head, from ImageNet weights when ``pretrained``."""
    encoder = EfficientNetLite(variant)
    if pretrained:
        load_imagenet_weights(encoder)
    del encoder._conv_head, encoder._bn1, encoder._fc
    return encoder


def efficientnet_lite0_swiftnet(num_classes: int, pretrained: bool = True) -> Segmenter:
    """Build EfficientNet-Lite0 + SwiftNet ladder decoder with SPP (dense 3x3 blends)."""
    encoder = _efficientnet_lite("lite0", pretrained)
    return Segmenter(encoder, SwiftNetDecoder(encoder.out_channels, num_classes))


def efficientnet_lite2_swiftnet(num_classes: int, pretrained: bool = True) -> Segmenter:
    """Build EfficientNet-Lite2 + the same decoder: 1.5x the encoder's, 1.2x the model's FLOPs."""
    encoder = _efficientnet_lite("lite2", pretrained)
    return Segmenter(encoder, SwiftNetDecoder(encoder.out_channels, num_classes))


def efficientnet_lite0_swiftnet_separable(num_classes: int,
                                          pretrained: bool = True) -> Segmenter:
    """Build the same with depthwise-separable blends: ~half the FLOPs, for CPUs."""
    encoder = _efficientnet_lite("lite0", pretrained)
    return Segmenter(encoder, SwiftNetDecoder(encoder.out_channels, num_classes,
                                              blend="separable"))


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "efficientnet_lite0_swiftnet": efficientnet_lite0_swiftnet,
    "efficientnet_lite0_swiftnet_separable": efficientnet_lite0_swiftnet_separable,
    "efficientnet_lite2_swiftnet": efficientnet_lite2_swiftnet,
}


def build_model(name: str, num_classes: int, pretrained: bool = True) -> nn.Module:
    """Build a segmentation model by name; a clear error lists the known names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return MODELS[name](num_classes, pretrained=pretrained)
