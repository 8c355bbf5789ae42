"""Offline bag replay: every camera message of a bag through the node's own frame pipeline.

No ROS graph: the serialized messages that ``rosbags`` reads are deserialized with rclpy
(exactly as the node receives them), run through
:class:`~dense_ood_ros.ros.pipeline.FramePipeline` (the node's conversion, detector and
output messages), and the output messages are serialized into the result bag at the
recording time of their input, under the node's output topic names.
"""

import queue
import threading
import time
import traceback
from dataclasses import replace
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from rclpy.serialization import deserialize_message, serialize_message
from tqdm import tqdm

from dense_ood_ros.cli import BadInput, backend_options
from dense_ood_ros.detector import Detector
from dense_ood_ros.evaluation import AnomalyLabelSpec
from dense_ood_ros.replay.bag_reader import BagError, BagMessage, BagReader, Topic, header_stamp_ns
from dense_ood_ros.replay.bag_writer import RESULT_BAG, BagWriter, open_result_bag
from dense_ood_ros.replay.ground_truth import label_topic_copies, open_label_sources
from dense_ood_ros.replay.report import report_and_exit
from dense_ood_ros.replay.results import ReplayResults, run_info
from dense_ood_ros.ros.conversions import BadImage
from dense_ood_ros.ros.pipeline import FramePipeline, PipelineOptions
from dense_ood_ros.ros.replay.messages import MESSAGE_TYPES, decode_label, output_topics


def run_offline(args, camera: Topic, wanted: Dict[str, Tuple[str, object]],
                notes: List[str]) -> int:
    """Replay the bag through the node's frame pipeline; write the results; exit code.

    BadInput: the model or the ground truth cannot be read.
    """
    pipeline = load_pipeline(args)
    detector = pipeline.detector
    outputs = output_topics(pipeline.topics, args.namespace)
    label_spec = AnomalyLabelSpec(args.anomaly_values, args.ignore_values)
    if args.semantic_ignore is None:
        args.semantic_ignore = detector.label_set.ignore_index
    started = time.perf_counter()
    try:
        bag = BagReader(args.bag)
    except BagError as exc:  # gone or damaged since the checks: nothing was run yet
        raise BadInput(str(exc)) from None
    with bag:
        frames = bag.messages([camera.name])
        sources = open_label_sources(args, wanted, decode_label)
        try:
            with open_result_bag(args.out, camera, outputs,
                                 label_topic_copies(sources)) as writer:
                results = ReplayResults.evaluated_as(wanted, args.scores, detector.class_names,
                                                     args.semantic_ignore, label_spec, sources,
                                                     args.num_overlays, notes)
                stopped = _replay_frames(args, frames, camera, pipeline, outputs, writer,
                                         results)
        finally:
            for source in sources:
                source.close()
    wall = time.perf_counter() - started
    counts = results.counts()
    info = run_info(args, wanted, str(args.model), detector.backend.describe(),
                    detector.backend.input_size, args.scores, camera.name,
                    results.complete(stopped, notes), stopped)
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
    report = results.build(args.metric_mode, info, replay, timing)
    return report_and_exit(args, results, report)


def load_pipeline(args) -> FramePipeline:
    """Return the node's frame pipeline for the model and options of ``args`` (BadInput if not)."""
    options = PipelineOptions(score=args.scores[0], publish_color=not args.no_color,
                              mask_threshold=args.mask_threshold)
    if args.max_input_pixels is not None:
        options = replace(options, max_input_pixels=args.max_input_pixels)
    try:
        detector = Detector.from_model(args.model, backend=args.backend or "torch",
                                       score_names=args.scores, input_size=args.input_size,
                                       **backend_options(args))
        return FramePipeline(detector, options)
    except (ValueError, RuntimeError, ImportError, OSError) as exc:
        raise BadInput(f"cannot load model: {exc}") from None


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


def _replay_frames(args, messages: Iterator[BagMessage], camera: Topic, pipeline: FramePipeline,
                   outputs: Dict[str, str], writer: BagWriter,
                   results: ReplayResults) -> Optional[str]:
    """Run the frame loop; return why it stopped early (None: it read the whole topic)."""
    message_type = MESSAGE_TYPES[camera.msgtype]
    progress = tqdm(total=camera.count, desc="replay", unit="frame", disable=args.no_progress)
    worker = InOrder()
    stopped = fault = None
    try:
        for message in messages:
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
                          picture=lambda: result.frame)

    submit(account)


def camera_type_name(message_type) -> str:
    return "sensor_msgs/msg/" + message_type.__name__
