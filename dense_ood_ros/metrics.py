"""Segmentation metrics as per-frame accumulation -> aggregation -> save/load.

:class:`SemanticMetrics` accumulates a confusion matrix (per-class IoU, mIoU, pixel accuracy).
"""

import json
from pathlib import Path
from typing import Dict, Sequence, Union

import numpy as np


class SemanticMetrics:
    """Confusion-matrix accumulator for per-class IoU and mIoU; ``ignore_index`` is skipped."""

    def __init__(self, class_names: Sequence[str], ignore_index: int):
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.confusion = np.zeros((len(self.class_names),) * 2, dtype=np.int64)

    def update(self, predicted: np.ndarray, target: np.ndarray) -> None:
        """Add one frame (or batch): predicted and target labels of the same shape."""
        if predicted.shape != target.shape:
            raise ValueError(f"prediction shape {predicted.shape} != label shape {target.shape}")
        num = len(self.class_names)
        valid = target != self.ignore_index
        target = target[valid].astype(np.int64)
        if target.size and target.max() >= num:
            raise ValueError(f"label value {target.max()} is neither a class (< {num}) "
                             f"nor the ignore label {self.ignore_index}")
        predicted = predicted[valid].astype(np.int64)
        self.confusion += np.bincount(target * num + predicted, minlength=num * num).reshape(num, num)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both labels and predictions."""
        true_positive = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            return true_positive / union

    def summary(self) -> Dict[str, object]:
        """mIoU (over classes present), pixel accuracy and per-class IoU, in percent."""
        iou = self.iou()
        total = self.confusion.sum()
        return {
            "miou": float(np.nanmean(iou) * 100.0),
            "pixel_accuracy": float(np.trace(self.confusion) / total * 100.0) if total else float("nan"),
            "per_class_iou": {name: float(v * 100.0) for name, v in zip(self.class_names, iou)},
            "pixels": int(total),
        }

    def save(self, path: Union[str, Path]) -> None:
        """Save the raw accumulator (JSON) so runs can be merged or re-aggregated later."""
        Path(path).write_text(json.dumps({"class_names": self.class_names, "ignore_index": self.ignore_index,
                                          "confusion": self.confusion.tolist()}))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "SemanticMetrics":
        data = json.loads(Path(path).read_text())
        metrics = cls(data["class_names"], data["ignore_index"])
        metrics.confusion = np.asarray(data["confusion"], dtype=np.int64)
        return metrics
