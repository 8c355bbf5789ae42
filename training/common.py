"""Shared training machinery: distributed setup, resumable state, CSV logs, evaluation."""

import csv
import os
import random
import time
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dense_ood_ros.classes import CAMVID_CLASSES, IGNORE_INDEX
from dense_ood_ros.metrics import SemanticMetrics
from dense_ood_ros.preprocessing import Normalize


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class DistributedContext:
    """Rank/world size from torchrun's environment; a single process when absent."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        self.device = torch.device(
            f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def average_gradients(self, module: nn.Module) -> None:
        """All-reduce-average the gradients of a module that DDP does not wrap (the flow is used
        through ``sample``/``bits_per_dim``, not ``forward``, so DDP's hooks cannot cover it)."""
        if not self.enabled:
            return
        for param in module.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world_size


class CsvLog:
    """Append rows to a CSV file (header written once); survives resume.

    A resumed log keeps the header it was started with: columns added since are not written.
    """

    def __init__(self, path: Path, columns: Iterable[str]):
        self.path = path
        self.columns = list(columns)
        if path.exists() and path.stat().st_size:
            with open(path, newline="") as stream:
                self.columns = next(csv.reader(stream))
        else:
            with open(path, "w", newline="") as stream:
                csv.writer(stream).writerow(self.columns)

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as stream:
            csv.writer(stream).writerow([row.get(c, "") for c in self.columns])


def save_state(path: Path, state: Dict) -> None:
    """Atomic save of a resumable training state."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(path: Path) -> Optional[Dict]:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset, desc: str) -> Dict:
    """mIoU of ``model`` (normalised NCHW -> logits) on a CamVid-style dataset, full frames."""
    normalize = Normalize()
    metrics = SemanticMetrics(CAMVID_CLASSES, IGNORE_INDEX)
    was_training = model.training
    model.eval()
    for index in tqdm(range(len(dataset)), desc=desc, leave=False):
        image, label = dataset[index]
        logits = model(normalize(image[None]))
        metrics.update(logits.argmax(1)[0].numpy(), label.numpy())
    model.train(was_training)
    return metrics.summary()


class Timer:
    def __init__(self, elapsed: float = 0.0):
        self.start = time.time() - elapsed

    @property
    def elapsed(self) -> float:
        return time.time() - self.start
