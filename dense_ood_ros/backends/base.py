"""The one backend interface used by the detector node, the evaluator and the benchmark."""

from abc import ABC, abstractmethod
from typing import Sequence, Tuple

import numpy as np


class Backend(ABC):
    """Runs :class:`dense_ood_ros.graph.InferenceGraph` (or its exported form).

    Attributes set by every implementation:
      ``name``: backend name ("torch", "onnxruntime", ...);
      ``input_size``: (height, width) the graph expects;
      ``class_names``: semantic classes, index = label value;
      ``score_names``: the anomaly scores returned, in order.
    """

    name: str
    input_size: Tuple[int, int]
    class_names: Sequence[str]
    score_names: Sequence[str]

    @abstractmethod
    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (N, H, W, 3) at ``input_size`` -> labels uint8 (N, H, W), scores float32 (N, S, H, W)."""

    def describe(self) -> str:
        """One line for logs: backend, device/precision details."""
        return self.name
