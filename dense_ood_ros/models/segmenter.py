"""Encoder + decoder -> per-pixel logits at the input resolution."""

import torch
import torch.nn.functional as F
from torch import nn


class Segmenter(nn.Module):
    """Normalised images (N, 3, H, W) -> logits (N, C, H, W)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def decoder_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the decoder's output stride (4 for SwiftNet), before upsampling."""
        return self.decoder(self.encoder(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return upsample(self.decoder_logits(images), images.shape[-2:])


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of per-pixel maps (logits or scores) to ``size`` = (H, W)."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
