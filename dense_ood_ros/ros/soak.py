"""Soak test of the detector node: a camera faster than the node for many frames.

``python -m dense_ood_ros.ros.soak --frames 10000 --rate 20 --out docs/soak`` starts the node
in its own process (as the stream benchmark does), publishes a CamVid frame at ``--rate``
(choose about twice what the node sustains: it then drops every other frame, the overload
case) and reports: the node's resident memory every ``--sample-every`` frames and its growth
per 1,000 frames after the warm-up, latency p50/p95/p99, frames answered, outputs out of order
or partial, the node's own accounting (received = processed + bad + dropped), and whether the
node was still running at the end. Exit code 1 when any of those invariants fails.
"""

import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from dense_ood_ros.cli import add_backend, command_parser, parse_size
from dense_ood_ros.io import read_rgb, show_report
from dense_ood_ros.ros.stream_benchmark import (DEFAULT_FRAME, node_under_test, rss_bytes,
                                                serialized_frame, stream, warm_up)

MB = 1 << 20


def memory_growth_per_1000(samples: List[Dict], skip_frames: int) -> Optional[float]:
    """Least-squares slope of RSS (MB) per 1,000 frames, over the samples after warm-up."""
    points = [(s["frame"], s["rss_mb"]) for s in samples if s["frame"] >= skip_frames]
    if len(points) < 2:
        return None
    frames, rss = np.array(points, dtype=float).T
    return float(np.polyfit(frames, rss, 1)[0] * 1000)


def soak(model: Path, backend: str, size, rate_hz: float, frames: int,
         sample_every: int, frame_path: Path = DEFAULT_FRAME) -> Dict:
    """Run the soak; return its figures (see the module docstring)."""
    frame = cv2.resize(read_rgb(frame_path), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    serialized = serialized_frame(frame)
    with node_under_test(model, backend) as (process, recorder):
        first_stamp = warm_up(recorder, serialized, 1) + 100
        samples = [{"frame": 0, "rss_mb": rss_bytes(process.pid) / MB}]

        def sample(index: int) -> None:
            if (index + 1) % sample_every == 0:
                samples.append({"frame": index + 1, "rss_mb": rss_bytes(process.pid) / MB})

        started = time.perf_counter()
        run = stream(recorder, serialized, rate_hz, frames, first_stamp, every_frame=sample)
        duration = time.perf_counter() - started
        deadline = time.perf_counter() + 10  # diagnostics once the last frame is done
        recorder.spin_until(time.perf_counter() + 1.5)
        while (recorder.diagnostics.get("frames_pending") != "0"
               and time.perf_counter() < deadline):
            recorder.spin_until(time.perf_counter() + 0.5)
        counts = {key[len("frames_"):]: int(value) for key, value in recorder.diagnostics.items()
                  if key.startswith("frames_") and value.isdigit()}
        alive = process.poll() is None
    accounted = counts.get("received") == (counts.get("processed", 0) + counts.get("bad", 0)
                                           + counts.get("dropped_stale", 0)
                                           + counts.get("dropped_while_loading", 0))
    return {"model": str(model), "backend": backend, "size": f"{size[0]}x{size[1]}",
            "rate_hz": rate_hz, "frames": frames, "duration_s": duration, "run": run,
            "node_counts": counts, "accounted": accounted, "node_alive": alive,
            "rss_samples": samples,
            "rss_growth_mb_per_1000_frames": memory_growth_per_1000(samples, frames // 10)}


def failures(report: Dict) -> List[str]:
    """Return a message for each invariant of the soak that failed."""
    run = report["run"]
    checks = {"the node crashed or stopped": report["node_alive"],
              "outputs out of order": run["outputs_in_order"],
              "frames with only some outputs": run["partial"] == 0,
              "received != processed + bad + dropped": report["accounted"],
              "no frame answered": run["answered"] > 0}
    return [message for message, ok in checks.items() if not ok]


def markdown(report: Dict) -> str:
    run, labels = report["run"], report["run"]["latency_ms"]["labels"]
    counts = report["node_counts"]
    growth = report["rss_growth_mb_per_1000_frames"]
    return "\n".join([
        "| frames sent | rate | answered | out of order | partial | received / processed / "
        "dropped stale / bad | latency p50 / p95 / p99 | RSS start → end | RSS growth per "
        "1,000 frames | node alive |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {run['sent']} | {report['rate_hz']:g} Hz | {run['answered']} | "
        f"{'no' if run['outputs_in_order'] else 'YES'} | {run['partial']} | "
        f"{counts.get('received')} / {counts.get('processed')} / {counts.get('dropped_stale')} / "
        f"{counts.get('bad')} | {labels['p50']:.0f} / {labels['p95']:.0f} / "
        f"{labels['p99']:.0f} ms | {report['rss_samples'][0]['rss_mb']:.0f} → "
        f"{report['rss_samples'][-1]['rss_mb']:.0f} MB | "
        f"{'–' if growth is None else f'{growth:+.2f} MB'} | "
        f"{'yes' if report['node_alive'] else 'NO'} |"]) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = command_parser("python -m dense_ood_ros.ros.soak",
                            "Soak test: the detector node under a camera faster than it.",
                            "a Markdown line on stdout; with --out PATH, PATH.json and PATH.md")
    parser.add_argument("--model", type=Path, help="model file (default: models/default.pt)")
    add_backend(parser, default="auto")
    parser.add_argument("--size", type=parse_size, default=(360, 480),
                        help="camera frame size HxW (default 360x480)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="camera rate in Hz (default 20: about twice what the default "
                             "node sustains on two CPU cores)")
    parser.add_argument("--frames", type=int, default=10_000, help="frames (default 10000)")
    parser.add_argument("--sample-every", type=int, default=500,
                        help="frames between memory samples (default 500)")
    parser.add_argument("--out", type=Path, help="write PATH.json and PATH.md")
    args = parser.parse_args(argv)
    from dense_ood_ros.ros import package_path

    report = soak(args.model or package_path("models", "default.pt"), args.backend, args.size,
                  args.rate, args.frames, args.sample_every)
    report["failures"] = failures(report)
    show_report(args.out, report, markdown(report))
    for message in report["failures"]:
        print(f"soak: FAILED: {message}", file=sys.stderr)
    print(f"soak: {os.cpu_count()} CPUs, {report['duration_s']:.0f} s", file=sys.stderr)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
