"""Live bag replay: play a bag's camera topic into a detector node over DDS, record, evaluate.

:class:`Player` publishes the camera messages as they are in the bag (serialized, so byte for
byte what was recorded) at their recorded timing, scaled by ``--rate``, after ``--start-delay``,
with sensor-data QoS (best effort) unless ``--reliable``, like ``ros2 bag play``. Before the
first frame it waits until the node answers a probe (the first frame with the stamp 1 ns,
re-sent every second and not evaluated), so the model's loading time is not counted as lost
frames. :class:`Recorder` subscribes to the node's outputs (serialized: no deserialization
while the node runs) and writes them into the result bag at the recording time of their
input, with the input frames; with ``--no-play`` it also listens to the node's input topic,
so that another player (``ros2 bag play``) drives it.

After the run the result bag is read back and every frame sent is evaluated as the offline
replay evaluates it: answered (labels and score arrived; latency = last output arrival - send
time), never answered (``dropped``) or answered in part (``partial``). The node's last
``/diagnostics`` counts (received, processed, dropped_stale, ...) go into the report too.
"""

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from tqdm import tqdm

from dense_ood_ros.bags import BagError, BagReader, BagWriter, Topic, header_stamp_ns
from dense_ood_ros.detector import DetectorOutput
from dense_ood_ros.evaluate import EXIT_BAD_INPUT, AnomalyLabelSpec
from dense_ood_ros.label_set import LabelSet
from dense_ood_ros.replay import (DROPPED, OK, PARTIAL, RESULT_BAG, ReplayResults, make_evaluation,
                                  run_info)
from dense_ood_ros.ros import (COLOR_TOPIC, INPUT_IMAGE_TOPIC, LABELS_TOPIC, MASK_TOPIC,
                               NODE_NAME, SCORE_TOPIC, node_topic, package_path)
from dense_ood_ros.ros.client import start_detector, stop_detector, use_large_data_profile
from dense_ood_ros.ros.conversions import image_to_numpy, message_to_rgb
from dense_ood_ros.ros.replay import (MESSAGE_TYPES, PROG, bag_problems, complete_run,
                                      open_label_sources, open_result_bag, output_topics,
                                      report_and_exit)

#: Stamp of the readiness probe (sec 0, nanosec 1): no recorded frame has it.
PROBE_STAMP_NS = 1
PROBE_PERIOD_S = 1.0
#: Outputs a frame needs to be evaluated; the others are recorded when the node sends them.
REQUIRED_OUTPUTS = (LABELS_TOPIC, SCORE_TOPIC)
RECORDED_OUTPUTS = (LABELS_TOPIC, COLOR_TOPIC, SCORE_TOPIC, MASK_TOPIC)
#: Reliable, deep: the recorder must not lose what the node publishes (reliably) to it.
OUTPUT_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.RELIABLE)
POLL_S = 0.02
NODE_LOG = "node.log"
NODE_PARAMS = "node_params.yaml"


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


def _check_node(process) -> None:
    if process is not None and process.poll() is not None:
        raise LiveError(f"the detector node exited with code {process.returncode} "
                        f"(see {NODE_LOG} in the output folder)")


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
            _check_node(process)
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
                    _check_node(process)
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


def _wait_for_answers(recorder: Recorder, stamps: List[int], timeout_s: float,
                      process) -> None:
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


def _wait_until_loaded(recorder: Recorder, timeout_s: float, process) -> None:
    """Wait until the started node's diagnostics say it has loaded its model."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_node(process)
        with recorder.lock:
            status = recorder.diagnostics
        if status is not None and not status.get("message", "").startswith("loading"):
            return
        time.sleep(POLL_S * 5)
    raise LiveError(f"the detector node did not report its model loaded within "
                    f"{timeout_s:.0f} s (its /diagnostics: {status})")


def _listen(recorder: Recorder, frames: List[Tuple[int, int, int]], args,
            process) -> Optional[str]:
    """--no-play: record until the bag's frames came and were answered, or input went idle."""
    stamps = [stamp for _, stamp, _ in frames]
    if process is not None:
        _wait_until_loaded(recorder, args.connect_timeout, process)
    started = time.monotonic()
    print(f"{PROG}: recording; play the bag now, e.g. ros2 bag play {args.bag} --remap "
          f"{recorder.camera.name}:={recorder.listen_topic}", flush=True)
    try:
        while True:
            _check_node(process)
            now = time.monotonic()
            with recorder.lock:
                last = recorder.last_input_at
                received = len(recorder.received)
            if last is None and now - started > args.connect_timeout:
                return f"no frame came on {recorder.listen_topic} within {args.connect_timeout} s"
            if received == len(stamps) and all(recorder.answered(s) for s in stamps):
                return None
            if last is not None and now - last > args.idle_timeout:
                return None
            time.sleep(POLL_S * 5)
    except KeyboardInterrupt:
        return "interrupted"


def label_set_of(model: Optional[Path]) -> LabelSet:
    """Return the label set of a model file (.pt or .onnx); none given: the node's default."""
    model = package_path("models", "default.pt") if model is None else model
    if model.suffix == ".onnx":
        from dense_ood_ros.onnx_graph import read_onnx_info
        return read_onnx_info(model).label_set
    if model.suffix == ".pt":
        from dense_ood_ros.checkpoint import checkpoint_label_set, read_checkpoint
        return checkpoint_label_set(read_checkpoint(model), model)
    raise ValueError(f"{model}: not a model file (.pt checkpoint or .onnx graph)")


def node_parameters(args, camera: Topic) -> Dict[str, object]:
    """Parameters the started node gets on top of its params file."""
    parameters: Dict[str, object] = {"compressed": camera.msgtype.endswith("CompressedImage"),
                                     "score": args.scores[0]}
    if args.model is not None:
        parameters["model_path"] = str(args.model.resolve())
    if args.backend is not None:
        parameters["backend"] = args.backend
    if args.input_size is not None:
        parameters["input_size"] = list(args.input_size)
    if args.no_color:
        parameters["publish_color"] = False
    if args.mask_threshold is not None:
        parameters["mask_threshold"] = float(args.mask_threshold)
    if args.max_input_pixels is not None:
        parameters["max_input_pixels"] = args.max_input_pixels
    return parameters


def namespaced_params(params: Path, namespace: str, out: Path) -> Path:
    """Return a params file whose ``detector`` section applies to the node in ``namespace``.

    A params file names nodes by their full name, so the shipped one's ``detector:`` (i.e.
    ``/detector``) does not reach ``/<namespace>/detector``: that section is written under the
    namespaced name into ``<out>/node_params.yaml`` (the file itself when in the root).
    ValueError names a file that is not a params file.
    """
    if not namespace.strip("/"):
        return params
    try:
        content = yaml.safe_load(params.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read params file {params}: {exc}") from None
    if not isinstance(content, dict):
        raise ValueError(f"params file {params} is not a mapping of node names to parameters")
    full_name = f"/{namespace.strip('/')}/{NODE_NAME}"
    rewritten = {(full_name if str(key).strip("/") == NODE_NAME else key): value
                 for key, value in content.items()}
    path = out / NODE_PARAMS
    path.write_text(f"# {params} for the node {full_name} (written by {PROG})\n"
                    + yaml.safe_dump(rewritten, sort_keys=False))
    return path


def run_live(args, camera: Topic, wanted, notes: List[str]) -> int:
    """Run the live replay: start (optionally) the node, play or listen, record, evaluate."""
    try:
        label_set = label_set_of(args.model)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"{PROG}: error: cannot read the label set of --model: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.semantic_ignore is None:
        args.semantic_ignore = label_set.ignore_index
    params = None
    if args.start_node is not None:
        try:
            params = namespaced_params(args.start_node, args.namespace, args.out)
        except ValueError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    frames, frame_problems = frames_of(args.bag, camera)
    if not frames:
        print(f"{PROG}: error: bag {args.bag}, topic {camera.name}: no frame to play"
              + "".join(f"; {p}" for p in frame_problems[:3]), file=sys.stderr)
        return EXIT_BAD_INPUT
    names = [name for name in RECORDED_OUTPUTS
             if not (name == COLOR_TOPIC and args.no_color)
             and not (name == MASK_TOPIC and args.mask_threshold is None)]
    outputs = output_topics(names, args.namespace)
    input_topic = args.input_topic or node_topic(INPUT_IMAGE_TOPIC, args.namespace)
    node_name = "/" + "/".join(p for p in (args.namespace.strip("/"), NODE_NAME) if p)
    log_times = {stamp: log_time for _, stamp, log_time in frames}
    label_spec = AnomalyLabelSpec(args.anomaly_values, args.ignore_values)
    evaluation = make_evaluation(wanted, args.scores[:1], label_set.class_names,
                                 args.semantic_ignore)
    process, log = None, None
    context = rclpy.Context()
    # camera-sized messages over shared memory: the package's Fast DDS profile, unless one is
    # set, for this process's participant (made with its first node; the environment is
    # restored then) and the node's (start_detector sets it)
    environment = dict(os.environ)
    use_large_data_profile()
    profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
    rclpy.init(context=context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    started = time.monotonic()
    stopped: Optional[str] = None
    live: Dict[str, object] = {}
    try:
        with open_result_bag(args.out, camera, outputs) as writer:
            try:
                sources = open_label_sources(args, wanted, writer)
            except (BagError, ValueError, OSError) as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
            if args.start_node is not None:
                log = (args.out / NODE_LOG).open("w")
                process = start_detector(node_parameters(args, camera), params, log=log,
                                         namespace=args.namespace)
            try:
                node = Node("dense_ood_replay", context=context)
            finally:
                os.environ.clear()
                os.environ.update(environment)
            recorder = Recorder(node, writer, outputs, log_times, camera,
                                input_topic if args.no_play else None, node_name)
            player = None if args.no_play else Player(node, camera, input_topic, args.reliable)
            spinner = Spinner(node, context)
            live_error = None
            try:
                sent, stopped, live = _drive(args, frames, recorder, player, process)
            except LiveError as exc:
                live_error, stopped, sent = str(exc), str(exc), []
                print(f"{PROG}: error: {exc}", file=sys.stderr)
            except KeyboardInterrupt:  # before anything was sent
                stopped, sent = "interrupted", []
            finally:
                spinner.stop()
                node.destroy_node()
            with recorder.lock:
                arrivals = {stamp: dict(times) for stamp, times in recorder.arrivals.items()}
                diagnostics = recorder.diagnostics
                unexpected, duplicates = recorder.unexpected, recorder.duplicates
    finally:
        os.environ.clear()
        os.environ.update(environment)
        if process is not None:
            code = stop_detector(process)
            live["node_exit_code"] = code
        if log is not None:
            log.close()
        context.try_shutdown()
    wall = time.monotonic() - started
    results = ReplayResults(evaluation, label_spec, sources, args.num_overlays)
    for problem in frame_problems:
        results.problem(problem)
    bag_problems(results, sources, notes)
    try:
        _evaluate_recording(args, camera, outputs, sent, arrivals, results)
    finally:
        for source in sources:
            source.close()
    answered = sum(1 for r in results.records if r.status == OK)
    live.update({"input_topic": input_topic, "output_topics": outputs,
                 "rate": None if args.no_play else args.rate,
                 "sent": len(sent), "answered": answered,
                 "dropped": sum(1 for r in results.records if r.status == DROPPED),
                 "partial": sum(1 for r in results.records if r.status == PARTIAL),
                 "unexpected_outputs": unexpected, "duplicate_outputs": duplicates,
                 "qos": "reliable" if args.reliable else "sensor data (best effort)",
                 "node_diagnostics": diagnostics,
                 "environment": {**{k: v for k, v in os.environ.items()
                                    if k in ("ROS_DOMAIN_ID", "RMW_IMPLEMENTATION")},
                                 "FASTDDS_DEFAULT_PROFILES_FILE": profile}})
    if live.get("not_received"):
        results.problem(f"{live['not_received']} frames of the bag never came on "
                        f"{input_topic} (lost between the player and the node's topic)")
    if live["dropped"] or live["partial"]:
        results.problem(f"{live['dropped']} of {len(sent)} frames were never answered and "
                        f"{live['partial']} answered in part")
    model = str(args.model) if args.model else "(the running node's)"
    backend = (diagnostics or {}).get("backend") or args.backend or "(the running node's)"
    info = run_info(args, wanted, model, backend, args.input_size, args.scores[:1], camera.name,
                    complete_run(results, stopped, notes) and not frame_problems, stopped)
    replay = {"mode": "live", "bag": str(args.bag), "image_topic": camera.name,
              "image_type": camera.msgtype, "bag_notes": notes,
              "result_bag": str(args.out / RESULT_BAG), "live": live}
    timing = {"wall_s": wall, "fps": live.get("answer_rate_hz"),
              "latency_what": "frame published -> its last output received (over DDS, "
                              "through the running node)"}
    code = report_and_exit(args, results, info, replay, timing)
    if live_error is not None and not sent:  # nothing could be evaluated
        if log is not None:
            tail = (args.out / NODE_LOG).read_text(errors="replace").splitlines()[-15:]
            print("\n".join([f"{PROG}: the end of {args.out / NODE_LOG}:", *tail]),
                  file=sys.stderr)
        return EXIT_BAD_INPUT
    return code


def _drive(args, frames, recorder: Recorder, player: Optional[Player], process):
    """Play (or listen) and wait for the answers; returns (sent, stopped, live facts)."""
    live: Dict[str, object] = {}
    if player is None:
        stopped = _listen(recorder, frames, args, process)
        with recorder.lock:
            received = dict(recorder.received)
            answered_stamps = set(recorder.arrivals)
        index_of = {stamp: (index, log_time) for index, stamp, log_time in frames}
        stamps = [s for _, s, _ in frames if s in received or s in answered_stamps]
        _wait_for_answers(recorder, stamps, args.answer_timeout, process)
        sent = [Sent(index_of[s][0], s, index_of[s][1], received.get(s)) for s in stamps]
        live["not_received"] = len(frames) - len(received)
    else:
        live["probe_s"] = player.probe(args.bag, recorder, args.connect_timeout, process)
        playable = {index for index, _, _ in frames}
        sent, stopped = player.play(args.bag, playable, args.rate, args.start_delay, recorder,
                                    process, progress=not args.no_progress)
        _wait_for_answers(recorder, [s.stamp_ns for s in sent], args.answer_timeout, process)
    sent_times = sorted(s.sent_at for s in sent if s.sent_at is not None)
    if len(sent_times) > 1 and sent_times[-1] > sent_times[0]:
        live["send_rate_hz"] = (len(sent_times) - 1) / (sent_times[-1] - sent_times[0])
    with recorder.lock:
        last_answers = [max(recorder.arrivals[s.stamp_ns].values()) for s in sent
                        if s.stamp_ns in recorder.arrivals]
    if last_answers and sent_times and max(last_answers) > sent_times[0]:
        live["answer_rate_hz"] = len(last_answers) / (max(last_answers) - sent_times[0])
    # the node publishes diagnostics once a second: take a status from after the last answer
    deadline = time.monotonic() + 2.5
    while last_answers and time.monotonic() < deadline:
        with recorder.lock:
            if (recorder.diagnostics_at is not None
                    and recorder.diagnostics_at > max(last_answers)):
                break
        time.sleep(POLL_S * 5)
    return sent, stopped, live


def _evaluate_recording(args, camera: Topic, outputs: Dict[str, str], sent: List[Sent],
                        arrivals: Dict[int, Dict[str, float]], results: ReplayResults) -> None:
    """Read the result bag back and evaluate every frame sent, in order."""
    required = [name for name in REQUIRED_OUTPUTS if name in outputs]
    pending: Dict[int, Dict[str, bytes]] = {}
    by_stamp = {s.stamp_ns: s for s in sent}
    done: Set[int] = set()
    topics = {outputs[name]: name for name in required}
    score_name = args.scores[0]
    message_type = MESSAGE_TYPES[camera.msgtype]

    def finish(stamp: int) -> None:
        item = by_stamp[stamp]
        group = pending.pop(stamp, {})
        times = arrivals.get(stamp, {})
        missing = [name for name in required if name not in times]
        done.add(stamp)
        if len(missing) == len(required):
            results.add_unanswered(item.index, stamp, DROPPED, "no output arrived")
            return
        if missing or any(name not in group for name in required):
            results.add_unanswered(item.index, stamp, PARTIAL,
                                   "missing " + ", ".join(missing or required))
            return
        labels = np.array(image_to_numpy(deserialize_message(group[LABELS_TOPIC], Image)))
        score = np.array(image_to_numpy(deserialize_message(group[SCORE_TOPIC], Image)))
        latency = (max(times[name] for name in required) - item.sent_at
                   if item.sent_at is not None else None)
        camera_raw = group.get("camera")

        def picture() -> np.ndarray:
            if camera_raw is None:
                return np.zeros(labels.shape + (3,), np.uint8)
            return np.array(message_to_rgb(deserialize_message(camera_raw, message_type)))

        results.add_frame(item.index, stamp, DetectorOutput(labels, {score_name: score}),
                          latency, picture)

    with BagReader(args.out / RESULT_BAG) as bag:
        current_log = None
        for message in bag.messages([camera.name, *topics]):
            if current_log is not None and message.log_time_ns != current_log:
                for stamp in sorted(s for s in pending if by_stamp[s].log_time_ns <= current_log):
                    finish(stamp)
            current_log = message.log_time_ns
            stamp = header_stamp_ns(message.data)
            if stamp not in by_stamp or stamp in done:
                continue
            pending.setdefault(stamp, {})["camera" if message.topic == camera.name
                                          else topics[message.topic]] = message.data
    for item in sorted(sent, key=lambda s: s.index):
        if item.stamp_ns not in done:
            finish(item.stamp_ns)
