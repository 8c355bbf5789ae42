"""Score smoothing declared by a model file: in the graph, the same on every backend."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from dense_ood_ros.backends import make_backend
from dense_ood_ros.checkpoint import (CheckpointError, read_checkpoint, score_smoothing,
                                      set_score_smoothing)
from dense_ood_ros.graph import GaussianSmoothing
from dense_ood_ros.preprocessing import resize_frame


def test_smoothing_keeps_constants_and_averages_noise():
    smooth = GaussianSmoothing(3.0)
    constant = torch.full((2, 3, 30, 40), 0.7)
    assert torch.allclose(smooth(constant), constant, atol=1e-6)  # borders renormalised
    noise = torch.rand(1, 1, 90, 120, generator=torch.Generator().manual_seed(0))
    smoothed = smooth(noise)
    assert smoothed.std() < noise.std() / 4
    assert abs(smoothed.mean() - noise.mean()) < 0.01
    spike = torch.zeros(1, 1, 41, 41)
    spike[0, 0, 20, 20] = 1.0
    response = smooth(spike)[0, 0]
    assert math.isclose(response.sum().item(), 1.0, rel_tol=1e-5)
    assert torch.allclose(response, response.T) and response[20, 20] == response.max()


@pytest.fixture(scope="module")
def smoothed(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("smoothed") / "smoothed.pt"
    set_score_smoothing(checkpoint, path, 3.0)
    return path


def test_the_model_file_carries_the_smoothing_and_the_same_weights(checkpoint, smoothed):
    before, after = read_checkpoint(checkpoint), read_checkpoint(smoothed)
    assert score_smoothing(before) == 0.0 and score_smoothing(after) == 3.0
    assert before["state_dict"].keys() == after["state_dict"].keys()
    assert all(torch.equal(before["state_dict"][k], v) for k, v in after["state_dict"].items())


@pytest.mark.parametrize("bad", [-1.0, 17.0, float("nan"), True, "3"])
def test_bad_smoothing_values_are_refused_naming_the_field(checkpoint, tmp_path, bad):
    payload = read_checkpoint(checkpoint)
    path = tmp_path / "bad.pt"
    torch.save({**payload, "score_smoothing": bad}, path)
    with pytest.raises(CheckpointError, match="score_smoothing"):
        read_checkpoint(path)


def test_torch_and_onnxruntime_smooth_alike(checkpoint, smoothed, camvid_frames, cache_dir):
    """Labels are unchanged; the scores are smoothed, identically on both backends."""
    plain = make_backend("torch", checkpoint)
    torch_smooth = make_backend("torch", smoothed)
    ort_smooth = make_backend("onnxruntime", smoothed, device="cpu", cache_dir=cache_dir)
    for frame in camvid_frames:
        batch = np.ascontiguousarray(resize_frame(frame, plain.input_size)[None])
        labels, scores = plain.infer(batch)
        slabels, sscores = torch_smooth.infer(batch)
        olabels, oscores = ort_smooth.infer(batch)
        assert np.array_equal(labels, slabels)
        assert (slabels == olabels).mean() > 0.999  # float rounding flips near-ties only
        assert np.abs(sscores - oscores).max() < 1e-4
        # smoother: neighbouring pixels differ less
        assert (np.abs(np.diff(sscores[0, 0], axis=1)).mean()
                < 0.5 * np.abs(np.diff(scores[0, 0], axis=1)).mean())


def test_command_writes_the_smoothed_copy(checkpoint, tmp_path):
    out = tmp_path / "s2.pt"
    result = subprocess.run([sys.executable, "-m", "training.set_score_smoothing", "--model",
                             str(checkpoint), "--sigma", "2", "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert score_smoothing(read_checkpoint(out)) == 2.0
    bad = subprocess.run([sys.executable, "-m", "training.set_score_smoothing", "--model",
                          str(checkpoint), "--sigma", "99", "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "score smoothing must be in" in bad.stderr
