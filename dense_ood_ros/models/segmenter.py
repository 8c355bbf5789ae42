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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.encoder(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
