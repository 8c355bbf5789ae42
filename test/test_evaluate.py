"""dense-ood-evaluate end to end with a small untrained checkpoint at a reduced input size."""

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import CAMVID_DIR
from dense_ood_ros.checkpoint import save_checkpoint
from dense_ood_ros.detector import DetectorOutput
from dense_ood_ros.evaluate import (EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_OK, evaluate_frames,
                                    find_frames, main)
from dense_ood_ros.evaluation import AnomalyLabelSpec, Evaluation
from dense_ood_ros.io import read_label
from dense_ood_ros.label_set import description_label_set
from dense_ood_ros.metrics import AnomalyMetrics, SemanticMetrics
from dense_ood_ros.models import build_model
from training.data import camvid_paste

SCORES = ("jsd", "msp", "maxlogit", "entropy")
CAMVID = description_label_set("camvid")
needs_data = pytest.mark.skipif(
    not (CAMVID_DIR.is_dir() and camvid_paste.DEFAULT_COCO.is_dir()),
    reason="needs ../shared/data/camvid and ../shared/data/coco128_panoptic")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.pt"
    save_checkpoint(path, build_model("efficientnet_lite0_swiftnet", 11, pretrained=False),
                    "efficientnet_lite0_swiftnet", CAMVID, (360, 480), {})
    return path


@pytest.fixture
def synthetic(tmp_path):
    """Four random 40x56 frames with anomaly labels (1 anomaly, 255 ignored)."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for index in range(4):
        cv2.imwrite(str(tmp_path / "images" / f"f{index}.png"),
                    rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        label = np.where(rng.random((40, 56)) < 0.2, 1, 0).astype(np.uint8)
        label[:4] = 255
        cv2.imwrite(str(tmp_path / "labels" / f"f{index}.png"), label)
    return tmp_path


def _run(checkpoint, images, out, *extra):
    return main(["--model", str(checkpoint), "--images", str(images), "--out", str(out),
                 "--input-size", "64x96", "--no-progress", *extra])


@needs_data
def test_end_to_end_on_camvid_paste(checkpoint, camvid_paste_frames, tmp_path):
    benchmark = camvid_paste_frames
    out = tmp_path / "eval"
    code = main(["--model", str(checkpoint), "--images", str(benchmark / "images"),
                 "--labels", str(benchmark / "labels"),
                 "--semantic-labels", str(benchmark / "semantic"), "--scores", ",".join(SCORES),
                 "--input-size", "180x240", "--out", str(out),
                 "--num-overlays", "2", "--no-progress"])
    assert code == EXIT_OK
    for name in ("metrics.json", "metrics.md", "pr_curve.png", "roc_curve.png",
                 "accumulators/anomaly.npz", "accumulators/semantic.json"):
        assert (out / name).is_file(), name
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 2 and cv2.imread(str(overlays[0])).shape == (360, 4 * 480, 3)

    report = json.loads((out / "metrics.json").read_text())
    assert report["complete"] and report["frames"] == 3 and report["pixels"] == 3 * 360 * 480
    assert report["metric_mode"] == report["anomaly"]["mode"] == "sklearn"
    assert report["input_size"] == [180, 240] and report["backend"].startswith("torch")
    labels = [read_label(p) for p in sorted((benchmark / "labels").glob("*.png"))]
    for name in SCORES:
        result = report["anomaly"]["scores"][name]
        assert result["positives"] == sum(int((label == 1).sum()) for label in labels)
        assert result["negatives"] == sum(int((label == 0).sum()) for label in labels)
        for key in ("ap", "fpr95", "auroc"):
            assert 0.0 <= result[key] <= 1.0, (name, key)
    semantic = report["semantic"]
    assert (0.0 <= semantic["miou"] <= 100.0
            and list(semantic["per_class_iou"]) == list(CAMVID.class_names))
    assert report["semantic_ignore"] == 11 and report["label_set"] == "camvid"  # the model's
    markdown = (out / "metrics.md").read_text()
    assert all(f"| {name} |" in markdown for name in SCORES) and "mIoU" in markdown

    # The accumulators re-aggregate to the same numbers, in either mode.
    reloaded = AnomalyMetrics.load(out / "accumulators" / "anomaly.npz")
    assert (reloaded.summary("sklearn")["scores"]["jsd"]["ap"]
            == report["anomaly"]["scores"]["jsd"]["ap"])
    assert 0.0 <= reloaded.summary("smiyc")["scores"]["jsd"]["ap"] <= 1.0
    assert (SemanticMetrics.load(out / "accumulators" / "semantic.json").summary()["miou"]
            == semantic["miou"])


def test_missing_label_fails_before_inference(checkpoint, synthetic, capsys):
    (synthetic / "labels" / "f2.png").unlink()
    out = synthetic / "eval"
    assert _run(checkpoint, synthetic / "images", out,
                "--labels", str(synthetic / "labels")) == EXIT_BAD_INPUT
    assert "f2.png" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()

    assert _run(checkpoint, synthetic / "images", out, "--labels", str(synthetic / "labels"),
                "--allow-missing") == EXIT_OK
    report = json.loads((out / "metrics.json").read_text())
    assert report["complete"] and report["frames"] == 3 and "f2.png" in report["problems"][0]


def test_mismatched_label_is_reported_and_partial_results_are_saved(checkpoint, synthetic, capsys):
    cv2.imwrite(str(synthetic / "labels" / "f1.png"), np.zeros((30, 56), np.uint8))
    (synthetic / "labels" / "f3.png").write_bytes(b"not a png")
    out = synthetic / "eval"
    code = _run(checkpoint, synthetic / "images", out, "--labels", str(synthetic / "labels"),
                "--metric-mode", "smiyc", "--scores", "msp,entropy")
    assert code == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "f1.png" in err and "f3.png" in err and "INCOMPLETE" in err
    report = json.loads((out / "metrics.json").read_text())
    assert not report["complete"] and report["frames"] == 2 and len(report["problems"]) == 2
    assert (report["anomaly"]["mode"] == "smiyc"
            and set(report["anomaly"]["scores"]) == {"msp", "entropy"})
    assert (out / "accumulators" / "anomaly.npz").is_file()


def test_bad_arguments(checkpoint, synthetic, capsys):
    with pytest.raises(SystemExit):
        _run(checkpoint, synthetic / "images", synthetic / "eval")  # neither kind of labels
    with pytest.raises(SystemExit):
        _run(checkpoint, synthetic / "images", synthetic / "eval",
             "--labels", str(synthetic / "labels"), "--scores", "jsd,energy")
    assert "energy" in capsys.readouterr().err
    shutil.rmtree(synthetic / "labels")
    assert _run(checkpoint, synthetic / "images", synthetic / "eval",
                "--labels", str(synthetic / "labels")) == EXIT_BAD_INPUT


def test_evaluate_frames_keeps_what_was_computed_when_the_backend_fails(synthetic):
    frames, missing = find_frames(synthetic / "images", synthetic / "labels")
    assert len(frames) == 4 and not missing
    rng = np.random.default_rng(0)

    def detector(image):  # stands in for Detector: fails on the third frame
        if detector.calls == 2:
            raise RuntimeError("device lost")
        detector.calls += 1
        return DetectorOutput(np.zeros(image.shape[:2], np.uint8),
                              {"jsd": rng.random(image.shape[:2]).astype(np.float32)})
    detector.calls = 0

    evaluation = evaluate_frames(detector, frames, AnomalyLabelSpec(),
                                 Evaluation(AnomalyMetrics(["jsd"]), None), progress=False)
    assert evaluation.frames == 2 and evaluation.stopped == "RuntimeError: device lost"
    assert evaluation.anomaly.summary()["scores"]["jsd"]["positives"] > 0


@needs_data
def test_evaluate_model_script_writes_the_model_cards_three_evaluations(
        checkpoint, camvid_paste_frames, tmp_path):
    """scripts/evaluate_model.sh: CamVid test and CamVid-Paste val/test, options passed on."""
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    camvid = tmp_path / "camvid"
    for folder in ("test", "testannot"):
        (camvid / folder).mkdir(parents=True)
    for label in sorted((CAMVID_DIR / "testannot").glob("*.png"))[:2]:
        shutil.copy(label, camvid / "testannot" / label.name)
        shutil.copy(next((CAMVID_DIR / "test").glob(label.stem + ".*")), camvid / "test")
    paste = tmp_path / "paste"
    paste.mkdir()
    for split in ("val", "test"):
        (paste / split).symlink_to(camvid_paste_frames)
    script = [str(repo / "scripts" / "evaluate_model.sh"), str(checkpoint), str(tmp_path / "out"),
              "--input-size", "64x96", "--no-progress"]
    env = dict(os.environ, CAMVID=str(camvid), PASTE=str(paste))
    result = subprocess.run(["bash", *script], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    semantic = json.loads((tmp_path / "out" / "camvid_test" / "metrics.json").read_text())
    assert semantic["frames"] == 2 and "miou" in semantic["semantic"]
    for split in ("val", "test"):
        report = json.loads((tmp_path / "out" / f"camvid_paste_{split}" / "metrics.json")
                            .read_text())
        assert report["frames"] == 3 and set(report["anomaly"]["scores"]) == set(SCORES)
    missing = subprocess.run(["bash", *script], capture_output=True, text=True, timeout=60,
                             env=dict(env, PASTE=str(tmp_path / "nowhere")))
    assert missing.returncode == 2 and "is not a CamVid-Paste split" in missing.stderr
