"""File helpers with errors that name the file: images, labels, image folders, checksums."""

import hashlib
from pathlib import Path
from typing import List, Optional, Union

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


class ImageFolderError(FileNotFoundError, ValueError):
    """An image folder is missing or holds no images (caught as either base)."""


def list_images(folder: Union[str, Path], what: str = "image",
                limit: Optional[int] = None) -> List[Path]:
    """List the image files of a folder sorted by name, so choices are reproducible.

    With ``limit``, only the first ``limit`` of them. ``what`` names the folder's role in the
    :class:`ImageFolderError` raised when it is missing or empty (e.g. "calibration" ->
    "calibration folder not found: ...").
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"{what} folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageFolderError(f"no images ({', '.join(IMAGE_SUFFIXES)}) "
                               f"in {what} folder {folder}")
    return paths[:limit]


def file_sha256(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
