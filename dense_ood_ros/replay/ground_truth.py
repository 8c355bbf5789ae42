"""Ground truth of the frames of a replay: a label topic of the bag, or a folder of PNGs.

A :class:`TopicLabels` matches a frame by header stamp within a tolerance, a
:class:`FolderLabels` by index or by stamp (the file's stem). A frame without a label is
counted as unmatched (:mod:`dense_ood_ros.replay.results`), never dropped silently.
"""

import argparse
import re
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from dense_ood_ros.cli import LABEL_KINDS, BadInput
from dense_ood_ros.io import list_images, read_label
from dense_ood_ros.replay.bag_reader import (CUSTOM_LABEL_TOPIC, IMAGE_TYPE, BagError,
                                             BagReader, header_stamp_ns)

LABEL_MATCHES = ("index", "stamp")


class LabelSource:
    """Ground truth of one kind (anomaly or semantic) for the frames of a replay.

    :meth:`lookup` returns the label (uint8 HxW of the frame's size) of frame ``index`` with
    header stamp ``stamp_ns``, or None when there is none; ValueError naming the label (its
    file, or bag, topic and message index) for one that cannot be read or has another size.
    """

    kind: str
    description: str

    def lookup(self, index: int, stamp_ns: int, size: Tuple[int, int]) -> Optional[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (temporary files)."""


def parse_stamp(text: str) -> int:
    """``"1700000000.100000000"`` (sec.nanosec) or ``"1700000000100000000"`` (ns) -> ns."""
    match = re.fullmatch(r"(\d+)(?:\.(\d{1,9}))?", text)
    if match is None:
        raise ValueError(f"{text!r} is not a stamp (seconds.nanoseconds or nanoseconds)")
    if match.group(2) is None:
        return int(match.group(1))
    return int(match.group(1)) * 1_000_000_000 + int(match.group(2).ljust(9, "0"))


class FolderLabels(LabelSource):
    """Label PNGs of a folder, matched to frames by index (sorted names) or by stamp (stem)."""

    def __init__(self, folder: Path, kind: str, match: str = "index",
                 tolerance_ns: int = 0):
        if match not in LABEL_MATCHES:
            raise ValueError(f"unknown label match {match!r}; choose from {LABEL_MATCHES}")
        self.kind, self.match, self.tolerance_ns = kind, match, tolerance_ns
        self.paths = [p for p in list_images(folder, f"{kind} label") if p.suffix == ".png"]
        if not self.paths:
            raise ValueError(f"no PNG labels in {kind} label folder {folder}")
        self.description = f"folder {folder} (by {match})"
        if match == "stamp":
            stamps = []
            for path in self.paths:
                try:
                    stamps.append(parse_stamp(path.stem))
                except ValueError as exc:
                    raise ValueError(f"label file {path}: its name is not a stamp, as "
                                     f"--label-match stamp needs: {exc}") from None
            order = np.argsort(stamps, kind="stable")
            self.paths = [self.paths[i] for i in order]
            self._stamps = np.asarray(stamps, dtype=np.int64)[order]

    def lookup(self, index: int, stamp_ns: int, size: Tuple[int, int]) -> Optional[np.ndarray]:
        if self.match == "index":
            if index >= len(self.paths):
                return None
            return read_label(self.paths[index], size)
        position = nearest(self._stamps, stamp_ns, self.tolerance_ns)
        return None if position is None else read_label(self.paths[position], size)


def nearest(stamps: np.ndarray, stamp_ns: int, tolerance_ns: int) -> Optional[int]:
    """Position of the sorted ``stamps`` entry nearest ``stamp_ns``, if within the tolerance."""
    if not len(stamps):
        return None
    right = int(np.searchsorted(stamps, stamp_ns))
    candidates = [p for p in (right - 1, right) if 0 <= p < len(stamps)]
    best = min(candidates, key=lambda p: abs(int(stamps[p]) - stamp_ns))
    return best if abs(int(stamps[best]) - stamp_ns) <= tolerance_ns else None


#: (serialized label message, topic, index on the topic) -> label uint8 HxW.
LabelDecoder = Callable[[bytes, str, int], np.ndarray]


class TopicLabels(LabelSource):
    """Labels on a topic of the bag (mono8 sensor_msgs/Image), matched by header stamp.

    The topic is read once at the start: its messages go to a temporary file (so memory
    does not grow with the drive) and their stamps to an index; a lookup decodes the one
    message nearest the frame's stamp, if within ``tolerance_ns``. ``decode`` deserializes a
    message (the ROS runners pass rclpy's). ``messages`` is how many were read, and
    :meth:`recorded` gives them back in the bag's order (the result bag copies them); a bag
    fault while reading the topic is raised as BagError.
    """

    def __init__(self, bag: Path, topic: str, kind: str, tolerance_ns: int,
                 decode: LabelDecoder):
        self.kind, self.topic, self.bag, self.decode = kind, topic, bag, decode
        self.tolerance_ns = tolerance_ns
        self.description = f"topic {topic}"
        #: Why the topic could not be read to its end (a truncated or corrupt bag), or None.
        self.fault: Optional[str] = None
        self._store = tempfile.TemporaryFile(prefix="dense_ood_labels-")
        entries = []  # (stamp, offset, length, index, recording time), in the bag's order
        try:
            with BagReader(bag) as reader:
                reader.topic(topic, (IMAGE_TYPE,), f"{kind} label")
                try:
                    for message in reader.messages([topic]):
                        try:
                            stamp = header_stamp_ns(message.data, "the label message")
                        except ValueError as exc:
                            raise BagError(bag, str(exc), topic, message.index) from None
                        entries.append((stamp, self._store.tell(), len(message.data),
                                        message.index, message.log_time_ns))
                        self._store.write(message.data)
                except BagError as exc:  # keep the labels before the fault
                    self.fault = str(exc)
        except BaseException:
            self._store.close()
            raise
        self.messages = len(entries)
        self._in_bag_order = list(entries)
        entries.sort()
        self._stamps = np.asarray([e[0] for e in entries], dtype=np.int64)
        self._entries = entries
        self.duplicates = int(len(self._stamps) - len(np.unique(self._stamps)))

    def lookup(self, index: int, stamp_ns: int, size: Tuple[int, int]) -> Optional[np.ndarray]:
        position = nearest(self._stamps, stamp_ns, self.tolerance_ns)
        if position is None:
            return None
        _, offset, length, message_index, _ = self._entries[position]
        self._store.seek(offset)
        try:
            label = self.decode(self._store.read(length), self.topic, message_index)
        except Exception as exc:  # noqa: BLE001 - any fault of this message: name it
            raise BagError(self.bag, f"cannot read the {self.kind} label: {exc}", self.topic,
                           message_index) from None
        if label.shape != tuple(size):
            raise BagError(self.bag, f"{self.kind} label is {label.shape[1]}x{label.shape[0]}, "
                                     f"its frame {size[1]}x{size[0]}", self.topic, message_index)
        return label

    def recorded(self) -> Iterator[Tuple[int, bytes]]:
        """Yield (recording time in ns, serialized message) of every message read, in order."""
        for _, offset, length, _, log_time_ns in self._in_bag_order:
            self._store.seek(offset)
            yield log_time_ns, self._store.read(length)

    def close(self) -> None:
        self._store.close()


def label_sources_wanted(args: argparse.Namespace, custom_data: Dict[str, str]
                         ) -> Dict[str, Tuple[str, str]]:
    """Kind -> ("topic" or "folder", topic name or folder) of the ground truth asked for.

    Label topics the bag records in its metadata (``dense-ood-make-bag`` does) are used for
    the kinds given neither a topic nor a folder, unless ``--no-bag-labels``.
    """
    wanted = {}
    for kind, topic, folder in zip(LABEL_KINDS, (args.label_topic, args.semantic_label_topic),
                                   (args.labels, args.semantic_labels)):
        if topic is not None and folder is not None:
            raise ValueError(f"{kind} labels: give a topic or a folder, not both")
        if topic is not None:
            wanted[kind] = ("topic", topic)
        elif folder is not None:
            wanted[kind] = ("folder", folder)
        elif not args.no_bag_labels and CUSTOM_LABEL_TOPIC[kind] in custom_data:
            wanted[kind] = ("topic", custom_data[CUSTOM_LABEL_TOPIC[kind]])
    return wanted


def open_label_sources(args: argparse.Namespace, wanted: Dict[str, Tuple[str, object]],
                       decode: LabelDecoder) -> List[LabelSource]:
    """Open the ground truth asked for.

    BadInput names a label folder or topic that cannot be read.
    """
    tolerance_ns = round(args.stamp_tolerance * 1e9)
    sources: List[LabelSource] = []
    try:
        for kind, (how, where) in wanted.items():
            sources.append(FolderLabels(Path(where), kind, args.label_match, tolerance_ns)
                           if how == "folder" else
                           TopicLabels(args.bag, where, kind, tolerance_ns, decode))
    except BaseException as exc:
        for source in sources:
            source.close()
        if isinstance(exc, (BagError, ValueError, OSError)):
            raise BadInput(exc) from None
        raise
    return sources


def label_topic_copies(sources: Sequence[LabelSource]
                       ) -> List[Tuple[str, Iterator[Tuple[int, bytes]]]]:
    """Return (topic, its messages as recorded) of the label topics among ``sources``."""
    return [(source.topic, source.recorded()) for source in sources
            if isinstance(source, TopicLabels)]
