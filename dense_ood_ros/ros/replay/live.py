"""Live bag replay: play a bag's camera topic into a detector node over DDS, record, evaluate.

The node is the running one, or one started here from a params file (``--start-node``); the
:class:`~dense_ood_ros.ros.replay.player.Player` sends the frames (or, ``--no-play``, another
player does) and the :class:`~dense_ood_ros.ros.replay.recorder.Recorder` takes the node's
answers into the result bag. After the run the result bag is read back and every frame sent
is evaluated as the offline replay evaluates it: answered (labels and score arrived; latency
= last output arrival - send time), never answered (``dropped``) or answered in part
(``partial``). The node's last ``/diagnostics`` counts (received, processed, dropped_stale,
...) go into the report too.
"""

import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import rclpy
import yaml
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from dense_ood_ros.cli import EXIT_BAD_INPUT, BadInput
from dense_ood_ros.detector import DetectorOutput
from dense_ood_ros.evaluation import AnomalyLabelSpec
from dense_ood_ros.label_set import LabelSet
from dense_ood_ros.replay.bag_reader import BagReader, Topic, header_stamp_ns
from dense_ood_ros.replay.bag_writer import RESULT_BAG, open_result_bag
from dense_ood_ros.replay.ground_truth import label_topic_copies, open_label_sources
from dense_ood_ros.replay.report import NODE_LOG, NODE_PARAMS, PROG, report_and_exit
from dense_ood_ros.replay.results import DROPPED, OK, PARTIAL, ReplayResults, run_info
from dense_ood_ros.ros import (COLOR_TOPIC, INPUT_IMAGE_TOPIC, LABELS_TOPIC, MASK_TOPIC,
                               NODE_NAME, SCORE_TOPIC, node_topic, package_path)
from dense_ood_ros.ros.client import start_detector, stop_detector, use_large_data_profile
from dense_ood_ros.ros.conversions import image_to_numpy, message_to_rgb
from dense_ood_ros.ros.replay.messages import MESSAGE_TYPES, decode_label, output_topics
from dense_ood_ros.ros.replay.player import Player, frames_of
from dense_ood_ros.ros.replay.recorder import (POLL_S, RECORDED_OUTPUTS, REQUIRED_OUTPUTS,
                                               LiveError, Recorder, Sent, Spinner, check_node,
                                               wait_for_answers, wait_until_loaded)


def run_live(args, camera: Topic, wanted, notes: List[str]) -> int:
    """Run the live replay: start (optionally) the node, play or listen, record, evaluate.

    BadInput: the model's label set, the params file, the frames or the ground truth cannot
    be read.
    """
    try:
        label_set = label_set_of(args.model)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BadInput(f"cannot read the label set of --model: {exc}") from None
    if args.semantic_ignore is None:
        args.semantic_ignore = label_set.ignore_index
    params = None
    if args.start_node is not None:
        try:
            params = namespaced_params(args.start_node, args.namespace, args.out)
        except ValueError as exc:
            raise BadInput(exc) from None
    frames, frame_problems = frames_of(args.bag, camera)
    if not frames:
        raise BadInput(f"bag {args.bag}, topic {camera.name}: no frame to play"
                       + "".join(f"; {p}" for p in frame_problems[:3]))
    names = [name for name in RECORDED_OUTPUTS
             if not (name == COLOR_TOPIC and args.no_color)
             and not (name == MASK_TOPIC and args.mask_threshold is None)]
    outputs = output_topics(names, args.namespace)
    input_topic = args.input_topic or node_topic(INPUT_IMAGE_TOPIC, args.namespace)
    node_name = "/" + "/".join(p for p in (args.namespace.strip("/"), NODE_NAME) if p)
    log_times = {stamp: log_time for _, stamp, log_time in frames}
    sources = open_label_sources(args, wanted, decode_label)
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
        with open_result_bag(args.out, camera, outputs, label_topic_copies(sources)) as writer:
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
    results = ReplayResults.evaluated_as(wanted, args.scores[:1], label_set.class_names,
                                         args.semantic_ignore,
                                         AnomalyLabelSpec(args.anomaly_values, args.ignore_values),
                                         sources, args.num_overlays, notes, frame_problems)
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
                    results.complete(stopped, notes) and not frame_problems, stopped)
    replay = {"mode": "live", "bag": str(args.bag), "image_topic": camera.name,
              "image_type": camera.msgtype, "bag_notes": notes,
              "result_bag": str(args.out / RESULT_BAG), "live": live}
    timing = {"wall_s": wall, "fps": live.get("answer_rate_hz"),
              "latency_what": "frame published -> its last output received (over DDS, "
                              "through the running node)"}
    code = report_and_exit(args, results, results.build(args.metric_mode, info, replay, timing))
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
        wait_for_answers(recorder, stamps, args.answer_timeout, process)
        sent = [Sent(index_of[s][0], s, index_of[s][1], received.get(s)) for s in stamps]
        live["not_received"] = len(frames) - len(received)
    else:
        live["probe_s"] = player.probe(args.bag, recorder, args.connect_timeout, process)
        playable = {index for index, _, _ in frames}
        sent, stopped = player.play(args.bag, playable, args.rate, args.start_delay, recorder,
                                    process, progress=not args.no_progress)
        wait_for_answers(recorder, [s.stamp_ns for s in sent], args.answer_timeout, process)
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


def _listen(recorder: Recorder, frames: List[Tuple[int, int, int]], args,
            process) -> Optional[str]:
    """--no-play: record until the bag's frames came and were answered, or input went idle."""
    stamps = [stamp for _, stamp, _ in frames]
    if process is not None:
        wait_until_loaded(recorder, args.connect_timeout, process)
    started = time.monotonic()
    print(f"{PROG}: recording; play the bag now, e.g. ros2 bag play {args.bag} --remap "
          f"{recorder.camera.name}:={recorder.listen_topic}", flush=True)
    try:
        while True:
            check_node(process)
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
