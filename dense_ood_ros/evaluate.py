"""``dense-ood-evaluate``: semantic and pixel anomaly metrics of a model on a folder of images.

Images are paired by file stem with anomaly label PNGs (``--labels``: listed anomaly values
are anomalies, listed ignore values are skipped, every other value is an inlier) and/or
class-index PNGs (``--semantic-labels``: per-class IoU and mIoU). Pairs are checked before
inference; a missing label file fails the run at once, an unreadable or size-mismatched one
is reported by name and fails it at the end, after everything computed is saved (marked
incomplete). ``--allow-missing`` skips such frames instead. A label is read as
:func:`dense_ood_ros.io.read_label` reads it (a size other than its image's is refused from
the PNG header, before decoding).

Every file is written atomically (:func:`dense_ood_ros.io.atomic_write`): complete, or not
there. ``--out`` is checked to be writable before the model is loaded; a failure to write
the results later (a full disk) names the file, prints the metrics to stdout anyway and
exits with code 2.

Writes into ``--out``: ``metrics.json``, ``metrics.md``, ``pr_curve.png``, ``roc_curve.png``,
``overlays/*.png`` (input | anomaly score | prediction | ground truth) and the raw
accumulators ``accumulators/{anomaly.npz,semantic.json}``, which
:meth:`dense_ood_ros.metrics.AnomalyMetrics.load` and :meth:`SemanticMetrics.load` read back
for re-aggregation (e.g. in the other metric mode) or merging.

The evaluation loop, :func:`evaluate_frames`, imports no ROS; it accumulates through
:func:`dense_ood_ros.evaluation.update_metrics`, as bag replay does.
"""

import json
import math
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import matplotlib
import numpy as np
from tqdm import tqdm

from dense_ood_ros.label_set import LabelSet, description_label_set
from dense_ood_ros.cli import (EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_OK, add_backend,
                               add_input_size, add_label_folders, add_label_values,
                               add_metric_mode, add_model, add_no_progress, add_out, add_scores,
                               backend_options, command_parser, label_folders, refuse)
from dense_ood_ros.detector import Detector, DetectorOutput
from dense_ood_ros.evaluation import AnomalyLabelSpec, Evaluation, make_evaluation, update_metrics
from dense_ood_ros.io import (atomic_write, check_writable_folder, find_labels, list_images,
                              read_label, read_rgb, write_rgb)
from dense_ood_ros.metrics import AnomalyMetrics, anomaly_target
from dense_ood_ros.visualization import heat_map

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROG = "dense-ood-evaluate"
PANEL_TITLES = ("input", "anomaly score", "prediction", "ground truth")


@dataclass
class FramePaths:
    """One image and its label files (``None`` where that kind of label is not evaluated)."""

    name: str
    image: Path
    anomaly_label: Optional[Path] = None
    semantic_label: Optional[Path] = None


def find_frames(images: Path, anomaly_labels: Optional[Path] = None,
                semantic_labels: Optional[Path] = None) -> Tuple[List[FramePaths], List[str]]:
    """Pair every image in ``images`` with label files of the same stem.

    Returns the frames with all their labels and one problem line per label missing.
    """
    paired, problems = find_labels(list_images(images),
                                   label_folders(anomaly_labels, semantic_labels))
    frames = [FramePaths(image.stem, image, labels.get("anomaly"), labels.get("semantic"))
              for image, labels in paired]
    return frames, problems


def evaluate_frames(detector: Detector, frames: Sequence[FramePaths], label_spec: AnomalyLabelSpec,
                    evaluation: Evaluation, overlay_dir: Optional[Path] = None,
                    num_overlays: int = 0, progress: bool = True) -> Evaluation:
    """Run the detector on every frame and accumulate metrics.

    A frame that cannot be read or evaluated is recorded in ``evaluation.problems`` and
    skipped, and so is an overlay that cannot be written. Ctrl-C or an unexpected error (e.g.
    of the backend) stops early, keeping what was accumulated and saying why in
    ``evaluation.stopped`` (the error's traceback goes to stderr).
    """
    overlay_indices = set(
        np.linspace(0, len(frames) - 1, num_overlays).round().astype(int).tolist()
        if num_overlays > 0 and frames else [])
    if overlay_indices:
        try:
            overlay_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            evaluation.problems.append(f"no overlays saved: cannot create {overlay_dir}: "
                                       f"{exc.strerror or exc}")
            overlay_indices = set()
    try:
        for index, frame in enumerate(tqdm(frames, desc="evaluate", unit="frame",
                                           disable=not progress)):
            try:
                image = read_rgb(frame.image)
                anomaly_label, semantic_label = (
                    None if path is None else read_label(path, image.shape[:2])
                    for path in (frame.anomaly_label, frame.semantic_label))
                output = detector(image)
                try:
                    update_metrics(evaluation, output, label_spec, anomaly_label,
                                   semantic_label)
                except ValueError as exc:  # e.g. a value that is no class: name the files
                    labels = [str(p) for p in (frame.anomaly_label, frame.semantic_label) if p]
                    raise ValueError(f"{exc} (label file {' / '.join(labels)})") from None
            except ValueError as exc:
                evaluation.problems.append(f"{frame.image.name}: {exc}")
                continue
            if index in overlay_indices:
                try:
                    write_rgb(overlay_dir / f"{frame.name}.png",
                              overlay(image, output, label_spec, anomaly_label, semantic_label,
                                      detector.label_set))
                except OSError as exc:
                    evaluation.problems.append(f"{frame.image.name}: overlay not saved: {exc}")
    except KeyboardInterrupt:
        evaluation.stopped = "interrupted"
    except Exception as exc:  # noqa: BLE001 - keep the accumulators whatever stopped the run
        traceback.print_exc()
        evaluation.stopped = f"{type(exc).__name__}: {exc}"
    return evaluation


# --------------------------------------------------------------------------- pictures

def anomaly_overlay(image: np.ndarray, label: np.ndarray,
                    label_spec: AnomalyLabelSpec) -> np.ndarray:
    """Ground truth over the dimmed image: anomalies red, ignored pixels black."""
    anomaly, valid = anomaly_target(label, label_spec.anomaly_values, label_spec.ignore_values)
    canvas = image // 2
    canvas[anomaly] = (255, 0, 0)
    canvas[~valid] = 0
    return canvas


def overlay(image: np.ndarray, output: DetectorOutput, label_spec: AnomalyLabelSpec,
            anomaly_label: Optional[np.ndarray], semantic_label: Optional[np.ndarray],
            label_set: Optional[LabelSet] = None) -> np.ndarray:
    """Compose the overlay: input | anomaly score | prediction | ground truth.

    The anomaly score is the first score; the ground truth shows the anomaly labels if given,
    else the semantic labels. Each panel is titled with :data:`PANEL_TITLES`. Classes take
    the colours of ``label_set``, the model's (None: CamVid's, for callers that do not pass
    one yet: bag replay).
    """
    colorize = (label_set or description_label_set("camvid")).colorize
    if anomaly_label is not None:
        ground_truth = anomaly_overlay(image, anomaly_label, label_spec)
    elif semantic_label is not None:
        ground_truth = colorize(semantic_label)
    else:
        ground_truth = np.zeros_like(image)
    panels = [image.copy(), heat_map(output.score), colorize(output.labels), ground_truth]
    for panel, title in zip(panels, PANEL_TITLES):
        cv2.putText(panel, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return np.concatenate(panels, axis=1)


def plot_curves(metrics: AnomalyMetrics, mode: str, out_dir: Path) -> None:
    """``pr_curve.png`` and ``roc_curve.png`` with every score on one plot each."""
    summary = metrics.summary(mode)["scores"]
    # Precision is a step function of recall (AP sums its steps); the ROC curve is piecewise
    # linear.
    for file_name, x_key, y_key, value_key, x_label, y_label, drawstyle in (
            ("pr_curve.png", "recall", "precision", "ap", "recall", "precision", "steps-pre"),
            ("roc_curve.png", "fpr", "tpr", "auroc", "false positive rate", "true positive rate",
             "default")):
        fig, axis = plt.subplots(figsize=(5.5, 5))
        for name in metrics.score_names:
            curve = metrics.curves(name, mode)
            axis.plot(curve[x_key], curve[y_key], drawstyle=drawstyle,
                      label=f"{name} ({value_key.upper()} {summary[name][value_key]:.3f})")
        axis.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=x_label, ylabel=y_label,
                 title=f"{'PR' if x_key == 'recall' else 'ROC'} curve ({mode} mode)")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left" if x_key == "recall" else "lower right")
        fig.tight_layout()
        try:
            with atomic_write(out_dir / file_name) as tmp:
                fig.savefig(tmp, dpi=110)
        finally:
            plt.close(fig)


# --------------------------------------------------------------------------- reports

def _finite_or_none(value):
    """NaN/inf -> None (valid JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    return value


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100.0 * value:.2f}"


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def markdown_report(report: Dict) -> str:
    """Return the ``metrics.md`` text for a ``metrics.json`` report."""
    lines = [f"# Evaluation of `{report['model']}`", "",
             f"- images: `{report['images']}` ({report['frames']} "
             f"frames, {report['pixels']} pixels)",
             f"- backend: {report['backend']}, input size "
             f"{report['input_size'][0]}x{report['input_size'][1]}",
             complete_line(report)]
    return "\n".join(lines + metric_sections(report)) + "\n"


def complete_line(report: Dict) -> str:
    """Return the metrics.md line that says whether the run is complete, and if not why."""
    return (f"- complete: {'yes' if report['complete'] else 'NO'}"
            + (f" (stopped: {report['stopped']})" if report.get("stopped") else "")
            + (f" ({len(report['problems'])} problems, see metrics.json)"
               if report["problems"] else ""))


def metric_sections(report: Dict) -> List[str]:
    """Return the Markdown lines of a report's anomaly and semantic metric tables.

    Shared by ``dense-ood-evaluate`` and bag replay; empty when the report has neither.
    """
    lines: List[str] = []
    if report.get("anomaly"):
        lines += ["", f"## Pixel anomaly detection ({report['anomaly']['mode']} mode)", "",
                  f"Labels `{report['labels']}`: anomaly values {report['anomaly_values']}, "
                  f"ignored {report['ignore_values']}.", "",
                  "| score | AP (%) | FPR95 (%) | AUROC (%) | threshold at TPR 95 % | anomaly px "
                  "| inlier px |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, result in report["anomaly"]["scores"].items():
            lines.append(f"| {name} | {_percent(result['ap'])} | {_percent(result['fpr95'])} | "
                         f"{_percent(result['auroc'])} | "
                         f"{_number(result.get('threshold_tpr95'))} | "
                         f"{result['positives']} | {result['negatives']} |")
    if report.get("semantic"):
        semantic = report["semantic"]
        lines += ["", "## Semantic segmentation", "",
                  f"Labels `{report['semantic_labels']}`, ignore label "
                  f"{report['semantic_ignore']}: **mIoU {semantic['miou']:.2f}%**, pixel accuracy "
                  f"{semantic['pixel_accuracy']:.2f}%.", "",
                  "| class | IoU (%) |", "|---|---:|"]
        for name, iou in semantic["per_class_iou"].items():
            lines.append(f"| {name} | {'n/a' if iou is None else f'{iou:.2f}'} |")
    return lines


def run_info(detector: Detector, model: Path, images: Path, labels: Optional[Path],
             semantic_labels: Optional[Path], label_spec: AnomalyLabelSpec,
             semantic_ignore: int, mode: str, complete: bool, stopped: Optional[str]) -> Dict:
    """Describe an evaluation run for its report: model, backend, inputs, label meanings."""
    return {"complete": complete, "model": str(model), "backend": detector.backend.describe(),
            "input_size": list(detector.backend.input_size),
            "score_names": list(detector.backend.score_names), "images": str(images),
            "labels": str(labels) if labels else None,
            "anomaly_values": list(label_spec.anomaly_values),
            "ignore_values": list(label_spec.ignore_values),
            "semantic_labels": str(semantic_labels) if semantic_labels else None,
            "semantic_ignore": semantic_ignore, "metric_mode": mode,
            "label_set": detector.label_set.name, "stopped": stopped}


def build_report(evaluation: Evaluation, mode: str, info: Dict) -> Dict:
    """Return the ``metrics.json`` report of an evaluation (``info`` describes the run)."""
    report = dict(info, frames=evaluation.frames, pixels=evaluation.pixels,
                  problems=evaluation.problems, anomaly=None, semantic=None)
    if evaluation.anomaly is not None:
        report["anomaly"] = evaluation.anomaly.summary(mode)
    if evaluation.semantic is not None:
        report["semantic"] = evaluation.semantic.summary()
    return _finite_or_none(report)


def write_results(evaluation: Evaluation, out_dir: Path, mode: str, info: Dict,
                  report: Optional[Dict] = None, markdown: Optional[str] = None) -> Dict:
    """Write metrics.json, metrics.md, curve plots and accumulators; returns the report.

    ``report``: :func:`build_report`'s, when already made; ``markdown``: the metrics.md text
    (default :func:`markdown_report` of the report). Each file is written atomically;
    an earlier run's metrics.json and metrics.md are removed first and the new ones written
    last, so a failure (OSError naming the file) never leaves a report that describes other
    accumulators.
    """
    report = build_report(evaluation, mode, info) if report is None else report
    markdown = markdown_report(report) if markdown is None else markdown
    for name in ("metrics.json", "metrics.md"):
        (out_dir / name).unlink(missing_ok=True)
    (out_dir / "accumulators").mkdir(parents=True, exist_ok=True)
    if evaluation.anomaly is not None:
        plot_curves(evaluation.anomaly, mode, out_dir)
        with atomic_write(out_dir / "accumulators" / "anomaly.npz") as tmp:
            evaluation.anomaly.save(tmp)
    if evaluation.semantic is not None:
        with atomic_write(out_dir / "accumulators" / "semantic.json") as tmp:
            evaluation.semantic.save(tmp)
    with atomic_write(out_dir / "metrics.md") as tmp:
        tmp.write_text(markdown)
    with atomic_write(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report


# --------------------------------------------------------------------------- command line

def _parser():
    parser = command_parser(
        PROG,
        "Semantic (mIoU) and pixel anomaly (AP, FPR95, AUROC) metrics on an image folder.",
        "<out>/metrics.json and metrics.md, pr_curve.png and roc_curve.png "
        "(anomaly labels), overlays/*.png (input | score | prediction | "
        "ground truth), accumulators/ (raw counts, to merge runs).")
    add_model(parser)
    add_backend(parser, default="torch")
    add_input_size(parser)
    parser.add_argument("--images", required=True, type=Path, help="folder of input images")
    add_label_folders(parser, "same stems as the images")
    add_label_values(parser)
    add_scores(parser)
    add_metric_mode(parser)
    add_out(parser, "output folder (default eval_output)", Path("eval_output"))
    parser.add_argument("--num-overlays", type=int, default=4,
                        help="overlay images to save (default 4)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="skip images whose labels are missing, unreadable or of another size")
    add_no_progress(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.labels is None and args.semantic_labels is None:
        parser.error("nothing to evaluate: give --labels and/or --semantic-labels")
    try:
        frames, missing = find_frames(args.images, args.labels, args.semantic_labels)
    except FileNotFoundError as exc:
        return refuse(PROG, exc)
    for problem in missing:
        print(f"{PROG}: {'skipping' if args.allow_missing else 'error'}: {problem}",
              file=sys.stderr)
    if missing and not args.allow_missing:
        print(f"{PROG}: {len(missing)} image(s) lack labels; nothing evaluated "
              "(--allow-missing skips them)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not frames:
        return refuse(PROG, "no image has all its labels")
    try:
        check_writable_folder(args.out, "--out")
    except OSError as exc:
        return refuse(PROG, exc)

    try:
        detector = Detector.from_model(args.model, backend=args.backend, score_names=args.scores,
                                       input_size=args.input_size, **backend_options(args))
    # CheckpointError: RuntimeError
    except (ValueError, RuntimeError, ImportError, OSError) as exc:
        return refuse(PROG, f"cannot load model: {exc}")
    if args.semantic_ignore is None:
        args.semantic_ignore = detector.label_set.ignore_index
    print(f"label set {detector.label_set.name!r} ({detector.label_set.num_classes} classes: "
          f"{', '.join(detector.label_set.class_names)}; semantic ignore value "
          f"{args.semantic_ignore})", file=sys.stderr)
    label_spec = AnomalyLabelSpec(args.anomaly_values, args.ignore_values)
    evaluation = make_evaluation(label_folders(args.labels, args.semantic_labels), args.scores,
                                 detector.class_names, args.semantic_ignore)
    evaluation.problems += missing
    evaluate_frames(detector, frames, label_spec, evaluation, args.out / "overlays",
                    args.num_overlays, progress=not args.no_progress)

    failed = evaluation.problems[len(missing):]
    for problem in failed:
        print(f"{PROG}: {'skipped' if args.allow_missing else 'error'}: {problem}",
              file=sys.stderr)
    complete = (evaluation.stopped is None and (args.allow_missing or not failed)
                and evaluation.frames > 0)
    info = run_info(detector, args.model, args.images, args.labels, args.semantic_labels,
                    label_spec, args.semantic_ignore, args.metric_mode, complete,
                    evaluation.stopped)
    report = build_report(evaluation, args.metric_mode, info)
    markdown = markdown_report(report)
    print(markdown)
    try:
        write_results(evaluation, args.out, args.metric_mode, info, report, markdown)
    except OSError as exc:
        return refuse(PROG, f"the results above could not be saved: {exc}")
    print(f"wrote {args.out / 'metrics.json'}, metrics.md, curves, overlays and accumulators")
    if not complete:
        print(f"{PROG}: INCOMPLETE: {evaluation.frames} "
              f"of {len(frames)} frames evaluated"
              + (f" (stopped: {evaluation.stopped})" if evaluation.stopped
                 else f", {len(failed)} problem(s) above"),
              file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
