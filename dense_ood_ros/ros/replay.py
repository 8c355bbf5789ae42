"""Offline bag replay: every camera message of a bag through the node's own frame pipeline.

No ROS graph: the serialized messages that ``rosbags`` reads are deserialized with rclpy
(exactly as the node receives them), run through
:class:`~dense_ood_ros.ros.pipeline.FramePipeline` (the node's conversion, detector and
output messages), and the output messages are serialized into the result bag at the
recording time of their input, under the node's output topic names. The pieces both replay
modes share (label decoding, the result bag, the report) are here too; the live mode is
:mod:`dense_ood_ros.ros.live_replay`, the command line :mod:`dense_ood_ros.ros.replay_main`.
"""

import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from tqdm import tqdm

from dense_ood_ros.bags import (COMPRESSED_TYPE, IMAGE_TYPE, BagError, BagMessage, BagReader,
                                BagWriter, Topic, header_stamp_ns)
from dense_ood_ros.cli import backend_options
from dense_ood_ros.detector import Detector
from dense_ood_ros.evaluate import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_OK, AnomalyLabelSpec
from dense_ood_ros.replay import (RESULT_BAG, FolderLabels, LabelSource, ReplayResults,
                                  TopicLabels, make_evaluation, run_info, tolerance_ns)
from dense_ood_ros.ros import node_topic, output_topic
from dense_ood_ros.ros.conversions import BadImage, image_to_numpy
from dense_ood_ros.ros.pipeline import FramePipeline, PipelineOptions

PROG = "dense-ood-replay"
#: Bag message type -> rclpy message class of a camera topic.
MESSAGE_TYPES = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage}
#: Problems printed to stderr at the end (all of them are in metrics.json).
MAX_PRINTED_PROBLEMS = 20


def decode_label(data: bytes, topic: str, index: int) -> np.ndarray:
    """Deserialize a label message: a mono8 sensor_msgs/Image -> uint8 HxW (a copy)."""
    msg = deserialize_message(data, Image)
    if msg.encoding != "mono8":
        raise ValueError(f"label encoding {msg.encoding!r}, expected mono8")
    return np.array(image_to_numpy(msg))


def output_topics(names: Sequence[str], namespace: str) -> Dict[str, str]:
    """Output name (e.g. LABELS_TOPIC) -> the node's absolute output topic in ``namespace``."""
    return {name: node_topic(output_topic(name), namespace) for name in names}


def open_result_bag(out: Path, camera: Topic, outputs: Dict[str, str]) -> BagWriter:
    """Create ``<out>/result_bag`` (MCAP) with the camera topic and the output topics."""
    writer = BagWriter(out / RESULT_BAG, "mcap")
    writer.add_topic(camera.name, camera.msgtype)
    for topic in outputs.values():
        writer.add_topic(topic, IMAGE_TYPE)
    return writer


def open_label_sources(args, wanted: Dict[str, Tuple[str, object]],
                       writer: Optional[BagWriter]) -> List[LabelSource]:
    """Open the ground truth asked for; label topics are also copied into the result bag."""
    sources: List[LabelSource] = []
    try:
        for kind, (how, where) in wanted.items():
            if how == "folder":
                sources.append(FolderLabels(Path(where), kind, args.label_match,
                                            tolerance_ns(args)))
                continue
            copy = None
            if writer is not None:
                writer.add_topic(where, IMAGE_TYPE)
                copy = _copier(writer)
            sources.append(TopicLabels(args.bag, where, kind, tolerance_ns(args), decode_label,
                                       copy))
    except BaseException:
        for source in sources:
            source.close()
        raise
    return sources


def _copier(writer: BagWriter):
    def copy(message: BagMessage) -> None:
        writer.write(message.topic, message.log_time_ns, message.data)
    return copy


def report_and_exit(args, results: ReplayResults, info: Dict, replay: Dict, timing: Dict) -> int:
    """Build the report, write every result file, print a summary; return the exit code."""
    report = results.build(args.metric_mode, info, replay, timing)
    problems = report["problems"]
    for problem in problems[:MAX_PRINTED_PROBLEMS]:
        print(f"{PROG}: {problem}", file=sys.stderr)
    if len(problems) > MAX_PRINTED_PROBLEMS:
        print(f"{PROG}: ... and {len(problems) - MAX_PRINTED_PROBLEMS} more problems "
              "(metrics.json lists them all)", file=sys.stderr)
    try:
        results.write(args.out, args.metric_mode, report)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: error: the results could not be saved: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts, latency = report["replay"], report["timing"].get("latency_ms") or {}
    print(f"{counts['processed']} of {counts['frames']} frames processed, {counts['failed']} "
          f"failed, {counts['dropped']} never answered, {counts['evaluated']} evaluated; "
          f"latency p50 {latency.get('p50', float('nan')):.1f} ms, p99 "
          f"{latency.get('p99', float('nan')):.1f} ms; "
          f"{report['timing'].get('fps') or float('nan'):.2f} FPS")
    if report.get("anomaly"):
        for name, values in report["anomaly"]["scores"].items():
            print(f"anomaly {name}: AP {_pct(values['ap'])}, FPR95 {_pct(values['fpr95'])}, "
                  f"AUROC {_pct(values['auroc'])}")
    if report.get("semantic"):
        print(f"semantic: mIoU {report['semantic']['miou']:.2f}%")
    print(f"wrote {args.out}: metrics.json, metrics.md, {RESULT_BAG}/, plots")
    if not report["complete"]:
        print(f"{PROG}: INCOMPLETE" + (f" (stopped: {report['stopped']})"
                                       if report.get("stopped") else "")
              + f"; {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}%"


def complete_run(results: ReplayResults, stopped: Optional[str], notes: Sequence[str]) -> bool:
    """Whether nothing went wrong: every frame answered and evaluated as asked, bag whole."""
    counts = results.counts()
    return (stopped is None and counts["processed"] > 0 and counts["processed"] == counts["frames"]
            and not results.evaluation.problems and not any("unfinished" in n for n in notes))


def bag_problems(results: ReplayResults, sources: Sequence[LabelSource],
                 notes: Sequence[str]) -> None:
    """Record what was wrong with the bag beyond single frames."""
    for note in notes:
        if "unfinished" in note:
            results.problem(f"the bag is an unfinished recording: {note}")
    for source in sources:
        if getattr(source, "fault", None):
            results.problem(f"{source.kind} labels read only up to a fault: {source.fault}")
        if getattr(source, "duplicates", 0):
            results.problem(f"{source.kind} label topic has {source.duplicates} duplicate stamps "
                            "(the first of each is used)")


def run_offline(args, camera: Topic, wanted: Dict[str, Tuple[str, object]],
                notes: List[str]) -> int:
    """Replay the bag through the node's frame pipeline; write the results; exit code."""
    try:
        detector = Detector.from_model(args.model, backend=args.backend or "torch",
                                       score_names=args.scores, input_size=args.input_size,
                                       **backend_options(args))
        options = PipelineOptions(score=args.scores[0], publish_color=not args.no_color,
                                  mask_threshold=args.mask_threshold)
        if args.max_input_pixels is not None:
            options = PipelineOptions(options.score, options.publish_color,
                                      options.mask_threshold, args.max_input_pixels)
        pipeline = FramePipeline(detector, options)
    except (ValueError, RuntimeError, ImportError, OSError) as exc:
        print(f"{PROG}: error: cannot load model: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    outputs = output_topics(pipeline.topics, args.namespace)
    label_spec = AnomalyLabelSpec(args.anomaly_values, args.ignore_values)
    if args.semantic_ignore is None:
        args.semantic_ignore = detector.label_set.ignore_index
    evaluation = make_evaluation(wanted, args.scores, detector.class_names, args.semantic_ignore)
    stopped = None
    started = time.perf_counter()
    with open_result_bag(args.out, camera, outputs) as writer:
        try:
            sources = open_label_sources(args, wanted, writer)
        except (BagError, ValueError, OSError) as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        results = ReplayResults(evaluation, label_spec, sources, args.num_overlays)
        bag_problems(results, sources, notes)
        try:
            stopped = _replay_frames(args, camera, pipeline, outputs, writer, results)
        finally:
            for source in sources:
                source.close()
    wall = time.perf_counter() - started
    counts = results.counts()
    info = run_info(args, wanted, str(args.model), detector.backend.describe(),
                    detector.backend.input_size, args.scores, camera.name,
                    complete_run(results, stopped, notes), stopped)
    replay = {"mode": "offline", "bag": str(args.bag), "image_topic": camera.name,
              "image_type": camera.msgtype, "bag_notes": notes,
              "result_bag": str(args.out / RESULT_BAG), "output_topics": outputs}
    in_pipeline = sum(r.latency_s for r in results.records if r.latency_s is not None)
    timing = {"wall_s": wall, "fps": counts["processed"] / wall if wall > 0 else None,
              # what the replay adds to the node's own per-frame work: reading, deserializing,
              # serializing, writing the result bag, metrics, ranking
              "outside_pipeline_ms_per_frame": ((wall - in_pipeline) / counts["processed"] * 1e3
                                                if counts["processed"] else None),
              "latency_what": "message in -> output messages built (deserialized message -> "
                              "conversion -> detector -> output messages), per frame"}
    return report_and_exit(args, results, info, replay, timing)


class InOrder:
    """Runs jobs in one background thread, in the order submitted, at most ``depth`` waiting.

    Offline replay writes the result bag and accounts each frame there while the main thread
    runs the next one (the backend releases the GIL while it infers). The first exception of a
    job stops the rest and is raised again by :meth:`submit` or :meth:`close`.
    """

    def __init__(self, depth: int = 2):
        self._queue: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue(maxsize=depth)
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="replay-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job()
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    self.error = exc

    def submit(self, job: Callable[[], None]) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(job)

    def close(self) -> None:
        """Wait for every job submitted; raise the first error of one."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


def _replay_frames(args, camera: Topic, pipeline: FramePipeline, outputs: Dict[str, str],
                   writer: BagWriter, results: ReplayResults) -> Optional[str]:
    """Run the frame loop; return why it stopped early (None: it read the whole topic)."""
    message_type = MESSAGE_TYPES[camera.msgtype]
    progress = tqdm(total=camera.count, desc="replay", unit="frame", disable=args.no_progress)
    worker = InOrder()
    stopped = fault = None
    try:
        with BagReader(args.bag) as bag:
            for message in bag.messages([camera.name]):
                _replay_one(args, message, message_type, pipeline, outputs, writer, results,
                            worker.submit)
                progress.update()
    except BagError as exc:
        fault, stopped = str(exc), f"bag fault: {exc}"
    except KeyboardInterrupt:
        stopped = "interrupted"
    except Exception as exc:  # noqa: BLE001 - keep what was accumulated whatever stopped it
        traceback.print_exc()
        stopped = f"{type(exc).__name__}: {exc}"
    finally:
        progress.close()
        try:
            worker.close()
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk under the result bag
            traceback.print_exc()
            stopped = stopped or f"{type(exc).__name__}: {exc}"
    if fault is not None:  # after the frames before it (the worker is done)
        results.problem(fault)
    return stopped


def _replay_one(args, message: BagMessage, message_type, pipeline: FramePipeline,
                outputs: Dict[str, str], writer: BagWriter, results: ReplayResults,
                submit: Callable[[Callable[[], None]], None]) -> None:
    """Run one camera message; its writing and accounting go to ``submit`` (in order)."""
    where = f"bag {args.bag}, topic {message.topic}, message index {message.index}"
    submit(lambda: writer.write(message.topic, message.log_time_ns, message.data))
    try:
        stamp = header_stamp_ns(message.data)
        msg = deserialize_message(message.data, message_type)
    except Exception as exc:  # noqa: BLE001 - RMWError or a short message: this frame only
        # no header stamp to go by: the recording time places it on the time line
        problem = f"{where}: not a {camera_type_name(message_type)} message: {exc}"
        submit(lambda: results.add_failed(message.index, message.log_time_ns, "undecodable",
                                          problem))
        return
    started = time.perf_counter()
    try:
        result = pipeline(msg)
    except BadImage as exc:
        reason, problem = exc.reason, f"{where}: {exc}"
        submit(lambda: results.add_failed(message.index, stamp, reason, problem))
        return
    latency = time.perf_counter() - started

    def account() -> None:
        for name, output_msg in result.messages.items():
            writer.write(outputs[name], message.log_time_ns, serialize_message(output_msg))
        results.add_frame(message.index, stamp, result.output, latency,
                          picture=lambda: pipeline.frame(msg))

    submit(account)


def camera_type_name(message_type) -> str:
    return "sensor_msgs/msg/" + message_type.__name__
