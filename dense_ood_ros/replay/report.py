"""What a replay writes into its output folder besides the result bag: report, plots, overlays.

The report is ``dense-ood-evaluate``'s (:func:`~dense_ood_ros.evaluate.write_results`: the
same metrics.json keys, metrics tables and accumulators) with what a drive adds: the frames'
outcomes and latency (metrics.md, frames.csv), the anomaly score over time and the overlays
of the frames with the highest score.
"""

import csv
import io
import math
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib
import numpy as np

from dense_ood_ros.cli import EXIT_INCOMPLETE, EXIT_OK, refuse
from dense_ood_ros.evaluate import complete_line, metric_sections, overlay, write_results
from dense_ood_ros.io import atomic_write, check_writable_folder, write_rgb
from dense_ood_ros.replay.bag_reader import stamp_text
from dense_ood_ros.replay.bag_writer import RESULT_BAG, remove_bag
from dense_ood_ros.replay.results import OK, SCORE_PERCENTILE, FrameRecord, ReplayResults

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROG = "dense-ood-replay"
#: The log and the params file of a node that live replay starts.
NODE_LOG, NODE_PARAMS = "node.log", "node_params.yaml"
#: Everything a replay writes into its output folder (``--overwrite`` removes these only).
PRODUCTS = ("metrics.json", "metrics.md", "pr_curve.png", "roc_curve.png",
            "score_over_time.png", "frames.csv", "overlays", "accumulators", RESULT_BAG,
            NODE_LOG, NODE_PARAMS)
#: Problems printed to stderr at the end (all of them are in metrics.json).
MAX_PRINTED_PROBLEMS = 20


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


def report_and_exit(args, results: ReplayResults, report: Dict) -> int:
    """Write every result file of ``report`` (:meth:`ReplayResults.build`'s), print a summary.

    Returns the exit code.
    """
    problems = report["problems"]
    for problem in problems[:MAX_PRINTED_PROBLEMS]:
        print(f"{PROG}: {problem}", file=sys.stderr)
    if len(problems) > MAX_PRINTED_PROBLEMS:
        print(f"{PROG}: ... and {len(problems) - MAX_PRINTED_PROBLEMS} more problems "
              "(metrics.json lists them all)", file=sys.stderr)
    summary = summary_lines(report)
    try:
        write_report(results, args.out, args.metric_mode, report)
    except (OSError, ValueError) as exc:
        return refuse(PROG, f"the results could not be saved: {exc}")
    print("\n".join(summary))
    print(f"wrote {args.out}: metrics.json, metrics.md, {RESULT_BAG}/, plots")
    if not report["complete"]:
        print(f"{PROG}: INCOMPLETE" + (f" (stopped: {report['stopped']})"
                                       if report.get("stopped") else "")
              + f"; {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def summary_lines(report: Dict) -> List[str]:
    """Return the lines printed after a replay: frames, latency, throughput, metrics."""
    counts, latency = report["replay"], report["timing"].get("latency_ms") or {}
    lines = [f"{counts['processed']} of {counts['frames']} frames processed, {counts['failed']} "
             f"failed, {counts['dropped']} never answered, {counts['evaluated']} evaluated; "
             f"latency p50 {latency.get('p50', float('nan')):.1f} ms, p99 "
             f"{latency.get('p99', float('nan')):.1f} ms; "
             f"{report['timing'].get('fps') or float('nan'):.2f} FPS"]
    if report.get("anomaly"):
        lines += [f"anomaly {name}: AP {_pct(values['ap'])}, FPR95 {_pct(values['fpr95'])}, "
                  f"AUROC {_pct(values['auroc'])}"
                  for name, values in report["anomaly"]["scores"].items()]
    if report.get("semantic"):
        lines.append(f"semantic: mIoU {report['semantic']['miou']:.2f}%")
    return lines


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}%"


def write_report(results: ReplayResults, out_dir: Path, mode: str, report: Dict) -> None:
    """Write every result file into ``out_dir`` (atomically, each), all of them drawn first.

    ``dense-ood-evaluate``'s files come first (its metrics.json last among them), then
    frames.csv, score_over_time.png and the overlays of the frames with the highest score.
    """
    records = sorted(results.records, key=lambda r: r.index)
    table = frames_csv(records)
    timeline = timeline_png(records, report)
    markdown = markdown_report(report)
    overlays = {f"top{rank}_frame{-entry.index:06d}_{stamp_text(entry.stamp_ns)}.png":
                overlay(entry.image, entry.output, results.label_spec,
                        entry.labels.get("anomaly"), entry.labels.get("semantic"))
                for rank, entry in enumerate(results.top_frames(), start=1)}
    write_results(results.evaluation, out_dir, mode, {}, report, markdown)
    with atomic_write(out_dir / "frames.csv") as tmp:
        tmp.write_text(table)
    if timeline is not None:
        with atomic_write(out_dir / "score_over_time.png") as tmp:
            tmp.write_bytes(timeline)
    (out_dir / "overlays").mkdir(exist_ok=True)
    for name, picture in overlays.items():
        write_rgb(out_dir / "overlays" / name, picture)


def frames_csv(records: Sequence[FrameRecord]) -> str:
    """Return ``frames.csv``: one line per frame (stamp, status, latency, score, labels)."""
    stream = io.StringIO()
    writer = csv.writer(stream)
    writer.writerow(["index", "stamp", "status", "latency_ms", "score_p99", "score_mean",
                     "anomaly_pixels", "labels", "detail"])
    for r in records:
        writer.writerow([r.index, stamp_text(r.stamp_ns), r.status,
                         "" if r.latency_s is None else f"{r.latency_s * 1000.0:.3f}",
                         "" if r.score_p99 is None else f"{r.score_p99:.6f}",
                         "" if r.score_mean is None else f"{r.score_mean:.6f}",
                         "" if r.anomaly_pixels is None else r.anomaly_pixels,
                         r.labels, r.detail])
    return stream.getvalue()


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
             f"{replay['frames']} frames", complete_line(report)]
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


def timeline_png(records: Sequence[FrameRecord], report: Dict) -> Optional[bytes]:
    """Return ``score_over_time.png``: the score's p99 and mean, and latency, over the drive."""
    if not records:
        return None
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
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=100)
    finally:
        plt.close(fig)
    return png.getvalue()
