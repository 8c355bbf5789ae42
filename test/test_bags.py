"""dense-ood-make-bag and the bag reader: round trips on real CamVid frames, faults named.

The bags are read back with rosbags (as replay reads them) and their messages deserialized
with rclpy (as the node receives them).
"""

import shutil
import struct

import cv2
import numpy as np
import pytest

from dense_ood_ros.replay.bag_reader import (COMPRESSED_TYPE, CUSTOM_CAMERA_TOPIC,
                                             CUSTOM_LABEL_TOPIC, IMAGE_TYPE, BagError, BagReader,
                                             header_stamp_ns)
from dense_ood_ros.replay.bag_writer import BagWriter
from dense_ood_ros.replay.make_bag import main
from dense_ood_ros.io import read_label, read_rgb

rclpy_serialization = pytest.importorskip("rclpy.serialization",
                                          reason="rclpy deserializes the messages")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from dense_ood_ros.ros.conversions import image_to_numpy, message_to_rgb  # noqa: E402

START_NS = 1_700_000_000_250_000_000
RATE_HZ = 4.0
FRAMES = 3


@pytest.fixture(scope="module")
def drive(camvid_dir, tmp_path_factory):
    """Three consecutive Seq05VD frames and their class labels in folders of their own."""
    root = tmp_path_factory.mktemp("drive")
    (root / "frames").mkdir()
    (root / "labels").mkdir()
    stems = sorted(p.stem for p in (camvid_dir / "test").iterdir()
                   if p.name.startswith("Seq05VD_"))[:FRAMES]
    for stem in stems:
        source = next((camvid_dir / "test").glob(f"{stem}.*"))
        shutil.copy(source, root / "frames" / source.name)
        shutil.copy(camvid_dir / "testannot" / f"{stem}.png", root / "labels" / f"{stem}.png")
    return root


def make_bag(drive, out, *extra):
    return main(["--frames", str(drive / "frames"), "--semantic-labels", str(drive / "labels"),
                 "--out", str(out), "--rate", str(RATE_HZ), "--start-time", "1700000000.25",
                 "--frame-id", "cam_front", "--no-progress", *extra])


def read_all(bag, topics=None):
    with BagReader(bag) as reader:
        return reader, list(reader.messages(topics or list(reader.topics)))


@pytest.mark.parametrize("storage,encoding", [("mcap", "rgb8"), ("sqlite3", "bgr8"),
                                              ("mcap", "jpeg")])
def test_make_bag_round_trip(drive, tmp_path, storage, encoding):
    out = tmp_path / "bag"
    assert make_bag(drive, out, "--storage", storage, "--encoding", encoding) == 0
    assert (out / "metadata.yaml").is_file()
    assert len(list(out.glob("*.mcap" if storage == "mcap" else "*.db3"))) == 1
    camera_topic = "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"
    reader, messages = read_all(out)
    assert reader.storage == storage
    assert {name: (t.msgtype, t.count) for name, t in reader.topics.items()} == {
        camera_topic: (COMPRESSED_TYPE if encoding == "jpeg" else IMAGE_TYPE, FRAMES),
        "/camera/semantic_labels": (IMAGE_TYPE, FRAMES)}
    assert reader.custom_data[CUSTOM_CAMERA_TOPIC] == camera_topic
    assert reader.custom_data[CUSTOM_LABEL_TOPIC["semantic"]] == "/camera/semantic_labels"
    frames = sorted((drive / "frames").iterdir())
    for message in messages:
        stamp = START_NS + round(message.index * 1e9 / RATE_HZ)
        assert message.log_time_ns == stamp == header_stamp_ns(message.data)
        source = frames[message.index]
        if message.topic == camera_topic:
            msg = rclpy_serialization.deserialize_message(
                message.data, CompressedImage if encoding == "jpeg" else Image)
            rgb = message_to_rgb(msg)
            expected = read_rgb(source)
            if encoding == "jpeg":
                assert msg.format == "jpeg"
                assert np.abs(rgb.astype(int) - expected).mean() < 4  # lossy, but that frame
            else:
                assert msg.encoding == encoding and msg.step == 480 * 3
                np.testing.assert_array_equal(rgb, expected)
        else:
            msg = rclpy_serialization.deserialize_message(message.data, Image)
            assert msg.encoding == "mono8"
            np.testing.assert_array_equal(image_to_numpy(msg),
                                          read_label(drive / "labels" / f"{source.stem}.png"))
        assert msg.header.frame_id == "cam_front"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(stamp, 1_000_000_000)


def test_make_bag_refuses_what_it_cannot_do(drive, tmp_path, capsys):
    out = tmp_path / "bag"
    assert make_bag(drive, out) == 0
    assert make_bag(drive, out) == 2  # exists
    assert "exists (--overwrite replaces it)" in capsys.readouterr().err
    assert make_bag(drive, out, "--overwrite", "--limit", "1") == 0
    with BagReader(out) as reader:
        assert reader.topics["/camera/image_raw"].count == 1

    not_a_bag = tmp_path / "notes"
    not_a_bag.mkdir()
    (not_a_bag / "keep.txt").write_text("mine")
    assert make_bag(drive, not_a_bag, "--overwrite") == 2
    assert "is not a bag" in capsys.readouterr().err
    assert (not_a_bag / "keep.txt").read_text() == "mine"

    # a label of the wrong size is named, and no bag is left behind
    bad = tmp_path / "bad_labels"
    shutil.copytree(drive / "labels", bad)
    victim = sorted(bad.iterdir())[1]
    cv2.imwrite(str(victim), np.zeros((10, 12), np.uint8))
    code = main(["--frames", str(drive / "frames"), "--labels", str(bad),
                 "--out", str(tmp_path / "never"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "12x10" in err
    assert not (tmp_path / "never").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    missing = tmp_path / "missing_labels"
    shutil.copytree(drive / "labels", missing)
    sorted(missing.iterdir())[0].unlink()
    assert main(["--frames", str(drive / "frames"), "--labels", str(missing),
                 "--out", str(tmp_path / "never"), "--no-progress"]) == 2
    assert "anomaly label missing" in capsys.readouterr().err
    assert main(["--frames", str(drive / "frames"), "--pattern", "nothing*",
                 "--out", str(tmp_path / "never"), "--no-progress"]) == 2
    assert "matches 'nothing*'" in capsys.readouterr().err


def test_header_stamp_of_both_byte_orders():
    little = b"\x00\x01\x00\x00" + struct.pack("<iI", 12, 345) + b"\x00" * 8
    big = b"\x00\x00\x00\x00" + struct.pack(">iI", 12, 345) + b"\x00" * 8
    assert header_stamp_ns(little) == header_stamp_ns(big) == 12_000_000_345
    with pytest.raises(ValueError, match="not a plain CDR message"):
        header_stamp_ns(b"\x00\x01\x00")
    with pytest.raises(ValueError, match="invalid header stamp"):
        header_stamp_ns(b"\x00\x01\x00\x00" + struct.pack("<iI", 1, 2_000_000_000))


def test_an_unfinished_mcap_is_read_up_to_where_it_ends(drive, tmp_path):
    bag = tmp_path / "bag"
    assert make_bag(drive, bag) == 0
    data = next(bag.glob("*.mcap")).read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()  # a recording that was never closed: no metadata.yaml, no summary, no footer
    (cut / "cut.mcap").write_bytes(data[:int(len(data) * 0.9)])
    with BagReader(cut) as reader:
        assert any("no metadata.yaml" in note for note in reader.notes)
        assert any("unfinished MCAP" in note for note in reader.notes)
        assert reader.topics["/camera/image_raw"].count is None
        read = []
        with pytest.raises(BagError) as error:
            for message in reader.messages(["/camera/image_raw"]):
                read.append(message.index)
    assert read and read == list(range(len(read))) and len(read) < FRAMES
    assert error.value.topic == "/camera/image_raw" and error.value.index == len(read)
    assert str(cut) in str(error.value) and f"message index {len(read)}" in str(error.value)


def test_bags_that_cannot_be_opened_are_named(drive, tmp_path):
    with pytest.raises(BagError, match="not found"):
        BagReader(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        BagReader(empty)
    bag = tmp_path / "bag"
    assert make_bag(drive, bag, "--storage", "sqlite3") == 0
    database = next(bag.glob("*.db3"))
    database.write_bytes(database.read_bytes()[:4096])
    with pytest.raises(BagError, match=f"bag {bag}: cannot open"):
        BagReader(bag)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all")
    with pytest.raises(BagError, match="cannot open"):
        BagReader(junk)


def test_topics_are_checked_by_name_and_type(tmp_path):
    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
        writer.add_topic("/a/image", IMAGE_TYPE)
        writer.add_topic("/b/image", IMAGE_TYPE)
    with BagReader(bag) as reader:
        with pytest.raises(BagError, match="several image topics: /a/image .*--image-topic"):
            reader.camera_topic()
        assert reader.camera_topic(exclude=["/b/image"]).name == "/a/image"
        with pytest.raises(BagError, match="topic /chatter: image topic has type "
                                           "std_msgs/msg/String"):
            reader.camera_topic("/chatter")
        with pytest.raises(BagError, match="no image topic '/c'"):
            reader.camera_topic("/c")
    only_text = tmp_path / "text"
    with BagWriter(only_text, "sqlite3") as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
    with BagReader(only_text) as reader:
        with pytest.raises(BagError, match=r"no image topic .*/chatter \(std_msgs/msg/String\)"):
            reader.camera_topic()


def test_reading_leaves_the_bag_untouched(drive, tmp_path):
    bag = tmp_path / "bag"
    assert make_bag(drive, bag, "--storage", "sqlite3") == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in bag.iterdir()}
    read_all(bag)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in bag.iterdir()}
    assert before == after


def test_writer_refuses_an_existing_path(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(OSError, match="cannot create bag"):
        BagWriter(tmp_path / "bag")
    with pytest.raises(ValueError, match="unknown bag storage"):
        BagWriter(tmp_path / "other", "rosbag1")


def test_frames_are_ordered_by_name(drive, tmp_path):
    shuffled = tmp_path / "frames"
    shuffled.mkdir()
    sources = sorted((drive / "frames").iterdir())
    for source in reversed(sources):  # creation order must not matter
        shutil.copy(source, shuffled / source.name)
    out = tmp_path / "bag"
    assert main(["--frames", str(shuffled), "--out", str(out), "--no-progress"]) == 0
    _, messages = read_all(out)
    for message, source in zip(messages, sources):
        msg = rclpy_serialization.deserialize_message(message.data, Image)
        np.testing.assert_array_equal(message_to_rgb(msg), read_rgb(source))
