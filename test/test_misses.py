"""training.misses: threshold at a TPR, missed anomaly pixels.

The misses are broken down by pasted category and by predicted class.
"""

import json

import numpy as np
import pytest

from training.misses import breakdown, false_alarms, main, object_index_map


def test_breakdown_counts_the_pixels_below_the_tpr_threshold():
    scores = np.arange(100, dtype=np.float32) / 100  # 0.00 ... 0.99
    groups = np.where(np.arange(100) < 10, 0, 1)  # "low": the 10 lowest scores
    report = breakdown(scores, groups, ["low", "high", "absent"], tpr=0.95)
    assert report["missed_pixels"] == 5 and report["anomaly_pixels"] == 100
    assert 0.04 < report["threshold"] <= 0.05
    low, high = report["groups"]  # sorted by share of the misses; "absent" has no pixels
    assert (low["name"], low["pixels"], low["share_of_missed"],
            low["miss_rate"]) == ("low", 10, 1.0, 0.5)
    assert (high["name"], high["share_of_anomaly"], high["share_of_missed"]) == ("high", 0.9, 0.0)


def test_breakdown_refuses_an_empty_set():
    with pytest.raises(ValueError, match="no anomaly pixels"):
        breakdown(np.zeros(0, np.float32), np.zeros(0, int), ["a"], tpr=0.95)


def test_false_alarms_count_inlier_pixels_at_or_above_the_threshold():
    scores = np.array([0.1, 0.5, 0.6, 0.2, 0.9, 0.0], np.float32)
    # 11: a class outside the names (void) counts only in the total
    classes = np.array([0, 0, 0, 1, 1, 11])
    report = false_alarms(scores, classes, ["road", "sky"], threshold=0.5)
    assert (report["inlier_pixels"],
            report["false_alarm_pixels"]) == (6, 3) and report["fpr"] == 0.5
    road, sky = report["groups"]
    assert (road["name"], road["pixels"],
            road["share_of_false_alarms"]) == ("road", 3, pytest.approx(2 / 3))
    assert (sky["false_alarm_rate"], sky["share_of_inlier"]) == (0.5, pytest.approx(2 / 6))


def test_object_index_map_keeps_only_anomaly_pixels_inside_each_box():
    label = np.zeros((6, 8), np.uint8)
    label[1:3, 1:3] = 1
    label[2:5, 5:7] = 1
    label[0, 7] = 1  # outside every box: not attributed
    objects = [{"box_xywh": [0, 0, 4, 4]}, {"box_xywh": [5, 2, 2, 3]}]
    index = object_index_map(label, objects)
    assert (index[1:3, 1:3] == 0).all() and (index[2:5, 5:7] == 1).all()
    assert index[0, 7] == -1 and (index >= 0).sum() == 4 + 6


def test_cli_on_camvid_paste_frames(checkpoint, camvid_paste_frames, tmp_path):
    out = tmp_path / "misses.json"
    code = main(["--model", str(checkpoint), "--benchmark", str(camvid_paste_frames),
                 "--input-size", "180x240", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    manifest = json.loads((camvid_paste_frames / "manifest.json").read_text())
    labels_total = sum(frame["anomaly_pixels"] for frame in manifest["frames"])
    assert report["anomaly_pixels"] == labels_total
    assert 0 < report["missed_pixels"] <= 0.05 * labels_total + 1  # +1: quantile interpolation
    pasted = {obj["category"] for frame in manifest["frames"] for obj in frame["objects"]}
    assert {row["name"] for row in report["by_category"]} == pasted
    for key in ("by_category", "by_predicted_class"):
        assert sum(row["pixels"] for row in report[key]) == labels_total
        assert sum(row["share_of_missed"] for row in report[key]) == pytest.approx(1.0)
    valid = sum(frame["valid_pixels"] for frame in manifest["frames"])
    assert report["inlier_pixels"] == valid - labels_total
    assert (sum(row["pixels"] for row in report["false_alarms_by_true_class"])
            == report["inlier_pixels"])
    assert 0.0 <= report["fpr"] <= 1.0
    assert report["false_alarm_pixels"] == round(report["fpr"] * report["inlier_pixels"])


def test_cli_names_a_folder_without_manifest(checkpoint, tmp_path, capsys):
    assert main(["--model", str(checkpoint), "--benchmark", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err
