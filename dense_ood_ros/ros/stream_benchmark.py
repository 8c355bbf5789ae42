"""``dense-ood-stream-benchmark``: the detector node under a camera stream, over real DDS.

Starts the node in its own process (its own namespace, the package's Fast DDS profile),
publishes a CamVid frame resized to each camera size at each rate, as fast as a camera driver
would (serialized once, only the stamp patched per frame), and records every output message
(raw: only the stamp is read). Per run it reports frames sent and answered (all image outputs
of the frame arrived), output FPS, latency p50/p95 per output topic (publish -> arrival),
outputs lost (a frame with some outputs but not all), the node's CPU use and its own frame
accounting from /diagnostics, with where the node's time went per frame (its median per stage:
deserializing, the backend's inference, the rest of the pipeline, publishing). For comparison,
the same frames run through the same :class:`~dense_ood_ros.detector.Detector` in this
process, with the node idle ("bare", the end-to-end figure of ``dense-ood-benchmark``).

``--consumer`` adds what a vehicle stack has beside the camera: a consumer in a process of its
own, subscribed (reliable) to every image output, deserializing each message; per run it
reports the frames whose every output reached it.

``--rounds N`` repeats every run N times, the bare figures measured again before each round
(the node idle), and adds a summary: per camera size and rate, the median output FPS over the
rounds, and the median and the lowest of the rounds' output / bare ratios. Two shared cores
make one 10-second run vary by ~10 %; the ratio within a round compares like with like.
"""

import multiprocessing
import os
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dense_ood_ros.cli import add_backend, command_parser, parse_ints, parse_size
from dense_ood_ros.host import speed_flags
from dense_ood_ros.io import read_rgb, show_report
from dense_ood_ros.ros.diagnostics import STAGES

#: CDR offset of header.stamp in a serialized sensor_msgs/Image (after the 4-byte
#: encapsulation header): sec (int32), nanosec (uint32), little endian.
_STAMP_OFFSET = 4
NAMESPACE = "dense_ood_stream_benchmark"
DEFAULT_FRAME = Path(__file__).resolve().parents[2] / "demo" / "Seq05VD_f02130.jpg"


def patch_stamp(serialized: bytearray, sec: int, nanosec: int = 0) -> bytes:
    """Return the serialized message with header.stamp set (little-endian CDR)."""
    if serialized[1] != 1:
        raise ValueError("expected little-endian CDR (encapsulation 0x0001)")
    struct.pack_into("<iI", serialized, _STAMP_OFFSET, sec, nanosec)
    return bytes(serialized)


def stamp_of(serialized: bytes) -> int:
    """Return header.stamp.sec of a serialized message with a header."""
    return struct.unpack_from("<i", serialized, _STAMP_OFFSET)[0]


def percentile_ms(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q) * 1000) if len(values) else None


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StreamRecorder:
    """A camera publisher and raw subscribers of the node's outputs and diagnostics."""

    def __init__(self, context, output_names: Sequence[str]):
        import rclpy.qos
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import Image

        from dense_ood_ros.ros import INPUT_IMAGE_TOPIC, node_topic, output_topic

        self.node = Node("dense_ood_stream_benchmark_camera", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.publisher = self.node.create_publisher(
            Image, node_topic(INPUT_IMAGE_TOPIC, NAMESPACE), rclpy.qos.qos_profile_sensor_data)
        self.arrivals: Dict[str, Dict[int, float]] = {name: {} for name in output_names}
        self.subscriptions = [self.node.create_subscription(
            Image, node_topic(output_topic(name), NAMESPACE),
            lambda raw, name=name: self.arrivals[name].setdefault(stamp_of(raw),
                                                                  time.perf_counter()),
            rclpy.qos.QoSProfile(depth=10), raw=True) for name in output_names]
        self.diagnostics: Dict[str, str] = {}
        hardware_id = node_topic("~", NAMESPACE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: [
            self.diagnostics.update({kv.key: kv.value for kv in status.values})
            for status in msg.status if status.hardware_id == hardware_id], 10)

    def connected(self) -> bool:
        return (self.publisher.get_subscription_count() > 0
                and all(s.get_publisher_count() > 0 for s in self.subscriptions))

    def spin_until(self, deadline: float) -> None:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self.executor.spin_once(timeout_sec=min(left, 0.005))

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()


def stream(recorder: StreamRecorder, serialized: bytearray, rate_hz: float, frames: int,
           first_stamp: int, settle_s: float = 3.0,
           every_frame: Optional[Callable[[int], None]] = None) -> Dict:
    """Publish ``frames`` frames at ``rate_hz``; return the run's figures.

    ``every_frame(index)`` is called after each publish (e.g. to sample the node's memory).
    """
    for arrivals in recorder.arrivals.values():
        arrivals.clear()
    sent_at: Dict[int, float] = {}
    started = time.perf_counter()
    for index in range(frames):
        due = started + index / rate_hz
        recorder.spin_until(due)
        stamp = first_stamp + index
        recorder.publisher.publish(patch_stamp(serialized, stamp))
        sent_at[stamp] = time.perf_counter()
        if every_frame is not None:
            every_frame(index)
    # wait until no output came for settle_s
    last = time.perf_counter()
    counts = sum(len(a) for a in recorder.arrivals.values())
    while time.perf_counter() - last < settle_s:
        recorder.spin_until(time.perf_counter() + 0.1)
        now_counts = sum(len(a) for a in recorder.arrivals.values())
        if now_counts != counts:
            counts, last = now_counts, time.perf_counter()
    per_topic = {name: {stamp: at for stamp, at in arrivals.items() if stamp in sent_at}
                 for name, arrivals in recorder.arrivals.items()}
    complete = set.intersection(*(set(a) for a in per_topic.values()))
    partial = set.union(*(set(a) for a in per_topic.values())) - complete
    if complete:
        span = max(max(a[s] for s in complete) for a in per_topic.values()) - min(
            sent_at[s] for s in complete)
        fps = (len(complete) - 1) / max(span, 1e-9) if len(complete) > 1 else None
    else:
        fps = None
    latencies = {name: [arrivals[s] - sent_at[s] for s in complete]
                 for name, arrivals in per_topic.items()}
    in_order = all(list(arrivals) == sorted(arrivals) for arrivals in per_topic.values())
    return {"rate_hz": rate_hz, "sent": frames, "answered": len(complete),
            "partial": len(partial), "outputs_in_order": in_order, "output_fps": fps,
            "latency_ms": {name: {"p50": percentile_ms(values, 50),
                                  "p95": percentile_ms(values, 95),
                                  "p99": percentile_ms(values, 99)}
                           for name, values in latencies.items()}}


def _consume(namespace: str, output_names: Sequence[str], stop, results) -> None:
    """Subscribe (reliable, deserializing) to every output until ``stop``; send the stamps.

    Runs in a process of its own (:class:`Consumer`).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from dense_ood_ros.ros import node_topic, output_topic

    rclpy.init()
    node = Node("dense_ood_stream_benchmark_consumer")
    stamps: Dict[str, List[int]] = {name: [] for name in output_names}
    for name in output_names:
        node.create_subscription(Image, node_topic(output_topic(name), namespace),
                                 lambda msg, name=name: stamps[name].append(msg.header.stamp.sec),
                                 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    results.put("ready")
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
    results.put(stamps)
    node.destroy_node()
    rclpy.try_shutdown()


class Consumer:
    """A consumer of every image output in a process of its own (``--consumer``)."""

    def __init__(self, output_names: Sequence[str]):
        context = multiprocessing.get_context("spawn")  # a fresh process: its own rclpy
        self._stop, self._results = context.Event(), context.Queue()
        self.process = context.Process(target=_consume, daemon=True,
                                       args=(NAMESPACE, list(output_names), self._stop,
                                             self._results))
        self.process.start()
        self._results.get(timeout=60)  # subscribed

    def stamps(self) -> Dict[str, List[int]]:
        """Stop the consumer; return the stamps it received per output."""
        self._stop.set()
        stamps = self._results.get(timeout=60)
        self.process.join(10)
        return stamps


def consumer_answered(stamps: Dict[str, List[int]], first: int, count: int) -> int:
    """Frames of stamps first .. first + count - 1 whose every output reached the consumer."""
    wanted = set(range(first, first + count))
    return len(set.intersection(*(wanted & set(values) for values in stamps.values())))


def bare_detector_figures(detector, frame: np.ndarray, frames: int) -> Dict:
    """End-to-end FPS and latency of the Detector alone on ``frame`` (this process)."""
    detector(frame)  # warm-up
    times = []
    for _ in range(frames):
        started = time.perf_counter()
        detector(frame)
        times.append(time.perf_counter() - started)
    latency = {"p50": percentile_ms(times, 50), "p95": percentile_ms(times, 95)}
    return {"fps": len(times) / sum(times), "latency_ms": latency}


def median_bare(rounds: List[Dict[str, Dict]]) -> Dict[str, Dict]:
    """Per camera size: the median over the rounds of the bare figures, and every round's."""
    return {size: {"fps": float(np.median([r[size]["fps"] for r in rounds])),
                   "latency_ms": {q: float(np.median([r[size]["latency_ms"][q] for r in rounds]))
                                  for q in ("p50", "p95")},
                   "rounds": [r[size] for r in rounds]}
            for size in rounds[0]}


def round_summary(runs: List[Dict]) -> List[Dict]:
    """Per camera size and rate: output FPS and output / bare ratio over the rounds."""
    summary = []
    for key in dict.fromkeys((run["size"], run["rate_hz"]) for run in runs):
        same = [run for run in runs if (run["size"], run["rate_hz"]) == key]
        fps = [run["output_fps"] or 0.0 for run in same]
        ratios = [value / run["bare_fps"] for value, run in zip(fps, same)]
        summary.append({"size": key[0], "rate_hz": key[1], "rounds": len(fps),
                        "output_fps_median": float(np.median(fps)), "output_fps_min": min(fps),
                        "output_fps_max": max(fps), "ratio_median": float(np.median(ratios)),
                        "ratio_min": min(ratios)})
    return summary


def markdown(report: Dict) -> str:
    flags = " ".join(report["machine"].get("cpu_flags") or []) or "none of interest"
    rounds = report.get("rounds", 1)
    # the round column only when there are several
    round_head, round_rule = (" round |", "---:|") if rounds > 1 else ("", "")

    def run_cells(run) -> str:
        return (f"| {run['size']} | {run['rate_hz']:g} Hz |"
                + (f" {run['round'] + 1} |" if rounds > 1 else ""))
    lines = [f"Backend {report['backend']}, model {report['model']}, {report['frames']} frames a "
             "run; latency = camera publish -> the output's arrival (the labels topic). "
             f"{report['machine']['cpus']} CPUs, flags: {flags}."
             + (f" {rounds} rounds; bare FPS: the run's round's." if rounds > 1 else ""), "",
             "| camera | rate |" + round_head
             + " sent | answered | partial | output FPS | bare FPS | "
             "latency p50 / p95 | bare p50 / p95 | node CPU (cores) | received / dropped stale"
             " / processed |",
             "|---|---:|" + round_rule + "---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in report["runs"]:
        bare = report["bare"][run["size"]]["rounds"][run["round"]]
        labels = run["latency_ms"]["labels"]

        def ms(value):
            return "–" if value is None else f"{value:.0f}"
        node = run["node_counts"]
        lines.append(
            run_cells(run) + f" {run['sent']} | {run['answered']} | "
            f"{run['partial']} | {run['output_fps'] or 0:.1f} | {bare['fps']:.1f} | "
            f"{ms(labels['p50'])} / {ms(labels['p95'])} ms | {ms(bare['latency_ms']['p50'])} / "
            f"{ms(bare['latency_ms']['p95'])} ms | {run['node_cpu_cores']:.2f} | "
            f"{node.get('received', '?')} / {node.get('dropped_stale', '?')} / "
            f"{node.get('processed', '?')} |")
    if rounds > 1:
        lines += ["", f"Over the {rounds} rounds (output / bare: within each round):", "",
                  "| camera | rate | output FPS median (min–max) | output / bare median | "
                  "lowest output / bare |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {row['size']} | {row['rate_hz']:g} Hz | {row['output_fps_median']:.1f} "
                  f"({row['output_fps_min']:.1f}–{row['output_fps_max']:.1f}) | "
                  f"{row['ratio_median']:.2f}× | {row['ratio_min']:.2f}× |"
                  for row in report["summary"]]
    consumer = bool(report.get("consumer"))
    lines += ["", "Where the node's time went per frame (medians of its last 100 frames, ms; "
              "own work = deserialize + pipeline other + publish)"
              + (", and the frames whose every output reached the consumer process "
                 "(reliable, deserializing)" if consumer else "") + ":", "",
              "| camera | rate |" + round_head
              + " wait | deserialize | inference | pipeline other | publish | "
              "own work / inference |" + (" consumer answered |" if consumer else ""),
              "|---|---:|" + round_rule + "---:|---:|---:|---:|---:|---:|"
              + ("---:|" if consumer else "")]
    for run in report["runs"]:
        stages = run["stage_p50_ms"]
        cells = ["–" if stages.get(stage) is None else f"{stages[stage]:.2f}"
                 for stage in STAGES]
        own = own_work_share(stages)
        lines.append(run_cells(run) + " " + " | ".join(cells)
                     + f" | {'–' if own is None else f'{own:.1%}'} |"
                     + (f" {run['consumer_answered']} |" if consumer else ""))
    return "\n".join(lines) + "\n"


#: The node's own work per frame: every stage of diagnostics.STAGES but waiting and inference.
OWN_WORK = tuple(stage for stage in STAGES if stage not in ("wait", "inference"))


def own_work_share(stages: Dict[str, Optional[float]]) -> Optional[float]:
    """Return the node's own work per frame (deserialize, other, publish) / inference."""
    parts = [stages.get(stage) for stage in (*OWN_WORK, "inference")]
    if any(part is None for part in parts) or not parts[-1]:
        return None
    return sum(parts[:-1]) / parts[-1]


def stage_medians(diagnostics: Dict[str, str]) -> Dict[str, Optional[float]]:
    """Return the node's ``stage_<name>_p50_ms`` diagnostics as numbers (None where n/a)."""
    prefix, suffix = "stage_", "_p50_ms"
    return {key[len(prefix):-len(suffix)]: (None if value == "n/a" else float(value))
            for key, value in diagnostics.items()
            if key.startswith(prefix) and key.endswith(suffix)}


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = command_parser(
        "dense-ood-stream-benchmark",
        "The detector node (its own process) under camera streams at given sizes and rates.",
        "the Markdown table on stdout; with --out PATH, PATH.json and PATH.md.")
    parser.add_argument("--model", type=Path, help="model file: checkpoint .pt, exported .onnx "
                                                   "or TensorRT .engine (default: "
                                                   "models/default.pt)")
    add_backend(parser, default="auto")
    parser.add_argument("--sizes", type=lambda text: [parse_size(s) for s in text.split(",")],
                        default=[(360, 480)], help="camera frame sizes HxW, comma-separated "
                                                   "(default 360x480)")
    parser.add_argument("--rates", type=parse_ints, default=(15, 30),
                        help="camera rates in Hz, comma-separated (default 15,30)")
    parser.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every run this many times, the bare figures measured "
                             "before each round; adds the median over the rounds (default 1)")
    parser.add_argument("--frame", type=Path, default=DEFAULT_FRAME,
                        help="the camera image, resized to each size (default: a demo frame)")
    parser.add_argument("--consumer", action="store_true",
                        help="add a consumer process subscribed (reliable, deserializing) to "
                             "every image output, as a vehicle stack has")
    parser.add_argument("--out", type=Path, help="write PATH.json and PATH.md (e.g. "
                                                 "docs/stream_benchmark)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds: at least 1; got {args.rounds}")
    return args


@contextmanager
def node_under_test(model: Path, backend: str, log: Optional[IO] = None,
                    threads: int = 0) -> Iterator[Tuple]:
    """Start the detector node and a :class:`StreamRecorder` connected to it.

    Yields (node process, recorder); everything is stopped afterwards.
    """
    from dense_ood_ros.ros import image_outputs
    from dense_ood_ros.ros.client import (init_client_context, start_detector, stop_detector,
                                          use_large_data_profile)

    use_large_data_profile()
    process = start_detector({"model_path": str(model), "backend": backend, "threads": threads},
                             namespace=NAMESPACE, log=log or subprocess.DEVNULL)
    context = init_client_context()
    recorder = StreamRecorder(context, image_outputs(True, False))
    try:
        deadline = time.perf_counter() + 120
        while not recorder.connected():
            if process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("the detector node did not come up")
            recorder.spin_until(time.perf_counter() + 0.1)
        yield process, recorder
    finally:
        recorder.close()
        context.try_shutdown()
        stop_detector(process)


def serialized_frame(frame: np.ndarray) -> bytearray:
    """Serialize an RGB frame as a sensor_msgs/Image (rgb8), stamp to be patched."""
    from rclpy.serialization import serialize_message

    from dense_ood_ros.ros.conversions import numpy_to_image

    return bytearray(serialize_message(numpy_to_image(frame, "rgb8")))


#: How long warm_up keeps sending before it gives up: loading a model (and exporting it on a
#: first run) takes seconds on an idle machine, far longer on a busy one.
WARM_UP_TIMEOUT_S = 120.0


def warm_up(recorder: StreamRecorder, serialized: bytearray, first_stamp: int,
            timeout_s: float = WARM_UP_TIMEOUT_S) -> int:
    """Send bursts of frames until the node answers one (its model is loaded).

    Returns the next unused stamp; RuntimeError if nothing was answered within ``timeout_s``.
    """
    deadline = time.perf_counter() + timeout_s
    stamp = first_stamp
    while True:
        answered = stream(recorder, serialized, 2.0, 4, stamp, settle_s=2.0)["answered"]
        stamp += 4
        if answered:
            return stamp
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the node answered none of the warm-up frames in {timeout_s:g} s")


def _run_round(args, round_index: int, detector, frames: Dict[Tuple[int, int], np.ndarray],
               process, recorder: StreamRecorder, stamp: int, runs: List[Dict]
               ) -> Dict[str, Dict]:
    """Measure the bare detector, then stream every size and rate once; append the runs.

    Returns the round's bare figures by camera size.
    """
    label = f" (round {round_index + 1}/{args.rounds})" if args.rounds > 1 else ""
    print(f"bare detector{label} ...", file=sys.stderr, flush=True)
    bare = {f"{h}x{w}": bare_detector_figures(detector, frame, 50)
            for (h, w), frame in frames.items()}
    for (height, width), frame in frames.items():
        serialized = serialized_frame(frame)
        if round_index == 0:
            stamp = warm_up(recorder, serialized, stamp) + 10
        for rate in args.rates:
            print(f"{height}x{width} at {rate} Hz{label} ...", file=sys.stderr, flush=True)
            cpu_before = _cpu_seconds(process.pid)
            wall_before = time.perf_counter()
            counts_before = dict(recorder.diagnostics)
            run = stream(recorder, serialized, float(rate), args.frames, stamp)
            cpu = (_cpu_seconds(process.pid) - cpu_before) / (time.perf_counter()
                                                              - wall_before)
            recorder.spin_until(time.perf_counter() + 1.5)  # one diagnostics period
            counts = {key[len("frames_"):]: int(value) - int(counts_before.get(key, 0))
                      for key, value in recorder.diagnostics.items()
                      if key.startswith("frames_") and value.isdigit()
                      and key != "frames_pending"}
            run.update(size=f"{height}x{width}", node_cpu_cores=cpu, node_counts=counts,
                       stage_p50_ms=stage_medians(recorder.diagnostics), first_stamp=stamp,
                       round=round_index, bare_fps=bare[f"{height}x{width}"]["fps"])
            runs.append(run)
            stamp += args.frames + 10
    return bare


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from dense_ood_ros.detector import Detector
    from dense_ood_ros.ros import package_path

    model = args.model or package_path("models", "default.pt")
    source = read_rgb(args.frame)
    frames = {size: cv2.resize(source, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
              for size in args.sizes}
    print(f"loading the detector ({args.backend}) ...", file=sys.stderr, flush=True)
    threads = args.threads or 0  # the node's 'threads' parameter; 0: one per core
    detector = Detector.from_model(model, args.backend,
                                   **({"threads": threads} if threads else {}))
    backend = detector.backend.describe()
    runs: List[Dict] = []
    bare_rounds: List[Dict[str, Dict]] = []
    with node_under_test(model, args.backend, threads=threads) as (process, recorder):
        consumer = Consumer(list(recorder.arrivals)) if args.consumer else None
        stamp = 1_000
        for round_index in range(args.rounds):
            bare_rounds.append(_run_round(args, round_index, detector, frames, process,
                                          recorder, stamp, runs))
            stamp = runs[-1]["first_stamp"] + args.frames + 10
        if consumer is not None:
            stamps = consumer.stamps()
            for run in runs:
                run["consumer_answered"] = consumer_answered(stamps, run["first_stamp"],
                                                             run["sent"])
    report = {"backend": backend, "model": str(model), "frames": args.frames,
              "consumer": args.consumer, "threads": threads, "rounds": args.rounds,
              "machine": {"cpus": os.cpu_count(), "cpu_flags": speed_flags()},
              "bare": median_bare(bare_rounds), "runs": runs, "summary": round_summary(runs)}
    show_report(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
