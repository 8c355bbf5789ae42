"""Rosbag2 bags read without a ROS graph: topics, and messages as serialized bytes.

`rosbags <https://gitlab.com/ternaris/rosbags>`_ reads rosbag2 bags (MCAP and sqlite3) in
pure Python, so nothing here needs rclpy or a ROS install. Messages stay as the serialized
CDR bytes a recorder stored; whoever needs the fields deserializes them (bag replay does,
with rclpy, exactly as the node receives them). The one field read here is the header stamp
at the start of a message (:func:`header_stamp_ns`).

Reading never modifies a bag (MCAP files are opened read-only, sqlite3 databases as
immutable), and every problem is a :class:`BagError` that names the bag, and where it
applies the topic and the index of the message on that topic. An MCAP file that a recorder
did not finish (no summary and footer, as after a crash or a power cut) is read up to where
it ends; the first message that is not all there ends the reading with a BagError.
"""

import os
import struct
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

from rosbags.rosbag2 import Reader, ReaderError
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import McapReader, Statistics
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

from dense_ood_ros.label_set import ShortRepr

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
#: Message types a camera topic may have.
CAMERA_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
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
