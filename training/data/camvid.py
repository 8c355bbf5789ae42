"""CamVid (SegNet 11-class version) as a torch Dataset, with training augmentation."""

from pathlib import Path
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dense_ood_ros.classes import IGNORE_INDEX
from dense_ood_ros.io import read_label, read_rgb

SPLITS = ("train", "val", "test")


def camvid_pairs(root: Union[str, Path], split: str) -> List[Tuple[Path, Path]]:
    """(image, label) paths of a split, from ``<split>.txt``; either PNG or WebP images."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown CamVid split {split!r}; choose one of {SPLITS}")
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"CamVid split list not found: {listing}")
    pairs = []
    for line_no, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            image_rel, label_rel = line.split()
        except ValueError:
            raise ValueError(f"{listing}:{line_no}: expected 'image label', "
                             f"got {line!r}") from None
        image = _existing_image(root / image_rel.lstrip("/").split("CamVid/")[-1])
        label = root / label_rel.lstrip("/").split("CamVid/")[-1]
        if not label.is_file():
            raise FileNotFoundError(f"{listing}:{line_no}: label not found: {label}")
        pairs.append((image, label))
    return pairs


def _existing_image(path: Path) -> Path:
    for candidate in (path, path.with_suffix(".webp"), path.with_suffix(".png")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"CamVid image not found (tried .png/.webp): {path}")


class CamVid(Dataset):
    """CamVid frames as (uint8 HxWx3 RGB tensor, int64 HxW label tensor).

    With ``crop_size`` set, training augmentation applies: random scale in
    ``scale_range``, random crop (padded with void), horizontal flip. ``cache_in_memory``
    decodes every frame once, here, and serves the decoded arrays from then on (the items
    are the same as without it).
    """

    def __init__(self, root: Union[str, Path], split: str,
                 crop_size: Optional[Tuple[int, int]] = None,
                 scale_range: Tuple[float, float] = (0.75, 1.5), limit: Optional[int] = None,
                 seed: int = 0, cache_in_memory: bool = False):
        self.pairs = camvid_pairs(root, split)[:limit]
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.seed = seed
        self.epoch = 0
        self.decoded = [self._read(index) for index in range(len(self.pairs))] \
            if cache_in_memory else None

    def set_epoch(self, epoch: int) -> None:
        """Make augmentation depend on (seed, epoch, index): deterministic and resumable."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path)
        label = read_label(label_path)
        if image.shape[:2] != label.shape:
            raise ValueError(f"size mismatch: {image_path} {image.shape[:2]} vs {label_path} "
                             f"{label.shape}")
        return image, label

    def __getitem__(self, index: int):
        image, label = self.decoded[index] if self.decoded is not None else self._read(index)
        if self.crop_size is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, label = augment(image, label, self.crop_size, self.scale_range, rng)
        # a copy: the tensors handed out never share memory with the cache
        image = np.array(image, order="C")
        return torch.from_numpy(image), torch.from_numpy(label.astype(np.int64))


def augment(image: np.ndarray, label: np.ndarray, crop_size: Tuple[int, int],
            scale_range: Tuple[float, float], rng: np.random.Generator):
    """Random scale, random crop (pad with void / zeros where needed) and horizontal flip."""
    scale = rng.uniform(*scale_range)
    height, width = label.shape
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(image, new_size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, new_size, interpolation=cv2.INTER_NEAREST)
    crop_h, crop_w = crop_size
    pad_h, pad_w = max(0, crop_h - label.shape[0]), max(0, crop_w - label.shape[1])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
    top = rng.integers(0, label.shape[0] - crop_h + 1)
    left = rng.integers(0, label.shape[1] - crop_w + 1)
    image = image[top:top + crop_h, left:left + crop_w]
    label = label[top:top + crop_h, left:left + crop_w]
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label
