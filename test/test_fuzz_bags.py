"""Property tests (hypothesis) of rosbag2 bags read from outside (issue 17).

Targets and properties (never any other exception, never a hang):

- header stamps (:func:`dense_ood_ros.replay.bag_reader.header_stamp_ns`) of random bytes,
  with and without a CDR encapsulation header, as bytes, bytearray and memoryview: the stamp
  exactly as the bytes say, or ValueError naming what was read.
- :class:`~dense_ood_ros.replay.bag_reader.BagReader` (opening, ``topics``, ``camera_topic``,
  ``messages``) on small valid bags written by
  :class:`~dense_ood_ros.replay.bag_writer.BagWriter` (MCAP and sqlite3: Image,
  CompressedImage and label topics, custom data), then damaged:

  - the storage file truncated anywhere (metadata.yaml kept or deleted): the messages read
    are the first ones written, exactly; fewer than all of them only with a BagError or a
    note that the file is an unfinished recording (as documented);
  - bytes of the storage file flipped or overwritten: a BagError, or messages that are well
    formed (listed topics, indices counting up). Neither storage carries a checksum of the
    message bytes (rosbags writes MCAP chunks with CRC 0, sqlite3 has none), so a changed
    payload byte is read as it now is: such reads are counted as "read altered";
  - the storage file deleted or replaced with random bytes: a BagError;
  - metadata.yaml mutated (keys set to random or near-valid values, deleted, topics renamed,
    retyped, duplicated, dropped, QoS and type hashes changed, file lists and custom data
    mutated), truncated, replaced with random YAML or bytes, or deleted: a BagError, or
    exactly the messages written on the topics it lists (with their types);

  every BagError names the bag.
- the replay's per-message path (:func:`dense_ood_ros.ros.replay.offline._replay_one`: header
  stamp, rclpy deserialization, the node's frame pipeline with a stand-in backend): valid tiny
  frames, the same mutated (fields, truncation, bytes) and random CDR bytes under Image and
  CompressedImage topics. One frame record per message: processed, or failed with a reason
  and a problem naming the bag, topic and message index; the replay never stops.

Profiles (``test/fuzz_profiles.py``): ``ci`` by default, ``long`` with
``DENSE_OOD_FUZZ_PROFILE=long`` (``scripts/fuzz.sh``).
"""

import copy
import math
import os
import struct
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional

import cv2
import numpy as np
import pytest
import yaml
from fuzz_profiles import fuzz_settings, outcome_counter, yaml_strategies
from hypothesis import given
from hypothesis import strategies as st

from dense_ood_ros.replay.bag_reader import (COMPRESSED_TYPE, CUSTOM_CAMERA_TOPIC, IMAGE_TYPE,
                                             BagError, BagMessage, BagReader, Topic,
                                             header_stamp_ns)
from dense_ood_ros.replay.bag_writer import (STORAGES, BagWriter, compressed_message,
                                             image_message, typestore)

outcomes, print_outcomes = outcome_counter("bags (header stamps, damaged bags, replay frames)")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """Return a folder for the bags of all examples (each makes its own subfolder)."""
    return tmp_path_factory.mktemp("fuzz_bags")


def _new_dir(work_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=work_dir))


# ================================================================= header stamps

CDR_HEADERS = [b"\x00\x01\x00\x00", b"\x00\x00\x00\x00", b"\x00\x02\x00\x00",
               b"\x01\x00\x00\x00", b"\x00\x01", b""]


@given(st.one_of(st.binary(max_size=40),
                 st.tuples(st.sampled_from(CDR_HEADERS), st.binary(max_size=30)).map(
                     lambda parts: parts[0] + parts[1]),
                 st.tuples(st.sampled_from(CDR_HEADERS[:2]), st.integers(-2**31, 2**31 - 1),
                           st.integers(0, 2**32 - 1), st.binary(max_size=8)).map(
                     lambda p: p[0] + struct.pack("<iI" if p[0][1] else ">iI", p[1], p[2])
                     + p[3])),
       st.sampled_from([bytes, bytearray, memoryview]))
@fuzz_settings(ci_examples=300, long_examples=4000)
def test_header_stamps_are_exact_or_a_value_error_naming_the_message(data, kind):
    try:
        stamp = header_stamp_ns(kind(data), "the fuzzed message")
    except ValueError as exc:
        assert "the fuzzed message" in str(exc)
        outcomes["header stamp refused"] += 1
        return
    assert len(data) >= 12 and data[0] == 0 and data[1] in (0, 1)
    sec, nanosec = struct.unpack_from("<iI" if data[1] else ">iI", data, 4)
    assert nanosec < 1_000_000_000 and type(stamp) is int
    assert stamp == sec * 1_000_000_000 + nanosec
    outcomes["header stamp read"] += 1


# ================================================================= damaged bags

CAMERA, COMPRESSED, LABELS = "/camera/image_raw", "/camera/image_raw/compressed", "/labels"
TOPIC_TYPES = {CAMERA: IMAGE_TYPE, COMPRESSED: COMPRESSED_TYPE, LABELS: IMAGE_TYPE}
FRAMES = 3
START_NS = 1_700_000_000_000_000_000


@dataclass
class Pristine:
    """A valid bag: its files (name -> bytes), storage file name and the messages written."""

    storage: str
    files: Dict[str, bytes]
    storage_file: str
    written: List[BagMessage]

    def __repr__(self) -> str:  # hypothesis prints the strategies' arguments
        return f"Pristine({self.storage!r} bag of {len(self.written)} messages)"


def _write_pristine(path: Path, storage: str) -> Pristine:
    rng = np.random.default_rng(0)
    written, counts = [], dict.fromkeys(TOPIC_TYPES, 0)
    with BagWriter(path, storage) as writer:
        writer.set_custom_data(CUSTOM_CAMERA_TOPIC, CAMERA)
        for topic, msgtype in TOPIC_TYPES.items():
            writer.add_topic(topic, msgtype)
        for frame in range(FRAMES):
            rgb = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
            for position, topic in enumerate(TOPIC_TYPES):
                stamp = START_NS + (frame * len(TOPIC_TYPES) + position) * 1_000_000
                if topic == CAMERA:
                    data = image_message(rgb, "rgb8", stamp, "cam")
                elif topic == COMPRESSED:
                    data = compressed_message(rgb, stamp, "cam")
                else:
                    data = image_message(rgb[..., 0] % 3, "mono8", stamp, "cam")
                writer.write(topic, stamp, data)
                written.append(BagMessage(topic, counts[topic], stamp, data))
                counts[topic] += 1
    files = {p.name: p.read_bytes() for p in path.iterdir()}
    [storage_file] = [name for name in files if name != "metadata.yaml"]
    return Pristine(storage, files, storage_file, written)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Dict[str, Pristine]:
    """Per storage: a valid bag of three frames on three topics."""
    root = tmp_path_factory.mktemp("pristine_bags")
    return {storage: _write_pristine(root / storage, storage) for storage in STORAGES}


def test_the_pristine_bags_read_back_exactly(pristine, work_dir):
    for bag in pristine.values():
        outcome = _read(_place(work_dir, bag, dict(bag.files)))
        assert outcome.error is None and outcome.messages == bag.written
        assert outcome.custom_data == {CUSTOM_CAMERA_TOPIC: CAMERA}
        assert {t.name: (t.msgtype, t.count) for t in outcome.topics.values()} == {
            topic: (msgtype, FRAMES) for topic, msgtype in TOPIC_TYPES.items()}


def _place(work_dir: Path, bag: Pristine, files: Dict[str, Optional[bytes]]) -> Path:
    """Write a bag folder of ``files`` (None: left out); return its path."""
    path = _new_dir(work_dir) / "bag"
    path.mkdir()
    for name, data in files.items():
        if data is not None:
            (path / name).write_bytes(data)
    return path


@dataclass
class Outcome:
    """What reading a bag gave: topics, notes, custom data, the messages, the error if any."""

    topics: Dict[str, Topic] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    custom_data: Dict[str, str] = field(default_factory=dict)
    messages: List[BagMessage] = field(default_factory=list)
    error: Optional[BagError] = None
    opened: bool = False


def _check_reader(reader: BagReader, path: Path) -> None:
    """Check that an opened reader is well typed; camera_topic answers or names the bag."""
    assert reader.storage in STORAGES
    assert all(isinstance(note, str) for note in reader.notes)
    assert isinstance(reader.custom_data, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in reader.custom_data.items())
    for name, topic in reader.topics.items():
        assert isinstance(name, str) and topic.name == name and isinstance(topic.msgtype, str)
        assert topic.count is None or (type(topic.count) is int and topic.count >= 0)
    for name in [*reader.topics, None]:
        try:
            found = reader.camera_topic(name)
        except BagError as exc:
            assert str(path) in str(exc), str(exc)
        else:
            assert found.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)
            assert name is None or found.name == name


def _read(path: Path) -> Outcome:
    """Open the bag and read all its listed topics; BagError is kept, nothing else caught."""
    outcome = Outcome()
    started = time.process_time()
    try:
        with BagReader(path) as reader:
            outcome.opened = True
            outcome.topics, outcome.notes = dict(reader.topics), list(reader.notes)
            outcome.custom_data = dict(reader.custom_data)
            _check_reader(reader, path)
            for message in reader.messages(list(reader.topics)):
                outcome.messages.append(message)
    except BagError as exc:
        assert str(path) in str(exc), str(exc)
        outcome.error = exc
    finally:
        assert time.process_time() - started < 20.0, "a tiny bag took over 20 CPU s"
    # well formed, whatever the damage: listed topics, indices counting up on each
    indices: Dict[str, int] = {}
    for message in outcome.messages:
        assert message.topic in outcome.topics and isinstance(message.data, bytes)
        assert type(message.log_time_ns) is int
        assert message.index == indices.get(message.topic, 0)
        indices[message.topic] = message.index + 1
    return outcome


def _count(prefix: str, outcome: Outcome, written: List[BagMessage]) -> None:
    if outcome.error is not None:
        outcomes[f"{prefix}: refused"] += 1
    elif outcome.messages == written:
        outcomes[f"{prefix}: read exactly"] += 1
    elif outcome.messages == written[:len(outcome.messages)]:
        outcomes[f"{prefix}: read a prefix"] += 1
    else:
        outcomes[f"{prefix}: read altered"] += 1


STORAGE_DAMAGE = ["truncated", "truncated", "truncated, no metadata.yaml", "bytes flipped",
                  "bytes overwritten", "bytes flipped, no metadata.yaml", "deleted",
                  "random bytes", "random bytes, no metadata.yaml"]


@given(st.sampled_from(STORAGES), st.sampled_from(STORAGE_DAMAGE), st.data())
@fuzz_settings(ci_examples=150, long_examples=4000)
def test_damaged_storage_files_read_the_first_messages_or_name_the_bag(
        pristine, work_dir, storage, damage, data):
    bag = pristine[storage]
    files: Dict[str, Optional[bytes]] = dict(bag.files)
    content = bytearray(files[bag.storage_file])
    if damage.startswith("truncated"):
        content = content[:data.draw(st.integers(0, len(content) - 1), label="cut")]
    elif damage.startswith("bytes"):
        for _ in range(data.draw(st.integers(1, 4), label="edits")):
            offset = data.draw(st.integers(0, len(content) - 1), label="offset")
            if "flipped" in damage:
                content[offset] ^= 1 << data.draw(st.integers(0, 7), label="bit")
            else:
                content[offset:offset + 8] = data.draw(st.binary(min_size=1, max_size=8))
    elif damage.startswith("random"):
        content = bytearray(data.draw(st.binary(max_size=600), label="random storage"))
    files[bag.storage_file] = None if damage == "deleted" else bytes(content)
    if "no metadata.yaml" in damage:
        files["metadata.yaml"] = None
    outcome = _read(_place(work_dir, bag, files))
    _count(f"{storage} {damage.split(',')[0].split(' ')[0]}", outcome, bag.written)
    if damage.startswith(("deleted", "random")):
        assert outcome.error is not None, "a bag without its storage was read"
    elif damage.startswith("truncated"):
        assert outcome.messages == bag.written[:len(outcome.messages)], "not the first ones"
        if len(outcome.messages) < len(bag.written) and outcome.error is None:
            assert any("unfinished" in note for note in outcome.notes), (
                "messages are missing, yet no error and no note says so")


def test_a_cut_storage_file_is_read_up_to_the_cut_at_every_offset(pristine, work_dir):
    """Every cut of the MCAP file (a stride through it): the first messages exactly."""
    bag = pristine["mcap"]
    size = len(bag.files[bag.storage_file])
    for cut in range(0, size, max(1, size // 60)):
        for metadata in (True, False):
            files = dict(bag.files, **{bag.storage_file: bag.files[bag.storage_file][:cut]})
            if not metadata:
                files["metadata.yaml"] = None
            outcome = _read(_place(work_dir, bag, files))
            assert outcome.messages == bag.written[:len(outcome.messages)], cut
            assert (outcome.error is not None or len(outcome.messages) == len(bag.written)
                    or any("unfinished" in note for note in outcome.notes)), cut


# ---------------------------------------------------------------- metadata.yaml

YAML_SCALARS, YAML_KEYS, YAML_VALUES = yaml_strategies(
    ["mcap", "sqlite3", "cdr", "", "zstd", "file", "message", CAMERA, IMAGE_TYPE, "~"],
    max_int=12, max_text=10, key_ints=(-2, 2), max_list=3, max_leaves=6)


def _near_metadata(key: str, bag: Pristine):
    """Values close to a valid one of metadata key ``key``."""
    name = bag.storage_file
    near = {
        "version": st.sampled_from([1, 4, 5, 8, 9, 10, "9", 9.0, None, -1]),
        "storage_identifier": st.sampled_from(["mcap", "sqlite3", "", "rosbag1", None, 1]),
        "relative_file_paths": st.sampled_from([[], [name], [name, name], ["missing.mcap"],
                                                [name, "metadata.yaml"], name, None, [5],
                                                [f"sub/{name}"], ["."], [".."], [None]]),
        "custom_data": st.one_of(st.none(), st.dictionaries(YAML_KEYS, YAML_SCALARS,
                                                            max_size=3),
                                 st.sampled_from([{}, {"a": "b"}, [1], "x",
                                                  {CUSTOM_CAMERA_TOPIC: LABELS}])),
        "compression_mode": st.sampled_from(["", "none", "NONE", "FILE", "message", None, 5]),
        "compression_format": st.sampled_from(["", "zstd", "lz4", None, 5]),
        "duration": st.one_of(st.fixed_dictionaries({"nanoseconds": YAML_SCALARS}),
                              YAML_SCALARS),
        "starting_time": st.one_of(
            st.fixed_dictionaries({"nanoseconds_since_epoch": YAML_SCALARS}), YAML_SCALARS),
        "message_count": st.one_of(st.integers(-1, 20), YAML_SCALARS),
        "files": st.sampled_from(["abc", "", 5, [], None, [{}], {}]),
        "topics_with_message_count": st.one_of(st.sampled_from([[], None, {}, "x"]),
                                               st.lists(YAML_VALUES, max_size=2)),
    }
    return near.get(key, YAML_VALUES)


TOPIC_FIELDS = {
    "message_count": st.one_of(st.integers(-1, 5), st.sampled_from([None, "3", 2**64, 3.0])),
    "name": st.sampled_from([CAMERA, COMPRESSED, LABELS, "", "/other", 5, None, [1]]),
    "type": st.sampled_from([IMAGE_TYPE, COMPRESSED_TYPE, "std_msgs/msg/String", "", None,
                             [1], "sensor_msgs/msg/image"]),
    "serialization_format": st.sampled_from(["cdr", "CDR", "", None]),
    "offered_qos_profiles": st.sampled_from([[], "", "- x", [{}], None, [1], "[]"]),
    "type_description_hash": st.sampled_from(["", "RIHS01_00", None, 5]),
}


def _mutate_topics(draw, topics: list) -> None:
    kind = draw(st.sampled_from(["field", "field", "field", "delete field", "drop", "duplicate",
                                 "reorder", "not a mapping"]))
    if not topics:
        return
    position = draw(st.integers(0, len(topics) - 1))
    entry = topics[position]
    if kind in ("field", "delete field") and isinstance(entry, dict):
        name = draw(st.sampled_from(sorted(TOPIC_FIELDS)))
        node = entry if name == "message_count" else entry.get("topic_metadata")
        if isinstance(node, dict):
            if kind == "field":
                node[name] = draw(TOPIC_FIELDS[name])
            else:
                node.pop(name, None)
    elif kind == "drop":
        topics.pop(position)
    elif kind == "duplicate":
        topics.insert(draw(st.integers(0, len(topics))), copy.deepcopy(entry))
    elif kind == "reorder":
        topics.insert(draw(st.integers(0, len(topics) - 1)), topics.pop(position))
    else:
        topics[position] = draw(YAML_VALUES)


@st.composite
def metadata_damage(draw, bag: Pristine):
    """Return the new metadata.yaml (bytes), or None to delete it."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "mutated", "topics",
                                 "topics", "truncated", "random YAML", "random bytes",
                                 "deleted"]))
    text = bag.files["metadata.yaml"]
    if kind == "deleted":
        return None
    if kind == "truncated":
        return text[:draw(st.integers(0, len(text) - 1))]
    if kind == "random bytes":
        return draw(st.binary(max_size=300))
    if kind == "random YAML":
        document = draw(st.one_of(YAML_VALUES, st.fixed_dictionaries(
            {"rosbag2_bagfile_information": YAML_VALUES})))
        return yaml.safe_dump(document).encode()
    values = yaml.safe_load(text)
    info = values["rosbag2_bagfile_information"]
    for _ in range(draw(st.integers(1, 3))):
        if kind == "topics":
            _mutate_topics(draw, info["topics_with_message_count"])
            continue
        key = draw(st.sampled_from(sorted(info, key=repr)))
        action = draw(st.sampled_from(["near", "near", "value", "delete", "unknown"]))
        if action == "near":
            info[key] = draw(_near_metadata(key, bag))
        elif action == "value":
            info[key] = draw(YAML_VALUES)
        elif action == "delete":
            info.pop(key)
        else:
            info[draw(YAML_KEYS)] = draw(YAML_SCALARS)
    return yaml.safe_dump(values).encode()


@given(st.sampled_from(STORAGES), st.data())
@fuzz_settings(ci_examples=150, long_examples=3000)
def test_damaged_metadata_reads_exactly_what_it_lists_or_names_the_bag(
        pristine, work_dir, storage, data):
    bag = pristine[storage]
    metadata = data.draw(metadata_damage(bag), label="metadata.yaml")
    outcome = _read(_place(work_dir, bag, dict(bag.files, **{"metadata.yaml": metadata})))
    listed = {name for name, topic in outcome.topics.items()
              if TOPIC_TYPES.get(name) == topic.msgtype}
    expected = [m for m in bag.written if m.topic in listed]
    _count(f"{storage} metadata", outcome, expected)
    if outcome.error is None:
        assert set(outcome.topics) == listed, f"topics not written so: {outcome.topics}"
        assert outcome.messages == expected, "not the messages written on the listed topics"
    if metadata is None:
        assert outcome.error is None and outcome.messages == bag.written


# ---------------------------------------------------------------- regressions

def _with_metadata(work_dir: Path, bag: Pristine, change) -> Path:
    values = yaml.safe_load(bag.files["metadata.yaml"])
    change(values["rosbag2_bagfile_information"])
    files = dict(bag.files)
    files["metadata.yaml"] = yaml.safe_dump(values).encode()
    return _place(work_dir, bag, files)


def _topic0(info) -> dict:
    return info["topics_with_message_count"][0]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("change,problem", [
    (lambda info: info.update(relative_file_paths=[]), "lists no storage file"),
    (lambda info: info.update(relative_file_paths=info["relative_file_paths"] * 2),
     "more than once"),
    (lambda info: info.update(custom_data=[1, 2]), "custom_data"),
    (lambda info: info.update(custom_data="abc"), "custom_data"),
    (lambda info: info.update(custom_data={1: None}), "custom_data"),
    (lambda info: _topic0(info)["topic_metadata"].update(name=[5]), "topic"),
    (lambda info: _topic0(info)["topic_metadata"].update(name=5), "topic"),
    (lambda info: _topic0(info)["topic_metadata"].update(type=[5]), "type"),
    (lambda info: _topic0(info)["topic_metadata"].update(type=None), "type"),
    (lambda info: _topic0(info).update(message_count="x"), "message count"),
    (lambda info: _topic0(info).update(message_count=-4), "message count"),
])
def test_metadata_that_crashed_or_misled_the_reader_is_named(pristine, work_dir, storage,
                                                             change, problem):
    """Each raised IndexError, TypeError or ValueError past the reader, or read wrongly."""
    path = _with_metadata(work_dir, pristine[storage], change)
    with pytest.raises(BagError, match=problem) as error:
        BagReader(path)
    assert str(path) in str(error.value) and not error.value.topic


@pytest.mark.parametrize("storage", STORAGES)
def test_a_files_entry_that_is_a_string_breaks_neither_reading_nor_closing(
        pristine, work_dir, storage):
    """Closing raised AttributeError (rosbags calls files.clear()) from BagReader's exit."""
    path = _with_metadata(work_dir, pristine[storage], lambda info: info.update(files="abc"))
    with BagReader(path) as reader:
        assert list(reader.messages(list(reader.topics))) == pristine[storage].written


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("change", [
    lambda info: _topic0(info)["topic_metadata"].update(name="/other"),
    lambda info: _topic0(info)["topic_metadata"].update(type="std_msgs/msg/String"),
    lambda info: _topic0(info)["topic_metadata"].update(
        offered_qos_profiles=[{"history": 1, "depth": 5, "reliability": 1, "durability": 2,
                               "deadline": {"sec": 0, "nsec": 0},
                               "lifespan": {"sec": 0, "nsec": 0}, "liveliness": 1,
                               "liveliness_lease_duration": {"sec": 0, "nsec": 0},
                               "avoid_ros_namespace_conventions": False}]),
])
def test_a_listed_topic_the_storage_does_not_hold_is_named_not_read_as_empty(
        pristine, work_dir, storage, change):
    """A topic metadata.yaml and the file disagree on: rosbags silently yielded nothing."""
    path = _with_metadata(work_dir, pristine[storage], change)
    name = yaml.safe_load((path / "metadata.yaml").read_text())[
        "rosbag2_bagfile_information"]["topics_with_message_count"][0]["topic_metadata"]["name"]
    with BagReader(path) as reader:
        with pytest.raises(BagError, match="metadata.yaml") as error:
            list(reader.messages([name]))
    assert str(path) in str(error.value) and error.value.topic == name
    with BagReader(path) as reader:  # the other topics are read as written
        assert list(reader.messages([LABELS])) == [m for m in pristine[storage].written
                                                   if m.topic == LABELS]


# ================================================================= the replay's frames

#: What the RMW deserializer itself prints (on stderr) for a message cut inside a sequence.
RMW_NOISE = "sequence size exceeds remaining buffer"


@contextmanager
def _without_rmw_noise():
    """Run the body with stderr (fd 2) caught; print again what is not :data:`RMW_NOISE`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().decode(errors="replace").splitlines()
            other = [line for line in lines if line.strip() != RMW_NOISE]
            if other:
                print("\n".join(other), file=sys.stderr)


class _TinyBackend:
    """Stands in for a model: labels and a score from the pixels, at 8x8."""

    input_size = (8, 8)
    score_names = ("jsd",)

    def __init__(self):
        from dense_ood_ros.label_set import description_label_set

        self.label_set = description_label_set("camvid")
        self.class_names = self.label_set.class_names

    def infer(self, images: np.ndarray):
        labels = (images[..., 0] % len(self.class_names)).astype(np.uint8)
        scores = (images[..., 1:2].astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
        return labels, np.ascontiguousarray(scores)

    def describe(self) -> str:
        return "stand-in"


@pytest.fixture(scope="module")
def replay_frame():
    """Return run(message, message type) -> the frame record and the problems, as replay does."""
    pytest.importorskip("rclpy.serialization", reason="replay deserializes with rclpy")
    from sensor_msgs.msg import CompressedImage, Image

    from dense_ood_ros.detector import Detector
    from dense_ood_ros.evaluation import AnomalyLabelSpec, Evaluation
    from dense_ood_ros.replay.results import ReplayResults
    from dense_ood_ros.ros.pipeline import FramePipeline
    from dense_ood_ros.ros.replay.messages import output_topics
    from dense_ood_ros.ros.replay.offline import _replay_one

    pipeline = FramePipeline(Detector(_TinyBackend()))
    outputs = output_topics(pipeline.topics, "/")
    args = SimpleNamespace(bag=Path("/bags/fuzzed"))
    types = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage}

    def run(message: BagMessage, msgtype: str):
        written = []
        writer = SimpleNamespace(write=lambda topic, time_ns, data: written.append(
            (topic, time_ns, bytes(data))))
        results = ReplayResults(Evaluation(None, None), AnomalyLabelSpec(), [], num_overlays=1)
        with _without_rmw_noise():
            _replay_one(args, message, types[msgtype], pipeline, outputs, writer, results,
                        lambda job: job())
        return results, written, outputs

    return run


ENCODINGS = ["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "mono16", "16UC1", "yuv422", "32FC1",
             "bayer_rggb8", "8UC3", "", "jpeg"]
FORMATS = ["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8", "", "bmp",
           "JPEG"]


def _image_bytes(height, width, encoding, step, data, stamp_ns) -> bytes:
    types = typestore().types
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    msg = types[IMAGE_TYPE](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
            frame_id="cam"),
        height=height, width=width, encoding=encoding, is_bigendian=0, step=step,
        data=np.frombuffer(data, np.uint8))
    return bytes(typestore().serialize_cdr(msg, IMAGE_TYPE))


@st.composite
def camera_messages(draw):
    """Return (msgtype of the topic, serialized bytes, whether it must be processed)."""
    msgtype = draw(st.sampled_from([IMAGE_TYPE, COMPRESSED_TYPE]))
    kind = draw(st.sampled_from(["valid", "valid", "fields", "truncated", "bytes", "random CDR",
                                 "random", "other type"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    height, width = draw(st.integers(8, 12)), draw(st.integers(8, 12))
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    stamp = START_NS + draw(st.integers(0, 10**12))
    if msgtype == IMAGE_TYPE:
        encoding = draw(st.sampled_from(["rgb8", "bgr8", "mono8"]))
        pixels = rgb[..., 0] if encoding == "mono8" else rgb
        valid = image_message(pixels, encoding, stamp, "cam")
    else:
        valid = compressed_message(rgb, stamp, "cam")
    if kind == "valid":
        return msgtype, valid, True
    if kind == "fields" and msgtype == IMAGE_TYPE:
        data = rng.integers(0, 256, draw(st.integers(0, 600)), dtype=np.uint8).tobytes()
        return msgtype, _image_bytes(
            draw(st.one_of(st.integers(0, 16), st.sampled_from([2**31, 2**32 - 1]))),
            draw(st.one_of(st.integers(0, 16), st.sampled_from([2**31, 2**32 - 1]))),
            draw(st.sampled_from(ENCODINGS)),
            draw(st.one_of(st.integers(0, 64), st.sampled_from([2**32 - 1]))),
            data, stamp), False
    if kind == "fields":  # a CompressedImage with another format or other data
        types = typestore().types
        ok, png = cv2.imencode(".png", rgb)
        payload = draw(st.sampled_from(["jpeg", "png", "random", "empty"]))
        data = {"jpeg": np.frombuffer(valid[-200:], np.uint8), "png": png.reshape(-1),
                "random": rng.integers(0, 256, 64, dtype=np.uint8),
                "empty": np.zeros(0, np.uint8)}[payload]
        msg = types[COMPRESSED_TYPE](
            header=types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="c"),
            format=draw(st.sampled_from(FORMATS)), data=data)
        return msgtype, bytes(typestore().serialize_cdr(msg, COMPRESSED_TYPE)), False
    if kind == "truncated":
        return msgtype, valid[:draw(st.integers(0, len(valid) - 1))], False
    if kind == "bytes":
        content = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            offset = draw(st.integers(0, len(content) - 1))
            content[offset:offset + 4] = draw(st.binary(min_size=1, max_size=4))
        return msgtype, bytes(content), False
    if kind == "random CDR":
        return msgtype, draw(st.sampled_from(CDR_HEADERS[:2])) + draw(st.binary(max_size=120)), \
            False
    if kind == "random":
        return msgtype, draw(st.binary(max_size=120)), False
    other = compressed_message(rgb, stamp, "cam") if msgtype == IMAGE_TYPE else \
        image_message(rgb, "rgb8", stamp, "cam")
    return msgtype, other, False


@given(camera_messages(), st.integers(0, 5))
@fuzz_settings(ci_examples=200, long_examples=4000)
def test_replay_decodes_each_message_to_a_frame_or_a_named_failure(replay_frame, case, index):
    msgtype, data, must_process = case
    topic = CAMERA if msgtype == IMAGE_TYPE else COMPRESSED
    message = BagMessage(topic, index, START_NS + index, data)
    started = time.process_time()
    results, written, outputs = replay_frame(message, msgtype)
    assert time.process_time() - started < 20.0, "a tiny frame took over 20 CPU s"
    [record] = results.records
    assert record.index == index and written[0] == (topic, message.log_time_ns, data)
    if record.status == "ok":
        assert math.isfinite(record.score_p99) and math.isfinite(record.score_mean)
        assert record.stamp_ns == header_stamp_ns(data)
        assert [w[0] for w in written[1:]] == list(outputs.values())
        outcomes["replay frame processed"] += 1
    else:
        assert record.status == "failed" and not must_process, record.detail
        [problem] = results.evaluation.problems
        assert f"bag /bags/fuzzed, topic {topic}, message index {index}: " in problem, problem
        assert sum(results.failed_by_reason.values()) == 1 and len(written) == 1
        outcomes[f"replay frame failed ({record.detail.split(':')[0]})"] += 1
