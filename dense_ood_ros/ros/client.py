"""Client side of the detector node over DDS.

Start the node as a process, send camera frames, collect its outputs matched by header stamp.
Used by the demo and the DDS tests.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, List, Mapping, Optional, Tuple

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from dense_ood_ros.ros import (FASTDDS_PROFILE_FILE, INPUT_IMAGE_TOPIC, image_outputs,
                               node_topic, output_topic, package_path)

logger = logging.getLogger(__name__)

#: Fast DDS profile for camera-sized messages (see config/fastdds_large_data.xml).
FASTDDS_PROFILE = package_path(FASTDDS_PROFILE_FILE)
#: Where Fast DDS 3 (ROS 2 Kilted) and, deprecated, Fast DDS 2 read a profile file from.
FASTDDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")

SPIN_PERIOD_S = 0.02


def _parameter_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_parameter_text(v) for v in value) + "]"
    return str(value)


def large_data_environment(environ: Optional[Mapping[str, str]] = None,
                           profile: Path = FASTDDS_PROFILE) -> Dict[str, str]:
    """Return ``environ`` (default os.environ) with the package's Fast DDS ``profile`` set.

    A profile the user set already is kept. A ``profile`` that does not exist is not set: a
    warning names it (Fast DDS would ignore it, and frames above ~512 KB would be lost).
    """
    env = dict(os.environ if environ is None else environ)
    if not any(env.get(name) for name in FASTDDS_PROFILE_VARIABLES):
        if Path(profile).is_file():
            env[FASTDDS_PROFILE_VARIABLES[0]] = str(profile)
        else:
            logger.warning("Fast DDS profile %s not found: %s left unset, so camera frames above "
                           "~512 KB may be lost between processes (is the package installed "
                           "with its config/ folder?)", profile, FASTDDS_PROFILE_VARIABLES[0])
    return env


def use_large_data_profile() -> None:
    """Set the Fast DDS profile for this process (call before rclpy.init)."""
    os.environ.update(large_data_environment())


def detector_command(parameters: Mapping[str, Any], params_file: Optional[Path] = None,
                     namespace: str = "/",
                     remappings: Mapping[str, str] = {}) -> List[str]:
    """Return the command line that runs the detector node.

    ``params_file`` comes first, then ``-p name:=value`` overrides; ``namespace`` puts the
    node (and its private topics) under it; ``remappings`` are ``-r from:=to``.
    """
    command = [sys.executable, "-m", "dense_ood_ros.ros.detector_main", "--ros-args"]
    if params_file is not None:
        command += ["--params-file", str(params_file)]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={_parameter_text(value)}"]
    if namespace.strip("/"):
        command += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for source, target in remappings.items():
        command += ["-r", f"{source}:={target}"]
    return command


def start_detector(parameters: Mapping[str, Any], params_file: Optional[Path] = None,
                   log: Optional[IO] = None, namespace: str = "/",
                   remappings: Mapping[str, str] = {}) -> subprocess.Popen:
    """Start the detector node as a child process.

    It runs the same Python in the same environment (so the same ROS_DOMAIN_ID), with the
    package's Fast DDS large-data profile unless one is set. ``log`` receives its output;
    None shares this process's terminal.
    """
    return subprocess.Popen(detector_command(parameters, params_file, namespace, remappings),
                            stdout=log, stderr=None if log is None else subprocess.STDOUT,
                            env=large_data_environment())


def stop_detector(process: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """Stop the node with SIGINT (a clean rclpy shutdown), SIGKILL after ``timeout_s``.

    Returns its exit code.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@dataclass
class DetectorReply:
    """The node's outputs for one frame."""

    outputs: Dict[str, Image]  # output name (LABELS_TOPIC, ...) -> message
    latency_s: float  # first send of the frame -> last output received
    sends: int  # times the frame was published (re-sent while no answer came)


class DetectorClient:
    """Publishes frames on the camera topic and waits for the detector's outputs."""

    def __init__(self, namespace: str = "/", with_color: bool = True, with_mask: bool = False,
                 compressed: bool = False,
                 detector_process: Optional[subprocess.Popen] = None,
                 context: Optional[Context] = None, node_name: str = "dense_ood_client"):
        self.node = Node(node_name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.detector_process = detector_process
        self.camera_publisher = self.node.create_publisher(
            CompressedImage if compressed else Image, node_topic(INPUT_IMAGE_TOPIC, namespace),
            qos_profile_sensor_data)
        self.output_names = image_outputs(with_color, with_mask)
        self._output_subscriptions = [
            self.node.create_subscription(Image, node_topic(output_topic(name), namespace),
                                          lambda msg, name=name: self._on_output(name, msg),
                                          QoSProfile(depth=10))
            for name in self.output_names]
        self._awaited_stamp: Optional[Tuple[int, int]] = None
        self._received: Dict[str, Tuple[Image, float]] = {}

    def __enter__(self) -> "DetectorClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.executor.shutdown()
        self.node.destroy_node()

    def spin_once(self) -> None:
        """Process pending callbacks; RuntimeError if the detector process has exited."""
        if self.detector_process is not None and self.detector_process.poll() is not None:
            raise RuntimeError("the detector node exited with code "
                               f"{self.detector_process.returncode} (see its log)")
        self.executor.spin_once(timeout_sec=SPIN_PERIOD_S)

    def wait_until_connected(self, timeout_s: float) -> None:
        """Wait until the detector's input subscription and output publishers are discovered."""
        deadline = time.monotonic() + timeout_s
        while not self._connected():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no detector node found within {timeout_s:.0f} s (nothing "
                                   f"subscribed to {self.camera_publisher.topic_name} or "
                                   "publishing its outputs)")
            self.spin_once()

    def _connected(self) -> bool:
        return (self.camera_publisher.get_subscription_count() > 0
                and all(sub.get_publisher_count() > 0 for sub in self._output_subscriptions))

    def request(self, msg: Any, timeout_s: float = 30.0,
                resend_period_s: float = 2.0) -> DetectorReply:
        """Publish ``msg`` (its header stamp must be new) until all outputs with that stamp arrive.

        Best-effort delivery may drop a frame, and a busy node keeps only the newest one,
        so the frame is re-sent every ``resend_period_s``; TimeoutError after ``timeout_s``.
        """
        self._awaited_stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self._received = {}
        started = time.monotonic()
        next_send, sends = started, 0
        while len(self._received) < len(self.output_names):
            now = time.monotonic()
            if now - started > timeout_s:
                missing = [name for name in self.output_names if name not in self._received]
                raise TimeoutError(f"the detector did not answer within {timeout_s:.0f} s (frame "
                                   f"sent {sends} times on {self.camera_publisher.topic_name}; "
                                   f"missing outputs: {', '.join(missing)})")
            if now >= next_send:
                self.camera_publisher.publish(msg)
                sends += 1
                next_send = now + resend_period_s
            self.spin_once()
        last_arrival = max(arrival for _, arrival in self._received.values())
        outputs = {name: output for name, (output, _) in self._received.items()}
        return DetectorReply(outputs, last_arrival - started, sends)

    def _on_output(self, name: str, msg: Image) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp == self._awaited_stamp and name not in self._received:
            self._received[name] = (msg, time.monotonic())


def init_client_context() -> Context:
    """Make a fresh, initialised rclpy context (no signal handlers).

    It is for clients inside other programs.
    """
    context = Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    return context
