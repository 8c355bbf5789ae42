"""dense-ood-replay: offline through the node's frame pipeline, live over DDS, hostile bags.

The frames are real (three CamVid-Paste test frames with anomaly and class labels); the
model is the shipped one on ONNX Runtime. Offline replay is checked against the detector run
directly (result bag contents) and against dense-ood-evaluate (metrics); the live replay
against the offline one.
"""

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

rclpy_serialization = pytest.importorskip("rclpy.serialization",
                                          reason="replay deserializes with rclpy")
from sensor_msgs.msg import Image  # noqa: E402

from dense_ood_ros.replay.bag_reader import IMAGE_TYPE, BagReader, header_stamp_ns  # noqa: E402
from dense_ood_ros.replay.bag_writer import BagWriter, image_message, typestore  # noqa: E402
from dense_ood_ros.replay.make_bag import main as make_bag  # noqa: E402
from dense_ood_ros.detector import Detector, DetectorOutput  # noqa: E402
from dense_ood_ros.evaluation import AnomalyLabelSpec, Evaluation  # noqa: E402
from dense_ood_ros.evaluate import main as evaluate  # noqa: E402
from dense_ood_ros.metrics import AnomalyMetrics  # noqa: E402
from dense_ood_ros.replay.ground_truth import FolderLabels, TopicLabels  # noqa: E402
from dense_ood_ros.replay.report import markdown_report  # noqa: E402
from dense_ood_ros.replay.results import ReplayResults, percentile_value  # noqa: E402
from dense_ood_ros.ros import (COLOR_TOPIC, LABELS_TOPIC, SCORE_TOPIC, node_topic,  # noqa: E402
                               output_topic)
from dense_ood_ros.ros.conversions import image_to_numpy  # noqa: E402
from dense_ood_ros.ros.pipeline import FramePipeline  # noqa: E402
from dense_ood_ros.ros.replay.command import main as replay  # noqa: E402
from dense_ood_ros.ros.replay.messages import decode_label  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKEND = ["--backend", "onnxruntime"]
CAMERA = "/camera/image_raw"
OUTPUTS = {name: node_topic(output_topic(name))
           for name in (LABELS_TOPIC, COLOR_TOPIC, SCORE_TOPIC)}
#: What must be equal between two runs on the same frames (timing and paths are not).
SAME = ("frames", "pixels", "anomaly", "semantic")


def bag_files(bag: Path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(bag.iterdir())}


def messages(bag: Path, topics=None):
    with BagReader(bag) as reader:
        return list(reader.messages(topics or list(reader.topics)))


def report(out: Path):
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def paste_bag(camvid_paste_frames, tmp_path_factory):
    """Make an MCAP bag of the three CamVid-Paste frames (rgb8), anomaly and class labels."""
    bag = tmp_path_factory.mktemp("bags") / "paste"
    assert make_bag(["--frames", str(camvid_paste_frames / "images"),
                     "--labels", str(camvid_paste_frames / "labels"),
                     "--semantic-labels", str(camvid_paste_frames / "semantic"),
                     "--rate", "1", "--out", str(bag), "--no-progress"]) == 0
    return bag


@pytest.fixture(scope="module")
def offline(paste_bag, model_path, tmp_path_factory):
    """One offline replay of the paste bag (the input bag's files hashed before it)."""
    out = tmp_path_factory.mktemp("replay") / "out"
    before = bag_files(paste_bag)
    code = replay(["--bag", str(paste_bag), "--model", str(model_path), "--out", str(out),
                   "--no-progress", *BACKEND])
    return code, out, before


@pytest.fixture(scope="module")
def detector(model_path):
    return Detector.from_model(model_path, "onnxruntime")


def test_offline_replay_runs_the_node_pipeline(offline, paste_bag, detector):
    code, out, before = offline
    assert code == 0
    assert bag_files(paste_bag) == before  # the input bag is only read
    for name in ("metrics.json", "metrics.md", "frames.csv", "pr_curve.png", "roc_curve.png",
                 "score_over_time.png", "accumulators/anomaly.npz",
                 "accumulators/semantic.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "overlays").glob("top*_frame*.png"))) == 3
    result = messages(out / "result_bag")
    inputs = messages(paste_bag)
    with BagReader(out / "result_bag") as reader:
        assert {name: (t.msgtype, t.count) for name, t in reader.topics.items()} == {
            **{topic: (IMAGE_TYPE, 3) for topic in OUTPUTS.values()},
            CAMERA: (IMAGE_TYPE, 3), "/camera/labels": (IMAGE_TYPE, 3),
            "/camera/semantic_labels": (IMAGE_TYPE, 3)}
    # inputs and labels are copied byte for byte, at their recording times
    copied = {(m.topic, m.log_time_ns, m.data) for m in result if not m.topic.startswith("/det")}
    assert copied == {(m.topic, m.log_time_ns, m.data) for m in inputs}
    # the outputs are what the node's pipeline makes of each frame, at the frame's time
    pipeline = FramePipeline(detector)
    frames = [m for m in inputs if m.topic == CAMERA]
    for frame in frames:
        expected = pipeline(rclpy_serialization.deserialize_message(frame.data, Image))
        for name, topic in OUTPUTS.items():
            [got] = [m for m in result if m.topic == topic and m.index == frame.index]
            assert got.log_time_ns == frame.log_time_ns
            assert header_stamp_ns(got.data) == header_stamp_ns(frame.data)
            msg = rclpy_serialization.deserialize_message(got.data, Image)
            assert msg.header == expected.messages[name].header
            np.testing.assert_array_equal(image_to_numpy(msg),
                                          image_to_numpy(expected.messages[name]))
    metrics = report(out)
    assert metrics["complete"] is True and metrics["problems"] == []
    assert {k: metrics["replay"][k] for k in ("frames", "processed", "failed", "dropped",
                                              "evaluated")} == {
        "frames": 3, "processed": 3, "failed": 0, "dropped": 0, "evaluated": 3}
    assert metrics["replay"]["labels"]["anomaly"] == {
        "source": "topic /camera/labels", "matched": 3, "unmatched": 0}
    latency = metrics["timing"]["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    text = (out / "metrics.md").read_text()
    assert "complete: yes" in text and "## Pixel anomaly detection" in text
    assert len((out / "frames.csv").read_text().splitlines()) == 4


def test_offline_metrics_equal_the_evaluator(offline, camvid_paste_frames, model_path,
                                             tmp_path):
    code, out, _ = offline
    assert evaluate(["--model", str(model_path), "--images", str(camvid_paste_frames / "images"),
                     "--labels", str(camvid_paste_frames / "labels"), "--semantic-labels",
                     str(camvid_paste_frames / "semantic"), "--out",
                     str(tmp_path / "eval"), "--no-progress", *BACKEND]) == 0
    expected, got = report(tmp_path / "eval"), report(out)
    assert {k: got[k] for k in SAME} == {k: expected[k] for k in SAME}
    assert got["anomaly"]["scores"]["jsd"]["positives"] > 0  # there is something to find
    for name in ("anomaly.npz", "semantic.json"):
        assert ((out / "accumulators" / name).read_bytes()
                == (tmp_path / "eval" / "accumulators" / name).read_bytes())


def test_sqlite3_bag_with_label_folders_gives_the_same_numbers(
        offline, camvid_paste_frames, model_path, tmp_path):
    """Determinism, sqlite3 storage and labels from folders (matched by index) at once."""
    bag = tmp_path / "plain"
    assert make_bag(["--frames", str(camvid_paste_frames / "images"), "--storage", "sqlite3",
                     "--out", str(bag), "--no-progress"]) == 0
    out = tmp_path / "out"
    assert replay(["--bag", str(bag), "--model", str(model_path), "--out", str(out),
                   "--labels", str(camvid_paste_frames / "labels"),
                   "--semantic-labels", str(camvid_paste_frames / "semantic"),
                   "--no-progress", *BACKEND]) == 0
    got, expected = report(out), report(offline[1])
    assert {k: got[k] for k in SAME} == {k: expected[k] for k in SAME}
    assert got["replay"]["labels"]["semantic"]["source"].startswith("folder ")


def hostile_bag(path: Path, frames):
    """Frames 0 and 3 are fine; 1 has an unsupported encoding, 2 is not a message at all.

    Anomaly labels come for frames 0 and 3, the one of frame 3 at half size.
    """
    ts = typestore()
    stamps = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(4)]
    with BagWriter(path) as writer:
        writer.add_topic(CAMERA, IMAGE_TYPE)
        writer.add_topic("/camera/labels", IMAGE_TYPE)
        writer.write(CAMERA, stamps[0], image_message(frames[0], "rgb8", stamps[0], "cam"))
        as_float = np.ascontiguousarray(frames[1][..., 0].astype(np.float32))
        types = ts.types
        header = types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=stamps[1] // 10**9, nanosec=10**8),
            frame_id="cam")
        msg = types[IMAGE_TYPE](header=header, height=360, width=480, encoding="32FC1",
                                is_bigendian=0, step=480 * 4,
                                data=as_float.view(np.uint8).reshape(-1))
        writer.write(CAMERA, stamps[1], bytes(ts.serialize_cdr(msg, IMAGE_TYPE)))
        writer.write(CAMERA, stamps[2], b"\x00\x01\x00\x00" + bytes(range(40)))
        writer.write(CAMERA, stamps[3], image_message(frames[2], "rgb8", stamps[3], "cam"))
        label = np.zeros((360, 480), np.uint8)
        writer.write("/camera/labels", stamps[0], image_message(label, "mono8", stamps[0], "cam"))
        writer.write("/camera/labels", stamps[3],
                     image_message(label[::2, ::2], "mono8", stamps[3], "cam"))


def test_faulty_frames_and_labels_are_named_and_the_rest_is_evaluated(
        camvid_paste_frames, model_path, tmp_path, capsys):
    from dense_ood_ros.io import list_images, read_rgb

    frames = [read_rgb(p) for p in list_images(camvid_paste_frames / "images")]
    bag = tmp_path / "hostile"
    hostile_bag(bag, frames)
    before = bag_files(bag)
    out = tmp_path / "out"
    code = replay(["--bag", str(bag), "--model", str(model_path), "--out", str(out),
                   "--image-topic", CAMERA, "--label-topic", "/camera/labels", "--no-progress",
                   *BACKEND])
    assert code == 1
    err = capsys.readouterr().err
    assert (f"bag {bag}, topic {CAMERA}, message index 1: unsupported camera image encoding "
            "'32FC1'") in err
    assert f"bag {bag}, topic {CAMERA}, message index 2: not a sensor_msgs/msg/Image" in err
    assert (f"bag {bag}, topic /camera/labels, message index 1: anomaly label is 240x180, its "
            "frame 480x360") in err
    assert "INCOMPLETE" in err
    metrics = report(out)
    assert metrics["complete"] is False
    assert {k: metrics["replay"][k] for k in ("frames", "processed", "failed", "evaluated")} == {
        "frames": 4, "processed": 2, "failed": 2, "evaluated": 1}
    assert metrics["replay"]["failed_by_reason"] == {"unsupported_encoding": 1,
                                                     "undecodable": 1}
    assert "complete: NO" in (out / "metrics.md").read_text()
    with BagReader(out / "result_bag") as reader:  # the frames that ran have their outputs
        assert reader.topics[OUTPUTS[LABELS_TOPIC]].count == 2
        assert reader.topics[CAMERA].count == 4
    assert bag_files(bag) == before


def test_a_truncated_bag_keeps_what_came_before_and_out_needs_overwrite(
        paste_bag, model_path, tmp_path, capsys):
    cut = tmp_path / "cut"
    cut.mkdir()
    data = next(paste_bag.glob("*.mcap")).read_bytes()
    (cut / "cut.mcap").write_bytes(data[:int(len(data) * 0.8)])
    out = tmp_path / "out"
    # no metadata.yaml: the bag does not say which topics are labels
    args = ["--bag", str(cut), "--model", str(model_path), "--out", str(out), "--no-progress",
            "--image-topic", CAMERA, "--label-topic", "/camera/labels", *BACKEND]
    assert replay(args) == 1
    err = capsys.readouterr().err
    assert f"bag {cut}, topic {CAMERA}, message index " in err and "truncated" in err
    metrics = report(out)
    processed = metrics["replay"]["processed"]
    assert metrics["complete"] is False and metrics["stopped"].startswith("bag fault")
    assert 1 <= processed < 3 and metrics["replay"]["frames"] == processed
    assert any("unfinished recording" in p for p in metrics["problems"])

    (out / "mine.txt").write_text("keep")
    assert replay(args) == 2  # earlier results are not overwritten silently
    assert "--overwrite replaces them" in capsys.readouterr().err
    assert report(out) == metrics
    assert replay([*args, "--overwrite"]) == 1
    assert (out / "mine.txt").read_text() == "keep"
    assert report(out)["replay"]["processed"] == processed


def test_bad_bags_topics_and_options_stop_before_anything_is_written(
        paste_bag, model_path, tmp_path, capsys):
    def run(bag, *extra):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        code = replay(["--bag", str(bag), "--model", str(model_path), "--out", str(out),
                       "--no-progress", *BACKEND, *extra])
        assert not out.exists()
        return code, capsys.readouterr().err

    text_only = tmp_path / "text_only"
    with BagWriter(text_only) as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
    code, err = run(text_only)
    assert code == 2 and f"bag {text_only}: no image topic" in err and "/chatter" in err
    code, err = run(text_only, "--image-topic", "/chatter")
    assert code == 2 and "topic /chatter: image topic has type std_msgs/msg/String" in err
    code, err = run(paste_bag, "--no-bag-labels")  # the label topics are images too
    assert code == 2 and "several image topics" in err and "--image-topic" in err
    code, err = run(paste_bag, "--label-topic", "/camera/missing")
    assert code == 2 and "no anomaly label topic '/camera/missing'" in err
    code, err = run(tmp_path / "nowhere")
    assert code == 2 and "not found" in err
    code, err = run(paste_bag, "--labels", str(tmp_path), "--label-topic", "/camera/labels")
    assert code == 2 and "not both" in err
    code = replay(["--bag", str(paste_bag), "--model", str(model_path), "--out",
                   str(paste_bag / "results"), "--no-progress"])
    assert code == 2 and "must not contain one another" in capsys.readouterr().err


def test_labels_are_matched_by_stamp_and_the_unmatched_are_counted(tmp_path):
    stamps = [5_000_000_000, 5_100_000_000, 5_200_000_000]
    bag = tmp_path / "labels"
    label = np.zeros((8, 10), np.uint8)
    label[2:4, 3:5] = 1
    with BagWriter(bag) as writer:
        writer.add_topic("/labels", IMAGE_TYPE)
        # frame 0: exact, frame 1: 0.4 ms off (within 1 ms), frame 2: 5 ms off (unmatched)
        for stamp, offset in zip(stamps, (0, 400_000, 5_000_000)):
            writer.write("/labels", stamp, image_message(label, "mono8", stamp + offset, "c"))
    source = TopicLabels(bag, "/labels", "anomaly", 1_000_000, decode_label)
    folder = tmp_path / "folder"
    folder.mkdir()
    for stamp in stamps[:2]:
        cv2.imwrite(str(folder / f"{stamp // 10**9}.{stamp % 10**9:09d}.png"), label)
    by_stamp = FolderLabels(folder, "semantic", "stamp", 0)
    try:
        results = ReplayResults(Evaluation(AnomalyMetrics(["jsd"]), None),
                                AnomalyLabelSpec(), [source, by_stamp], num_overlays=2)
        for index, stamp in enumerate(stamps):
            score = np.full((8, 10), 0.1 * index, np.float32)
            score[2:4, 3:5] = 0.5 + 0.1 * index
            results.add_frame(index, stamp, DetectorOutput(np.zeros((8, 10), np.uint8),
                                                           {"jsd": score}), 0.01 * (index + 1),
                              lambda: np.zeros((8, 10, 3), np.uint8))
        assert results.unmatched == {"anomaly": 1, "semantic": 1}
        assert [r.labels for r in results.records] == ["anomaly+semantic"] * 2 + [""]
        assert results.evaluation.frames == 2
        assert results.records[0].anomaly_pixels == 4
        # the overlays kept are those of the frames with the highest score p99
        assert sorted(-entry.index for entry in results._top) == [1, 2]
        built = results.build("sklearn", {"model": "m", "backend": "b", "input_size": [8, 10],
                                          "complete": True, "labels": "topic /labels",
                                          "anomaly_values": [1], "ignore_values": [255]},
                              {"mode": "offline", "bag": "x", "image_topic": "/c",
                               "image_type": IMAGE_TYPE},
                              {"fps": 1.0, "latency_what": "test"})
        assert built["replay"]["labels"]["anomaly"] == {"source": "topic /labels",
                                                        "matched": 2, "unmatched": 1}
        assert built["timing"]["latency_ms"]["max"] == pytest.approx(30.0)
        assert "2 frames matched, 1 without a label" in markdown_report(built)
    finally:
        source.close()


@pytest.mark.ros
def test_live_replay_over_dds_answers_as_offline(camvid_paste_frames, model_path, tmp_path):
    """The node in its own process, the bag played into it at its recorded timing."""
    bag = tmp_path / "jpeg"
    assert make_bag(["--frames", str(camvid_paste_frames / "images"),
                     "--labels", str(camvid_paste_frames / "labels"), "--encoding", "jpeg",
                     "--rate", "2", "--out", str(bag), "--no-progress"]) == 0
    common = ["--bag", str(bag), "--model", str(model_path), "--no-progress", *BACKEND]
    assert replay([*common, "--out", str(tmp_path / "offline")]) == 0
    namespace = f"/replay_test_{os.getpid()}"
    code = replay([*common, "--out", str(tmp_path / "live"), "--live", "--namespace",
                   namespace, "--start-node", str(REPO_ROOT / "config" / "detector.yaml"),
                   "--start-delay", "0.2", "--connect-timeout", "90"])
    log = (tmp_path / "live" / "node.log")
    assert code == 0, log.read_text() if log.is_file() else "no node log"
    live, offline = report(tmp_path / "live"), report(tmp_path / "offline")
    facts = live["replay"]["live"]
    assert (facts["sent"], facts["answered"], facts["dropped"], facts["partial"]) == (3, 3, 0, 0)
    assert facts["node_exit_code"] == 0
    assert live["replay"]["processed"] == 3 and live["complete"] is True
    assert {k: live[k] for k in SAME} == {k: offline[k] for k in SAME}
    latency = live["timing"]["latency_ms"]
    assert latency["frames"] == 3 and latency["p50"] > 0
    topics = [node_topic(output_topic(name), namespace) for name in (LABELS_TOPIC, SCORE_TOPIC)]
    got = messages(tmp_path / "live" / "result_bag", topics)
    expected = messages(tmp_path / "offline" / "result_bag", list(OUTPUTS.values()))
    for message in got:
        name = message.topic.rsplit("/", 1)[1]
        [twin] = [m for m in expected if m.topic == OUTPUTS[name]
                  and m.log_time_ns == message.log_time_ns]
        # what the offline replay made (compared as messages: CDR padding bytes may differ)
        assert (rclpy_serialization.deserialize_message(message.data, Image)
                == rclpy_serialization.deserialize_message(twin.data, Image))
    assert len(got) == 6


def test_the_per_frame_percentile_is_numpys():
    rng = np.random.default_rng(0)
    for values in (rng.random((36, 48), np.float32), np.round(rng.random(101) * 3),
                   np.array([0.5])):
        for q in (0, 1, 50, 99, 100):
            assert percentile_value(values, q) == pytest.approx(np.percentile(values, q))
