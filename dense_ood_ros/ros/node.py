"""The ``detector`` node: camera images in; class labels, semantic colours and anomaly scores out.

A thin adapter over :class:`dense_ood_ros.detector.Detector`. Parameters are listed in
``config/detector.yaml``. Outputs (under ``output_namespace``) copy the input header:
``labels`` (mono8 class indices), ``semantic_color`` (rgb8, CamVid palette) and
``anomaly_score`` (32FC1, higher = more anomalous). Statistics go to ``/diagnostics``.

No camera message can stop it: a malformed, unsupported, over-budget (``max_input_pixels``)
or corrupt frame, and any other failure to convert or run one frame, is logged (rate
limited), counted as a bad frame and skipped. SIGINT and SIGTERM stop it cleanly with code 0
(:mod:`dense_ood_ros.ros.shutdown`).
"""

import copy
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
from rclpy.exceptions import InvalidTopicNameException
from rclpy.expand_topic_name import expand_topic_name
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_topic_name import validate_topic_name
from sensor_msgs.msg import CompressedImage, Image

from dense_ood_ros.backends import BACKEND_NAMES
from dense_ood_ros.checkpoint import CheckpointError
from dense_ood_ros.classes import colorize
from dense_ood_ros.cli import MIN_SIDE
from dense_ood_ros.detector import Detector
from dense_ood_ros.ros import COLOR_TOPIC, LABELS_TOPIC, SCORE_TOPIC, output_topic, package_path
from dense_ood_ros.ros.conversions import (CAMERA_ENCODINGS, DEFAULT_MAX_INPUT_PIXELS,
                                           message_to_rgb, numpy_to_image)
from dense_ood_ros.ros.diagnostics import FrameStatistics, detector_status
from dense_ood_ros.ros.shutdown import StopRequest, exit_now
from dense_ood_ros.scores import SCORES

NODE_NAME = "detector"
DIAGNOSTICS_PERIOD_S = 1.0
BAD_FRAME_LOG_THROTTLE_S = 5.0
#: At shutdown, how long the last frame's outputs may take to be acknowledged by subscribers.
OUTPUT_FLUSH_TIMEOUT_S = 1.0


class NodeConfigError(ValueError):
    """A parameter value the node cannot start with; the message names the parameter."""


@dataclass(frozen=True)
class DetectorSettings:
    """Validated node parameters."""

    model_path: Path
    backend: str
    score: str
    input_size: Optional[Tuple[int, int]]
    camera_topic: str
    compressed: bool
    output_namespace: str
    publish_color: bool
    qos_depth: int
    max_input_pixels: int


#: name -> (default, description).
PARAMETERS = {
    "model_path": (str(package_path("models", "default.pt")),
                   "model file: checkpoint .pt, exported .onnx, "
                   "or TensorRT .engine (backend tensorrt)"),
    "backend": ("torch", f"inference backend, one of {list(BACKEND_NAMES)}"),
    "score": ("jsd", f"anomaly score published, one of {sorted(SCORES)}"),
    "input_size": ([], f"[height, width] the model runs at, each at least {MIN_SIDE}; "
                       "[] = the checkpoint's own"),
    "camera_topic": ("image", f"input topic: sensor_msgs/Image ({', '.join(CAMERA_ENCODINGS)}), "
                              "or CompressedImage (jpeg, png) if compressed"),
    "compressed": (False, "subscribe to sensor_msgs/CompressedImage (jpeg/png) instead of Image"),
    "output_namespace": ("dense_ood", "namespace of the output topics"),
    "publish_color": (True, "also publish the rgb8 semantic colour image"),
    "qos_depth": (1, "queue depth of the input subscription (best effort) and output publishers"),
    "max_input_pixels": (DEFAULT_MAX_INPUT_PIXELS,
                         "largest camera frame accepted, height x width in pixels (raw, or as "
                         "a compressed image's header declares it, checked before decoding)"),
}


def _parameter_error(name: str, value: Any, problem: str) -> NodeConfigError:
    return NodeConfigError(f"parameter '{name}' = {value!r}: {problem}")


def _expect(name: str, value: Any, kind: type) -> Any:
    # bool is an int subclass: an int parameter must not accept true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _parameter_error(name, value, f"must be of type {kind.__name__}")
    return value


def _check_topic(name: str, topic: str) -> None:
    """Raise NodeConfigError naming parameter ``name`` unless ``topic`` is a valid topic name."""
    try:
        validate_topic_name(topic)
        validate_full_topic_name(expand_topic_name(topic, NODE_NAME, "/"))
    except (InvalidTopicNameException, ValueError) as exc:  # expansion raises ValueError
        problem = str(exc).splitlines()[0].rstrip(":")
        raise _parameter_error(name, topic, f"not a valid ROS topic name: {problem}") from None


def validate_parameters(values: dict) -> DetectorSettings:
    """Check raw parameter values (name -> value); NodeConfigError names the bad parameter."""
    model_path = Path(_expect("model_path", values["model_path"], str))
    if not model_path.is_file():
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
    camera_topic = _expect("camera_topic", values["camera_topic"], str)
    if not camera_topic:
        raise _parameter_error("camera_topic", camera_topic, "must not be empty")
    _check_topic("camera_topic", camera_topic)
    output_namespace = _expect("output_namespace", values["output_namespace"], str)
    _check_topic("output_namespace", output_topic(output_namespace, LABELS_TOPIC))
    qos_depth = _expect("qos_depth", values["qos_depth"], int)
    if qos_depth < 1:
        raise _parameter_error("qos_depth", qos_depth, "must be at least 1")
    max_input_pixels = _expect("max_input_pixels", values["max_input_pixels"], int)
    if max_input_pixels < 1:
        raise _parameter_error("max_input_pixels", max_input_pixels, "must be at least 1")
    return DetectorSettings(
        model_path=model_path, backend=backend, score=score, input_size=input_size,
        camera_topic=camera_topic, compressed=_expect("compressed", values["compressed"], bool),
        output_namespace=output_namespace,
        publish_color=_expect("publish_color", values["publish_color"], bool), qos_depth=qos_depth,
        max_input_pixels=max_input_pixels)


def load_detector(settings: DetectorSettings, status=None) -> Detector:
    """Load the detector for validated settings; failures name the parameters at fault.

    ``status`` receives progress lines (backend choice, ONNX export, TensorRT engine build).
    """
    try:
        return Detector.from_model(settings.model_path, settings.backend, (settings.score,),
                                   settings.input_size, status=status)
    except CheckpointError as exc:
        raise _parameter_error("model_path", str(settings.model_path), str(exc)) from exc
    # e.g. a file type or device the backend can't use
    except (ValueError, RuntimeError, ImportError) as exc:
        raise NodeConfigError(f"parameters 'backend' = {settings.backend!r}, 'model_path' = "
                              f"'{settings.model_path}': {exc}") from exc


class DetectorNode(Node):
    """Runs the detector on each camera frame it receives.

    A busy node keeps only the newest ``qos_depth`` frames (best effort), so the outputs follow
    the camera with minimal delay.

    The model loads in a background thread (a TensorRT engine build can take minutes): until
    it is ready, frames are dropped and counted, and the log and diagnostics show the loading
    progress. A load failure is stored in ``load_error`` (``main`` then exits).
    """

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        self.settings = validate_parameters(self._declare_parameters())
        self.stats = FrameStatistics()
        self.detector: Optional[Detector] = None
        self.loading: Optional[str] = (f"loading {self.settings.model_path} "
                                       f"({self.settings.backend} backend)")
        self.load_error: Optional[NodeConfigError] = None
        input_qos = copy.copy(qos_profile_sensor_data)  # best effort, volatile
        input_qos.depth = self.settings.qos_depth
        input_type = CompressedImage if self.settings.compressed else Image
        self.subscription = self.create_subscription(
            input_type, self.settings.camera_topic, self._on_image, input_qos,
            event_callbacks=SubscriptionEventCallbacks(
                message_lost=lambda info: self.stats.add_lost(info.total_count_change)))
        # reliable: matches reliable and best-effort readers
        output_qos = QoSProfile(depth=self.settings.qos_depth)
        namespace = self.settings.output_namespace
        self.labels_publisher = self.create_publisher(Image, output_topic(namespace, LABELS_TOPIC),
                                                      output_qos)
        self.score_publisher = self.create_publisher(Image, output_topic(namespace, SCORE_TOPIC),
                                                     output_qos)
        self.color_publisher = (self.create_publisher(Image, output_topic(namespace, COLOR_TOPIC),
                                                      output_qos)
                                if self.settings.publish_color else None)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.loader = threading.Thread(target=self._load_detector, name="detector-loader",
                                       daemon=True)
        self.loader.start()

    def _on_load_status(self, line: str) -> None:
        self.loading = line
        self.get_logger().info(line)

    def _load_detector(self) -> None:
        self.get_logger().info(self.loading)
        try:
            detector = load_detector(self.settings, status=self._on_load_status)
        except NodeConfigError as exc:
            self.load_error = exc
            return
        # anything else must still stop the node, not leave it loading forever
        except Exception as exc:
            self.load_error = NodeConfigError(f"loading model '{self.settings.model_path}' "
                                              f"failed: {type(exc).__name__}: {exc}")
            return
        self.detector, self.loading = detector, None
        backend = detector.backend
        input_type = CompressedImage if self.settings.compressed else Image
        outputs = [p.topic_name for p in (self.labels_publisher, self.color_publisher,
                                          self.score_publisher) if p]
        self.get_logger().info(
            f"backend {backend.describe()}; model {self.settings.model_path} (input "
            f"{backend.input_size[0]}x{backend.input_size[1]}, {len(backend.class_names)} "
            f"classes); score {self.settings.score}; input {self.subscription.topic_name} "
            f"({input_type.__name__}); outputs {', '.join(outputs)}")

    def _declare_parameters(self) -> dict:
        values = {}
        for name, (default, description) in PARAMETERS.items():
            # Dynamic typing lets [] default to "unset" and makes type errors ours (they name the
            # parameter).
            descriptor = ParameterDescriptor(description=description, read_only=True,
                                             dynamic_typing=True)
            values[name] = self.declare_parameter(name, default, descriptor).value
        return values

    def _on_image(self, msg: Any) -> None:
        if self.detector is None:
            self.stats.add_dropped_while_loading()
            return
        started = time.perf_counter()
        try:
            output = self.detector(message_to_rgb(msg, self.settings.max_input_pixels))
            outputs = [(self.labels_publisher, numpy_to_image(output.labels, "mono8", msg.header)),
                       (self.score_publisher, numpy_to_image(output.score, "32FC1", msg.header))]
            if self.color_publisher is not None:
                outputs.insert(1, (self.color_publisher,
                                   numpy_to_image(colorize(output.labels), "rgb8", msg.header)))
        except ValueError as exc:  # the message: conversions say what is wrong with it
            self._bad_frame(str(exc))
            return
        except Exception as exc:  # anything else: still one frame, not the node
            self._bad_frame(f"{type(exc).__name__}: {exc}")
            return
        for publisher, output_msg in outputs:  # all built: publish all of them
            publisher.publish(output_msg)
        self.stats.add_processed(time.perf_counter() - started)

    def flush_outputs(self, timeout_s: float = OUTPUT_FLUSH_TIMEOUT_S) -> None:
        """Give subscribers up to ``timeout_s`` to acknowledge the last outputs (at shutdown)."""
        if not self.context.ok():
            return
        deadline = time.monotonic() + timeout_s
        for publisher in (self.labels_publisher, self.color_publisher, self.score_publisher):
            if publisher is not None:
                remaining = max(deadline - time.monotonic(), 0.0)
                publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9)))

    def _bad_frame(self, reason: str) -> None:
        self.stats.add_bad(reason)
        self.get_logger().error(f"bad frame on {self.subscription.topic_name} skipped "
                                f"({self.stats.bad} so far): {reason}",
                                throttle_duration_sec=BAD_FRAME_LOG_THROTTLE_S)

    def _publish_diagnostics(self) -> None:
        info = {
            "backend": (self.detector.backend.describe() if self.detector
                        else self.settings.backend),
            "model_path": str(self.settings.model_path),
            "score": self.settings.score,
            "camera_topic": self.subscription.topic_name,
        }
        status = detector_status(f"{self.get_name()}: dense OOD detector",
                                 self.get_fully_qualified_name(), self.stats, info,
                                 loading=self.loading)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)


def main(args: Optional[List[str]] = None) -> int:
    """Run the node; accepts ``--ros-args`` (``-p``, ``--params-file``, ``-r``).

    Returns 0 when stopped by SIGINT or SIGTERM (the frame in flight is finished first),
    2 when it cannot start. The console script ``detector`` is
    :mod:`dense_ood_ros.ros.detector_main`, which also covers signals during the imports.
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
        node.flush_outputs()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    code = 2 if node.load_error is not None else 0
    if node.loader.is_alive():  # still loading the model: native code that cannot be stopped
        exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
