"""CamVid-Paste generator: deterministic, consistent labels, objects on the road, clean pools."""

import json

import numpy as np
import pytest

from dense_ood_ros.classes import IGNORE_INDEX
from dense_ood_ros.io import read_label, read_rgb
from training.data import camvid_paste
from training.data.camvid import camvid_pairs

pytestmark = pytest.mark.skipif(
    not (camvid_paste.DEFAULT_CAMVID.is_dir() and camvid_paste.DEFAULT_COCO.is_dir()),
    reason="needs ../shared/data/camvid and ../shared/data/coco128_panoptic")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two runs with seed 0 and one with seed 1, three test frames each."""
    root = tmp_path_factory.mktemp("camvid_paste")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        camvid_paste.generate("test", root / name, seed, limit=3, progress=False)
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
              for image, label in camvid_pairs(camvid_paste.DEFAULT_CAMVID, "test")}
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
            assert np.mean(contact == camvid_paste.ROAD) >= 0.5, obj


def test_label_is_exactly_where_the_object_was_pasted():
    image_path, label_path = camvid_pairs(camvid_paste.DEFAULT_CAMVID, "val")[0]
    frame, camvid_label = read_rgb(image_path), read_label(label_path)
    pool = camvid_paste.load_objects(camvid_paste.DEFAULT_COCO, "train2017")
    result = camvid_paste.paste_frame(frame, camvid_label, pool, 0.47 * frame.shape[0],
                                      np.random.default_rng(3))
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
    labels = [label for _, label in camvid_pairs(camvid_paste.DEFAULT_CAMVID, "test")]
    horizons = camvid_paste.estimate_horizons(labels)
    assert set(horizons) == {"0001TP", "Seq05VD"}
    assert 150 < horizons["Seq05VD"] < 190 and horizons["0001TP"] > horizons["Seq05VD"]
