"""Live replay's ears: what the detector node publishes, recorded into the result bag.

:class:`Recorder` subscribes to the node's outputs (serialized: no deserialization while the
node runs) and writes them into the result bag at the recording time of their input; with
``--no-play`` it also listens to the node's input topic, so that another player
(``ros2 bag play``) drives it. It keeps the node's last ``/diagnostics`` too. A
:class:`Spinner` runs its callbacks in a background thread.
"""

import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from dense_ood_ros.replay.bag_reader import Topic, header_stamp_ns
from dense_ood_ros.replay.bag_writer import BagWriter
from dense_ood_ros.replay.report import NODE_LOG
from dense_ood_ros.ros import COLOR_TOPIC, LABELS_TOPIC, MASK_TOPIC, SCORE_TOPIC
from dense_ood_ros.ros.replay.messages import MESSAGE_TYPES

#: Stamp of the readiness probe (sec 0, nanosec 1): no recorded frame has it.
PROBE_STAMP_NS = 1
#: Outputs a frame needs to be evaluated; the others are recorded when the node sends them.
REQUIRED_OUTPUTS = (LABELS_TOPIC, SCORE_TOPIC)
RECORDED_OUTPUTS = (LABELS_TOPIC, COLOR_TOPIC, SCORE_TOPIC, MASK_TOPIC)
#: Reliable, deep: the recorder must not lose what the node publishes (reliably) to it.
OUTPUT_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.RELIABLE)
POLL_S = 0.02


@dataclass
class Sent:
    """A frame that went to the node: bag index, header stamp, recording and send time."""

    index: int
    stamp_ns: int
    log_time_ns: int
    sent_at: Optional[float]  # monotonic; None: seen only through the node's answer


class Recorder:
    """Records the node's outputs (and, listening, its input) into the result bag.

    Thread-safe: callbacks run in the executor thread, the player writes from the main one.
    """

    def __init__(self, node: Node, writer: BagWriter, outputs: Dict[str, str],
                 log_times: Dict[int, int], camera: Topic, listen_topic: Optional[str],
                 node_name: str):
        self.writer, self.outputs, self.log_times = writer, outputs, log_times
        self.camera, self.node_name, self.listen_topic = camera, node_name, listen_topic
        self.lock = threading.Lock()
        self.arrivals: Dict[int, Dict[str, float]] = {}
        self.received: Dict[int, float] = {}  # listened inputs: stamp -> arrival
        self.unexpected = 0  # outputs with a stamp of no frame sent
        self.duplicates = 0  # a second output of the same frame and topic
        self.malformed = 0
        self.last_input_at: Optional[float] = None
        self.diagnostics: Optional[Dict[str, str]] = None
        self.diagnostics_at: Optional[float] = None
        self._subscriptions = [
            node.create_subscription(Image, topic,
                                     lambda raw, name=name: self._on_output(name, raw),
                                     OUTPUT_QOS, raw=True)
            for name, topic in outputs.items()]
        if listen_topic is not None:
            self._subscriptions.append(node.create_subscription(
                MESSAGE_TYPES[camera.msgtype], listen_topic, self._on_input,
                qos_profile_sensor_data, raw=True))
        self._subscriptions.append(node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_diagnostics, 10))

    def publishers_found(self) -> bool:
        """Whether every output topic has a publisher (the node is discovered)."""
        return all(sub.get_publisher_count() > 0
                   for sub in self._subscriptions[:len(self.outputs)])

    def _on_output(self, name: str, raw: bytes) -> None:
        now = time.monotonic()
        try:
            stamp = header_stamp_ns(raw)
        except ValueError:
            with self.lock:
                self.malformed += 1
            return
        with self.lock:
            frame = self.arrivals.setdefault(stamp, {})
            if name in frame:
                self.duplicates += 1
                return
            frame[name] = now
            if stamp in self.log_times:
                self.writer.write(self.outputs[name], self.log_times[stamp], raw)
            elif stamp != PROBE_STAMP_NS:
                self.unexpected += 1

    def _on_input(self, raw: bytes) -> None:
        now = time.monotonic()
        try:
            stamp = header_stamp_ns(raw)
        except ValueError:
            return
        with self.lock:
            self.last_input_at = now
            if stamp in self.log_times and stamp not in self.received:
                self.received[stamp] = now
                self.writer.write(self.camera.name, self.log_times[stamp], raw)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id == self.node_name:
                level = status.level
                with self.lock:
                    self.diagnostics = {"level": str(ord(level) if isinstance(level, bytes)
                                                     else int(level)),
                                        "message": status.message,
                                        **{kv.key: kv.value for kv in status.values}}
                    self.diagnostics_at = time.monotonic()

    def answered(self, stamp: int) -> bool:
        with self.lock:
            frame = self.arrivals.get(stamp, {})
            return all(name in frame for name in REQUIRED_OUTPUTS if name in self.outputs)


class Spinner:
    """Spins a node's executor in a background thread until stopped."""

    def __init__(self, node: Node, context):
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="replay-recorder", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.executor.shutdown()


class LiveError(RuntimeError):
    """The live run could not start or went wrong as a whole (node missing, exited...)."""


def check_node(process) -> None:
    """Raise LiveError when the node that the replay started has exited."""
    if process is not None and process.poll() is not None:
        raise LiveError(f"the detector node exited with code {process.returncode} "
                        f"(see {NODE_LOG} in the output folder)")


def wait_for_answers(recorder: Recorder, stamps: List[int], timeout_s: float,
                     process) -> None:
    """Wait until every frame of ``stamps`` is answered, the node exits or time is up."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if all(recorder.answered(stamp) for stamp in stamps):
                return
            if process is not None and process.poll() is not None:
                return
            time.sleep(POLL_S)
    except KeyboardInterrupt:  # stop waiting; what came is evaluated
        return


def wait_until_loaded(recorder: Recorder, timeout_s: float, process) -> None:
    """Wait until the started node's diagnostics say it has loaded its model."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_node(process)
        with recorder.lock:
            status = recorder.diagnostics
        if status is not None and not status.get("message", "").startswith("loading"):
            return
        time.sleep(POLL_S * 5)
    raise LiveError(f"the detector node did not report its model loaded within "
                    f"{timeout_s:.0f} s (its /diagnostics: {status})")
