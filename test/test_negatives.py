"""Real negatives (COCO objects pasted in NFlowJS training), camera degradations, the config.

On the real COCO128 panoptic and CamVid frames; a tiny end-to-end run of each new path.
"""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import CAMVID, CONFIG, _train

from dense_ood_ros.checkpoint import load_model
from training.config import load_config
from training.data.camvid_paste import DEFAULT_COCO, EXCLUDED_SUPERCATEGORIES
from training.data.dataset import SegmentationDataset, degrade
from training.data.description import load_description
from training.negatives import NegativesError, ObjectPaster, load_negative_objects

needs_data = pytest.mark.skipif(not (CAMVID.is_dir() and DEFAULT_COCO.is_dir()),
                                reason="needs ../shared/data/camvid and coco128_panoptic")
OBJECTS = ["nflowjs.negatives=[flow,objects]", f"nflowjs.objects.root={DEFAULT_COCO}"]


@pytest.fixture(scope="module")
def objects():
    if not DEFAULT_COCO.is_dir():
        pytest.skip(f"COCO128 panoptic not found at {DEFAULT_COCO}")
    return load_negative_objects(DEFAULT_COCO, "train2017")


def test_objects_are_coco_train_things_outside_the_inlier_categories(objects):
    import json

    categories = json.loads((DEFAULT_COCO / "panoptic" / "panoptic_train2017.json").read_text())
    excluded = {c["name"] for c in categories["categories"]
                if c["supercategory"] in EXCLUDED_SUPERCATEGORIES or not c["isthing"]}
    assert len(objects) > 100
    assert not {obj.category for obj in objects} & excluded
    assert {"dog", "elephant", "chair"} <= {obj.category for obj in objects}
    assert all(obj.source["coco_split"] == "train2017" and obj.mask.any()
               and obj.rgb.shape[:2] == obj.mask.shape for obj in objects)


def test_pasted_objects_are_negatives_and_leave_the_rest_alone(objects):
    description = load_description("camvid")
    dataset = SegmentationDataset(description, CAMVID, "train", crop_size=(288, 384),
                                  scale_range=(1.0, 1.0), limit=6)
    images = torch.stack([dataset[i][0] for i in range(6)]).permute(0, 3, 1, 2).float()
    labels = torch.stack([dataset[i][1] for i in range(6)])
    paster = ObjectPaster(objects, probability=1.0, height_range=(0.2, 0.4))
    pasted, new_labels, negative = paster.paste(images, labels, np.random.default_rng(0), 11)
    for i in range(6):
        share = negative[i].float().mean().item()
        assert 0.005 < share < 0.4, share
        changed = (pasted[i] != images[i]).any(dim=0)
        assert changed[negative[i]].float().mean() > 0.9  # the object's pixels are new
        assert (new_labels[i][negative[i]] == 11).all()  # no cross-entropy on negatives
        assert torch.equal(new_labels[i][~changed], labels[i][~changed])
        assert torch.equal(pasted[i][:, ~changed], images[i][:, ~changed])
    again = paster.paste(images, labels, np.random.default_rng(0), 11)
    assert torch.equal(again[0], pasted)  # drawn from the generator only
    none = ObjectPaster(objects, probability=1e-9, height_range=(0.2, 0.4))
    assert not none.paste(images, labels, np.random.default_rng(0), 11)[2].any()


def test_missing_or_empty_negatives_are_errors_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="nflowjs.objects.root"):
        load_config(CONFIG, {"nflowjs.negatives": ["objects"],
                             "nflowjs.objects.root": str(tmp_path / "nowhere")})
    with pytest.raises(NegativesError, match="nflowjs.objects.root.*no COCO panoptic"):
        load_negative_objects(tmp_path, "train2017")
    (tmp_path / "panoptic").mkdir()
    (tmp_path / "panoptic" / "panoptic_train2017.json").write_text(
        '{"categories": [], "images": [], "annotations": []}')
    with pytest.raises(NegativesError, match="nflowjs.objects.root.*no usable negative"):
        load_negative_objects(tmp_path, "train2017")


def test_negative_options_are_validated_at_load():
    for key, bad in (("nflowjs.negatives", []), ("nflowjs.negatives", ["gan"]),
                     ("nflowjs.negatives", ["flow", "flow"]),
                     ("nflowjs.objects.probability", 0), ("nflowjs.objects.probability", 1.5),
                     ("nflowjs.objects.height_range", [0.5, 0.1]),
                     ("nflowjs.objects.height_range", [0.1, 1.5]), ("data.degrade", 1.5)):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            load_config(CONFIG, {key: bad})
    with pytest.raises(ValueError, match="val2017.*CamVid-Paste test"):
        load_config(CONFIG, {"nflowjs.negatives": ["objects"], "nflowjs.objects.split": "val2017"})
    assert load_config(CONFIG).nflowjs.negatives == ["flow"]  # the paper's recipe by default


@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid not found")
def test_degradations_only_when_asked_and_reproducible():
    description = load_description("camvid")
    options = dict(crop_size=(288, 384), scale_range=(0.75, 1.5), limit=3, seed=5)
    plain = SegmentationDataset(description, CAMVID, "train", **options)
    degraded = SegmentationDataset(description, CAMVID, "train", degrade=1.0, **options)
    for index in range(3):
        (image, label), (dimage, dlabel) = plain[index], degraded[index]
        assert torch.equal(label, dlabel) and dimage.dtype == torch.uint8
        assert not torch.equal(image, dimage)
        assert torch.equal(degraded[index][0], dimage)
    image = plain[0][0].numpy()
    assert np.array_equal(degrade(image, 0.0, np.random.default_rng(1)), image)


def _nflowjs_rows(tmp_path):
    with open(tmp_path / "nflowjs" / "log.csv", newline="") as stream:
        return [row for row in csv.DictReader(stream) if row["step"]]


@needs_data
@pytest.mark.slow
def test_nflowjs_with_objects_and_flow_and_degradations_end_to_end(tmp_path):
    proc = _train(tmp_path, *OBJECTS, "data.degrade=0.5")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    rows = _nflowjs_rows(tmp_path)
    assert rows and all(np.isfinite(float(row["bpd"])) for row in rows)
    assert any(float(row["jsd_loss"]) > 0 for row in rows)
    info = load_model(tmp_path / "nflowjs" / "model.pt")[1]
    assert info["meta"]["negatives"] == ["flow", "objects"]
    assert info["meta"]["config"]["data"]["degrade"] == 0.5
    assert (tmp_path / "nflowjs" / "flow.pt").is_file()


@needs_data
@pytest.mark.slow
def test_nflowjs_with_objects_alone_needs_no_flow(tmp_path):
    """``negatives: [objects]``: no flow is loaded or trained (the flow stage is skipped)."""
    proc = _train(tmp_path, "stages=[ce,nflowjs]", "nflowjs.negatives=[objects]",
                  f"nflowjs.objects.root={DEFAULT_COCO}",
                  f"nflowjs.init_flow={Path(tmp_path) / 'no_flow.pt'}")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    rows = _nflowjs_rows(tmp_path)
    assert rows and all(row["bpd"] == "nan" for row in rows)
    assert any(float(row["jsd_loss"]) > 0 for row in rows)
    assert not (tmp_path / "nflowjs" / "flow.pt").exists()
    assert load_model(tmp_path / "nflowjs" / "model.pt")[1]["meta"]["negatives"] == ["objects"]


@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid not found")
def test_demo_frame_regions_are_the_dogs_and_the_facades():
    from dense_ood_ros.io import read_label
    from training.demo_frame import DEFAULT_LABEL, region_means, regions

    masks = regions(read_label(DEFAULT_LABEL, (360, 480)))
    assert 200 < masks["dogs"].sum() < 1000  # two small dogs, labelled void
    assert masks["facades"].sum() > 40000 and not (masks["dogs"] & masks["facades"]).any()
    score = masks["dogs"].astype(np.float32)
    means = region_means(score, masks)
    assert means["dogs"] == 1.0 and means["facades"] == 0.0
