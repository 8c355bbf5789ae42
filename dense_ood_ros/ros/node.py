"""The ``detector`` node: camera images in; class labels, semantic colours and anomaly scores out.

A thin adapter over :class:`dense_ood_ros.detector.Detector`. Parameters are listed in
``config/detector.yaml``. Outputs (under ``output_namespace``) copy the input header:
``labels`` (mono8 class indices), ``semantic_color`` (rgb8, CamVid palette) and
``anomaly_score`` (32FC1, higher = more anomalous). Statistics go to ``/diagnostics``.
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
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from dense_ood_ros.backends import BACKEND_NAMES
from dense_ood_ros.checkpoint import CheckpointError
from dense_ood_ros.classes import colorize
from dense_ood_ros.detector import Detector
from dense_ood_ros.ros import COLOR_TOPIC, LABELS_TOPIC, SCORE_TOPIC, output_topic, package_path
from dense_ood_ros.ros.conversions import message_to_rgb, numpy_to_image
from dense_ood_ros.ros.diagnostics import FrameStatistics, detector_status
from dense_ood_ros.scores import SCORES

NODE_NAME = "detector"
DIAGNOSTICS_PERIOD_S = 1.0
BAD_FRAME_LOG_THROTTLE_S = 5.0


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


#: name -> (default, description).
PARAMETERS = {
    "model_path": (str(package_path("models", "default.pt")),
                   "model file: checkpoint .pt, exported .onnx, "
                   "or TensorRT .engine (backend tensorrt)"),
    "backend": ("torch", f"inference backend, one of {list(BACKEND_NAMES)}"),
    "score": ("jsd", f"anomaly score published, one of {sorted(SCORES)}"),
    "input_size": ([], "[height, width] the model runs at; [] = the checkpoint's own"),
    "camera_topic": ("image", "input topic (sensor_msgs/Image, or CompressedImage if compressed)"),
    "compressed": (False, "subscribe to sensor_msgs/CompressedImage (jpeg/png) instead of Image"),
    "output_namespace": ("dense_ood", "namespace of the output topics"),
    "publish_color": (True, "also publish the rgb8 semantic colour image"),
    "qos_depth": (1, "queue depth of the input subscription (best effort) and output publishers"),
}


def _parameter_error(name: str, value: Any, problem: str) -> NodeConfigError:
    return NodeConfigError(f"parameter '{name}' = {value!r}: {problem}")


def _expect(name: str, value: Any, kind: type) -> Any:
    # bool is an int subclass: an int parameter must not accept true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _parameter_error(name, value, f"must be of type {kind.__name__}")
    return value


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
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                           for v in input_size)):
            raise _parameter_error("input_size", input_size,
                                   "must be [height, width] with positive integers, or []")
        input_size = (int(input_size[0]), int(input_size[1]))
    camera_topic = _expect("camera_topic", values["camera_topic"], str)
    if not camera_topic:
        raise _parameter_error("camera_topic", camera_topic, "must not be empty")
    qos_depth = _expect("qos_depth", values["qos_depth"], int)
    if qos_depth < 1:
        raise _parameter_error("qos_depth", qos_depth, "must be at least 1")
    return DetectorSettings(
        model_path=model_path, backend=backend, score=score, input_size=input_size,
        camera_topic=camera_topic, compressed=_expect("compressed", values["compressed"], bool),
        output_namespace=_expect("output_namespace", values["output_namespace"], str),
        publish_color=_expect("publish_color", values["publish_color"], bool), qos_depth=qos_depth)


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
        self._loader = threading.Thread(target=self._load_detector, name="detector-loader",
                                        daemon=True)
        self._loader.start()

    def _on_load_status(self, line: str) -> None:
        self.loading = line
        self.get_logger().info(line)

    def _load_detector(self) -> None:
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
            output = self.detector(message_to_rgb(msg))
        except ValueError as exc:
            self.stats.add_bad(str(exc))
            self.get_logger().error(f"bad frame on {self.subscription.topic_name} skipped "
                                    f"({self.stats.bad} so far): {exc}",
                                    throttle_duration_sec=BAD_FRAME_LOG_THROTTLE_S)
            return
        self.labels_publisher.publish(numpy_to_image(output.labels, "mono8", msg.header))
        if self.color_publisher is not None:
            self.color_publisher.publish(numpy_to_image(colorize(output.labels), "rgb8",
                                                        msg.header))
        self.score_publisher.publish(numpy_to_image(output.score, "32FC1", msg.header))
        self.stats.add_processed(time.perf_counter() - started)

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
    """Console script ``detector``: accepts ``--ros-args`` (``-p``, ``--params-file``, ``-r``)."""
    rclpy.init(args=args)
    try:
        node = DetectorNode()
    except NodeConfigError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and node.load_error is None:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.load_error is not None:
            node.get_logger().fatal(f"cannot start: {node.load_error}")
        node.destroy_node()
        rclpy.try_shutdown()
    return 2 if node.load_error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
