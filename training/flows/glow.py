"""A small multi-scale Glow (Kingma & Dhariwal 2018), fully convolutional.

Why Glow: NFlowJS needs a generator whose samples can be any patch size and whose
sampling path is differentiable; a multi-scale Glow with actnorm, invertible 1x1
convolutions and affine couplings is exact, cheap and convolutional throughout, so one
model samples 16x16 and 80x128 patches alike (sides must be multiples of
``2 ** num_levels``). Defaults: 3 levels x 4 steps, 64 hidden channels, ~0.25 M parameters.

Data convention: images in [0, 1] (uint8 / 255 plus uniform dequantisation noise of one
level); :meth:`Glow.bits_per_dim` is the usual discrete-data NLL in bits per sub-pixel.
"""

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


#: Lower bound of a coupling's log-scale (see :meth:`AffineCoupling._scale_shift`).
MIN_LOG_SCALE = -4.0


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C, H/2, W/2), space-to-depth."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze`."""
    n, c, h, w = x.shape
    x = x.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, h * 2, w * 2)


def clipped_share(samples: torch.Tensor) -> float:
    """Return the share of sample values at the [0, 1] clamp.

    It rises when the flow drifts off the inlier manifold to saturated, easy negatives instead
    of staying at its border.
    """
    return float(((samples <= 0.0) | (samples >= 1.0)).float().mean())


def gaussian_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Sum of standard-normal log-densities per sample."""
    return (-0.5 * (z ** 2 + math.log(2 * math.pi))).flatten(1).sum(1)


class ActNorm(nn.Module):
    """Per-channel affine map, initialised from the first batch to zero mean / unit variance."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.initialized:
            self._initialize(x)
        logdet = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return (x + self.bias) * self.log_scale.exp(), logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvertibleConv1x1(nn.Module):
    """Channel mixing by an invertible matrix (initialised as a random rotation)."""

    def __init__(self, channels: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        weight, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.linalg.slogdet(self.weight)[1] * x.shape[2] * x.shape[3]
        return F.conv2d(x, self.weight[:, :, None, None]), logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None])


class AffineCoupling(nn.Module):
    """Half the channels predict a scale and shift for the other half (Glow / RealNVP)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels // 2, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2 * (channels - channels // 2), 3, padding=1),
        )
        last = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _scale_shift(self, x_a: torch.Tensor):
        h = self.net(x_a)
        shift, raw_scale = h[:, 0::2], h[:, 1::2]
        # Scale in [e^-4, 1), ~0.88 at init. The floor bounds how much the inverse (sampling)
        # can amplify per coupling; without it, tail latents at temperature 1 overflow to inf/NaN.
        log_scale = F.logsigmoid(raw_scale + 2.0).clamp(min=MIN_LOG_SCALE)
        return log_scale, shift

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x_a, x_b = x.chunk(2, dim=1)
        log_scale, shift = self._scale_shift(x_a)
        y_b = (x_b + shift) * log_scale.exp()
        return torch.cat([x_a, y_b], dim=1), log_scale.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y_a, y_b = y.chunk(2, dim=1)
        log_scale, shift = self._scale_shift(y_a)
        return torch.cat([y_a, y_b * torch.exp(-log_scale) - shift], dim=1)


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(channels), InvertibleConv1x1(channels, generator),
                                     AffineCoupling(channels, hidden)])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(x.shape[0], device=x.device)
        for layer in self.layers:
            x, step_logdet = layer(x)
            logdet = logdet + step_logdet
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class Glow(nn.Module):
    """Multi-scale Glow over RGB patches in [0, 1].

    :meth:`sample` draws patches of any valid size.
    """

    def __init__(self, num_levels: int = 3, steps_per_level: int = 4, hidden: int = 64,
                 seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.num_levels = num_levels
        self.levels = nn.ModuleList()
        channels = 3
        for level in range(num_levels):
            channels *= 4
            self.levels.append(nn.ModuleList(FlowStep(channels, hidden, generator)
                                             for _ in range(steps_per_level)))
            if level < num_levels - 1:
                channels //= 2  # half the channels leave to the prior at each split

    @property
    def size_multiple(self) -> int:
        """Patch height and width must be multiples of this."""
        return 2 ** self.num_levels

    def _check_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        if height % m or width % m or height <= 0 or width <= 0:
            raise ValueError(f"patch size {height}x{width} must be positive multiples of {m}")

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Map x in [0, 1] to (latents per level, log|det J|), centring x to [-0.5, 0.5] first."""
        self._check_size(*x.shape[-2:])
        h = x - 0.5
        logdet = torch.zeros(x.shape[0], device=x.device)
        latents = []
        for index, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, step_logdet = step(h)
                logdet = logdet + step_logdet
            if index < self.num_levels - 1:
                h, z = h.chunk(2, dim=1)
                latents.append(z)
        latents.append(h)
        return latents, logdet

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density (nats) of continuous x in [0, 1]^D, per sample."""
        latents, logdet = self.forward(x)
        return sum(gaussian_log_prob(z) for z in latents) + logdet

    def bits_per_dim(self, images_uint8_float: torch.Tensor,
                     noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean NLL in bits per sub-pixel of 8-bit images given as float 0..255 (N, 3, H, W).

        Uniform dequantisation: x = (v + u) / 256, u ~ U[0, 1).
        """
        if noise is None:
            noise = torch.rand_like(images_uint8_float)
        x = (images_uint8_float + noise) / 256.0
        dims = x[0].numel()
        log_px = self.log_prob(x) - dims * math.log(256.0)
        return (-log_px / (dims * math.log(2.0))).mean()

    def inverse(self, latents: List[torch.Tensor]) -> torch.Tensor:
        """Latents per level (as returned by :meth:`forward`) -> x in data space (unclamped)."""
        h = latents[-1]
        for index in reversed(range(self.num_levels)):
            if index < self.num_levels - 1:
                h = torch.cat([h, latents[index]], dim=1)
            for step in reversed(self.levels[index]):
                h = step.inverse(h)
            h = unsqueeze(h)
        return h + 0.5

    def latent_shapes(self, batch: int, height: int, width: int) -> List[Tuple[int, ...]]:
        self._check_size(height, width)
        shapes, channels = [], 3
        for level in range(self.num_levels):
            channels *= 4
            height, width = height // 2, width // 2
            if level < self.num_levels - 1:
                channels //= 2
            shapes.append((batch, channels, height, width))
        return shapes

    def sample(self, batch: int, height: int, width: int, temperature: float = 1.0,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw differentiable samples in [0, 1] (N, 3, height, width).

        Clamping is the only non-linearity added.
        """
        device = next(self.parameters()).device
        latents = [torch.randn(shape, generator=generator, device=device) * temperature
                   for shape in self.latent_shapes(batch, height, width)]
        return self.inverse(latents).clamp(0.0, 1.0)
