"""INT8 calibration data for TensorRT: real frames, prepared exactly as at inference.

The batch-producing part (:class:`CalibrationBatches`) is plain Python/numpy; only
:func:`make_calibrator` touches TensorRT and CUDA (through torch).

The calibration table TensorRT writes is kept as a cache artifact (:mod:`dense_ood_ros.cache`:
written atomically, beside a record of its key and checksum), so a truncated, corrupt or
unrecorded table is never handed to TensorRT: calibration runs again, with the reason
reported.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from dense_ood_ros import cache
from dense_ood_ros.io import list_images, read_rgb
from dense_ood_ros.preprocessing import resize_frame

logger = logging.getLogger(__name__)

CALIBRATORS = ("entropy", "minmax")


@dataclass(frozen=True)
class CalibrationSettings:
    """Which frames calibrate an INT8 engine and how."""

    image_dir: Path
    count: int = 256
    method: str = "entropy"
    batch_size: int = 1

    def __post_init__(self):
        if self.method not in CALIBRATORS:
            raise ValueError(f"unknown INT8 calibrator {self.method!r}; "
                             f"choose one of {list(CALIBRATORS)}")
        if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 1
                   for value in (self.count, self.batch_size)):
            raise ValueError("calibration count and batch_size must be integers "
                             f">= 1, got {self.count!r}, {self.batch_size!r}")


def calibration_images(image_dir: Union[str, Path], count: int) -> List[Path]:
    """Return the first ``count`` images of a folder (sorted, so the choice is reproducible)."""
    return list_images(image_dir, "calibration image", count)


class CalibrationBatches:
    """Full batches of uint8 NHWC frames at ``input_size``, as the engine's input receives them.

    Frames are read as RGB and resized with :func:`dense_ood_ros.preprocessing.resize_frame`
    (the detector's own pre-processing; normalisation is inside the graph). A last,
    incomplete batch is dropped: the calibrator must hand TensorRT full batches.
    """

    def __init__(self, paths: Sequence[Union[str, Path]], input_size: Tuple[int, int],
                 batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(paths) < batch_size:
            raise ValueError(f"{len(paths)} calibration images "
                             f"cannot fill one batch of {batch_size}")
        self.paths = [Path(p) for p in paths]
        self.input_size = tuple(input_size)
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: CalibrationSettings,
                      input_size: Tuple[int, int]) -> "CalibrationBatches":
        return cls(calibration_images(settings.image_dir, settings.count), input_size,
                   settings.batch_size)

    def __len__(self) -> int:
        return len(self.paths) // self.batch_size

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        return (self.batch_size, *self.input_size, 3)

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            frames = [resize_frame(read_rgb(p), self.input_size)
                      for p in self.paths[start:start + self.batch_size]]
            yield np.ascontiguousarray(np.stack(frames))

    def data_id(self, method: str) -> str:
        """Identify this calibration data (file names and sizes, shape, method) for cache keys."""
        digest = hashlib.sha256(f"{method}|{self.shape}".encode())
        for path in self.paths[:len(self) * self.batch_size]:
            digest.update(f"|{path.name}:{path.stat().st_size}".encode())
        return digest.hexdigest()


def calibration_cache_key(batches: CalibrationBatches, method: str) -> Dict[str, Any]:
    """Return the cache key of a calibration table: the data (:meth:`data_id`) and method."""
    return {"calibration_id": batches.data_id(method), "method": method}


def read_calibration_table(cache_path: Union[str, Path], key: Dict[str, Any],
                           status: Optional[Callable[[str], None]] = None) -> Optional[bytes]:
    """Return a valid cached calibration table for ``key``; None if none.

    The reason a table that exists is not used goes to ``status`` (default: a warning).
    """
    cache_path = Path(cache_path)
    reason = cache.stale_reason(cache_path, key)
    if reason is None:
        try:
            table = cache_path.read_bytes()
        except OSError as exc:
            reason = f"{cache_path} is unreadable: {exc}"
        else:
            (status or logger.info)(f"using INT8 calibration cache {cache_path}")
            return table
    if cache_path.exists() or cache.record_path(cache_path).exists():
        (status or logger.warning)(f"not using INT8 calibration cache {cache_path}, "
                                   f"calibrating again: {reason}")
    return None


def write_calibration_table(cache_path: Union[str, Path], key: Dict[str, Any], table: bytes,
                            status: Optional[Callable[[str], None]] = None) -> None:
    """Store a calibration table with its record; a failure goes to ``status``, not raised.

    (Default: a warning.) The table only saves calibrating again; the engine is built
    without it.
    """
    try:
        cache.store(cache_path, lambda tmp: tmp.write_bytes(table), key)
    except OSError as exc:
        (status or logger.warning)(f"INT8 calibration cache not saved: {exc}")
        return
    (status or logger.info)(f"wrote INT8 calibration cache {cache_path}")


def make_calibrator(batches: CalibrationBatches, method: str, cache_path: Union[str, Path],
                    status: Optional[Callable[[str], None]] = None, device_index: int = 0):
    """Make a TensorRT INT8 calibrator that feeds ``batches`` from a buffer on a CUDA device.

    ``method``: ``entropy`` (IInt8EntropyCalibrator2) or ``minmax`` (IInt8MinMaxCalibrator).
    The buffer is allocated on CUDA device ``device_index``, the one the engine is built on.
    It caches its table in ``cache_path`` (reused when valid for the data and method, so a
    rebuild on another GPU skips calibration; see :func:`read_calibration_table`). Progress
    goes to ``status`` (default: this module's logger).
    """
    import tensorrt as trt
    import torch

    bases = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}
    if method not in bases:
        raise ValueError(f"unknown INT8 calibrator {method!r}; choose one of {list(bases)}")
    cache_path = Path(cache_path)
    report = status or logger.info
    keys: List[Dict[str, Any]] = []  # computed once, when TensorRT first asks for the table

    def key() -> Dict[str, Any]:
        if not keys:
            keys.append(calibration_cache_key(batches, method))
        return keys[0]

    class Calibrator(bases[method]):
        def __init__(self):
            bases[method].__init__(self)
            self.batches = iter(batches)
            self.device_buffer = torch.empty(batches.shape, dtype=torch.uint8,
                                             device=torch.device("cuda", device_index))
            self.done = 0

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.device_buffer.copy_(torch.from_numpy(batch))
            torch.cuda.synchronize(self.device_buffer.device)
            self.done += 1
            if self.done % 32 == 0 or self.done == len(batches):
                report(f"INT8 calibration ({method}): batch {self.done}/{len(batches)}")
            return [self.device_buffer.data_ptr()] * len(names)

        def read_calibration_cache(self) -> Optional[bytes]:
            return read_calibration_table(cache_path, key(), status)

        def write_calibration_cache(self, table) -> None:
            write_calibration_table(cache_path, key(), bytes(table), status)

    return Calibrator()
