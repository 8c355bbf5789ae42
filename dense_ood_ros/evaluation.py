"""One evaluation run's accumulators, fed one frame at a time.

:func:`update_metrics` adds a frame's detector output and labels to an :class:`Evaluation`;
``dense-ood-evaluate`` (:mod:`dense_ood_ros.evaluate`) and bag replay
(:mod:`dense_ood_ros.replay.results`) both accumulate through it, so their numbers mean the
same, and both aggregate and save through :func:`dense_ood_ros.evaluate.build_report` and
:func:`~dense_ood_ros.evaluate.write_results`.
"""

from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from dense_ood_ros.detector import DetectorOutput
from dense_ood_ros.metrics import AnomalyMetrics, SemanticMetrics, anomaly_target


@dataclass
class AnomalyLabelSpec:
    """Meaning of anomaly label values: listed anomalies, listed ignored, anything else inlier."""

    anomaly_values: Tuple[int, ...] = (1,)
    ignore_values: Tuple[int, ...] = (255,)


@dataclass
class Evaluation:
    """Accumulators of one run plus the frames evaluated and the problems met, by file name."""

    anomaly: Optional[AnomalyMetrics]
    semantic: Optional[SemanticMetrics]
    frames: int = 0
    pixels: int = 0
    problems: List[str] = field(default_factory=list)
    stopped: Optional[str] = None  # why the run ended before the last frame


def make_evaluation(kinds: Iterable[str], score_names: Sequence[str],
                    class_names: Sequence[str], semantic_ignore: int) -> Evaluation:
    """Return the accumulators of the label kinds evaluated ("anomaly", "semantic")."""
    return Evaluation(
        anomaly=AnomalyMetrics(score_names) if "anomaly" in kinds else None,
        semantic=SemanticMetrics(class_names, semantic_ignore) if "semantic" in kinds else None)


def update_metrics(evaluation: Evaluation, output: DetectorOutput, label_spec: AnomalyLabelSpec,
                   anomaly_label: Optional[np.ndarray] = None,
                   semantic_label: Optional[np.ndarray] = None) -> None:
    """Add one frame's detector output and labels to the accumulators.

    The labels are at the output's resolution.
    """
    for kind, label in (("anomaly", anomaly_label), ("semantic", semantic_label)):
        if label is not None and label.shape != output.labels.shape:
            raise ValueError(f"{kind} label size {label.shape[1]}x{label.shape[0]} != image size "
                             f"{output.labels.shape[1]}x{output.labels.shape[0]}")
    # Each update checks its input before counting; the semantic one (label values) goes first
    # as it is the likelier to reject a frame.
    if evaluation.semantic is not None and semantic_label is not None:
        evaluation.semantic.update(output.labels, semantic_label)
    if evaluation.anomaly is not None and anomaly_label is not None:
        anomaly, valid = anomaly_target(anomaly_label, label_spec.anomaly_values,
                                        label_spec.ignore_values)
        evaluation.anomaly.update(output.scores, anomaly, valid)
    evaluation.frames += 1
    evaluation.pixels += output.labels.size
