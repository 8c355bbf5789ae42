"""The ``detector`` node: camera images in; class labels, semantic colours and anomaly scores out.

A thin adapter over :class:`dense_ood_ros.ros.pipeline.FramePipeline` (the path bag replay and
the benchmarks run too). Parameters are listed in ``config/detector.yaml``. Topics are private
and set by remapping (``-r ~/input/image:=/camera/image_raw``):

- in: ``~/input/image`` (sensor_msgs/Image, or CompressedImage with ``compressed``),
  ``~/input/camera_info`` (optional);
- out, each with the input image's header: ``~/output/labels`` (mono8 class indices),
  ``~/output/semantic_color`` (rgb8), ``~/output/anomaly_score`` (32FC1, higher = more
  anomalous), ``~/output/anomaly_mask`` (mono8 0/255, with ``mask_threshold``),
  ``~/output/camera_info`` (scaled to the outputs, when camera_info comes in);
- ``~/output/label_set`` (std_msgs/String, latched: transient local, reliable, depth 1): the
  model's label set as JSON (:meth:`dense_ood_ros.label_set.LabelSet.to_json`: class names
  by label value, their RGB colours, the ignore index), published once the model is loaded;
- ``/diagnostics``: the frame accounting of :mod:`dense_ood_ros.ros.diagnostics`.

Newest frame wins: the subscription takes serialized messages and only stores the newest
(a frame replaced before the worker took it costs a memory copy and is counted as
``dropped_stale``); one worker thread deserializes, runs and publishes, so receiving never
waits on the model and the outputs keep the order of the inputs. All outputs of a frame are
built before the first is published. No camera message can stop the node: a malformed,
unsupported, over-budget (``max_input_pixels``) or corrupt frame, and any failure to run one,
is logged (rate limited), counted by reason and skipped. SIGINT and SIGTERM stop it cleanly
with code 0 (:mod:`dense_ood_ros.ros.shutdown`).
"""

import copy
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from dense_ood_ros.backends import BACKEND_NAMES, PRECISIONS
from dense_ood_ros.checkpoint import CheckpointError
from dense_ood_ros.cli import MIN_SIDE
from dense_ood_ros.detector import Detector
from dense_ood_ros.ros import (CAMERA_INFO_TOPIC, INPUT_CAMERA_INFO_TOPIC, INPUT_IMAGE_TOPIC,
                               LABEL_SET_TOPIC,
                               NODE_NAME, image_outputs, output_topic, package_path)
from dense_ood_ros.ros.conversions import CAMERA_ENCODINGS, DEFAULT_MAX_INPUT_PIXELS, BadImage
from dense_ood_ros.ros.diagnostics import INFERENCE_ERROR, FrameStatistics, detector_status
from dense_ood_ros.ros.pipeline import (OUTPUT_RESOLUTIONS, FramePipeline, FrameResult,
                                        PipelineOptions)
from dense_ood_ros.ros.shutdown import StopRequest, exit_now
from dense_ood_ros.scores import SCORES

DIAGNOSTICS_PERIOD_S = 1.0
BAD_FRAME_LOG_THROTTLE_S = 5.0
#: At shutdown, how long the frame in flight may take to finish, and then how long its
#: outputs may take to be acknowledged by subscribers.
FINISH_FRAME_TIMEOUT_S = 5.0
OUTPUT_FLUSH_TIMEOUT_S = 1.0
#: How often the worker looks for a stop request while no frame comes.
WORKER_POLL_S = 0.1


def label_set_qos() -> QoSProfile:
    """Latched: a subscriber that joins later still gets the one label set message."""
    return QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                      reliability=ReliabilityPolicy.RELIABLE)


class NodeConfigError(ValueError):
    """A parameter value the node cannot start with; the message names the parameter."""


@dataclass(frozen=True)
class DetectorSettings:
    """Validated node parameters."""

    model_path: Path
    backend: str
    score: str
    input_size: Optional[Tuple[int, int]]
    precision: Optional[str]
    threads: int
    compressed: bool
    publish_color: bool
    mask_threshold: Optional[float]
    output_resolution: str
    input_qos_depth: int
    output_qos_depth: int
    max_input_pixels: int
    error_after_failures: int

    def pipeline_options(self) -> PipelineOptions:
        return PipelineOptions(score=self.score, publish_color=self.publish_color,
                               mask_threshold=self.mask_threshold,
                               max_input_pixels=self.max_input_pixels,
                               output_resolution=self.output_resolution)


#: name -> (default, description).
PARAMETERS = {
    "model_path": (str(package_path("models", "default.pt")),
                   "model file: checkpoint .pt, exported .onnx, "
                   "or TensorRT .engine (backend tensorrt)"),
    "backend": ("auto", f"inference backend, one of {list(BACKEND_NAMES)}; auto: TensorRT on "
                        "an NVIDIA GPU, else OpenVINO int8 on an x86 CPU with INT8 dot "
                        "products (VNNI, AMX), else ONNX Runtime; the log says which and why"),
    "score": ("jsd", f"anomaly score published, one of {sorted(SCORES)}"),
    "input_size": ([], f"[height, width] the model runs at, each at least {MIN_SIDE}; "
                       "[] = the checkpoint's own"),
    "precision": ("", f"numeric precision, one of {list(PRECISIONS)} where the backend offers "
                      "it (onnxruntime: fp32, int8; tensorrt: fp32, fp16, int8; torch: fp32, "
                      "fp16 on CUDA); '' = the backend's default"),
    "threads": (0, "CPU threads of the backend's inference (onnxruntime, openvino, torch on "
                   "CPU); 0 = one per core this process may use. Fewer leave cores to the "
                   "node's receiving and publishing and to the processes beside it"),
    "compressed": (False, "subscribe to sensor_msgs/CompressedImage (jpeg, png) on "
                          f"{INPUT_IMAGE_TOPIC} instead of Image "
                          f"({', '.join(CAMERA_ENCODINGS)})"),
    "publish_color": (True, "also publish the rgb8 semantic colour image"),
    "mask_threshold": ("off", "publish ~/output/anomaly_mask (mono8, 255 where score >= "
                              "threshold) at this score threshold; 'off': no mask"),
    "output_resolution": ("camera", f"one of {list(OUTPUT_RESOLUTIONS)}: outputs at the camera "
                                    "image's size, or at the network's input size"),
    "input_qos_depth": (5, "queue depth of the input subscription (best effort): frames the "
                           "middleware holds until the node takes them (it then runs only the "
                           "newest)"),
    "output_qos_depth": (10, "queue depth of the output publishers (reliable): how many "
                             "frames a slow subscriber may lag behind without losing any"),
    "max_input_pixels": (DEFAULT_MAX_INPUT_PIXELS,
                         "largest camera frame accepted, height x width in pixels (raw, or as "
                         "a compressed image's header declares it, checked before decoding)"),
    "error_after_failures": (5, "diagnostics report ERROR after this many frames in a row "
                                "failed in inference"),
}


def _parameter_error(name: str, value: Any, problem: str) -> NodeConfigError:
    return NodeConfigError(f"parameter '{name}' = {value!r}: {problem}")


def _expect(name: str, value: Any, kind: type) -> Any:
    # bool is an int subclass: an int parameter must not accept true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _parameter_error(name, value, f"must be of type {kind.__name__}")
    return value


def _mask_threshold(value: Any) -> Optional[float]:
    if value == "off":
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value)):
        raise _parameter_error("mask_threshold", value, "must be a finite number or 'off'")
    return float(value)


def _at_least(name: str, value: Any, minimum: int) -> int:
    if _expect(name, value, int) < minimum:
        raise _parameter_error(name, value, f"must be at least {minimum}")
    return value


def validate_parameters(values: dict) -> DetectorSettings:
    """Check raw parameter values (name -> value); NodeConfigError names the bad parameter."""
    model_path = Path(_expect("model_path", values["model_path"], str))
    try:
        found = model_path.is_file()
    except (OSError, ValueError) as exc:  # e.g. a name too long, a NUL byte
        raise _parameter_error("model_path", str(model_path),
                               f"not a usable path: {exc}") from None
    if not found:
        raise _parameter_error("model_path", str(model_path), "model file not found")
    backend = _expect("backend", values["backend"], str)
    if backend not in BACKEND_NAMES:
        raise _parameter_error("backend", backend,
                               f"unknown backend; choose one of {list(BACKEND_NAMES)}")
    score = _expect("score", values["score"], str)
    if score not in SCORES:
        raise _parameter_error("score", score,
                               f"unknown anomaly score; choose one of {sorted(SCORES)}")
    input_size = values["input_size"] or None  # [] (or unset) = the checkpoint's size
    if input_size is not None:
        if (not isinstance(input_size, (list, tuple)) or len(input_size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= MIN_SIDE
                           for v in input_size)):
            raise _parameter_error("input_size", input_size,
                                   f"must be [height, width], integers of at least {MIN_SIDE} "
                                   "(the encoder's stride), or []")
        input_size = (int(input_size[0]), int(input_size[1]))
    precision = _expect("precision", values["precision"], str) or None
    if precision is not None and precision not in PRECISIONS:
        raise _parameter_error("precision", precision,
                               f"choose one of {list(PRECISIONS)} or '' (the backend's default)")
    output_resolution = _expect("output_resolution", values["output_resolution"], str)
    if output_resolution not in OUTPUT_RESOLUTIONS:
        raise _parameter_error("output_resolution", output_resolution,
                               f"choose one of {list(OUTPUT_RESOLUTIONS)}")
    return DetectorSettings(
        model_path=model_path, backend=backend, score=score, input_size=input_size,
        precision=precision, threads=_at_least("threads", values["threads"], 0),
        compressed=_expect("compressed", values["compressed"], bool),
        publish_color=_expect("publish_color", values["publish_color"], bool),
        mask_threshold=_mask_threshold(values["mask_threshold"]),
        output_resolution=output_resolution,
        input_qos_depth=_at_least("input_qos_depth", values["input_qos_depth"], 1),
        output_qos_depth=_at_least("output_qos_depth", values["output_qos_depth"], 1),
        max_input_pixels=_at_least("max_input_pixels", values["max_input_pixels"], 1),
        error_after_failures=_at_least("error_after_failures", values["error_after_failures"],
                                       1))


def load_detector(settings: DetectorSettings, status=None) -> Detector:
    """Load the detector for validated settings; failures name the parameters at fault.

    ``status`` receives progress lines (backend choice, ONNX export, TensorRT engine build).
    """
    threads = {"threads": settings.threads} if settings.threads else {}
    try:
        return Detector.from_model(settings.model_path, settings.backend, (settings.score,),
                                   settings.input_size, status=status,
                                   precision=settings.precision, **threads)
    except CheckpointError as exc:
        raise _parameter_error("model_path", str(settings.model_path), str(exc)) from exc
    # e.g. a file type or device the backend can't use
    except (ValueError, RuntimeError, ImportError) as exc:
        raise NodeConfigError(f"parameters 'backend' = {settings.backend!r}, 'precision' = "
                              f"{settings.precision or ''!r}, 'threads' = {settings.threads}, "
                              "'model_path' = "
                              f"'{settings.model_path}': {exc}") from exc


class NewestFrame:
    """A one-slot mailbox between the subscription and the worker.

    A newer frame replaces an older one that was not taken yet: no queue grows, whatever the
    camera rate.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._frame: Optional[Tuple[bytes, float]] = None
        self._closed = False

    def put(self, raw: bytes, received_at: float) -> bool:
        """Store a serialized message; True if it replaced one not taken yet."""
        with self._condition:
            replaced = self._frame is not None
            self._frame = (raw, received_at)
            self._condition.notify()
            return replaced

    def take(self, timeout_s: float) -> Optional[Tuple[bytes, float]]:
        """Return (message, receive time) or None after ``timeout_s`` or once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed,
                                     timeout_s)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> bool:
        """Wake the worker for good; True if a frame was left untaken."""
        with self._condition:
            self._closed = True
            left, self._frame = self._frame is not None, None
            self._condition.notify_all()
            return left


class DetectorNode(Node):
    """Runs the detector on the newest camera frame, in a worker thread.

    The model loads in a background thread (a TensorRT engine build can take minutes): until
    it is ready, frames are dropped and counted, and the log and diagnostics show the loading
    progress. A load failure is stored in ``load_error`` (``main`` then exits).
    """

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self.settings = validate_parameters(self._declare_parameters())
        self.stats = FrameStatistics(self.settings.error_after_failures)
        self.pipeline: Optional[FramePipeline] = None
        self.loading: Optional[str] = (f"loading {self.settings.model_path} "
                                       f"({self.settings.backend} backend)")
        self.load_error: Optional[NodeConfigError] = None
        self.input_type = CompressedImage if self.settings.compressed else Image
        self.newest = NewestFrame()
        self.camera_info: Optional[CameraInfo] = None
        self._stopping = threading.Event()
        self._publish_lock = threading.Lock()
        self._closed = False  # under _publish_lock: no publishing any more
        input_qos = copy.copy(qos_profile_sensor_data)  # best effort, volatile
        input_qos.depth = self.settings.input_qos_depth
        self.subscription = self.create_subscription(
            self.input_type, INPUT_IMAGE_TOPIC, self._on_image, input_qos, raw=True,
            event_callbacks=SubscriptionEventCallbacks(
                message_lost=lambda info: self.stats.add_lost(info.total_count_change)))
        self.camera_info_subscription = self.create_subscription(
            CameraInfo, INPUT_CAMERA_INFO_TOPIC, self._on_camera_info, qos_profile_sensor_data)
        # reliable: matches reliable and best-effort readers
        output_qos = QoSProfile(depth=self.settings.output_qos_depth)
        names = image_outputs(self.settings.publish_color,
                              self.settings.mask_threshold is not None) + (CAMERA_INFO_TOPIC,)
        self.publishers_by_topic = {
            name: self.create_publisher(CameraInfo if name == CAMERA_INFO_TOPIC else Image,
                                        output_topic(name), output_qos)
            for name in names}
        self.label_set_publisher = self.create_publisher(String, output_topic(LABEL_SET_TOPIC),
                                                         label_set_qos())
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.loader = threading.Thread(target=self._load, name="detector-loader", daemon=True)
        self.worker = threading.Thread(target=self._work, name="detector-worker", daemon=True)
        self.loader.start()

    def _declare_parameters(self) -> dict:
        values = {}
        for name, (default, description) in PARAMETERS.items():
            # Dynamic typing lets [] default to "unset" and makes type errors ours (they name the
            # parameter).
            descriptor = ParameterDescriptor(description=description, read_only=True,
                                             dynamic_typing=True)
            values[name] = self.declare_parameter(name, default, descriptor).value
        return values

    # --- loading ---------------------------------------------------------------------------

    def _on_load_status(self, line: str) -> None:
        self.loading = line
        self.get_logger().info(line)

    def _load(self) -> None:
        self.get_logger().info(self.loading)
        try:
            detector = load_detector(self.settings, status=self._on_load_status)
            pipeline = FramePipeline(detector, self.settings.pipeline_options())
        except NodeConfigError as exc:
            self.load_error = exc
            return
        # anything else must still stop the node, not leave it loading forever
        except Exception as exc:
            self.load_error = NodeConfigError(f"loading model '{self.settings.model_path}' "
                                              f"failed: {type(exc).__name__}: {exc}")
            return
        self.pipeline, self.loading = pipeline, None
        self.label_set_publisher.publish(String(data=detector.label_set.to_json()))
        self.worker.start()
        backend = detector.backend
        self.get_logger().info(
            f"backend {backend.describe()}; model {self.settings.model_path} (input "
            f"{backend.input_size[0]}x{backend.input_size[1]}, {len(backend.class_names)} "
            f"classes of label set {detector.label_set.name!r}); score {self.settings.score}; "
            f"input {self.subscription.topic_name} ({self.input_type.__name__}); outputs "
            f"{', '.join(p.topic_name for p in self.publishers_by_topic.values())}; Fast DDS "
            f"profile {os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE') or 'none'}")

    # --- receiving (executor thread): cheap, never waits on the model ----------------------

    def _on_image(self, raw: bytes) -> None:
        self.stats.add_received()
        if self.pipeline is None:
            self.stats.add_dropped_while_loading()
            return
        if self._stopping.is_set():
            self.stats.add_dropped_stale()
            return
        if self.newest.put(raw, time.perf_counter()):
            self.stats.add_dropped_stale()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    # --- the worker: deserialize, run, publish ---------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            frame = self.newest.take(WORKER_POLL_S)
            if frame is not None:
                self._run(*frame)

    def _run(self, raw: bytes, received_at: float) -> None:
        taken = time.perf_counter()
        try:
            msg = deserialize_message(raw, self.input_type)
        except Exception as exc:  # the middleware checked the type: should not happen
            self._bad_frame("malformed", f"cannot deserialize the message: {exc}")
            return
        deserialized = time.perf_counter()
        try:
            result = self.pipeline(msg, self.camera_info)
        except BadImage as exc:  # the message: conversions say what is wrong with it
            self._bad_frame(exc.reason, str(exc))
            return
        except Exception as exc:  # anything else: still one frame, not the node
            self._bad_frame(INFERENCE_ERROR, f"{type(exc).__name__}: {exc}")
            return
        built = time.perf_counter()
        if self._publish(result):
            done = time.perf_counter()
            inference = self.pipeline.detector.last_inference_s
            self.stats.add_processed(done - received_at, {
                "wait": taken - received_at, "deserialize": deserialized - taken,
                "inference": inference, "pipeline_other": built - deserialized - inference,
                "publish": done - built})
        else:  # the node stopped meanwhile: nothing of this frame is published
            self.stats.add_dropped_stale()

    def _publish(self, result: FrameResult) -> bool:
        """Publish all outputs of one frame, or none once the node is closed."""
        with self._publish_lock:
            if self._closed:
                return False
            for name, msg in result.messages.items():
                self.publishers_by_topic[name].publish(msg)
            return True

    def _bad_frame(self, reason: str, error: str) -> None:
        self.stats.add_bad(reason, error)
        self.get_logger().error(f"bad frame on {self.subscription.topic_name} skipped "
                                f"({reason}, {self.stats.bad_total} so far): {error}",
                                throttle_duration_sec=BAD_FRAME_LOG_THROTTLE_S)

    # --- shutdown -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking frames; let the frame in flight finish (or not publish), flush outputs."""
        self._stopping.set()
        if self.newest.close():
            self.stats.add_dropped_stale()  # received but never run
        if self.worker.is_alive():
            self.worker.join(FINISH_FRAME_TIMEOUT_S)
        with self._publish_lock:
            self._closed = True
        if self.context.ok():
            deadline = time.monotonic() + OUTPUT_FLUSH_TIMEOUT_S
            for publisher in self.publishers_by_topic.values():
                remaining = max(deadline - time.monotonic(), 0.0)
                publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9)))

    def _publish_diagnostics(self) -> None:
        pipeline = self.pipeline
        info = {
            "backend": (pipeline.detector.backend.describe() if pipeline
                        else self.settings.backend),
            "model_path": str(self.settings.model_path),
            "score": self.settings.score,
            "input_topic": self.subscription.topic_name,
        }
        status = detector_status(f"{self.get_name()}: dense OOD detector",
                                 self.get_fully_qualified_name(), self.stats, info,
                                 loading=self.loading)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)


def main(args: Optional[List[str]] = None) -> int:
    """Run the node; accepts ``--ros-args`` (``-p``, ``--params-file``, ``-r``).

    Returns 0 when stopped by SIGINT or SIGTERM (the frame in flight is finished within
    FINISH_FRAME_TIMEOUT_S, or not published), 2 when it cannot start. The console script
    ``detector`` is :mod:`dense_ood_ros.ros.detector_main`, which also covers signals during
    the imports.
    """
    stop = StopRequest()  # before rclpy.init: a signal from now on is a clean stop
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = DetectorNode()
    except NodeConfigError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok() and node.load_error is None:
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        if node.load_error is not None:
            node.get_logger().fatal(f"cannot start: {node.load_error}")
        elif stop.is_set():
            node.get_logger().info(f"{stop.signal_name}: stopping")
        node.stop()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    code = 2 if node.load_error is not None else 0
    if node.loader.is_alive():  # still loading the model: native code that cannot be stopped
        exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
