"""Live replay's voice: the bag's camera messages published to the node, as recorded.

:class:`Player` publishes the camera messages as they are in the bag (serialized, so byte for
byte what was recorded) at their recorded timing, scaled by ``--rate``, after
``--start-delay``, with sensor-data QoS (best effort) unless ``--reliable``, like ``ros2 bag
play``. Before the first frame it waits until the node answers a probe (the first frame with
the stamp 1 ns, re-sent every second and not evaluated), so the model's loading time is not
counted as lost frames.
"""

import time
from pathlib import Path
from typing import List, Optional, Set, Tuple

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message, serialize_message
from tqdm import tqdm

from dense_ood_ros.replay.bag_reader import BagError, BagReader, Topic, header_stamp_ns
from dense_ood_ros.ros.replay.messages import MESSAGE_TYPES
from dense_ood_ros.ros.replay.recorder import (POLL_S, PROBE_STAMP_NS, LiveError, Recorder, Sent,
                                               check_node)

PROBE_PERIOD_S = 1.0


def frames_of(bag_path: Path, camera: Topic) -> Tuple[List[Tuple[int, int, int]], List[str]]:
    """(index, stamp, recording time) of every camera message, and problems (stamps)."""
    frames, problems, seen = [], [], set()
    with BagReader(bag_path) as bag:
        try:
            for message in bag.messages([camera.name]):
                try:
                    stamp = header_stamp_ns(message.data)
                except ValueError as exc:
                    problems.append(str(BagError(bag_path, str(exc), camera.name,
                                                 message.index)))
                    continue
                if stamp in seen or stamp == PROBE_STAMP_NS:
                    problems.append(str(BagError(
                        bag_path, "a frame with the stamp of an earlier one (or the probe's): "
                                  "its answers cannot be told apart; not played",
                        camera.name, message.index)))
                    continue
                seen.add(stamp)
                frames.append((message.index, stamp, message.log_time_ns))
        except BagError as exc:
            problems.append(str(exc))
    return frames, problems


class Player:
    """Publishes the camera messages of a bag at their recorded timing (``ros2 bag play``)."""

    def __init__(self, node: Node, camera: Topic, topic: str, reliable: bool):
        qos = (QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if reliable
               else qos_profile_sensor_data)
        self.message_type = MESSAGE_TYPES[camera.msgtype]
        self.publisher = node.create_publisher(self.message_type, topic, qos)
        self.camera = camera

    def probe(self, bag_path: Path, recorder: Recorder, timeout_s: float, process) -> float:
        """Send the probe until the node answers it; returns the seconds that took."""
        with BagReader(bag_path) as bag:
            first = next(bag.messages([self.camera.name]), None)
        if first is None:
            raise LiveError(f"bag {bag_path}, topic {self.camera.name}: no message to play")
        msg = deserialize_message(first.data, self.message_type)
        msg.header.stamp.sec, msg.header.stamp.nanosec = 0, PROBE_STAMP_NS
        probe = serialize_message(msg)
        started = time.monotonic()
        next_send = started
        while not recorder.answered(PROBE_STAMP_NS):
            check_node(process)
            now = time.monotonic()
            if now - started > timeout_s:
                raise LiveError(
                    f"the detector node did not answer within {timeout_s:.0f} s (frames sent "
                    f"on {self.publisher.topic_name}: {self.publisher.get_subscription_count()} "
                    f"subscriber(s); output publishers "
                    f"{'found' if recorder.publishers_found() else 'not found'}: "
                    f"{', '.join(recorder.outputs.values())})")
            if now >= next_send and self.publisher.get_subscription_count() > 0:
                self.publisher.publish(probe)
                next_send = now + PROBE_PERIOD_S
            time.sleep(POLL_S)
        return time.monotonic() - started

    def play(self, bag_path: Path, playable: Set[int], rate: float, start_delay: float,
             recorder: Recorder, process,
             progress: bool = False) -> Tuple[List[Sent], Optional[str]]:
        """Publish every playable message (by index) on schedule; returns them and a fault."""
        sent: List[Sent] = []
        start = time.monotonic() + start_delay
        first_log: Optional[int] = None
        bar = tqdm(total=len(playable), desc="play", unit="frame", disable=not progress)
        try:
            with BagReader(bag_path) as bag:
                for message in bag.messages([self.camera.name]):
                    if message.index not in playable:
                        continue
                    first_log = message.log_time_ns if first_log is None else first_log
                    due = start + (message.log_time_ns - first_log) / 1e9 / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    check_node(process)
                    self.publisher.publish(message.data)
                    sent_at = time.monotonic()
                    with recorder.lock:
                        recorder.writer.write(self.camera.name, message.log_time_ns, message.data)
                    sent.append(Sent(message.index, header_stamp_ns(message.data),
                                     message.log_time_ns, sent_at))
                    bar.update()
        except BagError as exc:
            return sent, str(exc)
        except KeyboardInterrupt:
            return sent, "interrupted"
        finally:
            bar.close()
        return sent, None
