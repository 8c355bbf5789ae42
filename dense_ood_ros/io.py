"""Image file reading with errors that name the file."""

from pathlib import Path
from typing import Union

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_rgb(path: Union[str, Path]) -> np.ndarray:
    """Read a colour image as RGB uint8 HxWx3."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image file: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Union[str, Path]) -> np.ndarray:
    """Read a single-channel label PNG as uint8 HxW."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"cannot read label file: {path}")
    if label.ndim != 2:
        raise ValueError(f"label file {path} must be single-channel, got shape {label.shape}")
    return label.astype(np.uint8, copy=False)


def write_rgb(path: Union[str, Path], image: np.ndarray) -> None:
    """Write an RGB uint8 image (format from the suffix)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"cannot write image file: {path}")
