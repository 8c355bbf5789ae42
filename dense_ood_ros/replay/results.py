"""What a replay finds, frame by frame: outcomes, latency, labels matched, metrics.

Both replay modes feed one :class:`ReplayResults`, which accumulates metrics through
``dense-ood-evaluate``'s own :func:`~dense_ood_ros.evaluation.update_metrics`, so the numbers
mean exactly what the evaluator's mean, and adds what a drive needs: per-frame latency,
frames that failed or were never answered, unmatched labels and the frames with the highest
anomaly score (:mod:`dense_ood_ros.replay.report` writes them).
"""

import argparse
import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from dense_ood_ros.detector import DetectorOutput
from dense_ood_ros.evaluate import build_report
from dense_ood_ros.evaluation import AnomalyLabelSpec, Evaluation, make_evaluation, update_metrics
from dense_ood_ros.metrics import anomaly_target
from dense_ood_ros.replay.bag_reader import stamp_text
from dense_ood_ros.replay.ground_truth import LabelSource

#: Per-frame score statistic that ranks frames and is plotted over time.
SCORE_PERCENTILE = 99.0
#: Frame outcomes in frames.csv.
OK, FAILED, DROPPED, PARTIAL = "ok", "failed", "dropped", "partial"


@dataclass
class FrameRecord:
    """One camera frame of the replay, as frames.csv lists it."""

    index: int
    stamp_ns: int
    status: str
    latency_s: Optional[float] = None
    score_p99: Optional[float] = None
    score_mean: Optional[float] = None
    anomaly_pixels: Optional[int] = None  # labelled anomaly pixels (None: no anomaly label)
    labels: str = ""  # label kinds matched, e.g. "anomaly+semantic"
    detail: str = ""


@dataclass(order=True)
class _TopFrame:
    """A frame among the highest-scoring: what its overlay is drawn from, at the end."""

    score: float
    index: int  # minus the frame index: of equal scores, the earlier frame ranks higher
    stamp_ns: int = field(compare=False)
    image: np.ndarray = field(compare=False)
    output: DetectorOutput = field(compare=False)
    labels: Dict[str, Optional[np.ndarray]] = field(compare=False)


def percentile_value(values: np.ndarray, q: float) -> float:
    """Return the ``q``-th percentile of ``values``, as ``np.percentile`` (linear) computes it.

    Through a partial sort of the two neighbouring order statistics: several times faster
    than ``np.percentile`` on a camera frame.
    """
    flat = np.asarray(values).ravel()
    position = q / 100.0 * (flat.size - 1)
    low = int(math.floor(position))
    high = min(low + 1, flat.size - 1)
    parted = np.partition(flat, low)  # everything after ``low`` is >= its value
    below = float(parted[low])
    above = float(parted[high:].min()) if high > low else below
    return below + (above - below) * (position - low)


class ReplayResults:
    """Per-frame accumulation of a replay -> metrics.json, metrics.md, plots, frames.csv.

    ``evaluation``'s accumulators get the frames that have ground truth, through
    :func:`~dense_ood_ros.evaluation.update_metrics`; every frame gets a :class:`FrameRecord`.
    What was wrong with the bag beyond single frames (its ``bag_notes``, the label sources'
    faults and duplicate stamps) is recorded as problems first.
    """

    def __init__(self, evaluation: Evaluation, label_spec: AnomalyLabelSpec,
                 sources: Sequence[LabelSource], num_overlays: int = 4,
                 bag_notes: Sequence[str] = ()):
        self.evaluation = evaluation
        self.label_spec = label_spec
        self.sources = {source.kind: source for source in sources}
        self.num_overlays = num_overlays
        self.records: List[FrameRecord] = []
        self.unmatched = dict.fromkeys(self.sources, 0)
        self.failed_by_reason: Dict[str, int] = {}
        self._top: List[_TopFrame] = []
        for note in bag_notes:
            if "unfinished" in note:
                self.problem(f"the bag is an unfinished recording: {note}")
        for source in sources:
            if getattr(source, "fault", None):
                self.problem(f"{source.kind} labels read only up to a fault: {source.fault}")
            if getattr(source, "duplicates", 0):
                self.problem(f"{source.kind} label topic has {source.duplicates} duplicate "
                             "stamps (the first of each is used)")

    @classmethod
    def evaluated_as(cls, kinds: Iterable[str], score_names: Sequence[str],
                     class_names: Sequence[str], semantic_ignore: Optional[int],
                     label_spec: AnomalyLabelSpec, sources: Sequence[LabelSource],
                     num_overlays: int = 4, bag_notes: Sequence[str] = (),
                     problems: Sequence[str] = ()) -> "ReplayResults":
        """Return results whose metrics are ``dense-ood-evaluate``'s for these kinds and scores.

        ``problems``: found before the first frame (they come first in the report).
        """
        evaluation = make_evaluation(kinds, score_names, class_names, semantic_ignore)
        evaluation.problems += problems
        return cls(evaluation, label_spec, sources, num_overlays, bag_notes)

    def problem(self, text: str) -> None:
        """Record a problem line (shown in metrics.json and on stderr)."""
        self.evaluation.problems.append(text)

    def add_failed(self, index: int, stamp_ns: int, reason: str, message: str) -> None:
        """Record a frame that could not be run (``reason``: e.g. a BadImage reason)."""
        self.failed_by_reason[reason] = self.failed_by_reason.get(reason, 0) + 1
        self.records.append(FrameRecord(index, stamp_ns, FAILED, detail=f"{reason}: {message}"))
        self.problem(message)

    def add_unanswered(self, index: int, stamp_ns: int, status: str, detail: str) -> None:
        """Record a frame the live node never answered (``DROPPED``) or answered in part."""
        self.records.append(FrameRecord(index, stamp_ns, status, detail=detail))

    def add_frame(self, index: int, stamp_ns: int, output: DetectorOutput, latency_s: float,
                  picture: Callable[[], np.ndarray]) -> None:
        """Record a frame the detector answered: look up its labels, accumulate, rank it.

        ``picture`` returns the input frame (RGB), called only for a frame that enters the
        top ``num_overlays``. A label that cannot be read is a problem: the frame counts as
        run, not evaluated.
        """
        size = output.labels.shape
        score = output.score
        record = FrameRecord(index, stamp_ns, OK, latency_s, percentile_value(score,
                                                                              SCORE_PERCENTILE),
                             float(score.mean()))
        self.records.append(record)
        labels: Dict[str, Optional[np.ndarray]] = {}
        try:
            for kind, source in self.sources.items():
                labels[kind] = source.lookup(index, stamp_ns, size)
                if labels[kind] is None:
                    self.unmatched[kind] += 1
            anomaly, semantic = labels.get("anomaly"), labels.get("semantic")
            if anomaly is not None or semantic is not None:
                update_metrics(self.evaluation, output, self.label_spec, anomaly, semantic)
        except ValueError as exc:
            record.detail = f"not evaluated: {exc}"
            self.problem(f"frame {index} (stamp {stamp_text(stamp_ns)}): {exc}")
            return
        record.labels = "+".join(kind for kind, label in labels.items() if label is not None)
        if labels.get("anomaly") is not None:
            target, _ = anomaly_target(labels["anomaly"], self.label_spec.anomaly_values,
                                       self.label_spec.ignore_values)
            record.anomaly_pixels = int(target.sum())
        self._rank(record, output, picture, labels)

    def _rank(self, record: FrameRecord, output: DetectorOutput,
              picture: Callable[[], np.ndarray], labels: Dict[str, Optional[np.ndarray]]) -> None:
        if self.num_overlays <= 0:
            return
        if len(self._top) >= self.num_overlays and record.score_p99 <= self._top[0].score:
            return
        # the overlay is drawn at the end, for the frames still among the highest then
        entry = _TopFrame(record.score_p99, -record.index, record.stamp_ns, picture(), output,
                          labels)
        if len(self._top) < self.num_overlays:
            heapq.heappush(self._top, entry)
        else:
            heapq.heapreplace(self._top, entry)

    # ----------------------------------------------------------------------- summary

    def counts(self) -> Dict[str, int]:
        statuses = [r.status for r in self.records]
        return {"frames": len(self.records), "processed": statuses.count(OK),
                "failed": statuses.count(FAILED), "dropped": statuses.count(DROPPED),
                "partial": statuses.count(PARTIAL), "evaluated": self.evaluation.frames}

    def latency_ms(self) -> Optional[Dict[str, float]]:
        latencies = [r.latency_s for r in self.records if r.latency_s is not None]
        if not latencies:
            return None
        ms = np.asarray(latencies) * 1000.0
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99),
                "mean": float(ms.mean()), "max": float(ms.max()), "frames": len(ms)}

    def label_summary(self) -> Dict[str, Dict[str, object]]:
        matched = {kind: sum(1 for r in self.records if kind in r.labels.split("+"))
                   for kind in self.sources}
        return {kind: {"source": source.description, "matched": matched[kind],
                       "unmatched": self.unmatched[kind]}
                for kind, source in self.sources.items()}

    def build(self, mode: str, info: Dict, replay: Dict, timing: Dict) -> Dict:
        """Return the metrics.json report: ``dense-ood-evaluate``'s plus replay and timing."""
        replay = dict(replay, **self.counts(), failed_by_reason=self.failed_by_reason,
                      labels=self.label_summary())
        timing = dict(timing, latency_ms=self.latency_ms())
        return dict(build_report(self.evaluation, mode, info), replay=replay, timing=timing)

    def top_frames(self) -> List[_TopFrame]:
        """Return the frames with the highest score p99, the highest first."""
        return sorted(self._top, reverse=True)

    def complete(self, stopped: Optional[str], notes: Sequence[str]) -> bool:
        """Whether nothing went wrong: every frame answered and evaluated as asked, bag whole."""
        counts = self.counts()
        return (stopped is None and counts["processed"] > 0
                and counts["processed"] == counts["frames"] and not self.evaluation.problems
                and not any("unfinished" in n for n in notes))


def run_info(args: argparse.Namespace, wanted: Dict[str, Tuple[str, str]], model: str,
             backend: str, input_size: Optional[Sequence[int]], score_names: Sequence[str],
             image_topic: str, complete: bool, stopped: Optional[str]) -> Dict:
    """Return the evaluator-compatible description of the run in metrics.json."""
    def source(kind):
        if kind not in wanted:
            return None
        how, where = wanted[kind]
        return f"{how} {where}"

    return {"complete": complete, "model": model, "backend": backend,
            "input_size": list(input_size) if input_size else None,
            "score_names": list(score_names), "images": f"{args.bag}:{image_topic}",
            "labels": source("anomaly"), "anomaly_values": list(args.anomaly_values),
            "ignore_values": list(args.ignore_values), "semantic_labels": source("semantic"),
            "semantic_ignore": args.semantic_ignore, "metric_mode": args.metric_mode,
            "stopped": stopped}
