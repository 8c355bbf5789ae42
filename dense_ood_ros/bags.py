"""Rosbag2 bags without a ROS graph: read and write serialized messages, make camera bags.

`rosbags <https://gitlab.com/ternaris/rosbags>`_ reads and writes rosbag2 bags (MCAP and
sqlite3) in pure Python, so nothing here needs rclpy or a ROS install. Messages stay as the
serialized CDR bytes a recorder stored; whoever needs the fields deserializes them (bag
replay does, with rclpy, exactly as the node receives them). The one field read here is the
header stamp at the start of a message (:func:`header_stamp_ns`).

Reading never modifies a bag (MCAP files are opened read-only, sqlite3 databases as
immutable), and every problem is a :class:`BagError` that names the bag, and where it
applies the topic and the index of the message on that topic. An MCAP file that a recorder
did not finish (no summary and footer, as after a crash or a power cut) is read up to where
it ends; the first message that is not all there ends the reading with a BagError.

``dense-ood-make-bag`` (:func:`main`) turns a folder of frames, ordered by name, and
optional label PNGs of the same stems into a bag: ``sensor_msgs/Image`` (rgb8 or bgr8) or
``sensor_msgs/CompressedImage`` (jpeg) at a fixed rate, each label folder on its own mono8
``sensor_msgs/Image`` topic with the frame's header.
"""

import argparse
import fnmatch
import os
import secrets
import shutil
import struct
import sys
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import McapReader, Statistics
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from dense_ood_ros.cli import command_parser
from dense_ood_ros.io import list_images, read_label, read_rgb
from dense_ood_ros.label_set import ShortRepr

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
#: Message types a camera topic may have.
CAMERA_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
#: Storage formats written (both are read).
STORAGES = ("mcap", "sqlite3")
_STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: rosbag2 metadata version written (Jazzy and later).
BAG_VERSION = 9
#: Message encodings ``dense-ood-make-bag`` writes: Image rgb8/bgr8, CompressedImage jpeg.
FRAME_ENCODINGS = ("rgb8", "bgr8", "jpeg")
DEFAULT_START_TIME_NS = 1_700_000_000 * 1_000_000_000
#: Keys of the bag's ``custom_data`` (metadata.yaml) where ``dense-ood-make-bag`` records its
#: topics, so that replay finds the label topics without being told.
CUSTOM_CAMERA_TOPIC = "dense_ood_ros.camera_topic"
CUSTOM_LABEL_TOPIC = {"anomaly": "dense_ood_ros.anomaly_label_topic",
                      "semantic": "dense_ood_ros.semantic_label_topic"}
#: CDR encapsulation kinds (second byte of the 4-byte header): plain CDR big / little endian.
_CDR_BIG_ENDIAN, _CDR_LITTLE_ENDIAN = 0x00, 0x01


class BagError(ValueError):
    """A bag that cannot be read as asked; the message names the bag, topic and message index.

    ``index`` is the 0-based index of the message on ``topic`` (None: not about one message).
    """

    def __init__(self, bag: Union[str, Path], problem: str, topic: Optional[str] = None,
                 index: Optional[int] = None):
        where = f"bag {bag}"
        if topic is not None:
            where += f", topic {topic}"
        if index is not None:
            where += f", message index {index}"
        super().__init__(f"{where}: {problem}")
        self.bag, self.problem, self.topic, self.index = str(bag), problem, topic, index


@dataclass(frozen=True)
class Topic:
    """A topic of a bag; ``count`` is None when the bag does not say (an unfinished file)."""

    name: str
    msgtype: str
    count: Optional[int]


@dataclass(frozen=True)
class BagMessage:
    """One serialized message: its topic, index on that topic, recording time and CDR bytes."""

    topic: str
    index: int
    log_time_ns: int
    data: bytes


def header_stamp_ns(data: Union[bytes, memoryview], what: str = "message") -> int:
    """Return the header stamp (ns) of a serialized message that starts with a std_msgs/Header.

    ``data`` is plain CDR with its 4-byte encapsulation header (as rosbag2 stores and rmw
    publishes it); the stamp is the message's first field. ValueError naming ``what`` for
    anything else.
    """
    view = memoryview(data).cast("B")
    if len(view) < 12 or view[0] != 0 or view[1] not in (_CDR_BIG_ENDIAN, _CDR_LITTLE_ENDIAN):
        raise ValueError(f"{what} is not a plain CDR message "
                         f"({len(view)} bytes, starting with {bytes(view[:4])!r})")
    order = "<" if view[1] == _CDR_LITTLE_ENDIAN else ">"
    sec, nanosec = struct.unpack_from(order + "iI", view, 4)
    if nanosec >= 1_000_000_000:
        raise ValueError(f"{what} has an invalid header stamp ({sec} s, {nanosec} ns)")
    return sec * 1_000_000_000 + nanosec


def stamp_text(stamp_ns: int) -> str:
    """Return a header stamp as ``sec.nanosec`` (e.g. ``1700000000.100000000``)."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return f"{sec}.{nanosec:09d}"


# --------------------------------------------------------------------------- reading

class _UnfinishedMcapReader(McapReader):
    """rosbags' MCAP reader that also reads a file its recorder did not finish.

    Such a file has no summary and no footer: the records are scanned from the start (the
    channels found before the end are kept) and :meth:`messages` reads up to where the file
    ends, raising ReaderError at the message that is cut. ``unfinished`` says why the file
    was read this way (None for a complete file).
    """

    unfinished: Optional[str] = None

    def _open(self) -> None:
        try:
            super()._open()
            return
        except (ReaderError, OSError, struct.error) as exc:
            if not self.data_start:  # not even the header record: not an MCAP file we can read
                raise
            reason = str(exc) or type(exc).__name__
        self.schemas.clear()
        self.channels.clear()
        self.chunks.clear()
        self.connections.clear()
        self.statistics = None
        self.data_end = self.bio.seek(0, os.SEEK_END)
        with suppress(ReaderError, OSError, struct.error, ValueError, TypeError, RuntimeError):
            self.meta_scan()  # stops at the cut; what it found so far is kept
        self.statistics = Statistics(0, len(self.schemas), len(self.channels), 0, 0, 0, 0, 0, {})
        self.unfinished = reason


#: Error messages show a short repr of a bad value (also of an integer too long for ``str``).
_SHOW = ShortRepr()


def _same_topic(listed, held) -> bool:
    """Whether rosbags' DirectoryReader reads storage connection ``held`` for ``listed``.

    As its ``messages`` matches them: topic, type, serialization format and QoS profiles
    (``ext``), and the type hash where both have one.
    """
    return (held.topic == listed.topic and held.msgtype == listed.msgtype
            and held.ext == listed.ext
            and (not held.digest or not listed.digest or held.digest == listed.digest))


class _DirectoryReader(DirectoryReader):
    """rosbags' reader of a bag folder, which also checks what it takes from metadata.yaml.

    rosbags uses the storage file list and ``custom_data`` unchecked, fails to close a bag
    whose ``files`` is a string, and silently reads nothing for a topic metadata.yaml lists
    differently from every storage file.
    """

    STORAGE_PLUGINS = {"mcap": _UnfinishedMcapReader, "sqlite3": Sqlite3Reader}

    def open(self) -> None:
        super().open()
        try:
            self._check_metadata()
        except BaseException:
            with suppress(Exception):
                self.close()
            raise

    def close(self) -> None:
        if not isinstance(self.files, list):  # metadata.yaml's 'files' (unused) as a string
            self.files = []  # rosbags' close() calls files.clear() before closing the files
        super().close()

    def _check_metadata(self) -> None:
        if not self.storages:
            raise ReaderError("metadata.yaml lists no storage file ('relative_file_paths')")
        paths = [storage.path for storage in self.storages]
        twice = sorted({path.name for path in paths if paths.count(path) > 1})
        if twice:
            raise ReaderError(f"metadata.yaml lists storage file {twice[0]} more than once")
        custom = self.metadata.custom
        if custom is not None and not (isinstance(custom, dict) and all(
                isinstance(key, str) and isinstance(value, str) for key, value in custom.items())):
            raise ReaderError(f"metadata.yaml: 'custom_data' must map strings to strings, "
                              f"got {_SHOW.repr(custom)}")

    def unmatched(self, connections) -> list:
        """Return the ``connections`` (metadata.yaml's) no storage file's connection matches."""
        held = [connection for storage in self.storages for connection in storage.connections]
        return [listed for listed in connections
                if not any(_same_topic(listed, other) for other in held)]

    def held_as(self, topic: str) -> List[str]:
        """Return the message types under which the storage files hold ``topic``."""
        return sorted({c.msgtype for storage in self.storages for c in storage.connections
                       if c.topic == topic})


def _topics_problem(connections) -> Optional[str]:
    """Say what is wrong with the topics of a bag (rosbags takes metadata.yaml's unchecked)."""
    for connection in connections:
        if not isinstance(connection.topic, str):
            return f"a topic name is not a string: {_SHOW.repr(connection.topic)}"
        if not isinstance(connection.msgtype, str) or not connection.msgtype:
            return (f"topic {connection.topic} has no message type, "
                    f"got {_SHOW.repr(connection.msgtype)}")
        count = connection.msgcount
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return f"topic {connection.topic} has an invalid message count {_SHOW.repr(count)}"
    return None


class _Reader(Reader):
    STORAGE_PLUGINS = {"dir": _DirectoryReader, ".mcap": _UnfinishedMcapReader,
                       ".db3": Sqlite3Reader}


def _storage_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".mcap", ".db3"))


class BagReader:
    """A rosbag2 bag opened read-only: its topics and its messages as serialized bytes.

    ``path``: a bag folder (``metadata.yaml`` and its storage files), or one ``.mcap`` or
    ``.db3`` file; a folder without ``metadata.yaml`` (a recording that was never closed)
    holding one storage file is read through that file. ``notes`` lists what was unusual
    about the bag (e.g. read as an unfinished recording). Use as a context manager.
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.notes: List[str] = []
        target = self.path
        if not self.path.exists():
            raise BagError(self.path, "not found")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            files = _storage_files(self.path)
            if len(files) != 1:
                raise BagError(self.path, "not a rosbag2 bag: no metadata.yaml and "
                                          f"{len(files)} storage files (.mcap, .db3) instead of 1")
            target = files[0]
            self.notes.append(f"no metadata.yaml: read {target.name} alone "
                              "(a recording that was not closed?)")
        try:
            self._reader = _Reader(target)
            self._reader.open()
        except (ReaderError, OSError, KeyError, ValueError, TypeError, struct.error) as exc:
            raise BagError(self.path, f"cannot open: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - e.g. sqlite3.DatabaseError: name the bag
            raise BagError(self.path, f"cannot open: {type(exc).__name__}: {exc}") from None
        problem = _topics_problem(self._reader.connections)
        if problem is not None:
            self._reader.close()
            raise BagError(self.path, f"cannot open: {problem}")
        storages = (self._reader.storage.storages if isinstance(self._reader.storage,
                                                                DirectoryReader)
                    else [self._reader.storage])
        self.storage = "mcap" if isinstance(storages[0], McapReader) else "sqlite3"
        unfinished = [s.unfinished for s in storages if getattr(s, "unfinished", None)]
        if unfinished:
            self.notes.append(f"unfinished MCAP file ({unfinished[0]}): "
                              "read up to where it ends")
        metadata = getattr(self._reader.storage, "metadata", None)
        #: The bag's ``custom_data`` (metadata.yaml), {} when none.
        self.custom_data: Dict[str, str] = dict(getattr(metadata, "custom", None) or {})
        self.topics: Dict[str, Topic] = {}
        for name, info in self._reader.topics.items():
            count = None if unfinished else info.msgcount
            self.topics[name] = Topic(name, info.msgtype or "(several types)", count)

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def topic(self, name: str, msgtypes: Sequence[str], what: str) -> Topic:
        """Return topic ``name``; BagError unless it is in the bag with one of ``msgtypes``."""
        topic = self.topics.get(name)
        if topic is None:
            raise BagError(self.path, f"no {what} topic {name!r} in the bag; its topics: "
                                      f"{self._listing()}")
        if topic.msgtype not in msgtypes:
            raise BagError(self.path, f"{what} topic has type {topic.msgtype}, expected "
                                      f"{' or '.join(msgtypes)}", topic=name)
        return topic

    def camera_topic(self, name: Optional[str] = None, exclude: Iterable[str] = ()) -> Topic:
        """Return the camera topic: ``name``, or the only Image/CompressedImage topic.

        Topics in ``exclude`` (the label topics) are not candidates.
        """
        if name is not None:
            return self.topic(name, CAMERA_TYPES, "image")
        exclude = set(exclude)
        candidates = [t for t in self.topics.values()
                      if t.msgtype in CAMERA_TYPES and t.name not in exclude]
        if not candidates:
            raise BagError(self.path, "no image topic (sensor_msgs/msg/Image or "
                                      f"CompressedImage); its topics: {self._listing()}")
        if len(candidates) > 1:
            raise BagError(self.path, "several image topics: "
                                      + ", ".join(f"{t.name} ({t.msgtype})" for t in candidates)
                                      + "; choose one with --image-topic")
        return candidates[0]

    def _listing(self) -> str:
        listing = ", ".join(f"{t.name} ({t.msgtype})" for t in self.topics.values()) or "none"
        return listing + "".join(f" ({note})" for note in self.notes)

    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """Yield the messages of ``topics`` in recording order, each with its topic index.

        A fault while reading (a truncated or corrupt file) raises BagError naming the topic
        and the index of the message that could not be read (with several topics, the index
        on the first of them). So does a topic that metadata.yaml lists otherwise than every
        storage file holds it (another type, QoS profiles or type hash), before any message.
        """
        names = list(topics)
        connections = [c for c in self._reader.connections if c.topic in names]
        unmatched = (self._reader.storage.unmatched(connections)
                     if isinstance(self._reader.storage, _DirectoryReader) else [])
        if unmatched:  # rosbags would read nothing for it, silently
            listed = unmatched[0]
            held = self._reader.storage.held_as(listed.topic)
            raise BagError(self.path, f"metadata.yaml lists this topic as {listed.msgtype}, but "
                                      "no storage file holds it with that type, serialization "
                                      "format, QoS profiles and type hash ("
                                      + (f"they hold it as {', '.join(held)}" if held
                                         else "they do not hold it") + ")", topic=listed.topic)
        counts = dict.fromkeys(names, 0)
        iterator = self._reader.messages(connections) if connections else iter(())
        while True:
            try:
                connection, log_time, data = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - any storage fault: name where it is
                topic = names[0] if names else None
                raise BagError(self.path, f"the bag is truncated or corrupt here: "
                                          f"{type(exc).__name__}: {exc}",
                               topic=topic, index=counts.get(topic)) from None
            index = counts[connection.topic]
            counts[connection.topic] = index + 1
            yield BagMessage(connection.topic, index, int(log_time), bytes(data))


# --------------------------------------------------------------------------- writing

@lru_cache(maxsize=1)
def typestore():
    """Return the rosbags type store of the ROS 2 distribution whose messages we write."""
    return get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))


class BagWriter:
    """Writes serialized messages to a new rosbag2 bag (``storage`` mcap or sqlite3).

    Topics are registered with their message definitions (from rosbags' type store), so the
    bag plays in ``ros2 bag play`` and opens in Foxglove Studio. Close it (a context manager
    does, on an error too) to finish the file: a closed bag is complete and valid whatever
    was written into it.
    """

    def __init__(self, path: Union[str, Path], storage: str = "mcap"):
        if storage not in _STORAGE_PLUGINS:
            raise ValueError(f"unknown bag storage {storage!r}; choose from {list(STORAGES)}")
        self.path = Path(path)
        try:
            self._writer = Writer(self.path, version=BAG_VERSION,
                                  storage_plugin=_STORAGE_PLUGINS[storage])
            self._writer.open()
        except WriterError as exc:
            raise OSError(f"cannot create bag {self.path}: {exc}") from None
        self._connections = {}
        self.counts: Dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def set_custom_data(self, key: str, value: str) -> None:
        """Record ``key: value`` in the bag's metadata (``custom_data``)."""
        self._writer.set_custom_data(key, value)

    def add_topic(self, name: str, msgtype: str) -> None:
        """Register topic ``name`` of ``msgtype`` (e.g. ``sensor_msgs/msg/Image``), once."""
        if name in self._connections:
            return
        self._connections[name] = self._writer.add_connection(name, msgtype,
                                                              typestore=typestore())
        self.counts[name] = 0

    def write(self, topic: str, log_time_ns: int, data: Union[bytes, memoryview]) -> None:
        """Write one serialized message on a registered topic, recorded at ``log_time_ns``."""
        self._writer.write(self._connections[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def close(self) -> None:
        if self._writer.storage is not None:
            try:
                self._writer.close()
            finally:
                self._writer.storage = None


# --------------------------------------------------------------------------- making bags

def _stamp(stamp_ns: int):
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    types = typestore().types
    return types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def image_message(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
    """Serialize a sensor_msgs/Image of uint8 pixels (rgb8/bgr8: HxWx3, mono8: HxW)."""
    types = typestore().types
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    msg = types[IMAGE_TYPE](
        header=types["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id),
        height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=0,
        step=pixels[0].nbytes, data=pixels.reshape(-1))
    return bytes(typestore().serialize_cdr(msg, IMAGE_TYPE))


def compressed_message(rgb: np.ndarray, stamp_ns: int, frame_id: str,
                       jpeg_quality: int = 90) -> bytes:
    """Serialize a sensor_msgs/CompressedImage holding ``rgb`` as a JPEG (format ``jpeg``)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    types = typestore().types
    msg = types[COMPRESSED_TYPE](
        header=types["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id),
        format="jpeg", data=encoded.reshape(-1))
    return bytes(typestore().serialize_cdr(msg, COMPRESSED_TYPE))


@dataclass
class BagFrame:
    """One frame to write: the image file and its label files (kind -> path)."""

    image: Path
    labels: Dict[str, Path]


def find_bag_frames(frames: Path, pattern: str = "*", labels: Optional[Dict[str, Path]] = None,
                    limit: Optional[int] = None) -> List[BagFrame]:
    """Pair the images in ``frames`` whose names match ``pattern`` with label PNGs.

    ``labels``: kind (e.g. "anomaly") -> folder holding ``<stem>.png`` for every frame.
    Frames are ordered by name. ValueError (naming the file or folder) for a missing folder,
    no matching image, or a missing label.
    """
    images = [p for p in list_images(frames, "frame") if fnmatch.fnmatch(p.name, pattern)]
    if not images:
        raise ValueError(f"no image in {frames} matches {pattern!r}")
    images = images[:limit] if limit is not None else images
    result = []
    for kind, folder in (labels or {}).items():
        if not folder.is_dir():
            raise ValueError(f"{kind} label folder not found: {folder}")
    for image in images:
        pairs = {kind: folder / f"{image.stem}.png" for kind, folder in (labels or {}).items()}
        for kind, path in pairs.items():
            if not path.is_file():
                raise ValueError(f"{image.name}: {kind} label missing ({path})")
        result.append(BagFrame(image, pairs))
    return result


def write_frames_bag(frames: Sequence[BagFrame], out: Path, topic: str,
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
            for index, frame in enumerate(tqdm(frames, desc="make bag", unit="frame",
                                               disable=not progress)):
                stamp = start_ns + round(index * 1e9 / rate_hz)
                rgb = read_rgb(frame.image)
                if encoding == "jpeg":
                    data = compressed_message(rgb, stamp, frame_id, jpeg_quality)
                else:
                    pixels = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                    data = image_message(pixels, encoding, stamp, frame_id)
                writer.write(topic, stamp, data)
                for kind, label_topic in label_topics.items():
                    label = read_label(frame.labels[kind], rgb.shape[:2])
                    writer.write(label_topic, stamp, image_message(label, "mono8", stamp,
                                                                   frame_id))
            counts = dict(writer.counts)
        os.replace(partial, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def remove_bag(path: Path) -> None:
    """Delete the bag at ``path`` (``--overwrite``); refuse a folder that is not a bag."""
    if path.is_file() and path.suffix in (".mcap", ".db3"):
        path.unlink()
        return
    if path.is_dir():
        entries = list(path.iterdir())
        bag_like = all(p.is_file() and (p.name == "metadata.yaml" or p.suffix in (".mcap", ".db3"))
                       for p in entries)
        if bag_like:
            shutil.rmtree(path)
            return
    raise FileExistsError(f"{path} exists and is not a bag (a folder of metadata.yaml and "
                          ".mcap/.db3 files); not overwriting it")


# --------------------------------------------------------------------------- command line

def default_topic(encoding: str) -> str:
    """``/camera/image_raw``, or ``/camera/image_raw/compressed`` for jpeg (image_transport)."""
    return "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"


def _seconds_ns(text: str) -> int:
    """``"1700000000.25"`` -> 1700000000250000000 (exact, no float rounding)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return int(value * 1_000_000_000)


def _parser():
    parser = command_parser(
        "dense-ood-make-bag",
        "A folder of frames (ordered by name) and optional label PNGs -> a rosbag2 bag.",
        "the bag folder --out (metadata.yaml + one .mcap or .db3 file): the frames on --topic "
        "(sensor_msgs/Image rgb8/bgr8 or CompressedImage jpeg), and the labels of each label "
        "folder as mono8 sensor_msgs/Image with the frame's header on their own topic.")
    parser.add_argument("--frames", required=True, type=Path, help="folder of frame images")
    parser.add_argument("--pattern", default="*",
                        help="only frames whose file names match this glob (e.g. 'Seq05VD_*')")
    parser.add_argument("--labels", type=Path,
                        help="folder of anomaly label PNGs (same stems as the frames)")
    parser.add_argument("--semantic-labels", type=Path,
                        help="folder of class-index label PNGs (same stems as the frames)")
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
    parser.add_argument("--start-time", type=_seconds_ns, default=DEFAULT_START_TIME_NS,
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error(f"--rate must be positive, got {args.rate}")
    if not 1 <= args.jpeg_quality <= 100:
        parser.error(f"--jpeg-quality must be 1-100, got {args.jpeg_quality}")
    topic = args.topic or default_topic(args.encoding)
    label_folders = {kind: folder
                     for kind, folder in (("anomaly", args.labels),
                                          ("semantic", args.semantic_labels))
                     if folder is not None}
    label_topics = {kind: topic_name for kind, topic_name in (("anomaly", args.label_topic),
                                                              ("semantic",
                                                               args.semantic_label_topic))
                    if kind in label_folders}
    names = [topic, *label_topics.values()]
    if len(set(names)) != len(names):
        parser.error(f"the camera and label topics must differ, got {names}")
    try:
        frames = find_bag_frames(args.frames, args.pattern, label_folders, args.limit)
        if args.out.exists():
            if not args.overwrite:
                raise FileExistsError(f"{args.out} exists (--overwrite replaces it)")
            remove_bag(args.out)
        counts = write_frames_bag(frames, args.out, topic, label_topics, args.encoding,
                                  args.storage, args.rate, args.start_time, args.frame_id,
                                  args.jpeg_quality, progress=not args.no_progress)
    except (ValueError, OSError) as exc:
        print(f"dense-ood-make-bag: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.storage}): "
          + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
