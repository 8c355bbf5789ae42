"""The one definition of input pre-processing and output-size mapping, for every backend.

Host side (numpy/OpenCV): an RGB uint8 HxWx3 frame is resized to the model's input size
(bilinear) and batched as uint8 NHWC. Graph side (torch, hence also ONNX/TensorRT):
:class:`Normalize` converts uint8 NHWC to float NCHW with ImageNet statistics. Outputs at
the model's resolution are mapped back to the frame's resolution by
:func:`resize_outputs` (nearest for labels, bilinear for scores).
"""

from typing import Tuple

import cv2
import numpy as np
import torch
from torch import nn

#: ImageNet statistics of the pretrained encoder, on 0..255 RGB values.
IMAGENET_MEAN = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
IMAGENET_STD = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)


class Normalize(nn.Module):
    """uint8 (N, H, W, 3) RGB -> normalised float32 (N, 3, H, W); part of the exported graph."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images_nhwc: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT accepts a uint8 tensor only as the input of a cast.
        return self.normalize_nchw(images_nhwc.float().permute(0, 3, 1, 2))

    def normalize_nchw(self, images: torch.Tensor) -> torch.Tensor:
        """Float (N, 3, H, W) RGB on the 0..255 scale -> normalised (differentiable)."""
        return (images - self.mean) * self.inv_std


def check_rgb_frame(frame: np.ndarray) -> None:
    """Raise a ValueError naming what is wrong unless ``frame`` is an RGB uint8 HxWx3 array."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be HxWx3 RGB, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got dtype {frame.dtype}")
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise ValueError(f"frame is too small: {frame.shape[1]}x{frame.shape[0]} pixels")


def resize_frame(frame: np.ndarray, input_size: Tuple[int, int]) -> np.ndarray:
    """Resize an RGB frame to ``input_size = (height, width)``; no copy when already that size."""
    height, width = input_size
    if frame.shape[:2] == (height, width):
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)


def resize_outputs(labels: np.ndarray, scores: np.ndarray, frame_size: Tuple[int, int]):
    """Map labels (uint8 hxw) and scores (float32 Sxhxw) back to the frame size.

    ``frame_size`` is (height, width).
    """
    height, width = frame_size
    if labels.shape == (height, width):
        return labels, scores
    labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
    resized = np.empty((len(scores), height, width), np.float32)
    for score, out in zip(scores, resized):  # straight into the result: no stacking copy
        cv2.resize(score, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
    return labels, resized
