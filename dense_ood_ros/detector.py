"""Detector = pre-processing -> backend -> post-processing, one frame at a time.

Used alike by the ROS node, bag replay and the evaluator. Stages:
encode (check + resize to the backend's input size) -> infer (backend) -> decode (back to
the frame's size).
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from dense_ood_ros.backends import Backend, make_backend
from dense_ood_ros.label_set import LabelSet
from dense_ood_ros.preprocessing import check_rgb_frame, resize_frame, resize_outputs


@dataclass
class DetectorOutput:
    """Per-pixel results at the input frame's resolution."""

    labels: np.ndarray  # uint8 HxW class indices
    scores: Dict[str, np.ndarray]  # score name -> float32 HxW, higher = more anomalous

    @property
    def score(self) -> np.ndarray:
        """Return the first (primary) anomaly score."""
        return next(iter(self.scores.values()))


class Detector:
    """Turns RGB uint8 HxWx3 frames into class labels and anomaly scores."""

    def __init__(self, backend: Backend):
        self.backend = backend
        #: Seconds the backend's ``infer`` took on the latest frame (the rest of a call is
        #: resizing and copying: what the node profiles as its own work).
        self.last_inference_s = 0.0

    @classmethod
    def from_model(cls, model_path: Union[str, Path], backend: str = "torch",
                   score_names: Sequence[str] = ("jsd",),
                   input_size: Optional[Tuple[int, int]] = None, **backend_options) -> "Detector":
        """Build a detector for a model file.

        ``backend_options`` go to :func:`dense_ood_ros.backends.make_backend` (precision,
        status...).
        """
        return cls(make_backend(backend, model_path, score_names, input_size, **backend_options))

    @property
    def class_names(self) -> Sequence[str]:
        return self.backend.class_names

    @property
    def label_set(self) -> LabelSet:
        """The model file's class names, colours and ignore index."""
        return self.backend.label_set

    def __call__(self, frame: np.ndarray,
                 output_size: Optional[Tuple[int, int]] = None) -> DetectorOutput:
        """Run one RGB frame; outputs at ``output_size`` (height, width), default the frame's.

        ``output_size=detector.backend.input_size`` skips the upsampling (network resolution).
        """
        check_rgb_frame(frame)
        batch = resize_frame(frame, self.backend.input_size)[None]
        started = time.perf_counter()
        labels, scores = self.backend.infer(np.ascontiguousarray(batch))
        self.last_inference_s = time.perf_counter() - started
        out_labels, out_scores = resize_outputs(labels[0], scores[0],
                                                output_size or frame.shape[:2])
        return DetectorOutput(out_labels, dict(zip(self.backend.score_names, out_scores)))
