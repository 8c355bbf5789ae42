"""Pasting synthetic negative patches into inlier images (NFlowJS training)."""

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def sample_patch_size(rng: np.random.Generator, crop_size: Tuple[int, int],
                      side_range: Tuple[int, int], side_step: int, reference_crop: int,
                      multiple: int) -> Tuple[int, int]:
    """Draw (height, width) of a negative patch.

    Each side is drawn independently (rectangles allowed) from ``side_range`` in steps of
    ``side_step`` (the paper: 16..216 px by 8 at Cityscapes crops of ``reference_crop``),
    scaled by ``min(crop_size) / reference_crop`` to the crop we train at, rounded to a
    multiple of ``multiple`` (the flow's size granularity), at least ``multiple`` and at most
    the crop.
    """
    sides = np.arange(side_range[0], side_range[1] + 1, side_step)
    scale = min(crop_size) / reference_crop
    size = []
    for limit in crop_size:
        side = int(round(rng.choice(sides) * scale / multiple)) * multiple
        size.append(int(np.clip(side, multiple, limit - limit % multiple)))
    return size[0], size[1]


def sample_flow_size(rng: np.random.Generator, patch_size: Tuple[int, int], scales: Sequence[int],
                     multiple: int) -> Tuple[int, int]:
    """Draw the (height, width) that the flow samples a negative at.

    The sample is then upsampled to ``patch_size``. Draws a scale ``s`` from ``scales`` and
    returns ``patch_size / s`` rounded to a multiple of ``multiple``, at least ``multiple`` and
    at most the patch. ``s = 1`` is the paper's full-resolution sample; ``s > 1`` gives the
    coarse structure a small flow cannot produce at full resolution.
    """
    # one scale: no draw, same stream
    scale = int(rng.choice(scales)) if len(scales) > 1 else scales[0]
    return flow_size_at_scale(patch_size, scale, multiple)


def flow_size_at_scale(patch_size: Tuple[int, int], scale: int, multiple: int) -> Tuple[int, int]:
    """``patch_size / scale`` rounded to a multiple of ``multiple``.

    At least ``multiple``, at most the patch.
    """
    return tuple(int(min(side, max(multiple, round(side / scale / multiple) * multiple)))
                 for side in patch_size)


def sample_negatives(flow, count: int, flow_size: Tuple[int, int], patch_size: Tuple[int, int],
                     temperature: float,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw ``count`` flow samples at ``flow_size``, upsampled bilinearly to ``patch_size``.

    They are (N, 3, h, w) in [0, 1], differentiable w.r.t. the flow: the negatives as nflowjs
    pastes them.
    """
    samples = flow.sample(count, *flow_size, temperature=temperature, generator=generator)
    if tuple(flow_size) == tuple(patch_size):
        return samples
    return F.interpolate(samples, size=patch_size, mode="bilinear", align_corners=False)


def sample_locations(rng: np.random.Generator, batch: int, crop_size: Tuple[int, int],
                     patch_size: Tuple[int, int]) -> np.ndarray:
    """Uniform random top-left corners (batch, 2) such that the patch lies inside the crop."""
    tops = rng.integers(0, crop_size[0] - patch_size[0] + 1, size=batch)
    lefts = rng.integers(0, crop_size[1] - patch_size[1] + 1, size=batch)
    return np.stack([tops, lefts], axis=1)


def crop_patches(images: torch.Tensor, locations: np.ndarray,
                 patch_size: Tuple[int, int]) -> torch.Tensor:
    """Crop the (N, C, h, w) regions of ``images`` (N, C, H, W) at ``locations``.

    They are what a paste replaces.
    """
    h, w = patch_size
    return torch.stack([images[i, :, t:t + h, l:l + w] for i, (t, l) in enumerate(locations)])


def paste_patches(images: torch.Tensor, labels: torch.Tensor, patches: torch.Tensor,
                  locations: np.ndarray,
                  ignore_index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste ``patches`` (N, C, h, w) into ``images`` (N, C, H, W), differentiably in the patches.

    Returns the pasted images, the labels with pasted pixels set to ``ignore_index`` (no
    cross-entropy there) and the boolean negative mask (N, H, W).
    """
    h, w = patches.shape[-2:]
    pasted = images.clone()
    labels = labels.clone()
    negative = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for i, (top, left) in enumerate(locations):
        pasted[i, :, top:top + h, left:left + w] = patches[i]
        labels[i, top:top + h, left:left + w] = ignore_index
        negative[i, top:top + h, left:left + w] = True
    return pasted, labels, negative
