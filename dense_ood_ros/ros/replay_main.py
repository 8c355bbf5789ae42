"""Console script ``dense-ood-replay``: evaluate a model on a rosbag2 bag, offline or live.

Offline (:mod:`dense_ood_ros.ros.replay`) needs no ROS graph; ``--live``
(:mod:`dense_ood_ros.ros.live_replay`) plays the bag into a detector node over DDS. Both
check the bag, its topics and the output folder first: a bad bag, topic or option is
reported (naming the bag and topic) with exit code 2 before anything is loaded or written.
Options: ``dense-ood-replay --help`` (:func:`dense_ood_ros.replay.build_parser`).
"""

import sys
from typing import List, Optional

from dense_ood_ros.bags import IMAGE_TYPE, BagError, BagReader
from dense_ood_ros.evaluate import EXIT_BAD_INPUT
from dense_ood_ros.replay import build_parser, check_args, label_sources_wanted, prepare_out_dir
from dense_ood_ros.ros.live_replay import run_live
from dense_ood_ros.ros.replay import PROG, run_offline


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
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
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in notes:
        print(f"{PROG}: note: bag {args.bag}: {note}", file=sys.stderr)
    if args.live:
        return run_live(args, camera, wanted, notes)
    return run_offline(args, camera, wanted, notes)


if __name__ == "__main__":
    sys.exit(main())
