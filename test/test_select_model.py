"""Model selection on real road anomalies: the rule, and the whole command on 2 frames."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.select_model import DEFAULT_ROAD_ANOMALY, select

REPO = Path(__file__).resolve().parents[1]


def _row(name, miou, ap, fpr95):
    return {"name": name, "camvid_val_miou": miou, "road_anomaly_val_jsd_ap": ap,
            "road_anomaly_val_jsd_fpr95": fpr95}


def test_floor_then_ap_then_fpr95_on_a_tie():
    rows = [_row("weak_segmenter", 65.0, 60.0, 20.0),  # best AP, below the floor
            _row("a", 72.0, 50.0, 45.0), _row("b", 71.0, 50.3, 38.0),  # tie: b's FPR95 wins
            _row("c", 73.0, 48.0, 30.0)]
    winner, ranked = select(rows, miou_floor=70.0)
    assert winner["name"] == "b"
    assert [row["name"] for row in ranked] == ["b", "a", "c", "weak_segmenter"]
    assert [row["eligible"] for row in ranked] == [True, True, True, False]
    assert select([_row("x", 60.0, 50.0, 40.0)], 70.0)[0] is None


@pytest.mark.slow
def test_selection_command_on_two_frames(checkpoint, camvid_dir, tmp_path):
    """Two candidates, every evaluation set at 2 frames; files, ranking, reuse."""
    if not (DEFAULT_ROAD_ANOMALY / "images").is_dir():
        pytest.skip(f"road_anomaly_val not found at {DEFAULT_ROAD_ANOMALY}")
    out = tmp_path / "selection"
    command = [sys.executable, "-m", "training.select_model", "--candidates",
               f"untrained={checkpoint}", f"shipped={REPO / 'models' / 'default.pt'}",
               "--out", str(out), "--limit", "2", "--threads", "1", "--no-progress",
               "--cache-dir", str(tmp_path / "cache"), "--miou-floor", "0"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    selection = json.loads((out / "selection.json").read_text())
    assert selection["limit"] == 2 and selection["chosen"] in ("untrained", "shipped")
    ranked = {row["name"]: row for row in selection["ranked"]}
    assert set(ranked) == {"untrained", "shipped"} and selection["chosen"] == \
        selection["ranked"][0]["name"]
    for row in ranked.values():
        assert 0 <= row["road_anomaly_val_jsd_ap"] <= 100 and 0 <= row["camvid_val_miou"] <= 100
    assert ranked["shipped"]["camvid_val_miou"] > ranked["untrained"]["camvid_val_miou"]
    for set_name in ("road_anomaly_val", "camvid_val", "camvid_test"):
        report = json.loads((out / "shipped" / set_name / "metrics.json").read_text())
        assert report["frames"] == 2 and report["complete"]
    assert "Rule: CamVid val mIoU >= 0.0" in (out / "selection.md").read_text()
    # a second run reuses every evaluation of unchanged model files
    stamp = (out / "shipped" / "camvid_val" / "metrics.json").stat().st_mtime_ns
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (out / "shipped" / "camvid_val" / "metrics.json").stat().st_mtime_ns == stamp


def test_bad_candidates_are_named(tmp_path):
    for candidates, problem in ((["nameless.pt"], "NAME=MODEL_FILE"),
                                ([f"x={tmp_path / 'missing.pt'}"], "no model file"),
                                (["a=models/default.pt", "a=models/default.pt"],
                                 "each name once")):
        result = subprocess.run([sys.executable, "-m", "training.select_model", "--candidates",
                                 *candidates, "--out", str(tmp_path / "o")], cwd=REPO,
                                capture_output=True, text=True)
        assert result.returncode == 2 and problem in result.stderr, result.stderr
