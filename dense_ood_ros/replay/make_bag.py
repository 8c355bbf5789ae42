"""``dense-ood-make-bag``: a folder of frames and label PNGs -> a rosbag2 camera bag.

Frames, ordered by name, become ``sensor_msgs/Image`` (rgb8 or bgr8) or
``sensor_msgs/CompressedImage`` (jpeg) messages at a fixed rate; each label folder goes to
its own mono8 ``sensor_msgs/Image`` topic with the frame's header. The bag's metadata names
those topics, where replay finds them.
"""

import fnmatch
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
from tqdm import tqdm

from dense_ood_ros.cli import (EXIT_OK, add_label_folders, add_no_progress, command_parser,
                               label_folders, parse_seconds_ns, refuse)
from dense_ood_ros.io import find_labels, list_images, read_label, read_rgb
from dense_ood_ros.replay.bag_reader import (COMPRESSED_TYPE, CUSTOM_CAMERA_TOPIC,
                                             CUSTOM_LABEL_TOPIC, IMAGE_TYPE)
from dense_ood_ros.replay.bag_writer import (STORAGES, BagWriter, compressed_message,
                                             image_message, remove_bag)

PROG = "dense-ood-make-bag"
#: Message encodings written: Image rgb8/bgr8, CompressedImage jpeg.
FRAME_ENCODINGS = ("rgb8", "bgr8", "jpeg")
DEFAULT_START_TIME_NS = 1_700_000_000 * 1_000_000_000


def find_bag_frames(frames: Path, pattern: str = "*", labels: Optional[Dict[str, Path]] = None,
                    limit: Optional[int] = None) -> List[Tuple[Path, Dict[str, Path]]]:
    """Pair the images in ``frames`` whose names match ``pattern`` with label PNGs.

    ``labels``: kind (e.g. "anomaly") -> folder holding ``<stem>.png`` for every frame.
    Frames are ordered by name, each with kind -> label file. ValueError or
    FileNotFoundError (naming the file or folder) for no matching image, a missing folder
    or a missing label.
    """
    images = [p for p in list_images(frames, "frame") if fnmatch.fnmatch(p.name, pattern)]
    if not images:
        raise ValueError(f"no image in {frames} matches {pattern!r}")
    paired, missing = find_labels(images[:limit] if limit is not None else images, labels or {})
    if missing:
        raise ValueError(missing[0])
    return paired


def write_frames_bag(frames: Sequence[Tuple[Path, Dict[str, Path]]], out: Path, topic: str,
                     label_topics: Dict[str, str], encoding: str = "rgb8",
                     storage: str = "mcap", rate_hz: float = 10.0,
                     start_time_ns: int = DEFAULT_START_TIME_NS, frame_id: str = "camera",
                     jpeg_quality: int = 90, progress: bool = False) -> Dict[str, int]:
    """Write ``frames`` as a bag at ``out``; returns the message count per topic.

    Frame ``i`` is stamped (header and recording time) ``start_time_ns + i / rate_hz``; its
    labels (kind -> topic in ``label_topics``) are mono8 images with the same header, written
    right after it. Written into a temporary folder beside ``out`` and renamed at the end,
    so ``out`` is a complete bag or absent. ValueError names a frame or label that cannot be
    read or whose size differs from its frame's.
    """
    if encoding not in FRAME_ENCODINGS:
        raise ValueError(f"unknown frame encoding {encoding!r}; choose from {FRAME_ENCODINGS}")
    if rate_hz <= 0:
        raise ValueError(f"rate must be positive, got {rate_hz}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    # rosbag2 names the storage file after the bag folder: build <tmp>/<name>, then move it.
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    partial = staging / out.name
    start_ns = int(start_time_ns)
    try:
        staging.mkdir()
        with BagWriter(partial, storage) as writer:
            writer.set_custom_data(CUSTOM_CAMERA_TOPIC, topic)
            for kind, label_topic in label_topics.items():
                writer.set_custom_data(CUSTOM_LABEL_TOPIC[kind], label_topic)
            writer.add_topic(topic, COMPRESSED_TYPE if encoding == "jpeg" else IMAGE_TYPE)
            for label_topic in label_topics.values():
                writer.add_topic(label_topic, IMAGE_TYPE)
            for index, (image, labels) in enumerate(tqdm(frames, desc="make bag", unit="frame",
                                                         disable=not progress)):
                stamp = start_ns + round(index * 1e9 / rate_hz)
                rgb = read_rgb(image)
                if encoding == "jpeg":
                    data = compressed_message(rgb, stamp, frame_id, jpeg_quality)
                else:
                    pixels = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                    data = image_message(pixels, encoding, stamp, frame_id)
                writer.write(topic, stamp, data)
                for kind, label_topic in label_topics.items():
                    label = read_label(labels[kind], rgb.shape[:2])
                    writer.write(label_topic, stamp, image_message(label, "mono8", stamp,
                                                                   frame_id))
            counts = dict(writer.counts)
        os.replace(partial, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def default_topic(encoding: str) -> str:
    """``/camera/image_raw``, or ``/camera/image_raw/compressed`` for jpeg (image_transport)."""
    return "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"


def _parser():
    parser = command_parser(
        PROG,
        "A folder of frames (ordered by name) and optional label PNGs -> a rosbag2 bag.",
        "the bag folder --out (metadata.yaml + one .mcap or .db3 file): the frames on --topic "
        "(sensor_msgs/Image rgb8/bgr8 or CompressedImage jpeg), and the labels of each label "
        "folder as mono8 sensor_msgs/Image with the frame's header on their own topic.")
    parser.add_argument("--frames", required=True, type=Path, help="folder of frame images")
    parser.add_argument("--pattern", default="*",
                        help="only frames whose file names match this glob (e.g. 'Seq05VD_*')")
    add_label_folders(parser, "same stems as the frames")
    parser.add_argument("--out", required=True, type=Path, help="bag folder to create")
    parser.add_argument("--storage", choices=STORAGES, default="mcap",
                        help="bag storage (default mcap)")
    parser.add_argument("--encoding", choices=FRAME_ENCODINGS, default="rgb8",
                        help="rgb8/bgr8: sensor_msgs/Image; jpeg: CompressedImage "
                             "(default rgb8)")
    parser.add_argument("--jpeg-quality", type=int, default=90,
                        help="JPEG quality 1-100 (default 90)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="frames per second of the stamps (default 10)")
    parser.add_argument("--start-time", type=parse_seconds_ns, default=DEFAULT_START_TIME_NS,
                        help="stamp of the first frame, seconds since the epoch, exact to the "
                             f"nanosecond (default {DEFAULT_START_TIME_NS // 10**9})")
    parser.add_argument("--frame-id", default="camera",
                        help="header frame_id of every message (default camera)")
    parser.add_argument("--topic",
                        help="camera topic (default /camera/image_raw, "
                             "/camera/image_raw/compressed for jpeg)")
    parser.add_argument("--label-topic", default="/camera/labels",
                        help="topic of --labels (default /camera/labels)")
    parser.add_argument("--semantic-label-topic", default="/camera/semantic_labels",
                        help="topic of --semantic-labels (default /camera/semantic_labels)")
    parser.add_argument("--limit", type=int, help="only the first N frames")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing bag at --out")
    add_no_progress(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error(f"--rate must be positive, got {args.rate}")
    if not 1 <= args.jpeg_quality <= 100:
        parser.error(f"--jpeg-quality must be 1-100, got {args.jpeg_quality}")
    topic = args.topic or default_topic(args.encoding)
    folders = label_folders(args.labels, args.semantic_labels)
    label_topics = {kind: topic_name for kind, topic_name in (("anomaly", args.label_topic),
                                                              ("semantic",
                                                               args.semantic_label_topic))
                    if kind in folders}
    names = [topic, *label_topics.values()]
    if len(set(names)) != len(names):
        parser.error(f"the camera and label topics must differ, got {names}")
    try:
        frames = find_bag_frames(args.frames, args.pattern, folders, args.limit)
        if args.out.exists():
            if not args.overwrite:
                raise FileExistsError(f"{args.out} exists (--overwrite replaces it)")
            remove_bag(args.out)
        counts = write_frames_bag(frames, args.out, topic, label_topics, args.encoding,
                                  args.storage, args.rate, args.start_time, args.frame_id,
                                  args.jpeg_quality, progress=not args.no_progress)
    except (ValueError, OSError) as exc:
        return refuse(PROG, exc)
    print(f"wrote {args.out} ({args.storage}): "
          + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
