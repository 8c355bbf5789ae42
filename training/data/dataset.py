"""Any described dataset as a torch Dataset, with training augmentation, read as it streams.

Items are (uint8 HxWx3 RGB tensor, int64 HxW tensor of training ids). By default every item
is read from disk when asked for, so a :class:`torch.utils.data.DataLoader` with worker
processes (``data.num_workers``) streams a dataset of any size; ``cache_in_memory`` decodes
every frame once instead (small datasets: CamVid train is ~250 MB), with the same items.
"""

import os
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dense_ood_ros.io import read_label, read_rgb
from training.data.description import DatasetDescription, DatasetError, load_description
from training.data.readers import list_samples

#: ``cache_in_memory`` is refused when the decoded frames would take more than this share of
#: the machine's memory.
MAX_CACHE_SHARE = 0.5


def physical_memory_bytes() -> int:
    """Return this machine's memory in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class SegmentationDataset(Dataset):
    """The frames of one split of a described dataset.

    With ``crop_size`` set, training augmentation applies: random scale in ``scale_range``,
    random crop (padded with the ignore index), horizontal flip, photometric jitter of
    strength ``photometric`` (0: none), camera degradations with probability ``degrade``
    each (0: none; :func:`degrade`), drawn from
    (seed, epoch, index), so items do not depend on the worker that reads them.
    """

    def __init__(self, description: DatasetDescription, root: Union[str, Path], split: str,
                 crop_size: Optional[Tuple[int, int]] = None,
                 scale_range: Tuple[float, float] = (0.75, 1.5), limit: Optional[int] = None,
                 seed: int = 0, cache_in_memory: bool = False, photometric: float = 0.0,
                 degrade: float = 0.0):
        self.description = description
        self.label_set = description.label_set
        self.samples = list_samples(description, root, split)[:limit]
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.photometric = photometric
        self.degrade = degrade
        self.seed = seed
        self.epoch = 0
        self.decoded = None
        if cache_in_memory:
            first = self._read(0)
            self._check_cache_size(first[0].nbytes + first[1].nbytes)
            self.decoded = [first] + [self._read(i) for i in range(1, len(self.samples))]

    def _check_cache_size(self, frame_bytes: int) -> None:
        needed, memory = frame_bytes * len(self.samples), physical_memory_bytes()
        if memory and needed > MAX_CACHE_SHARE * memory:
            raise DatasetError(
                f"data.cache_in_memory: decoding the {len(self.samples)} frames of dataset "
                f"{self.description.name!r} would take about {needed / 2**30:.1f} GiB, more "
                f"than {MAX_CACHE_SHARE:.0%} of this machine's {memory / 2**30:.1f} GiB; set "
                "data.cache_in_memory: false and stream them with data.num_workers > 0")

    def set_epoch(self, epoch: int) -> None:
        """Make augmentation depend on (seed, epoch, index): deterministic and resumable."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        sample = self.samples[index]
        image = read_rgb(sample.image)
        try:
            stored = read_label(sample.label, image.shape[:2])
        except ValueError as exc:  # names the label file; say which image it belongs to
            raise DatasetError(f"{exc} (the label of {sample.image})") from None
        return image, self.description.train_ids(stored, sample.label)

    def __getitem__(self, index: int):
        image, label = self.decoded[index] if self.decoded is not None else self._read(index)
        if self.crop_size is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, label = augment(image, label, self.crop_size, self.scale_range, rng,
                                   self.label_set.ignore_index)
            if self.photometric:
                image = photometric_jitter(image, self.photometric, rng)
            if self.degrade:
                image = degrade(image, self.degrade, rng)
        # a copy: the tensors handed out never share memory with the cache
        image = np.array(image, order="C")
        return torch.from_numpy(image), torch.from_numpy(label.astype(np.int64))


def augment(image: np.ndarray, label: np.ndarray, crop_size: Tuple[int, int],
            scale_range: Tuple[float, float], rng: np.random.Generator, ignore_index: int):
    """Random scale, random crop (pad with ``ignore_index`` / zeros) and horizontal flip."""
    scale = rng.uniform(*scale_range)
    height, width = label.shape
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(image, new_size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, new_size, interpolation=cv2.INTER_NEAREST)
    crop_h, crop_w = crop_size
    pad_h, pad_w = max(0, crop_h - label.shape[0]), max(0, crop_w - label.shape[1])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=ignore_index)
    top = rng.integers(0, label.shape[0] - crop_h + 1)
    left = rng.integers(0, label.shape[1] - crop_w + 1)
    image = image[top:top + crop_h, left:left + crop_w]
    label = label[top:top + crop_h, left:left + crop_w]
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label


# ITU-R BT.601 luma weights
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def photometric_jitter(image: np.ndarray, strength: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Scale brightness, then contrast, then saturation of a uint8 RGB image.

    Each factor is drawn from [1 - strength, 1 + strength]; contrast scales around the mean
    luma, saturation around each pixel's luma.
    """
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    out = image.astype(np.float32) * brightness
    mean = float((out @ _LUMA).mean())
    out = (out - mean) * contrast + mean
    luma = (out @ _LUMA)[..., None]
    out = (out - luma) * saturation + luma
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


#: Ranges of :func:`degrade`: blur sigma (px), noise standard deviation (grey levels), JPEG
#: quality.
BLUR_SIGMA = (0.5, 1.5)
NOISE_STD = (2.0, 8.0)
JPEG_QUALITY = (25, 75)


def degrade(image: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Apply each camera degradation with ``probability``: Gaussian blur, noise, JPEG.

    Cameras other than CamVid's differ in sharpness, sensor noise and compression; a model
    that has only seen one camera's takes the others' for the unknown.
    """
    blur, noise, jpeg = rng.random(3) < probability
    if blur:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(*BLUR_SIGMA))
    if noise:
        noisy = image + rng.normal(0.0, rng.uniform(*NOISE_STD), image.shape)
        image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if jpeg:
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return image


def prepare_workers(num_workers: int) -> None:
    """Before a DataLoader starts ``num_workers`` worker processes: one OpenCV thread each.

    The workers run in parallel already (and torch gives each one thread). Set here, in the
    parent, which they inherit: ``cv2.setNumThreads`` in a forked worker can deadlock on the
    parent's thread pool. With workers the parent does no image work.
    """
    if num_workers > 0:
        cv2.setNumThreads(1)


def config_dataset(config, split: str, **options) -> SegmentationDataset:
    """Return the dataset of a config's ``data`` section: ``data.dataset`` at ``data.root``.

    ``options`` go to :class:`SegmentationDataset` (crop_size, limit, ...).
    """
    description = load_description(config.data.dataset)
    return SegmentationDataset(description, description.resolve_root(config.data.root), split,
                               **options)
