"""Segmentation and pixel anomaly metrics as per-frame accumulation -> aggregation -> save/load.

:class:`SemanticMetrics` accumulates a confusion matrix (per-class IoU, mIoU, pixel accuracy).
:class:`AnomalyMetrics` accumulates, per anomaly score, streaming histograms of anomaly
(positive) and inlier (negative) pixels, pooled over a dataset in bounded memory, and
aggregates them to average precision, FPR at 95% TPR and AUROC (see :data:`METRIC_MODES`).
"""

import json
import math
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

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
        self.confusion += np.bincount(target * num + predicted,
                                      minlength=num * num).reshape(num, num)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both labels and predictions."""
        true_positive = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            return true_positive / union

    def summary(self) -> Dict[str, object]:
        """Return mIoU (over classes present), pixel accuracy and per-class IoU, in percent."""
        iou = self.iou()
        total = self.confusion.sum()
        return {
            "miou": float(np.nanmean(iou) * 100.0),
            "pixel_accuracy": (float(np.trace(self.confusion) / total * 100.0) if total
                               else float("nan")),
            "per_class_iou": {name: float(v * 100.0) for name, v in zip(self.class_names, iou)},
            "pixels": int(total),
        }

    def merge(self, other: "SemanticMetrics") -> None:
        """Add another accumulator over the same classes (e.g. another part of the dataset)."""
        if other.class_names != self.class_names or other.ignore_index != self.ignore_index:
            raise ValueError("cannot merge semantic metrics over "
                             "different classes or ignore labels")
        self.confusion += other.confusion

    def save(self, path: Union[str, Path]) -> None:
        """Save the raw accumulator (JSON) so runs can be merged or re-aggregated later."""
        Path(path).write_text(json.dumps({"class_names": self.class_names,
                                          "ignore_index": self.ignore_index,
                                          "confusion": self.confusion.tolist()}))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "SemanticMetrics":
        data = json.loads(Path(path).read_text())
        metrics = cls(data["class_names"], data["ignore_index"])
        metrics.confusion = np.asarray(data["confusion"], dtype=np.int64)
        return metrics


#: How :class:`AnomalyMetrics` turns its histograms into curves and numbers.
#:
#: Both modes share the definitions of SegmentMeIfYouCan's ``curves_from_cmats``
#: (``road_anomaly_benchmark/metrics/pixel_classification_curves.py``), which equal
#: scikit-learn's: the curve starts at (TP, FP) = (0, 0) with precision 1; AP is the step-wise
#: sum ``sum_k (R_k - R_{k-1}) * P_k`` (``average_precision_score``); AUROC is the trapezoidal
#: area under the ROC curve (``roc_auc_score``); FPR95 is the FPR at the first threshold, from
#: high to low, where TPR >= 0.95. The modes differ in where the curve has its points:
#:
#: ``"sklearn"``: at every edge of the fine histogram, approximating the exact values of
#: scikit-learn's functions on the raw pixels; the summary adds guaranteed bounds on the
#: difference (``*_max_error``, see :meth:`AnomalyMetrics.summary`).
#:
#: ``"smiyc"``: at SegmentMeIfYouCan's ``PixBinaryClass-uniThr`` thresholds, 4096 uniform
#: bins on [0, 1] (``binary_confusion_matrix(..., bin_strategy='uniform')``), reproducing
#: that evaluator exactly for scores in [0, 1] (such as jsd and msp). Two deliberate
#: differences: scores within 1e-6 outside [0, 1] (float round-off) are clipped into the end
#: bins, where ``np.histogram(range=(0, 1))`` would drop them below every threshold; and a
#: score with values beyond that (maxlogit, entropy) is first mapped linearly from its
#: observed [min, max] to [0, 1], as the evaluator only accepts scores in [0, 1]. (Its other
#: configuration, ``PixBinaryClass``, uses per-frame percentile bins, which need memory per
#: frame; it approximates the same exact values that "sklearn" mode approximates.)
METRIC_MODES = ("sklearn", "smiyc")
SMIYC_NUM_BINS = 4096
#: Float round-off tolerance around [0, 1] for "smiyc" mode.
UNIT_RANGE_TOLERANCE = 1e-6


def anomaly_target(label: np.ndarray, anomaly_values: Iterable[int],
                   ignore_values: Iterable[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Split a label image into (anomaly mask, valid mask): every value not listed is an inlier."""
    anomaly = np.isin(label, list(anomaly_values))
    valid = ~np.isin(label, list(ignore_values))
    return anomaly & valid, valid


class ScoreHistogram:
    """Inlier and anomaly pixel counts of one score on a power-of-two lattice of bins.

    Bin ``j`` holds the scores in ``[j * 2**exponent, (j + 1) * 2**exponent)``; a window of
    ``num_bins`` consecutive bins is stored (``counts[0]`` inliers, ``counts[1]`` anomalies).
    The exponent is always the smallest one whose window can hold every value seen so far,
    so the bin width is at most (max - min) / (num_bins / 2), e.g. <= 2**-16 for scores in
    [0, 1]. A wider range coarsens the histogram by merging neighbouring bins, which is exact
    on the lattice (``floor(x / 2**(e+k)) == floor(floor(x / 2**e) / 2**k)``): the counts
    depend only on the set of values, not on their order or on how accumulators were merged.
    Pixels are ranked exactly across bins; within a bin they count as tied, which is the only
    source of error (bounded in :meth:`AnomalyMetrics.summary`).
    """

    def __init__(self, num_bins: int = 1 << 17):
        self.num_bins = num_bins
        self.exponent: Optional[int] = None
        self.offset = 0  # lattice index of counts[:, 0]
        self.counts = np.zeros((2, num_bins), dtype=np.int64)
        self.min_value = math.inf
        self.max_value = -math.inf

    def add(self, scores: np.ndarray, anomaly: np.ndarray) -> None:
        """Count 1-D ``scores`` (finite) of pixels labelled ``anomaly`` (bool, same length)."""
        values = np.asarray(scores, dtype=np.float64)
        anomaly = np.asarray(anomaly, dtype=bool)
        if values.size == 0:
            return
        if not np.isfinite(values).all():
            raise ValueError("anomaly scores must be finite")
        self._fit(float(values.min()), float(values.max()))
        positions = self._lattice(values) - self.offset
        for row, selection in ((0, ~anomaly), (1, anomaly)):
            self.counts[row] += np.bincount(positions[selection], minlength=self.num_bins)

    def merge(self, other: "ScoreHistogram") -> None:
        """Add the counts of another histogram with the same ``num_bins``."""
        if other.num_bins != self.num_bins:
            raise ValueError("cannot merge histograms of "
                             f"{other.num_bins} and {self.num_bins} bins")
        if other.exponent is None:
            return
        self._fit(other.min_value, other.max_value)
        occupied = np.flatnonzero(other.counts.any(axis=0))
        positions = ((other.offset + occupied) >> (self.exponent - other.exponent)) - self.offset
        for row in (0, 1):
            np.add.at(self.counts[row], positions, other.counts[row, occupied])

    def bins(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the non-empty bins in ascending score order.

        As (lower edges, inlier counts, anomaly counts).
        """
        occupied = np.flatnonzero(self.counts.any(axis=0))
        if self.exponent is None:
            return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
        edges = np.ldexp((self.offset + occupied).astype(np.float64), self.exponent)
        return edges, self.counts[0, occupied], self.counts[1, occupied]

    @property
    def bin_width(self) -> float:
        return math.ldexp(1.0, self.exponent) if self.exponent is not None else float("nan")

    def _lattice(self, values: np.ndarray) -> np.ndarray:
        return np.floor(np.ldexp(values, -self.exponent)).astype(np.int64)

    def _exponent_for(self, low: float, high: float) -> int:
        """Smallest exponent whose window holds [low, high] and keeps lattice indices < 2**53."""
        largest = max(abs(low), abs(high))
        exponent = math.frexp(largest)[1] - 53
        if high > low:
            exponent = max(exponent, math.floor(math.log2((high - low) / self.num_bins)) - 2)
        while (math.floor(math.ldexp(high, -exponent)) - math.floor(math.ldexp(low, -exponent))
               >= self.num_bins):
            exponent += 1
        return exponent

    def _fit(self, low: float, high: float) -> None:
        """Coarsen and/or move the window so that it holds [low, high] too."""
        self.min_value, self.max_value = min(self.min_value, low), max(self.max_value, high)
        exponent = self._exponent_for(self.min_value, self.max_value)
        first = math.floor(math.ldexp(self.min_value, -exponent))
        last = math.floor(math.ldexp(self.max_value, -exponent))
        if self.exponent is None:
            self.exponent, self.offset = (exponent,
                                          first - (self.num_bins - (last - first + 1)) // 2)
            return
        if (exponent == self.exponent and self.offset <= first
                and last < self.offset + self.num_bins):
            return
        occupied = np.flatnonzero(self.counts.any(axis=0))
        old_indices, old_counts = self.offset + occupied, self.counts[:, occupied]
        shift = exponent - self.exponent
        self.exponent = exponent
        self.offset = first - (self.num_bins - (last - first + 1)) // 2
        self.counts = np.zeros_like(self.counts)
        positions = (old_indices >> shift) - self.offset
        for row in (0, 1):
            np.add.at(self.counts[row], positions, old_counts[row])


def _curve_counts(negatives: np.ndarray, positives: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative (TP, FP) from the highest bin down, starting with the (0, 0) point."""
    tp = np.concatenate([[0], np.cumsum(positives[::-1])])
    fp = np.concatenate([[0], np.cumsum(negatives[::-1])])
    return tp, fp


def _rates(tp: np.ndarray, fp: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TPR = recall, FPR, precision) along a curve; precision is 1 where nothing is predicted."""
    predicted = tp + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / tp[-1], fp / fp[-1], np.where(predicted > 0, tp / np.maximum(predicted, 1),
                                                  1.0)


def _smiyc_bins(histogram: ScoreHistogram) -> Tuple[np.ndarray, np.ndarray, np.ndarray,
                                                    Tuple[float, float]]:
    """Re-bin onto SegmentMeIfYouCan's 4096 uniform thresholds; returns edges, counts and range."""
    edges, negatives, positives = histogram.bins()
    low, high = histogram.min_value, histogram.max_value
    if histogram.exponent is None or (low >= -UNIT_RANGE_TOLERANCE
                                      and high <= 1.0 + UNIT_RANGE_TOLERANCE):
        low, high = 0.0, 1.0
    span = (high - low) or 1.0
    target = np.clip(np.floor((edges - low) / span * SMIYC_NUM_BINS), 0,
                     SMIYC_NUM_BINS - 1).astype(np.int64)
    coarse_negatives = np.bincount(target, negatives, minlength=SMIYC_NUM_BINS).astype(np.int64)
    coarse_positives = np.bincount(target, positives, minlength=SMIYC_NUM_BINS).astype(np.int64)
    coarse_edges = low + span * np.arange(SMIYC_NUM_BINS) / SMIYC_NUM_BINS
    return coarse_edges, coarse_negatives, coarse_positives, (low, high)


class AnomalyMetrics:
    """Pixel-level anomaly detection metrics for several scores, pooled over a dataset.

    Per frame, :meth:`update` adds the scores of valid pixels to one :class:`ScoreHistogram`
    per score (a few MB each, however many frames); :meth:`summary` aggregates them to AP
    (of the anomaly class), FPR at 95% TPR and AUROC, all fractions in [0, 1], in one of
    :data:`METRIC_MODES`; :meth:`save` / :meth:`load` / :meth:`merge` keep the raw counts.
    """

    def __init__(self, score_names: Sequence[str], num_bins: int = 1 << 17):
        if not score_names:
            raise ValueError("at least one score name is needed")
        self.score_names = list(score_names)
        self.histograms = {name: ScoreHistogram(num_bins) for name in self.score_names}

    def update(self, scores: Mapping[str, np.ndarray], anomaly: np.ndarray,
               valid: Optional[np.ndarray] = None) -> None:
        """Add one frame: score maps by name, anomaly mask and optional valid mask.

        The masks are bool, of the score maps' shape.
        """
        anomaly = np.asarray(anomaly, dtype=bool)
        valid = np.ones_like(anomaly) if valid is None else np.asarray(valid, dtype=bool)
        if valid.shape != anomaly.shape:
            raise ValueError(f"valid mask shape {valid.shape} != "
                             f"anomaly mask shape {anomaly.shape}")
        selected = {}
        for name in self.score_names:  # check everything before counting anything
            if name not in scores:
                raise ValueError(f"score {name!r} missing from this frame (got {sorted(scores)})")
            score = np.asarray(scores[name])
            if score.shape != anomaly.shape:
                raise ValueError(f"score {name!r} shape {score.shape} "
                                 f"!= label shape {anomaly.shape}")
            selected[name] = score[valid]
            if not np.isfinite(selected[name]).all():
                raise ValueError(f"score {name!r} has non-finite values")
        for name, values in selected.items():
            self.histograms[name].add(values, anomaly[valid])

    def merge(self, other: "AnomalyMetrics") -> None:
        """Add another accumulator over the same scores (e.g. another part of the dataset)."""
        if other.score_names != self.score_names:
            raise ValueError("cannot merge metrics of scores "
                             f"{other.score_names} into {self.score_names}")
        for name in self.score_names:
            self.histograms[name].merge(other.histograms[name])

    def curves(self, name: str, mode: str = "sklearn") -> Dict[str, np.ndarray]:
        """ROC and PR curve points of one score, thresholds from high to low.

        ``thresholds[k]`` is the lowest score predicted anomalous at point k (``inf`` for the
        initial point, where nothing is).
        """
        edges, negatives, positives = self._bins(name, mode)[:3]
        tpr, fpr, precision = _rates(*_curve_counts(negatives, positives))
        return {"thresholds": np.concatenate([[np.inf], edges[::-1]]), "tpr": tpr, "fpr": fpr,
                "precision": precision, "recall": tpr}

    def summary(self, mode: str = "sklearn") -> Dict[str, object]:
        """Per score: AP, FPR95, AUROC and the score threshold at 95 % TPR.

        All are NaN without both anomaly and inlier pixels.

        In "sklearn" mode each score also gets the guaranteed maximum difference to
        scikit-learn's exact result on the raw scores, from pixels sharing a bin:
        ``auroc_max_error = sum_b p_b n_b / (2 P N)`` (tied pairs count one half);
        ``ap_max_error = sum_b p_b / P * (P_max,b - P_min,b)``, the precision range reachable
        inside bin b, ``P_max = (TP + p_b) / (TP + p_b + FP)`` and
        ``P_min = (TP + 1) / (TP + 1 + FP + n_b)`` with (TP, FP) counted above the bin;
        ``fpr95_max_error = n_b / N`` of the bin where TPR reaches 0.95.
        """
        if mode not in METRIC_MODES:
            raise ValueError(f"unknown metric mode {mode!r}; choose one of {list(METRIC_MODES)}")
        return {"mode": mode, "scores": {name: self._score_summary(name, mode)
                                         for name in self.score_names}}

    def _bins(self, name: str, mode: str):
        histogram = self.histograms[name]
        if mode == "smiyc":
            return _smiyc_bins(histogram)
        edges, negatives, positives = histogram.bins()
        return edges, negatives, positives, None

    def _score_summary(self, name: str, mode: str) -> Dict[str, object]:
        histogram = self.histograms[name]
        edges, negatives, positives, smiyc_range = self._bins(name, mode)
        tp, fp = _curve_counts(negatives, positives)
        num_pos, num_neg = int(tp[-1]), int(fp[-1])
        result: Dict[str, object] = {"positives": num_pos, "negatives": num_neg}
        if mode == "sklearn":
            result["bin_width"] = histogram.bin_width
        else:
            result["smiyc_range"] = list(smiyc_range)
        if num_pos == 0 or num_neg == 0:
            nan = float("nan")
            result.update(ap=nan, fpr95=nan, auroc=nan, threshold_tpr95=nan)
            return result
        tpr, fpr, precision = _rates(tp, fp)
        index95 = int(np.searchsorted(tpr, 0.95))
        result.update(ap=float(np.sum(np.diff(tpr) * precision[1:])),
                      fpr95=float(fpr[index95]),
                      # the score from which pixels are called anomalous at that point: a
                      # detector's mask threshold (the node's mask_threshold)
                      threshold_tpr95=float(edges[::-1][index95 - 1]),
                      auroc=float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0))
        if mode == "sklearn":
            result.update(self._error_bounds(tp, fp, index95))
        return result

    @staticmethod
    def _error_bounds(tp: np.ndarray, fp: np.ndarray, index95: int) -> Dict[str, float]:
        pos_in_bin, neg_in_bin = np.diff(tp), np.diff(fp)
        tp_above, fp_above = tp[:-1], fp[:-1]
        num_pos, num_neg = tp[-1], fp[-1]
        has_pos = pos_in_bin > 0
        p_max = (tp_above + pos_in_bin) / np.maximum(tp_above + pos_in_bin + fp_above, 1)
        p_min = (tp_above + 1) / (tp_above + 1 + fp_above + neg_in_bin)
        ap_error = np.sum(np.where(has_pos, pos_in_bin * (p_max - p_min), 0.0)) / num_pos
        return {"ap_max_error": float(ap_error),
                "fpr95_max_error": float(neg_in_bin[index95 - 1] / num_neg),
                "auroc_max_error": float(np.sum(pos_in_bin * neg_in_bin)
                                         / (2.0 * num_pos * num_neg))}

    def save(self, path: Union[str, Path]) -> None:
        """Save the raw histograms (compressed ``.npz``, no pickles).

        They are for merging or re-aggregation.
        """
        meta = {"score_names": self.score_names, "histograms": {
            name: {"num_bins": h.num_bins, "exponent": h.exponent, "offset": h.offset,
                   "min_value": h.min_value, "max_value": h.max_value}
            for name, h in self.histograms.items()}}
        arrays = {f"counts_{index}": h.counts for index, h in enumerate(self.histograms.values())}
        with open(path, "wb") as stream:
            np.savez_compressed(stream, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "AnomalyMetrics":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            names = meta["score_names"]
            metrics = cls(names, meta["histograms"][names[0]]["num_bins"])
            for index, name in enumerate(names):
                histogram, state = metrics.histograms[name], meta["histograms"][name]
                histogram.exponent, histogram.offset = state["exponent"], state["offset"]
                histogram.min_value, histogram.max_value = state["min_value"], state["max_value"]
                histogram.counts = data[f"counts_{index}"].astype(np.int64)
        return metrics
