"""The demo: its result picture, and one end-to-end run over DDS on a shipped demo frame."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from dense_ood_ros.label_set import description_label_set
from dense_ood_ros.ros.demo import FOOTER_HEIGHT, GAP, TITLE_HEIGHT, footer_height, render_result
from dense_ood_ros.visualization import heat_map, score_range

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
CAMVID = description_label_set("camvid")


def test_shipped_demo_frames_are_small_camvid_jpegs_with_attribution():
    frames = sorted(DEMO_DIR.glob("*.jpg"))
    assert 4 <= len(frames) <= 6
    assert sum(path.stat().st_size for path in frames) < 2_000_000
    attribution = (DEMO_DIR / "ATTRIBUTION.md").read_text()
    for path in frames:
        assert path.name in attribution
        assert cv2.imread(str(path)).shape == (360, 480, 3)
    assert "Brostow" in attribution and "CC BY-NC 4.0" in attribution


def test_score_range_is_fixed_for_bounded_scores_and_adaptive_otherwise():
    assert score_range(np.array([0.2, 0.7], np.float32)) == (0.0, 1.0)
    assert score_range(np.array([-12.5, -3.0], np.float32)) == (-12.5, -3.0)


def test_result_picture_shows_input_segmentation_and_heat_map_side_by_side():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    labels = rng.integers(0, 11, (120, 160), dtype=np.uint8)
    score = np.tile(np.linspace(0, 1, 160, dtype=np.float32), (120, 1))
    picture = render_result(rgb, CAMVID.colorize(labels), score, "jsd", "frame.jpg: 10 ms",
                            CAMVID)
    assert picture.shape == (TITLE_HEIGHT + 120 + FOOTER_HEIGHT, 3 * 160 + 2 * GAP, 3)
    rows = slice(TITLE_HEIGHT, TITLE_HEIGHT + 120)
    np.testing.assert_array_equal(picture[rows, :160], rgb)
    np.testing.assert_array_equal(picture[rows, 2 * (160 + GAP):], heat_map(score, (0.0, 1.0)))
    overlay = picture[rows, 160 + GAP:2 * 160 + GAP].astype(int)
    assert np.abs(overlay - CAMVID.colorize(labels)).mean() < np.abs(overlay - rgb).mean()


def test_the_legend_shows_the_label_sets_classes_in_their_colours():
    cityscapes = description_label_set("cityscapes")
    rgb = np.zeros((120, 640, 3), np.uint8)
    score = np.zeros((120, 640), np.float32)
    picture = render_result(rgb, rgb, score, "jsd", "", cityscapes)
    assert footer_height(CAMVID) == FOOTER_HEIGHT < footer_height(cityscapes)
    footer = picture[TITLE_HEIGHT + 120:, 640 + GAP:2 * 640 + GAP]
    assert footer.shape[0] == footer_height(cityscapes)
    colours = {tuple(c) for c in footer.reshape(-1, 3)}
    assert set(cityscapes.colors) <= colours  # every class's swatch, the last row too
    assert (0, 0, 142) not in {tuple(c) for c in render_result(
        rgb, rgb, score, "jsd", "", CAMVID)[TITLE_HEIGHT + 120:].reshape(-1, 3)}


@pytest.mark.ros
def test_demo_runs_end_to_end_on_a_demo_frame(tmp_path, model_path, capsys):
    pytest.importorskip("rclpy", reason="the ROS 2 Python client library (rclpy) is not installed")
    from dense_ood_ros.ros.demo import main

    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(sorted(DEMO_DIR.glob("*.jpg"))[0], frames)
    output = tmp_path / "out"
    assert main(["--frames", str(frames), "--out", str(output), "--model", str(model_path)]) == 0
    (result,) = output.glob("*.png")
    assert cv2.imread(str(result)).shape == (TITLE_HEIGHT + 360 + FOOTER_HEIGHT, 3 * 480 + 2 * GAP,
                                             3)
    printed = capsys.readouterr().out
    assert "FPS" in printed and "detector node stopped (exit code 0)" in printed
