"""CamVid-Paste generator: deterministic, consistent labels, objects on the road, clean pools."""

import json

import cv2
import numpy as np
import pytest

from conftest import CAMVID_DIR
from dense_ood_ros.io import read_label, read_rgb
from training.data import camvid_paste
from training.data.description import load_description
from training.data.readers import list_samples

pytestmark = pytest.mark.skipif(
    not (CAMVID_DIR.is_dir() and camvid_paste.DEFAULT_COCO.is_dir()),
    reason="needs ../shared/data/camvid and ../shared/data/coco128_panoptic")
CAMVID = load_description("camvid")
IGNORE_INDEX = CAMVID.label_set.ignore_index
CLASSES = camvid_paste.paste_classes(CAMVID.label_set)


def camvid_pairs(split):
    return [(s.image, s.label) for s in list_samples(CAMVID, CAMVID_DIR, split)]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two runs with seed 0 and one with seed 1, three test frames each."""
    root = tmp_path_factory.mktemp("camvid_paste")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        camvid_paste.generate("test", root / name, seed, limit=3, root=CAMVID_DIR,
                              progress=False)
    return root


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_same_seed_gives_byte_identical_output(generated):
    first, second = _files(generated / "a"), _files(generated / "b")
    assert len(first) == 3 * 3 + 1 and first == second
    assert _files(generated / "c")["manifest.json"] != first["manifest.json"]


def test_written_labels_are_consistent_with_camvid(generated):
    out = generated / "a"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["seed"] == 0 and manifest["coco_split"] == "val2017"
            and "CC BY-NC" in manifest["attribution"])
    camvid = {image.stem: label
              for image, label in camvid_pairs("test")}
    for frame in manifest["frames"]:
        stem = frame["stem"]
        label, semantic = (read_label(out / "labels" / f"{stem}.png"),
                           read_label(out / "semantic" / f"{stem}.png"))
        original = read_label(camvid[stem])
        assert read_rgb(out / "images" / f"{stem}.png").shape[:2] == label.shape
        assert set(np.unique(label)) <= {0, 1, 255}
        pasted = label == 1
        assert (label == 1).sum() == frame["anomaly_pixels"] > 0
        assert np.all(semantic[pasted] == IGNORE_INDEX)
        assert np.array_equal(semantic[~pasted], original[~pasted])
        assert np.array_equal(label == 255, (original == IGNORE_INDEX) & ~pasted)
        for obj in frame["objects"]:  # each object's lowest row stands mostly on road
            left, top, width, height = obj["box_xywh"]
            box = pasted[top:top + height, left:left + width]
            bottom = np.flatnonzero(box.any(axis=1))[-1]
            contact = original[top + bottom, left:left + width][box[bottom]]
            assert np.mean(contact == CLASSES.road) >= 0.5, obj


def test_label_is_exactly_where_the_object_was_pasted():
    image_path, label_path = camvid_pairs("val")[0]
    frame, camvid_label = read_rgb(image_path), read_label(label_path)
    pool = camvid_paste.load_objects(camvid_paste.DEFAULT_COCO, "train2017")
    result = camvid_paste.paste_frame(frame, camvid_label, pool, 0.47 * frame.shape[0],
                                      np.random.default_rng(3), CLASSES)
    assert result.objects
    pasted = result.alpha > 0.5
    assert np.array_equal(result.label == 1, pasted)
    assert np.array_equal(result.label == 255, (camvid_label == IGNORE_INDEX) & ~pasted)
    assert np.array_equal(result.semantic, np.where(pasted, IGNORE_INDEX, camvid_label))
    assert np.array_equal(result.image[result.alpha == 0], frame[result.alpha == 0])
    assert not np.array_equal(result.image[pasted], frame[pasted])


def test_object_pools_are_disjoint_and_exclude_camvid_like_categories():
    excluded = {"person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
                "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench"}
    assert not excluded & set(camvid_paste.OBJECT_HEIGHTS_M)
    assert camvid_paste.COCO_SPLIT_FOR == {"val": "train2017", "test": "val2017"}
    pool = camvid_paste.load_objects(camvid_paste.DEFAULT_COCO, "val2017")
    assert len(pool) >= 10
    assert {obj.source["coco_split"] for obj in pool} == {"val2017"}
    assert {obj.category for obj in pool} <= set(camvid_paste.OBJECT_HEIGHTS_M)
    assert all(obj.mask.any() and obj.rgb.shape[:2] == obj.mask.shape for obj in pool)


def test_horizon_is_estimated_per_sequence():
    horizons = camvid_paste.estimate_horizons(list_samples(CAMVID, CAMVID_DIR, "test"), CAMVID,
                                              CLASSES)
    assert set(horizons) == {"0001TP", "Seq05VD"}
    assert 150 < horizons["Seq05VD"] < 190 and horizons["0001TP"] > horizons["Seq05VD"]


def test_classes_are_resolved_by_name_and_unknown_ones_named():
    assert CLASSES.road == 3 and CLASSES.foreground == (8, 9, 10)  # CamVid's road, car ...
    assert set(CLASSES.references) == {8, 9} and CLASSES.ignore_index == 11
    with pytest.raises(ValueError, match="--road-class 'street' is not a class of label set"):
        camvid_paste.paste_classes(CAMVID.label_set, road="street")
    cityscapes = camvid_paste.paste_classes(load_description("cityscapes").label_set)
    assert cityscapes.road == 0 and len(cityscapes.foreground) == 8
    assert set(cityscapes.references) == {11, 13}  # person, car


def test_pasting_on_another_label_set_and_road_class(tmp_path):
    """A plain-folder dataset whose road class is called 'drivable' and lives at value 2."""
    (tmp_path / "data" / "val" / "images").mkdir(parents=True)
    (tmp_path / "data" / "val" / "labels").mkdir(parents=True)
    sample = list_samples(CAMVID, CAMVID_DIR, "val")[0]
    camvid = read_label(sample.label)
    remap = np.full(256, 200, np.uint8)
    remap[[3, 8, 9, 10, 11]] = [2, 5, 6, 6, 9]  # road -> 2, car -> 5, people -> 6, void -> 9
    (tmp_path / "data" / "val" / "images" / "cam1_000.png").write_bytes(
        (CAMVID_DIR / "val" / sample.image.name).read_bytes())
    cv2.imwrite(str(tmp_path / "data" / "val" / "labels" / "cam1_000.png"), remap[camvid])
    description = tmp_path / "cams.yaml"
    description.write_text(
        "name: cams\nlayout: folders\n"
        "classes:\n  - {name: other, color: [0, 0, 0]}\n  - {name: drivable, color: [9, 9, 9]}\n"
        "  - {name: car, color: [1, 2, 3]}\n  - {name: person, color: [3, 2, 1]}\n"
        "ignore_index: 9\nlabel_values: {200: other, 2: drivable, 5: car, 6: person, 9: ignore}\n")
    out = tmp_path / "out"
    manifest = camvid_paste.generate("val", out, 0, root=tmp_path / "data",
                                     dataset=str(description), road_class="drivable",
                                     progress=False)
    assert manifest["benchmark"] == "cams-Paste" and manifest["road_class"] == "drivable"
    assert manifest["foreground_classes"] == ["car", "person"]
    (frame,) = manifest["frames"]
    label = read_label(out / "labels" / "cam1_000.png")
    semantic = read_label(out / "semantic" / "cam1_000.png")
    assert frame["anomaly_pixels"] == int((label == 1).sum()) > 0
    expected = np.array([0, 0, 1, 0, 0, 2, 3, 0, 0, 9] + [0] * 190 + [0] * 56, np.uint8)
    trained = expected[remap[camvid]]
    assert np.array_equal(semantic[label != 1], trained[label != 1])
    assert np.all(semantic[label == 1] == 9)
    for obj in frame["objects"]:  # each object's lowest row stands mostly on 'drivable'
        left, top, width, height = obj["box_xywh"]
        box = label[top:top + height, left:left + width] == 1
        bottom = np.flatnonzero(box.any(axis=1))[-1]
        assert np.mean(trained[top + bottom, left:left + width][box[bottom]] == 1) >= 0.5
