"""Your own data and label set: dataset descriptions, both readers, label sets in model files.

A Cityscapes-layout tree is built from real CamVid frames, their labels mapped to Cityscapes
labelIds (two "cities", train and val); a tiny CE + flow + NFlowJS run on it with the shipped
Cityscapes config gives a 19-class checkpoint, which the evaluator, the exporter and the node
run on, each reporting the 19 names.
"""

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import CAMVID_DIR
from dense_ood_ros.checkpoint import (CheckpointError, add_label_set, checkpoint_label_set,
                                      read_checkpoint, save_checkpoint)
from dense_ood_ros.label_set import LabelSet, LabelSetError, description_label_set
from dense_ood_ros.models import build_model
from training.config import load_config
from training.data import dataset as dataset_module
from training.data.dataset import SegmentationDataset
from training.data.description import (CITYSCAPES_TRAIN_IDS, DatasetDescriptionError,
                                       DatasetError, load_description)
from training.data.readers import list_samples
from training.data.export_split import main as export_split_main
from training.label_set import main as label_set_main

REPO = Path(__file__).resolve().parents[1]
CITYSCAPES_CONFIG = REPO / "training" / "configs" / "cityscapes_nflowjs.yaml"
needs_camvid = pytest.mark.skipif(not CAMVID_DIR.is_dir(),
                                  reason=f"CamVid not found at {CAMVID_DIR}")
CAMVID = description_label_set("camvid")
CITYSCAPES = description_label_set("cityscapes")
#: CamVid class -> Cityscapes labelId (void -> 0, unlabeled).
CAMVID_TO_LABEL_ID = {"sky": 23, "building": 11, "pole": 17, "road": 7, "sidewalk": 8,
                      "tree": 21, "sign_symbol": 20, "fence": 13, "car": 26, "pedestrian": 24,
                      "bicyclist": 25}
#: (split, city, CamVid split, CamVid frame index)
FRAMES = [("train", "aachen", "train", 0), ("train", "aachen", "train", 40),
          ("train", "bochum", "train", 200), ("train", "bochum", "train", 300),
          ("val", "aachen", "val", 0), ("val", "bochum", "val", 60)]
MODEL = "efficientnet_lite0_swiftnet"


def label_ids(camvid_label: np.ndarray) -> np.ndarray:
    table = np.zeros(256, np.uint8)
    for index, name in enumerate(CAMVID.class_names):
        table[index] = CAMVID_TO_LABEL_ID[name]
    return table[camvid_label]


@pytest.fixture(scope="module")
def cityscapes_tree(tmp_path_factory) -> Path:
    """leftImg8bit/{train,val}/{aachen,bochum}/... and gtFine/... from six CamVid frames."""
    if not CAMVID_DIR.is_dir():
        pytest.skip(f"CamVid not found at {CAMVID_DIR}")
    root = tmp_path_factory.mktemp("cityscapes")
    camvid = load_description("camvid")
    for number, (split, city, camvid_split, index) in enumerate(FRAMES):
        sample = list_samples(camvid, CAMVID_DIR, camvid_split)[index]
        name = f"{city}_000000_{number:06d}"
        for folder, suffix, data in (
                ("leftImg8bit", "leftImg8bit", cv2.imread(str(sample.image))),
                ("gtFine", "gtFine_labelIds", label_ids(cv2.imread(str(sample.label), 0)))):
            path = root / folder / split / city / f"{name}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), data)
    return root


def _description(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(text)
    return path


GOOD = ("name: cams\nclasses:\n  - {name: road, color: [128, 64, 128]}\n"
        "  - {name: car, color: [0, 0, 142]}\nignore_index: 255\n")


# ================================================================= descriptions

@pytest.mark.parametrize("text, key", [
    (GOOD.replace("[0, 0, 142]", "[0, 0, 300]"), "classes[1].color"),
    (GOOD.replace("[0, 0, 142]", "blue"), "classes[1].color"),
    (GOOD.replace("name: car", "name: road"), "classes[1].name"),
    (GOOD + "label_values: {7: road, 26: lorry}\n", "label_values.26"),
    (GOOD + "label_values: {7: road, 26: car, 300: car}\n", "label_values.300"),
    (GOOD + "label_values: {7: 0, 26: 2}\n", "label_values.26"),
    (GOOD + "label_values: {7: road}\n", "label_values"),
    (GOOD.replace("ignore_index: 255", "ignore_index: 1"), "ignore_index"),
    (GOOD + "layout: cityscapes\n", "classes"),
    (GOOD + "layout: voc\n", "layout"),
    (GOOD + "splits: {train: {images: a, labels: b, masks: c}}\n", "splits.train.masks"),
    (GOOD + "colour: red\n", "colour"),
])
def test_a_bad_description_is_rejected_naming_the_key(tmp_path, text, key):
    path = _description(tmp_path, text)
    with pytest.raises(DatasetDescriptionError) as error:
        load_description(str(path))
    assert f"'{key}'" in str(error.value) or f" {key}" in str(error.value), str(error.value)
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match=re.escape("config key 'data.dataset'")):
        load_config(CITYSCAPES_CONFIG, {"data.dataset": str(path)})


def test_built_in_descriptions():
    camvid, cityscapes = load_description("camvid"), load_description("cityscapes")
    assert camvid.layout == "folders" and camvid.label_set.ignore_index == 11
    assert camvid.label_values == {**{i: i for i in range(11)}, 11: 11}
    assert cityscapes.layout == "cityscapes" and cityscapes.label_set.num_classes == 19
    assert cityscapes.label_values[7] == 0 and cityscapes.label_values[33] == 18
    assert cityscapes.label_values[0] == cityscapes.label_values[6] == 255
    assert sorted(cityscapes.label_values) == list(range(34)) == sorted(CITYSCAPES_TRAIN_IDS)
    with pytest.raises(LabelSetError, match="no built-in dataset description 'kitti'"):
        load_description("kitti")


# ================================================================= readers

@needs_camvid
def test_cityscapes_layout_reads_train_ids_by_city(cityscapes_tree):
    description = load_description("cityscapes")
    samples = list_samples(description, cityscapes_tree, "train")
    assert [s.group for s in samples] == ["aachen", "aachen", "bochum", "bochum"]
    assert samples[0].name == "aachen_000000_000000"
    image, label = SegmentationDataset(description, cityscapes_tree, "val")[1]
    camvid = load_description("camvid")
    original = cv2.imread(str(list_samples(camvid, CAMVID_DIR, "val")[60].label), 0)
    expected = np.array([10, 2, 5, 0, 1, 8, 7, 4, 13, 11, 12, 255], np.int64)[original]
    assert image.shape == (360, 480, 3) and torch.equal(label, torch.from_numpy(expected))


@needs_camvid
def test_a_missing_label_or_image_is_named(cityscapes_tree, tmp_path):
    description = load_description("cityscapes")
    label = (cityscapes_tree / "gtFine" / "train" / "bochum"
             / "bochum_000000_000002_gtFine_labelIds.png")
    moved = tmp_path / label.name
    label.rename(moved)
    try:
        with pytest.raises(DatasetError, match="1 image\\(s\\) without a label .*"
                           "bochum_000000_000002_leftImg8bit.png"):
            list_samples(description, cityscapes_tree, "train")
    finally:
        moved.rename(label)
    image = (cityscapes_tree / "leftImg8bit" / "val" / "aachen"
             / "aachen_000000_000004_leftImg8bit.png")
    moved = tmp_path / image.name
    image.rename(moved)
    try:
        with pytest.raises(DatasetError, match="1 label\\(s\\) without an image .*"
                           "aachen_000000_000004_gtFine_labelIds.png"):
            list_samples(description, cityscapes_tree, "val")
    finally:
        moved.rename(image)


def test_plain_folders_pair_by_stem_and_name_what_is_missing(tmp_path):
    root = tmp_path / "data"
    for folder, names in (("train/images", ["a.png", "b.jpg", "c.webp"]),
                          ("train/labels", ["a.png", "c.png", "d.png"])):
        (root / folder).mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(root / folder / name), np.zeros((8, 8, 3), np.uint8))
    description = load_description(str(_description(tmp_path, GOOD)))
    with pytest.raises(DatasetError) as error:
        list_samples(description, root, "train")
    assert "image(s) without a label" in str(error.value) and "b.jpg" in str(error.value)
    assert "label(s) without an image" in str(error.value) and "d.png" in str(error.value)
    (root / "train" / "labels" / "d.png").unlink()
    (root / "train" / "images" / "b.jpg").unlink()
    assert [s.name for s in list_samples(description, root, "train")] == ["a", "c"]
    with pytest.raises(DatasetError, match="folder not found: .*val/images .*splits.val.images"):
        list_samples(description, root, "val")
    (root / "train.txt").write_text("c\nx.png\n")
    listed = load_description(str(_description(
        tmp_path, GOOD + "splits: {train: {images: train/images, labels: train/labels, "
        "list: train.txt}}\n")))
    with pytest.raises(DatasetError, match="without an image .*\\(x\\)"):
        list_samples(listed, root, "train")


def test_a_stored_label_value_outside_the_mapping_is_named_with_its_file(tmp_path):
    root = tmp_path / "data"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    cv2.imwrite(str(root / "train" / "images" / "f.png"), np.zeros((4, 6, 3), np.uint8))
    label = np.array([[7, 26, 0, 0, 0, 0]] * 4, np.uint8)
    label[2, 2] = 9
    cv2.imwrite(str(root / "train" / "labels" / "f.png"), label)
    description = load_description(str(_description(
        tmp_path, GOOD + "label_values: {7: road, 26: car, 0: ignore}\n")))
    with pytest.raises(DatasetError, match=r"labels/f.png holds values \[9\] .*'label_values'"):
        SegmentationDataset(description, root, "train")[0]
    label[2, 2] = 0
    cv2.imwrite(str(root / "train" / "labels" / "f.png"), label)
    _, train_ids = SegmentationDataset(description, root, "train")[0]
    assert train_ids[0].tolist() == [0, 1, 255, 255, 255, 255]


@needs_camvid
def test_streamed_by_workers_gives_the_batches_of_one_process(cityscapes_tree):
    from training.common import DistributedContext
    from training.stages import set_epoch, train_loader

    batches = []
    for workers in (0, 2):
        config = load_config(CITYSCAPES_CONFIG, {
            "data.root": str(cityscapes_tree), "data.num_workers": workers, "device": "cpu",
            "data.batch_size": 2, "data.crop_size": [48, 64]})
        dataset, sampler, generator, loader = train_loader(
            config, DistributedContext("cpu"), config.data.crop_size, 2, (0.5, 1.0))
        assert dataset.decoded is None and len(dataset) == 4
        set_epoch(1, config.seed, dataset, sampler, generator)
        batches.append([(images.clone(), labels.clone()) for images, labels in loader])
    assert len(batches[0]) == 2
    for (a_images, a_labels), (b_images, b_labels) in zip(*batches):
        assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
        assert set(a_labels.unique().tolist()) <= set(range(19)) | {255}


@needs_camvid
def test_caching_more_than_half_the_memory_is_refused(cityscapes_tree, monkeypatch):
    monkeypatch.setattr(dataset_module, "physical_memory_bytes", lambda: 1_000_000)
    with pytest.raises(DatasetError, match="data.cache_in_memory: decoding the 4 frames"):
        SegmentationDataset(load_description("cityscapes"), cityscapes_tree, "train",
                            cache_in_memory=True)


# ================================================================= label sets in model files

def test_label_set_colours_json_and_lookup_table():
    assert LabelSet.from_json(CITYSCAPES.to_json()) == CITYSCAPES
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    colour = CITYSCAPES.colorize(labels)  # the cv2.LUT path
    assert np.array_equal(colour, CITYSCAPES.colorize(labels.astype(np.int64)))
    assert tuple(colour[0, 13]) == (0, 0, 142) and tuple(colour[15, 15]) == (0, 0, 0)
    with pytest.raises(LabelSetError, match="not a dense_ood_ros/label_set/v1"):
        LabelSet.from_json('{"class_names": []}')


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_model(MODEL, 11, pretrained=False)


def test_old_checkpoints_get_camvid_with_a_note_or_a_clear_error(tmp_path, small_model, caplog):
    old = tmp_path / "old.pt"
    save_checkpoint(old, small_model, MODEL, CAMVID.class_names, (64, 96), {})
    assert "label_set" not in read_checkpoint(old)
    with caplog.at_level(logging.WARNING):
        assert checkpoint_label_set(read_checkpoint(old), old) == CAMVID
    assert "stores no label set" in caplog.text and "--dataset camvid" in caplog.text
    other = tmp_path / "other.pt"
    save_checkpoint(other, small_model, MODEL, [f"c{i}" for i in range(11)], (64, 96), {})
    with pytest.raises(CheckpointError, match=re.escape(str(other)) + ".* not CamVid's.*"
                       "python -m training.label_set --dataset DESCRIPTION.yaml"):
        checkpoint_label_set(read_checkpoint(other), other)


def test_adding_the_label_set_keeps_the_weights_bit_identical(tmp_path, small_model, capsys):
    path = tmp_path / "old.pt"
    save_checkpoint(path, small_model, MODEL, CAMVID.class_names, (64, 96), {"note": "old"})
    before = read_checkpoint(path)
    assert label_set_main(["--dataset", "camvid", str(path)]) == 0
    assert "added label set 'camvid'" in capsys.readouterr().out
    after = read_checkpoint(path)
    assert LabelSet.from_dict(after["label_set"]) == CAMVID
    assert {k: v for k, v in after.items() if k not in ("state_dict", "label_set")} == {
        k: v for k, v in before.items() if k != "state_dict"}
    for name, tensor in before["state_dict"].items():
        assert after["state_dict"][name].numpy().tobytes() == tensor.numpy().tobytes(), name
    assert "left as it was" in add_label_set(path, CAMVID)
    assert label_set_main(["--dataset", "cityscapes", str(path)]) == 1
    assert "label set 'cityscapes' has ['road'" in capsys.readouterr().err


# ================================================================= the Cityscapes chain

TINY = ["device=cpu", "amp=false", "channels_last=false", "threads=1", "data.batch_size=2",
        "data.crop_size=[64,96]", "data.num_workers=0", "data.limit_eval=1",
        "model.input_size=[96,128]", "model.pretrained=false", "ce.epochs=1", "ce.eval_every=1",
        "flow.pretrain_steps=2", "flow.batch_size=2", "flow.patch_size=16",
        "flow.checkpoint_every=1", "nflowjs.epochs=1", "nflowjs.eval_every=1",
        "nflowjs.reference_crop=256"]


@pytest.fixture(scope="module")
def cityscapes_model(cityscapes_tree, tmp_path_factory) -> Path:
    """Run a tiny CE + flow + NFlowJS training of the shipped Cityscapes config on the tree."""
    out = tmp_path_factory.mktemp("cityscapes_run")
    result = subprocess.run(
        [sys.executable, "-m", "training.train", "--config", str(CITYSCAPES_CONFIG), "--set",
         f"data.root={cityscapes_tree}", f"output_dir={out}", *TINY],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "nflowjs" / "model.pt"


def test_training_on_the_cityscapes_layout_gives_a_19_class_checkpoint(cityscapes_model):
    payload = read_checkpoint(cityscapes_model)
    assert payload["num_classes"] == 19 and tuple(payload["class_names"]) == \
        CITYSCAPES.class_names
    assert LabelSet.from_dict(payload["label_set"]) == CITYSCAPES
    assert payload["meta"]["stage"] == "nflowjs" and "val_miou" in payload["meta"]
    assert "test_miou" not in payload["meta"]  # data.eval_splits: [val]
    assert payload["state_dict"]["decoder.classifier.2.bias"].shape == (19,)


def test_the_evaluator_reports_the_19_classes_and_ignores_255(cityscapes_model,
                                                              cityscapes_tree, tmp_path,
                                                              capsys):
    from dense_ood_ros.evaluate import EXIT_OK, main

    assert export_split_main(["--dataset", "cityscapes", "--root", str(cityscapes_tree),
                              "--split", "val", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "semantic").iterdir()) == [
        "aachen_000000_000004.png", "bochum_000000_000005.png"]
    out = tmp_path / "eval"
    assert main(["--model", str(cityscapes_model), "--images", str(tmp_path / "images"),
                 "--semantic-labels", str(tmp_path / "semantic"), "--input-size", "96x128",
                 "--out", str(out), "--num-overlays", "1", "--no-progress"]) == EXIT_OK
    report = json.loads((out / "metrics.json").read_text())
    assert report["complete"] and report["frames"] == 2 and report["semantic_ignore"] == 255
    assert list(report["semantic"]["per_class_iou"]) == list(CITYSCAPES.class_names)
    assert report["label_set"] == "cityscapes"
    assert "traffic light, traffic sign" in capsys.readouterr().err


def test_replays_ignore_the_models_ignore_index_by_default(cityscapes_model, cityscapes_tree,
                                                           tmp_path):
    """Offline replay and live replay take --semantic-ignore from the model (255 here)."""
    pytest.importorskip("rclpy", reason="the replays need rclpy")
    from dense_ood_ros.replay.make_bag import main as make_bag
    from dense_ood_ros.ros.replay.command import main as replay
    from dense_ood_ros.ros.replay.live import label_set_of

    assert export_split_main(["--dataset", "cityscapes", "--root", str(cityscapes_tree),
                              "--split", "val", "--out", str(tmp_path)]) == 0
    assert make_bag(["--frames", str(tmp_path / "images"), "--semantic-labels",
                     str(tmp_path / "semantic"), "--out", str(tmp_path / "bag"),
                     "--no-progress"]) == 0
    out = tmp_path / "replay"
    assert replay(["--bag", str(tmp_path / "bag"), "--model", str(cityscapes_model),
                   "--input-size", "96x128", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["semantic_ignore"] == 255 and report["frames"] == 2
    assert list(report["semantic"]["per_class_iou"]) == list(CITYSCAPES.class_names)
    assert label_set_of(cityscapes_model) == CITYSCAPES
    assert label_set_of(None) == description_label_set("camvid")  # the node's default model
    with pytest.raises(ValueError, match="labels.txt: not a model file"):
        label_set_of(tmp_path / "labels.txt")


def test_the_exporter_writes_the_label_set_into_the_onnx_metadata(cityscapes_model, tmp_path,
                                                                  capsys):
    from dense_ood_ros.detector import Detector
    from dense_ood_ros.export import main
    from dense_ood_ros.onnx_graph import read_onnx_info

    onnx_path = tmp_path / "cityscapes.onnx"
    assert main(["--model", str(cityscapes_model), "--onnx", str(onnx_path)]) == 0
    assert "label set 'cityscapes', 19 classes: road, sidewalk" in capsys.readouterr().out
    info = read_onnx_info(onnx_path)
    assert info.label_set == CITYSCAPES and info.class_names == CITYSCAPES.class_names
    detector = Detector.from_model(onnx_path, backend="onnxruntime", threads=1)
    assert detector.label_set == CITYSCAPES
    assert int(detector(np.zeros((96, 128, 3), np.uint8)).labels.max()) < 19


@pytest.mark.ros
def test_the_node_latches_the_label_set_and_colours_with_it(cityscapes_model, ros_context,
                                                            camvid_frame, tmp_path):
    pytest.importorskip("rclpy", reason="the ROS 2 Python client library is not installed")
    from std_msgs.msg import String

    from dense_ood_ros.ros import COLOR_TOPIC, LABEL_SET_TOPIC, LABELS_TOPIC, node_topic
    from dense_ood_ros.ros import output_topic
    from dense_ood_ros.ros.client import DetectorClient, start_detector, stop_detector
    from dense_ood_ros.ros.conversions import image_to_numpy, numpy_to_image
    from dense_ood_ros.ros.node import label_set_qos

    namespace = "label_set_test"
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        process = start_detector({"model_path": str(cityscapes_model), "backend": "torch"},
                                 log=log, namespace=namespace)
        try:
            with DetectorClient(namespace, detector_process=process, context=ros_context,
                                node_name="label_set_test_client") as client:
                client.wait_until_connected(60.0)
                reply = client.request(numpy_to_image(camvid_frame, "rgb8"), timeout_s=60.0)
                # subscribed after the node published it: the latched message still comes
                received = []
                client.node.create_subscription(
                    String, node_topic(output_topic(LABEL_SET_TOPIC), namespace),
                    lambda msg: received.append(msg.data), label_set_qos())
                deadline = time.monotonic() + 20.0
                while not received and time.monotonic() < deadline:
                    client.spin_once()
        finally:
            code = stop_detector(process)
    assert received, log_path.read_text()
    assert LabelSet.from_json(received[0]) == CITYSCAPES
    assert json.loads(received[0])["class_names"] == list(CITYSCAPES.class_names)
    labels = image_to_numpy(reply.outputs[LABELS_TOPIC])
    assert int(labels.max()) < 19
    assert np.array_equal(image_to_numpy(reply.outputs[COLOR_TOPIC]), CITYSCAPES.colorize(labels))
    assert code == 0 and "19 classes of label set 'cityscapes'" in log_path.read_text()


def test_engine_records_carry_the_label_set_and_old_ones_follow_the_legacy_rules():
    from dense_ood_ros.backends.tensorrt_backend import engine_label_set
    from dense_ood_ros.onnx_graph import ModelFileError

    names = list(CITYSCAPES.class_names)
    record = {"class_names": names, "label_set": CITYSCAPES.to_dict()}
    assert engine_label_set(record, "x.engine") == CITYSCAPES
    assert engine_label_set({"class_names": list(CAMVID.class_names)}, "old.engine") == CAMVID
    with pytest.raises(ModelFileError, match="engine old.engine stores no label set.*build it "
                       "again from a checkpoint that has one"):
        engine_label_set({"class_names": names}, "old.engine")
    with pytest.raises(ModelFileError, match="'label_set' has the classes"):
        engine_label_set({"class_names": names[::-1], "label_set": CITYSCAPES.to_dict()}, "x")


def test_any_crop_size_the_flow_can_fill_is_taken_and_a_smaller_one_named():
    from training.pasting import sample_locations, sample_patch_size

    rng = np.random.default_rng(0)
    for crop in ((64, 96), (768, 768), (40, 200), (8, 8)):
        for _ in range(50):
            size = sample_patch_size(rng, crop, (16, 216), 8, 768, 8)
            assert all(8 <= side <= limit and side % 8 == 0 for side, limit in zip(size, crop))
            (top, left), = sample_locations(rng, 1, crop, size)
            assert top + size[0] <= crop[0] and left + size[1] <= crop[1]
    with pytest.raises(ValueError, match="config key 'data.crop_size' must be at least 8"):
        load_config(CITYSCAPES_CONFIG, {"data.crop_size": [6, 64]})
