"""Bag replay evaluation, the part without ROS: ground truth, accounting, reports and plots.

``dense-ood-replay`` (:mod:`dense_ood_ros.ros.replay`) runs the frames of a bag through the
detector node's own code (offline) or through a running node over DDS (``--live``); both
feed one :class:`ReplayResults`, which accumulates metrics through ``dense-ood-evaluate``'s
own :func:`~dense_ood_ros.evaluate.update_metrics` and writes them with its
:func:`~dense_ood_ros.evaluate.write_results`, so the numbers mean exactly what the
evaluator's mean, and adds what a drive needs: per-frame latency, frames that failed or
were never answered, unmatched labels, the anomaly score over time and the frames with the
highest anomaly score.

Ground truth for a frame comes from a label topic of the bag (:class:`TopicLabels`, matched
by header stamp within a tolerance) or a folder of label PNGs (:class:`FolderLabels`,
matched by index or by stamp). A frame without a label is counted as unmatched, never
dropped silently.
"""

import argparse
import csv
import heapq
import io
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np

from dense_ood_ros.bags import (CUSTOM_LABEL_TOPIC, IMAGE_TYPE, BagError, BagMessage, BagReader,
                                header_stamp_ns, remove_bag, stamp_text)
from dense_ood_ros.cli import (add_backend, add_input_size, add_model, add_out, add_scores,
                               command_parser, parse_ints)
from dense_ood_ros.detector import DetectorOutput
from dense_ood_ros.evaluate import (AnomalyLabelSpec, Evaluation, build_report, metric_sections,
                                    overlay, update_metrics, write_results)
from dense_ood_ros.io import (atomic_write, check_writable_folder, list_images, read_label,
                              write_rgb)
from dense_ood_ros.metrics import METRIC_MODES, AnomalyMetrics, SemanticMetrics, anomaly_target

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABEL_KINDS = ("anomaly", "semantic")
LABEL_MATCHES = ("index", "stamp")
RESULT_BAG = "result_bag"
#: Everything a replay writes into its output folder (``--overwrite`` removes these only).
PRODUCTS = ("metrics.json", "metrics.md", "pr_curve.png", "roc_curve.png",
            "score_over_time.png", "frames.csv", "overlays", "accumulators", RESULT_BAG,
            "node.log", "node_params.yaml")
#: Per-frame score statistic that ranks frames and is plotted over time.
SCORE_PERCENTILE = 99.0
#: Frame outcomes in frames.csv.
OK, FAILED, DROPPED, PARTIAL = "ok", "failed", "dropped", "partial"


# --------------------------------------------------------------------------- ground truth

class LabelSource:
    """Ground truth of one kind (anomaly or semantic) for the frames of a replay.

    :meth:`lookup` returns the label (uint8 HxW of the frame's size) of frame ``index`` with
    header stamp ``stamp_ns``, or None when there is none; ValueError naming the label (its
    file, or bag, topic and message index) for one that cannot be read or has another size.
    """

    kind: str
    description: str

    def lookup(self, index: int, stamp_ns: int, size: Tuple[int, int]) -> Optional[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (temporary files)."""


def parse_stamp(text: str) -> int:
    """``"1700000000.100000000"`` (sec.nanosec) or ``"1700000000100000000"`` (ns) -> ns."""
    match = re.fullmatch(r"(\d+)(?:\.(\d{1,9}))?", text)
    if match is None:
        raise ValueError(f"{text!r} is not a stamp (seconds.nanoseconds or nanoseconds)")
    if match.group(2) is None:
        return int(match.group(1))
    return int(match.group(1)) * 1_000_000_000 + int(match.group(2).ljust(9, "0"))


class FolderLabels(LabelSource):
    """Label PNGs of a folder, matched to frames by index (sorted names) or by stamp (stem)."""

    def __init__(self, folder: Path, kind: str, match: str = "index",
                 tolerance_ns: int = 0):
        if match not in LABEL_MATCHES:
            raise ValueError(f"unknown label match {match!r}; choose from {LABEL_MATCHES}")
        self.kind, self.match, self.tolerance_ns = kind, match, tolerance_ns
        self.paths = [p for p in list_images(folder, f"{kind} label") if p.suffix == ".png"]
        if not self.paths:
            raise ValueError(f"no PNG labels in {kind} label folder {folder}")
        self.description = f"folder {folder} (by {match})"
        if match == "stamp":
            stamps = []
            for path in self.paths:
                try:
                    stamps.append(parse_stamp(path.stem))
                except ValueError as exc:
                    raise ValueError(f"label file {path}: its name is not a stamp, as "
                                     f"--label-match stamp needs: {exc}") from None
            order = np.argsort(stamps, kind="stable")
            self.paths = [self.paths[i] for i in order]
            self._stamps = np.asarray(stamps, dtype=np.int64)[order]

    def lookup(self, index: int, stamp_ns: int, size: Tuple[int, int]) -> Optional[np.ndarray]:
        if self.match == "index":
            if index >= len(self.paths):
                return None
            return read_label(self.paths[index], size)
        position = nearest(self._stamps, stamp_ns, self.tolerance_ns)
        return None if position is None else read_label(self.paths[position], size)


def nearest(stamps: np.ndarray, stamp_ns: int, tolerance_ns: int) -> Optional[int]:
    """Position of the sorted ``stamps`` entry nearest ``stamp_ns``, if within the tolerance."""
    if not len(stamps):
        return None
    right = int(np.searchsorted(stamps, stamp_ns))
    candidates = [p for p in (right - 1, right) if 0 <= p < len(stamps)]
    best = min(candidates, key=lambda p: abs(int(stamps[p]) - stamp_ns))
    return best if abs(int(stamps[best]) - stamp_ns) <= tolerance_ns else None


#: (serialized label message, topic, index on the topic) -> label uint8 HxW.
LabelDecoder = Callable[[bytes, str, int], np.ndarray]


class TopicLabels(LabelSource):
    """Labels on a topic of the bag (mono8 sensor_msgs/Image), matched by header stamp.

    The topic is read once at the start: its messages go to a temporary file (so memory
    does not grow with the drive) and their stamps to an index; a lookup decodes the one
    message nearest the frame's stamp, if within ``tolerance_ns``. ``decode`` deserializes a
    message (rclpy, in :mod:`dense_ood_ros.ros.replay`). ``messages`` is how many were read;
    a bag fault while reading the topic is raised as BagError.
    """

    def __init__(self, bag: Path, topic: str, kind: str, tolerance_ns: int,
                 decode: LabelDecoder, copy: Optional[Callable[[BagMessage], None]] = None):
        self.kind, self.topic, self.bag, self.decode = kind, topic, bag, decode
        self.tolerance_ns = tolerance_ns
        self.description = f"topic {topic}"
        #: Why the topic could not be read to its end (a truncated or corrupt bag), or None.
        self.fault: Optional[str] = None
        self._store = tempfile.TemporaryFile(prefix="dense_ood_labels-")
        entries = []  # (stamp, offset, length, index)
        try:
            with BagReader(bag) as reader:
                reader.topic(topic, (IMAGE_TYPE,), f"{kind} label")
                try:
                    for message in reader.messages([topic]):
                        try:
                            stamp = header_stamp_ns(message.data, "the label message")
                        except ValueError as exc:
                            raise BagError(bag, str(exc), topic, message.index) from None
                        entries.append((stamp, self._store.tell(), len(message.data),
                                        message.index))
                        self._store.write(message.data)
                        if copy is not None:
                            copy(message)
                except BagError as exc:  # keep the labels before the fault
                    self.fault = str(exc)
        except BaseException:
            self._store.close()
            raise
        entries.sort()
        self.messages = len(entries)
        self._stamps = np.asarray([e[0] for e in entries], dtype=np.int64)
        self._entries = entries
        self.duplicates = int(len(self._stamps) - len(np.unique(self._stamps)))

    def lookup(self, index: int, stamp_ns: int, size: Tuple[int, int]) -> Optional[np.ndarray]:
        position = nearest(self._stamps, stamp_ns, self.tolerance_ns)
        if position is None:
            return None
        _, offset, length, message_index = self._entries[position]
        self._store.seek(offset)
        try:
            label = self.decode(self._store.read(length), self.topic, message_index)
        except Exception as exc:  # noqa: BLE001 - any fault of this message: name it
            raise BagError(self.bag, f"cannot read the {self.kind} label: {exc}", self.topic,
                           message_index) from None
        if label.shape != tuple(size):
            raise BagError(self.bag, f"{self.kind} label is {label.shape[1]}x{label.shape[0]}, "
                                     f"its frame {size[1]}x{size[0]}", self.topic, message_index)
        return label

    def close(self) -> None:
        self._store.close()


# --------------------------------------------------------------------------- accounting

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
    :func:`~dense_ood_ros.evaluate.update_metrics`; every frame gets a :class:`FrameRecord`.
    """

    def __init__(self, evaluation: Evaluation, label_spec: AnomalyLabelSpec,
                 sources: Sequence[LabelSource], num_overlays: int = 4):
        self.evaluation = evaluation
        self.label_spec = label_spec
        self.sources = {source.kind: source for source in sources}
        self.num_overlays = num_overlays
        self.records: List[FrameRecord] = []
        self.unmatched = dict.fromkeys(self.sources, 0)
        self.failed_by_reason: Dict[str, int] = {}
        self._top: List[_TopFrame] = []

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
        report = build_report(self.evaluation, mode, info)
        report["replay"] = dict(replay, **self.counts(), failed_by_reason=self.failed_by_reason,
                                labels=self.label_summary())
        report["timing"] = dict(timing, latency_ms=self.latency_ms())
        return report

    def write(self, out_dir: Path, mode: str, report: Dict) -> None:
        """Write every result file into ``out_dir`` (atomically, each)."""
        self.records.sort(key=lambda r: r.index)
        write_results(self.evaluation, out_dir, mode, {}, report, markdown_report(report))
        self._write_csv(out_dir / "frames.csv")
        plot_timeline(self.records, report, out_dir / "score_over_time.png")
        overlay_dir = out_dir / "overlays"
        overlay_dir.mkdir(exist_ok=True)
        for rank, entry in enumerate(sorted(self._top, reverse=True), start=1):
            picture = overlay(entry.image, entry.output, self.label_spec,
                              entry.labels.get("anomaly"), entry.labels.get("semantic"))
            write_rgb(overlay_dir / f"top{rank}_frame{-entry.index:06d}_"
                                    f"{stamp_text(entry.stamp_ns)}.png", picture)

    def _write_csv(self, path: Path) -> None:
        stream = io.StringIO()
        writer = csv.writer(stream)
        writer.writerow(["index", "stamp", "status", "latency_ms", "score_p99", "score_mean",
                         "anomaly_pixels", "labels", "detail"])
        for r in self.records:
            writer.writerow([r.index, stamp_text(r.stamp_ns), r.status,
                             "" if r.latency_s is None else f"{r.latency_s * 1000.0:.3f}",
                             "" if r.score_p99 is None else f"{r.score_p99:.6f}",
                             "" if r.score_mean is None else f"{r.score_mean:.6f}",
                             "" if r.anomaly_pixels is None else r.anomaly_pixels,
                             r.labels, r.detail])
        with atomic_write(path) as tmp:
            tmp.write_text(stream.getvalue())


def _ms(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def markdown_report(report: Dict) -> str:
    """Return the ``metrics.md`` text of a replay report."""
    replay, timing = report["replay"], report["timing"]
    latency = timing.get("latency_ms") or {}
    lines = [f"# {replay['mode'].capitalize()} replay of `{replay['bag']}`", "",
             f"- model `{report['model']}`, backend {report['backend']}"
             + (f", input size {report['input_size'][0]}x{report['input_size'][1]}"
                if report.get("input_size") else ""),
             f"- camera topic `{replay['image_topic']}` ({replay['image_type']}), "
             f"{replay['frames']} frames",
             f"- complete: {'yes' if report['complete'] else 'NO'}"
             + (f" (stopped: {report['stopped']})" if report.get("stopped") else "")
             + (f" ({len(report['problems'])} problems, see metrics.json)"
                if report["problems"] else "")]
    lines += [f"- note: {note}" for note in replay.get("bag_notes", [])]
    lines += ["", "| frames | processed | failed | dropped | partial | evaluated |",
              "|---:|---:|---:|---:|---:|---:|",
              f"| {replay['frames']} | {replay['processed']} | {replay['failed']} | "
              f"{replay['dropped']} | {replay['partial']} | {replay['evaluated']} |"]
    if replay["failed_by_reason"]:
        lines += ["", "Failed frames by reason: " + ", ".join(
            f"{reason} {count}" for reason, count in sorted(replay["failed_by_reason"].items()))]
    live = replay.get("live")
    if live:
        how = (f"sent on `{live['input_topic']}` at {live['rate']}x the recorded timing "
               f"({_ms(live.get('send_rate_hz'))} Hz, {live['qos']})" if live.get("rate")
               else f"received on `{live['input_topic']}` from another player "
                    f"({_ms(live.get('send_rate_hz'))} Hz; {live.get('not_received', 0)} frames "
                    "of the bag never came)")
        lines += ["", f"Live: {live['sent']} frames {how}, {live['answered']} answered, "
                      f"{live['dropped']} never answered, {live['partial']} answered in part, "
                      f"{live['unexpected_outputs']} outputs of frames not sent."]
        diagnostics = live.get("node_diagnostics") or {}
        counts = [(key[len("frames_"):], value) for key, value in diagnostics.items()
                  if key.startswith("frames_") and key != "frames_per_second"]
        if counts:
            lines += ["", "The node's own counts (its last /diagnostics, the readiness probe "
                          "included): " + ", ".join(f"{key} {value}" for key, value in counts)
                      + "."]
    if replay["labels"]:
        lines.append("")
    for kind, summary in replay["labels"].items():
        lines.append(f"- {kind} labels from {summary['source']}: {summary['matched']} frames "
                     f"matched, {summary['unmatched']} without a label")
    lines += ["", "| latency p50 ms | p95 ms | p99 ms | max ms | throughput FPS |",
              "|---:|---:|---:|---:|---:|",
              f"| {_ms(latency.get('p50'))} | {_ms(latency.get('p95'))} | "
              f"{_ms(latency.get('p99'))} | {_ms(latency.get('max'))} | "
              f"{_ms(timing.get('fps'))} |", "",
              f"Latency: {timing['latency_what']}."
              + (f" Time per frame outside that (bag reading and writing, metrics): "
                 f"{timing['outside_pipeline_ms_per_frame']:.1f} ms."
                 if timing.get("outside_pipeline_ms_per_frame") is not None else "")]
    return "\n".join(lines + metric_sections(report)) + "\n"


def plot_timeline(records: Sequence[FrameRecord], report: Dict, path: Path) -> None:
    """``score_over_time.png``: per-frame score p99 and mean, and latency, over the drive."""
    if not records:
        return
    start = min(r.stamp_ns for r in records)
    seconds = np.asarray([(r.stamp_ns - start) / 1e9 for r in records])
    ok = np.asarray([r.status == OK for r in records])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    score_name = (report.get("score_names") or ["score"])[0]
    for attribute, label in (("score_p99", f"{score_name} p{SCORE_PERCENTILE:.0f}"),
                             ("score_mean", f"{score_name} mean")):
        values = np.asarray([getattr(r, attribute) if r.status == OK else np.nan
                             for r in records], dtype=np.float64)
        top.plot(seconds, values, marker=".", linewidth=1, label=label)
    anomalous = [(s, r.score_p99) for s, r in zip(seconds, records)
                 if r.anomaly_pixels and r.status == OK]
    if anomalous:
        top.scatter(*zip(*anomalous), s=36, facecolors="none", edgecolors="red",
                    label="labelled anomaly in frame", zorder=3)
    if (~ok).any():
        bottom_y = np.zeros(int((~ok).sum()))
        top.scatter(seconds[~ok], bottom_y, marker="x", color="black",
                    label="failed / not answered", zorder=3)
    top.set(ylabel="anomaly score", title="Anomaly score over the drive")
    top.grid(alpha=0.3)
    top.legend(loc="upper right", fontsize=8)
    latency = np.asarray([r.latency_s * 1000.0 if r.latency_s is not None else np.nan
                          for r in records])
    bottom.plot(seconds, latency, marker=".", linewidth=1, color="tab:green")
    bottom.set(xlabel="time since the first frame (s)", ylabel="latency (ms)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- output folder

def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def prepare_out_dir(out: Path, overwrite: bool, bag: Path) -> None:
    """Check ``out`` can take a replay's results: writable, not the bag, no older results.

    An existing folder holding any of :data:`PRODUCTS` is refused unless ``overwrite``, which
    removes those (and nothing else). ValueError / OSError naming the folder.
    """
    if _inside(bag, out) or _inside(out, bag):
        raise ValueError(f"--out {out} and the bag {bag} must not contain one another "
                         "(the input bag is never written to)")
    existing = [name for name in PRODUCTS if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output folder {out} holds the results of an earlier run "
                              f"({', '.join(existing)}); --overwrite replaces them")
    for name in existing:
        path = out / name
        if name == RESULT_BAG:
            remove_bag(path)
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    check_writable_folder(out, "--out")


# --------------------------------------------------------------------------- command line

def label_sources_wanted(args: argparse.Namespace, custom_data: Dict[str, str]
                         ) -> Dict[str, Tuple[str, str]]:
    """Kind -> ("topic" or "folder", topic name or folder) of the ground truth asked for.

    Label topics the bag records in its metadata (``dense-ood-make-bag`` does) are used for
    the kinds given neither a topic nor a folder, unless ``--no-bag-labels``.
    """
    wanted = {}
    for kind, topic, folder in (("anomaly", args.label_topic, args.labels),
                                ("semantic", args.semantic_label_topic, args.semantic_labels)):
        if topic is not None and folder is not None:
            raise ValueError(f"{kind} labels: give a topic or a folder, not both")
        if topic is not None:
            wanted[kind] = ("topic", topic)
        elif folder is not None:
            wanted[kind] = ("folder", folder)
        elif not args.no_bag_labels and CUSTOM_LABEL_TOPIC[kind] in custom_data:
            wanted[kind] = ("topic", custom_data[CUSTOM_LABEL_TOPIC[kind]])
    return wanted


def make_evaluation(wanted: Dict[str, Tuple[str, str]], score_names: Sequence[str],
                    class_names: Sequence[str], semantic_ignore: int) -> Evaluation:
    """Return the accumulators of the label kinds that will be evaluated."""
    return Evaluation(
        anomaly=AnomalyMetrics(score_names) if "anomaly" in wanted else None,
        semantic=SemanticMetrics(class_names, semantic_ignore) if "semantic" in wanted else None)


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


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the ``dense-ood-replay`` argument parser."""
    parser = command_parser(
        "dense-ood-replay",
        "Evaluate a model on a rosbag2 bag: offline through the node's own frame pipeline "
        "(no ROS graph), or --live through a running detector node over DDS.",
        "<out>/result_bag (MCAP: the camera frames, the node's outputs and the labels at the "
        "frames' recording times), metrics.json and metrics.md (frames processed / failed / "
        "never answered, latency p50/p95/p99, and with labels dense-ood-evaluate's metrics), "
        "frames.csv (one line per frame), score_over_time.png, pr_curve.png and "
        "roc_curve.png (anomaly labels), overlays/ (the frames with the highest anomaly "
        "score), accumulators/. Exit code 0: complete; 1: incomplete (faults in the bag or "
        "frames, or frames never answered; what was evaluated is written, marked "
        "incomplete); 2: bad input, nothing evaluated.")
    parser.add_argument("--bag", required=True, type=Path,
                        help="rosbag2 bag folder, or one .mcap / .db3 file (only read)")
    add_model(parser, help="model file (.pt, .onnx, .engine); with --live only to start the "
                           "node (--start-node) and to name it in the report")
    add_out(parser, "output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run in --out")
    add_backend(parser, default="torch")
    add_input_size(parser)
    add_scores(parser)
    topics = parser.add_argument_group("topics and ground truth")
    topics.add_argument("--image-topic",
                        help="camera topic (Image or CompressedImage); default: the bag's only "
                             "image topic that is not a label topic")
    topics.add_argument("--label-topic",
                        help="topic of anomaly labels (mono8 Image, same stamps as the frames)")
    topics.add_argument("--semantic-label-topic",
                        help="topic of class-index labels (mono8 Image) for IoU/mIoU")
    topics.add_argument("--labels", type=Path,
                        help="folder of anomaly label PNGs instead of a topic")
    topics.add_argument("--semantic-labels", type=Path,
                        help="folder of class-index label PNGs instead of a topic")
    topics.add_argument("--label-match", choices=LABEL_MATCHES, default="index",
                        help="how label PNGs match frames: index (n-th file, by name, for the "
                             "n-th frame; default) or stamp (file stem = header stamp, "
                             "sec.nanosec or ns)")
    topics.add_argument("--stamp-tolerance", type=nonnegative_float, default=0.001,
                        help="largest stamp difference (s) between a frame and its label "
                             "(default 0.001)")
    topics.add_argument("--no-bag-labels", action="store_true",
                        help="ignore the label topics the bag's metadata names "
                             "(dense-ood-make-bag records them)")
    topics.add_argument("--semantic-ignore", type=int,
                        help="ignored value in semantic labels (default: the model's label "
                             "set's ignore index, 11 for CamVid, 255 for Cityscapes)")
    topics.add_argument("--anomaly-values", type=parse_ints, default=(1,),
                        help="comma-separated anomaly label values (default 1)")
    topics.add_argument("--ignore-values", type=parse_ints, default=(255,),
                        help="comma-separated ignored anomaly label values (default 255)")
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--namespace", default="/",
                         help="namespace of the detector node, whose output topic names the "
                              "result bag uses (default /: /detector/output/...)")
    outputs.add_argument("--no-color", action="store_true",
                         help="no semantic colour image (the node's publish_color false)")
    outputs.add_argument("--mask-threshold", type=float,
                         help="also the anomaly mask (mono8, 255 where score >= it)")
    outputs.add_argument("--max-input-pixels", type=int,
                         help="largest frame accepted, in pixels (default: the node's)")
    outputs.add_argument("--metric-mode", choices=METRIC_MODES, default="sklearn",
                         help="AP/FPR95/AUROC definitions (default sklearn)")
    outputs.add_argument("--num-overlays", type=int, default=4,
                         help="overlays of the frames with the highest anomaly score "
                              "(default 4)")
    outputs.add_argument("--no-progress", action="store_true", help="no progress bar")
    live = parser.add_argument_group("live replay over DDS (--live)")
    live.add_argument("--live", action="store_true",
                      help="play the camera topic into a running detector node and evaluate "
                           "what it publishes")
    live.add_argument("--rate", type=positive_float, default=1.0,
                      help="playback speed factor of the recorded timing (default 1)")
    live.add_argument("--start-delay", type=nonnegative_float, default=1.0,
                      help="seconds between the node being ready and the first frame "
                           "(default 1)")
    live.add_argument("--input-topic",
                      help="topic the frames reach the node on, published by the player or "
                           "(--no-play) by another (default: the node's input, "
                           "<namespace>/detector/input/image)")
    live.add_argument("--start-node", type=Path, metavar="PARAMS",
                      help="start the detector node with this params file (in --namespace); "
                           "--model, --backend, --scores (first), --input-size override it "
                           "when given")
    live.add_argument("--reliable", action="store_true",
                      help="publish the frames reliably (default: sensor-data QoS, best "
                           "effort, as cameras do)")
    live.add_argument("--no-play", action="store_true",
                      help="do not play: record while another player (ros2 bag play) plays "
                           "the bag into the node")
    live.add_argument("--answer-timeout", type=positive_float, default=5.0,
                      help="after the last frame, seconds to wait for the node's answers "
                           "(default 5)")
    live.add_argument("--connect-timeout", type=positive_float, default=120.0,
                      help="seconds to wait for the node to be ready (default 120)")
    live.add_argument("--idle-timeout", type=positive_float, default=10.0,
                      help="--no-play: stop when no frame came for this long (default 10)")
    # --model is the dialect's, but optional here (a live node may have loaded its own), and
    # --backend's default (torch) applies offline only: with --start-node, the params file's.
    for action in parser._actions:
        if action.dest == "model":
            action.required = False
    parser.set_defaults(backend=None)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject combinations that make no sense (parser.error names them)."""
    if not args.live:
        for name in ("start_node", "input_topic", "no_play"):
            if getattr(args, name) not in (None, False):
                parser.error(f"--{name.replace('_', '-')} needs --live")
        if args.model is None:
            parser.error("offline replay needs --model")
    if args.num_overlays < 0:
        parser.error("--num-overlays must be >= 0")
    if args.max_input_pixels is not None and args.max_input_pixels < 1:
        parser.error("--max-input-pixels must be >= 1")


def tolerance_ns(args: argparse.Namespace) -> int:
    return round(args.stamp_tolerance * 1e9)
