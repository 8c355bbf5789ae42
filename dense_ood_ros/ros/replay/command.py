"""Console script ``dense-ood-replay``: evaluate a model on a rosbag2 bag, offline or live.

Offline (:mod:`.offline`) needs no ROS graph; ``--live`` (:mod:`.live`) plays the bag into a
detector node over DDS. Both check the bag, its topics and the output folder first: a bad
bag, topic or option is reported (naming the bag and topic) with exit code 2 before anything
is loaded or written. Options: ``dense-ood-replay --help`` (:func:`build_parser`).
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dense_ood_ros.cli import (BadInput, add_backend, add_input_size, add_label_folders,
                               add_label_values, add_metric_mode, add_model, add_no_progress,
                               add_out, add_scores, command_parser, parse_nonnegative,
                               parse_positive, refuse)
from dense_ood_ros.replay.bag_reader import IMAGE_TYPE, BagError, BagReader, Topic
from dense_ood_ros.replay.ground_truth import LABEL_MATCHES, label_sources_wanted
from dense_ood_ros.replay.report import PROG, prepare_out_dir
from dense_ood_ros.ros.replay.live import run_live
from dense_ood_ros.ros.replay.offline import run_offline


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        camera, wanted, notes = check_inputs(args)
        run = run_live if args.live else run_offline
        return run(args, camera, wanted, notes)
    except BadInput as exc:
        return refuse(PROG, exc)


def check_inputs(args: argparse.Namespace
                 ) -> Tuple[Topic, Dict[str, Tuple[str, object]], List[str]]:
    """Return the camera topic, the ground truth asked for and notes about the bag.

    BadInput names a bag, topic or output folder that cannot serve, before anything is
    loaded or written (except that ``--overwrite`` removes an earlier run's results).
    """
    try:
        with BagReader(args.bag) as bag:
            wanted = label_sources_wanted(args, bag.custom_data)
            label_topics = [where for how, where in wanted.values() if how == "topic"]
            for kind, (how, where) in wanted.items():
                if how == "topic":
                    bag.topic(where, (IMAGE_TYPE,), f"{kind} label")
            camera = bag.camera_topic(args.image_topic, exclude=label_topics)
            if camera.name in label_topics:
                raise BagError(args.bag, "the camera topic is also a label topic",
                               topic=camera.name)
            notes = list(bag.notes)
        prepare_out_dir(args.out, args.overwrite, args.bag)
    except (BagError, ValueError, OSError) as exc:
        raise BadInput(exc) from None
    for note in notes:
        print(f"{PROG}: note: bag {args.bag}: {note}", file=sys.stderr)
    return camera, wanted, notes


def build_parser() -> argparse.ArgumentParser:
    """Return the ``dense-ood-replay`` argument parser."""
    parser = command_parser(
        PROG,
        "Evaluate a model on a rosbag2 bag: offline through the node's own frame pipeline "
        "(no ROS graph), or --live through a running detector node over DDS.",
        "<out>/result_bag (MCAP: the camera frames, the node's outputs and the labels at the "
        "frames' recording times), metrics.json and metrics.md (frames processed / failed / "
        "never answered, latency p50/p95/p99, and with labels dense-ood-evaluate's metrics), "
        "frames.csv (one line per frame), score_over_time.png, pr_curve.png and "
        "roc_curve.png (anomaly labels), overlays/ (the frames with the highest anomaly "
        "score), accumulators/. Exit code 0: complete; 1: incomplete (faults in the bag or "
        "frames, or frames never answered; what was evaluated is written, marked "
        "incomplete); 2: bad input, nothing evaluated.")
    parser.add_argument("--bag", required=True, type=Path,
                        help="rosbag2 bag folder, or one .mcap / .db3 file (only read)")
    add_model(parser, help="model file (.pt, .onnx, .engine); with --live only to start the "
                           "node (--start-node) and to name it in the report")
    add_out(parser, "output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run in --out")
    add_backend(parser, default="torch")
    add_input_size(parser)
    add_scores(parser)
    topics = parser.add_argument_group("topics and ground truth")
    topics.add_argument("--image-topic",
                        help="camera topic (Image or CompressedImage); default: the bag's only "
                             "image topic that is not a label topic")
    topics.add_argument("--label-topic",
                        help="topic of anomaly labels (mono8 Image, same stamps as the frames)")
    topics.add_argument("--semantic-label-topic",
                        help="topic of class-index labels (mono8 Image) for IoU/mIoU")
    add_label_folders(topics, "instead of a topic")
    topics.add_argument("--label-match", choices=LABEL_MATCHES, default="index",
                        help="how label PNGs match frames: index (n-th file, by name, for the "
                             "n-th frame; default) or stamp (file stem = header stamp, "
                             "sec.nanosec or ns)")
    topics.add_argument("--stamp-tolerance", type=parse_nonnegative, default=0.001,
                        help="largest stamp difference (s) between a frame and its label "
                             "(default 0.001)")
    topics.add_argument("--no-bag-labels", action="store_true",
                        help="ignore the label topics the bag's metadata names "
                             "(dense-ood-make-bag records them)")
    add_label_values(topics)
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--namespace", default="/",
                         help="namespace of the detector node, whose output topic names the "
                              "result bag uses (default /: /detector/output/...)")
    outputs.add_argument("--no-color", action="store_true",
                         help="no semantic colour image (the node's publish_color false)")
    outputs.add_argument("--mask-threshold", type=float,
                         help="also the anomaly mask (mono8, 255 where score >= it)")
    outputs.add_argument("--max-input-pixels", type=int,
                         help="largest frame accepted, in pixels (default: the node's)")
    add_metric_mode(outputs)
    outputs.add_argument("--num-overlays", type=int, default=4,
                         help="overlays of the frames with the highest anomaly score "
                              "(default 4)")
    add_no_progress(outputs)
    live = parser.add_argument_group("live replay over DDS (--live)")
    live.add_argument("--live", action="store_true",
                      help="play the camera topic into a running detector node and evaluate "
                           "what it publishes")
    live.add_argument("--rate", type=parse_positive, default=1.0,
                      help="playback speed factor of the recorded timing (default 1)")
    live.add_argument("--start-delay", type=parse_nonnegative, default=1.0,
                      help="seconds between the node being ready and the first frame "
                           "(default 1)")
    live.add_argument("--input-topic",
                      help="topic the frames reach the node on, published by the player or "
                           "(--no-play) by another (default: the node's input, "
                           "<namespace>/detector/input/image)")
    live.add_argument("--start-node", type=Path, metavar="PARAMS",
                      help="start the detector node with this params file (in --namespace); "
                           "--model, --backend, --scores (first), --input-size override it "
                           "when given")
    live.add_argument("--reliable", action="store_true",
                      help="publish the frames reliably (default: sensor-data QoS, best "
                           "effort, as cameras do)")
    live.add_argument("--no-play", action="store_true",
                      help="do not play: record while another player (ros2 bag play) plays "
                           "the bag into the node")
    live.add_argument("--answer-timeout", type=parse_positive, default=5.0,
                      help="after the last frame, seconds to wait for the node's answers "
                           "(default 5)")
    live.add_argument("--connect-timeout", type=parse_positive, default=120.0,
                      help="seconds to wait for the node to be ready (default 120)")
    live.add_argument("--idle-timeout", type=parse_positive, default=10.0,
                      help="--no-play: stop when no frame came for this long (default 10)")
    # --model is the dialect's, but optional here (a live node may have loaded its own), and
    # --backend's default (torch) applies offline only: with --start-node, the params file's.
    for action in parser._actions:
        if action.dest == "model":
            action.required = False
    parser.set_defaults(backend=None)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject combinations that make no sense (parser.error names them)."""
    if not args.live:
        for name in ("start_node", "input_topic", "no_play"):
            if getattr(args, name) not in (None, False):
                parser.error(f"--{name.replace('_', '-')} needs --live")
        if args.model is None:
            parser.error("offline replay needs --model")
    if args.num_overlays < 0:
        parser.error("--num-overlays must be >= 0")
    if args.max_input_pixels is not None and args.max_input_pixels < 1:
        parser.error("--max-input-pixels must be >= 1")


if __name__ == "__main__":
    sys.exit(main())
