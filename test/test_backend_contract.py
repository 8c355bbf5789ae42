"""What every registered backend promises, as one test class reused per backend.

In the manner of segmentation_models.pytorch's shared model tests: its registry entry, the
model files it refuses, and outputs of the declared types and shapes for a full and a
labels-only graph.

A backend that cannot run here (no GPU, package missing) is skipped with its own reason.
"""

import os

import numpy as np
import pytest

from _fixtures_backends import SMALL_SIZE
from dense_ood_ros.backends import BACKENDS, Backend, make_backend
from dense_ood_ros.preprocessing import resize_frame


class BackendContract:
    """The shared tests; a subclass names the backend and the options it runs with here."""

    name: str
    options: dict = {}

    def _make(self, checkpoint, cache_dir, **request):
        reason = BACKENDS[self.name].unavailable_reason(**self.options)
        if reason is not None:
            pytest.skip(f"{self.name}: {reason}")
        return make_backend(self.name, checkpoint, input_size=SMALL_SIZE, cache_dir=cache_dir,
                            **self.options, **request)

    def test_registry_entry_is_complete(self):
        cls = BACKENDS[self.name]
        assert issubclass(cls, Backend) and cls.name == self.name
        assert ".pt" in cls.suffixes and all(suffix.startswith(".") for suffix in cls.suffixes)
        assert set(self.options) <= set(cls.options)

    def test_a_file_it_cannot_run_is_refused_by_name(self, tmp_path):
        text = tmp_path / "notes.txt"
        text.write_text("not a model")
        with pytest.raises(ValueError, match=rf"the {self.name} backend takes a .*notes\.txt"):
            make_backend(self.name, text, **self.options)

    def test_outputs_have_the_declared_types_and_shapes(self, checkpoint, cache_dir,
                                                        camvid_frames):
        backend = self._make(checkpoint, cache_dir, score_names=("jsd", "msp"))
        assert backend.name == self.name and tuple(backend.input_size) == SMALL_SIZE
        assert tuple(backend.score_names) == ("jsd", "msp") and len(backend.class_names) == 11
        batch = np.ascontiguousarray(resize_frame(camvid_frames[0], SMALL_SIZE)[None])
        labels, scores = backend.infer(batch)
        assert labels.dtype == np.uint8 and labels.shape == (1, *SMALL_SIZE)
        assert scores.dtype == np.float32 and scores.shape == (1, 2, *SMALL_SIZE)
        assert labels.max() < len(backend.class_names) and np.isfinite(scores).all()
        assert self.name in backend.describe()

    def test_labels_only_graph_returns_an_empty_scores_array(self, checkpoint, cache_dir):
        backend = self._make(checkpoint, cache_dir, labels_only=True)
        labels, scores = backend.infer(np.zeros((1, *SMALL_SIZE, 3), np.uint8))
        assert tuple(backend.score_names) == ()
        assert labels.shape == (1, *SMALL_SIZE) and scores.shape == (1, 0, *SMALL_SIZE)


class TestTorch(BackendContract):
    name = "torch"
    options = {"device": "cpu"}


class TestOnnxRuntimeCpu(BackendContract):
    name = "onnxruntime"
    options = {"device": "cpu", "threads": 1}


@pytest.mark.skipif(os.environ.get("DENSE_OOD_OPENVINO_TEST_PROCESS") != "1",
                    reason="loads OpenVINO: runs in its own process "
                           "(test_openvino.py::test_openvino_tests_in_their_own_process)")
class TestOpenVino(BackendContract):
    name = "openvino"
    options = {"precision": "fp32", "threads": 1}


@pytest.mark.gpu
class TestTorchCudaFp16(BackendContract):
    name = "torch"
    options = {"device": "cuda", "precision": "fp16"}


@pytest.mark.gpu
class TestOnnxRuntimeGpu(BackendContract):
    name = "onnxruntime"
    options = {"device": "cuda"}


@pytest.mark.gpu
class TestTensorRT(BackendContract):
    name = "tensorrt"
    options = {"precision": "fp16"}


def test_every_registered_backend_has_a_contract_test():
    tested = {cls.name for cls in BackendContract.__subclasses__()}
    assert tested == set(BACKENDS)
