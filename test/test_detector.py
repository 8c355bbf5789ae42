"""Detector round trips on a real CamVid frame, input checks and corrupt checkpoints."""

import re

import cv2
import numpy as np
import pytest
import torch

from dense_ood_ros.checkpoint import CheckpointError, CHECKPOINT_FORMAT
from dense_ood_ros.detector import Detector


@pytest.fixture(scope="module")
def detector(model_path):
    return Detector.from_model(model_path)


def check_output(output, frame_shape, num_classes):
    assert output.labels.shape == frame_shape[:2] and output.labels.dtype == np.uint8
    assert int(output.labels.max()) < num_classes
    assert output.score.shape == frame_shape[:2] and output.score.dtype == np.float32
    assert np.isfinite(output.score).all()


def test_camvid_frame_gives_labels_and_scores_at_input_resolution(detector, camvid_frame):
    assert camvid_frame.shape == (360, 480, 3)
    output = detector(camvid_frame)
    check_output(output, camvid_frame.shape, len(detector.class_names))
    assert list(output.scores) == ["jsd"]
    assert 0.0 <= output.score.min() and output.score.max() <= 1.0  # jsd is bounded


@pytest.mark.parametrize("height, width", [(240, 320), (301, 555)])
def test_non_native_frame_size_is_mapped_back(detector, camvid_frame, height, width):
    frame = cv2.resize(camvid_frame, (width, height), interpolation=cv2.INTER_AREA)
    check_output(detector(frame), frame.shape, len(detector.class_names))


def test_input_size_and_several_scores(model_path, camvid_frame):
    detector = Detector.from_model(model_path, score_names=("jsd", "msp", "maxlogit"),
                                   input_size=(192, 256))
    assert detector.backend.input_size == (192, 256)
    output = detector(camvid_frame)
    assert list(output.scores) == ["jsd", "msp", "maxlogit"]
    for score in output.scores.values():
        assert score.shape == (360, 480) and np.isfinite(score).all()


@pytest.mark.parametrize("frame, problem", [
    (np.zeros((64, 64, 3), np.float32), "must be uint8, got dtype float32"),
    (np.zeros((64, 64), np.uint8), r"must be HxWx3 RGB, got shape \(64, 64\)"),
    (np.zeros((64, 64, 4), np.uint8), r"must be HxWx3 RGB, got shape \(64, 64, 4\)"),
    (np.zeros((4, 64, 3), np.uint8), "too small: 64x4 pixels"),
    ([[0, 0, 0]], "must be a numpy array, got list"),
])
def test_bad_frames_raise_value_error_naming_the_issue(detector, frame, problem):
    with pytest.raises(ValueError, match=problem):
        detector(frame)


def write_random_bytes(path, _):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def write_truncated_copy(path, model_path):
    data = model_path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def write_other_torch_file(path, _):
    torch.save({"weights": torch.zeros(3)}, path)


def write_mismatched_state_dict(path, _):
    torch.save({"format": CHECKPOINT_FORMAT, "model": "efficientnet_lite0_swiftnet",
                "num_classes": 11, "class_names": ["c"] * 11, "input_size": [360, 480],
                "state_dict": {"bogus": torch.zeros(1)}}, path)


@pytest.mark.parametrize("write",
                         [write_random_bytes, write_truncated_copy, write_other_torch_file,
                          write_mismatched_state_dict])
def test_corrupt_checkpoint_raises_checkpoint_error_naming_the_file(tmp_path, model_path, write):
    path = tmp_path / "broken.pt"
    write(path, model_path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        Detector.from_model(path)


def test_missing_checkpoint_is_named(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(CheckpointError, match="checkpoint not found: " + re.escape(str(path))):
        Detector.from_model(path)
