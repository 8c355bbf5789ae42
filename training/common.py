"""Shared training machinery: distributed setup, resumable state, CSV logs, evaluation."""

import csv
import ctypes
import io
import os
import random
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dense_ood_ros.checkpoint import CheckpointError, check_torch_archive
from dense_ood_ros.host import available_cpu_count
from dense_ood_ros.io import atomic_write
from dense_ood_ros.metrics import SemanticMetrics
from dense_ood_ros.preprocessing import Normalize
from training.data.dataset import prepare_workers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_process(threads: Optional[int], reuse_freed_memory: bool) -> int:
    """Set torch's CPU threads and glibc's reuse of freed memory; return the thread count.

    ``threads=None``: the cores this process may run on. ``reuse_freed_memory``: glibc keeps
    freed blocks for reuse instead of handing the large ones back to the kernel, which would
    page-fault (and zero) them in again at every step.
    """
    threads = threads or available_cpu_count()
    torch.set_num_threads(threads)
    if reuse_freed_memory:
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc: nothing to tune
            return threads
        m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters from glibc's malloc.h
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    return threads


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Map config key ``device`` (auto, cpu, cuda) to a torch device; CUDA must be there."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("config key 'device' is cuda, but torch finds no CUDA device here "
                         f"(torch {torch.__version__}); use device: cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


class DistributedContext:
    """Rank/world size from torchrun's environment; a single process when absent.

    ``device``: config key ``device``; under torchrun each process takes the GPU of its
    ``LOCAL_RANK``.
    """

    def __init__(self, device: str = "cpu"):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world_size > 1
        self.device = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def average_gradients(self, module: nn.Module) -> None:
        """All-reduce-average the gradients of a module that DDP does not wrap.

        The flow is used through ``sample``/``bits_per_dim``, not ``forward``, so DDP's hooks
        cannot cover it.
        """
        if not self.enabled:
            return
        for param in module.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world_size


class CsvLog:
    """Append rows to a CSV file (header written once); survives resume.

    A resumed log keeps the header it was started with: columns added since are not written.
    ``resumed_at=(column, last)`` drops the rows whose integer ``column`` is above ``last``:
    those a stopped run wrote after its last saved state, which the resumed run writes again.
    """

    def __init__(self, path: Path, columns: Iterable[str],
                 resumed_at: Optional[Tuple[str, int]] = None):
        self.path = path
        self.columns = list(columns)
        if path.exists() and path.stat().st_size:
            with open(path, newline="") as stream:
                rows = list(csv.reader(stream))
            self.columns = rows[0]
            if resumed_at is not None:
                self._drop_rows_after(rows, *resumed_at)
        else:
            with open(path, "w", newline="") as stream:
                csv.writer(stream).writerow(self.columns)

    def _drop_rows_after(self, rows: List[List[str]], column: str, last: int) -> None:
        if column not in self.columns:
            return
        index = self.columns.index(column)

        def after(row: List[str]) -> bool:
            value = row[index] if index < len(row) else ""
            return value.isdigit() and int(value) > last

        kept = [row for row in rows[1:] if not after(row)]
        if len(kept) < len(rows) - 1:
            with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as stream:
                csv.writer(stream).writerows([self.columns, *kept])

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as stream:
            csv.writer(stream).writerow([row.get(c, "") for c in self.columns])


def save_state(path: Path, state: Dict) -> None:
    """Atomic save of a resumable training state; an OSError names ``path``."""
    serialized = io.BytesIO()  # in memory: a failed write is then an OSError, not torch's
    torch.save(state, serialized)
    with atomic_write(path) as tmp:
        tmp.write_bytes(serialized.getbuffer())


def load_state(path: Path) -> Optional[Dict]:
    """Load a training state (None when there is none); CheckpointError names a bad file."""
    if not path.is_file():
        return None
    check_torch_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot read training state {path}: "
                              f"{type(exc).__name__}: {exc}") from exc


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset, desc: str, num_workers: int = 0) -> Dict:
    """Measure the mIoU of ``model`` (normalised NCHW -> logits) on a dataset's full frames.

    The classes and ignore index are the dataset's label set; the frames go to the model's
    device, read ahead by ``num_workers`` worker processes.
    """
    device = next(model.parameters()).device
    normalize = Normalize().to(device)
    metrics = SemanticMetrics(dataset.label_set.class_names, dataset.label_set.ignore_index)
    was_training = model.training
    model.eval()
    prepare_workers(num_workers)
    frames = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    for image, label in tqdm(frames, desc=desc, leave=False):
        logits = model(normalize(image[None].to(device)))
        metrics.update(logits.argmax(1)[0].cpu().numpy(), label.numpy())
    model.train(was_training)
    return metrics.summary()


class Timer:
    def __init__(self, elapsed: float = 0.0):
        self.start = time.time() - elapsed

    @property
    def elapsed(self) -> float:
        return time.time() - self.start
