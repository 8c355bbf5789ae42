"""Backends behind one interface.

Parity with torch on real CamVid frames, model-file handling, errors, and the ``auto``
fallback order.

Parity runs for every backend present on the machine; GPU/TensorRT cases skip with a reason.
"""

import logging

import numpy as np
import pytest
import torch

from _fixtures_backends import SMALL_SIZE, agreement_and_max_diff
from dense_ood_ros.backends import (AUTO_ORDER, BACKEND_NAMES, BACKENDS, make_backend,
                                    select_backend)
from dense_ood_ros.backends.onnxruntime_backend import select_providers
from dense_ood_ros.detector import Detector
from dense_ood_ros.onnx_graph import ModelFileError

torch.set_num_threads(1)


def _has_tensorrt_gpu():
    return BACKENDS["tensorrt"].unavailable_reason() is None


def _has_onnxruntime_gpu():
    return BACKENDS["onnxruntime"].unavailable_reason(device="cuda") is None


@pytest.fixture(scope="module")
def torch_small(checkpoint):
    return make_backend("torch", checkpoint, input_size=SMALL_SIZE)


# -------------------------------------------------------------------------- parity

@pytest.mark.parametrize("size", [SMALL_SIZE, (360, 480)], ids=["128x160", "360x480"])
def test_onnxruntime_cpu_matches_torch(checkpoint, cache_dir, camvid_frames, size,
                                       record_property):
    reference = make_backend("torch", checkpoint, input_size=size)
    backend = make_backend("onnxruntime", checkpoint, input_size=size, device="cpu", threads=1,
                           cache_dir=cache_dir)
    frames = camvid_frames if size == SMALL_SIZE else camvid_frames[:1]
    agreement, max_diff = agreement_and_max_diff(reference, backend, frames)
    record_property("label_agreement", agreement)
    record_property("max_abs_score_diff", max_diff)
    print(f"onnxruntime cpu {size}: label agreement "
          f"{agreement:.5f}, max |score diff| {max_diff:.2e}")
    assert agreement >= 0.995
    assert max_diff <= 1e-3


@pytest.mark.skipif(not _has_onnxruntime_gpu(),
                    reason="onnxruntime has no CUDAExecutionProvider here")
def test_onnxruntime_gpu_matches_torch(torch_small, small_onnx, camvid_frames, record_property):
    backend = make_backend("onnxruntime", small_onnx, device="cuda")
    agreement, max_diff = agreement_and_max_diff(torch_small, backend, camvid_frames)
    record_property("max_abs_score_diff", max_diff)
    assert agreement >= 0.995 and max_diff <= 1e-3


@pytest.mark.skipif(not _has_tensorrt_gpu(),
                    reason="needs the tensorrt package and a CUDA GPU (none here)")
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("fp16", None)])
def test_tensorrt_matches_torch(torch_small, small_onnx, cache_dir, camvid_frames, precision,
                                tolerance, record_property):
    statuses = []
    backend = make_backend("tensorrt", small_onnx, precision=precision, cache_dir=cache_dir,
                           status=statuses.append)
    assert backend.precision == precision and backend.input_size == SMALL_SIZE
    assert any("building" in s for s in statuses)
    agreement, max_diff = agreement_and_max_diff(torch_small, backend, camvid_frames)
    record_property("max_abs_score_diff", max_diff)
    print(f"tensorrt {precision}: label agreement "
          f"{agreement:.5f}, max |score diff| {max_diff:.2e}")
    assert agreement >= 0.995
    if tolerance is not None:
        assert max_diff <= tolerance
    statuses.clear()
    make_backend("tensorrt", small_onnx, precision=precision, cache_dir=cache_dir,
                 status=statuses.append)
    assert not any("building" in s for s in statuses)  # the cached engine is reused


@pytest.mark.skipif(not _has_tensorrt_gpu(),
                    reason="needs the tensorrt package and a CUDA GPU (none here)")
def test_tensorrt_int8_from_camvid_frames(torch_small, small_onnx, cache_dir, camvid_dir,
                                          camvid_frames, record_property):
    from dense_ood_ros.backends.calibration import CalibrationSettings

    calibration = CalibrationSettings(camvid_dir / "train", count=16, method="minmax")
    backend = make_backend("tensorrt", small_onnx, precision="int8", cache_dir=cache_dir,
                           calibration=calibration)
    agreement, max_diff = agreement_and_max_diff(torch_small, backend, camvid_frames)
    record_property("label_agreement", agreement)
    record_property("max_abs_score_diff", max_diff)
    print(f"tensorrt int8: label agreement {agreement:.5f}, max |score diff| {max_diff:.2e}")
    assert list(cache_dir.glob("engines/*.calib"))
    # The node can open the prebuilt INT8 engine without calibration settings.
    assert make_backend("tensorrt", small_onnx, precision="int8",
                        cache_dir=cache_dir).precision == "int8"


# -------------------------------------------------------------------------- model files and errors

def test_onnx_file_directly_takes_input_size_from_metadata(small_onnx, torch_small, camvid_frames):
    backend = make_backend("onnxruntime", small_onnx, device="cpu", threads=1)
    assert backend.input_size == SMALL_SIZE and backend.score_names == ("jsd",)
    assert backend.class_names == torch_small.class_names
    output = Detector(backend)(camvid_frames[0])
    assert output.labels.shape == (360, 480) and output.score.shape == (360, 480)
    assert "CPU" in backend.describe()


def test_request_that_the_onnx_file_cannot_serve_is_refused(small_onnx):
    with pytest.raises(ValueError, match=r"computes scores \['jsd'\]"):
        make_backend("onnxruntime", small_onnx, score_names=("msp",))
    with pytest.raises(ValueError, match="fixed input size"):
        make_backend("onnxruntime", small_onnx, input_size=(360, 480))


def test_bad_names_and_files_give_clear_errors(small_onnx, tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        make_backend("tensorflow", small_onnx)
    with pytest.raises(ValueError, match=r"torch backend takes a \.pt file"):
        make_backend("torch", small_onnx)
    with pytest.raises(ValueError,
                       match="precision 'fp16' is not available on the onnxruntime backend"):
        make_backend("onnxruntime", small_onnx, precision="fp16")
    with pytest.raises(ValueError, match="the torch backend has no option 'calibration'"):
        make_backend("torch", small_onnx.with_suffix(".pt"), calibration=object())
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(small_onnx.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt.onnx"):
        make_backend("onnxruntime", corrupt)
    assert set(BACKEND_NAMES) == {"auto", "torch", "onnxruntime", "tensorrt"}


def test_labels_only_backend_returns_no_score_channels(checkpoint, cache_dir):
    backend = make_backend("onnxruntime", checkpoint, input_size=(64, 96), labels_only=True,
                           cache_dir=cache_dir, threads=1)
    labels, scores = backend.infer(np.zeros((1, 64, 96, 3), np.uint8))
    assert (backend.score_names == () and labels.shape == (1, 64, 96)
            and scores.shape == (1, 0, 64, 96))


def test_provider_selection():
    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("cpu", gpu) == ["CPUExecutionProvider"]
    assert select_providers("auto", cpu_only) == ["CPUExecutionProvider"]
    assert select_providers("auto", gpu) == gpu
    assert select_providers("cuda", gpu[1:]) == gpu[1:]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        select_providers("cuda", cpu_only)
    with pytest.raises(ValueError, match="unknown onnxruntime device"):
        select_providers("gpu", gpu)


# -------------------------------------------------------------------------- auto

class _Fake:
    def __init__(self, candidate):
        self.name, self.options = candidate.backend, dict(candidate.options)

    def describe(self):
        return f"fake {self.name} {self.options}"


def _patch_probes(monkeypatch, **reasons):
    """Make each auto candidate unavailable for ``reasons[label]`` (labels with "_" for "-")."""
    def probe(name):
        def unavailable_reason(cls, device=None, **options):
            label = (f"onnxruntime_{'gpu' if device == 'cuda' else 'cpu'}" if name == "onnxruntime"
                     else name)
            return reasons.get(label)
        return classmethod(unavailable_reason)

    for name, cls in BACKENDS.items():
        monkeypatch.setattr(cls, "unavailable_reason", probe(name))


def test_auto_prefers_tensorrt_then_onnxruntime_gpu_then_cpu_then_torch(monkeypatch):
    assert [c.label for c in AUTO_ORDER] == ["tensorrt", "onnxruntime-gpu", "onnxruntime-cpu",
                                             "torch"]
    _patch_probes(monkeypatch)
    assert select_backend("m.pt", _Fake).name == "tensorrt"
    _patch_probes(monkeypatch, tensorrt="no tensorrt")
    assert select_backend("m.pt", _Fake).options == {"device": "cuda"}
    _patch_probes(monkeypatch, tensorrt="no tensorrt", onnxruntime_gpu="no CUDA provider")
    assert select_backend("m.pt", _Fake).options == {"device": "cpu"}
    _patch_probes(monkeypatch, tensorrt="x", onnxruntime_gpu="x", onnxruntime_cpu="x")
    assert select_backend("m.pt", _Fake).name == "torch"


def test_auto_falls_back_when_a_backend_fails_to_start_and_logs_why(monkeypatch):
    _patch_probes(monkeypatch, tensorrt="the tensorrt Python package is not installed")
    messages = []

    def build(candidate):
        if candidate.options.get("device") == "cuda":
            raise RuntimeError("CUDA driver too old")
        return _Fake(candidate)

    backend = select_backend("m.pt", build, messages.append)
    assert (backend.name, backend.options) == ("onnxruntime", {"device": "cpu"})
    assert "skipping tensorrt: the tensorrt Python package is not installed" in messages[0]
    assert "onnxruntime-gpu: failed to start: RuntimeError: CUDA driver too old" in messages[1]
    assert "using onnxruntime-cpu" in messages[2]


def test_auto_names_every_reason_when_nothing_works(monkeypatch):
    _patch_probes(monkeypatch, tensorrt="no tensorrt", onnxruntime_gpu="no gpu",
                  onnxruntime_cpu="no ort")
    with pytest.raises(RuntimeError,
                       match=r"no backend can run m\.onnx.*torch: it cannot run a \.onnx file"):
        select_backend("m.onnx", _Fake, lambda message: None)


def test_auto_hands_each_candidate_only_the_options_it_takes(monkeypatch, checkpoint):
    _patch_probes(monkeypatch, tensorrt="no tensorrt", onnxruntime_gpu="no gpu")
    received = {}

    def from_model(cls, model_path, request, **options):
        received[cls.name] = options
        raise RuntimeError("stop here")

    for cls in BACKENDS.values():
        monkeypatch.setattr(cls, "from_model", classmethod(from_model))
    with pytest.raises(RuntimeError, match="no backend can run"):
        make_backend("auto", checkpoint, threads=3, precision="fp16", device="cuda")
    assert received == {"onnxruntime": {"device": "cpu", "threads": 3},
                        "torch": {"device": "cpu", "threads": 3}}


def test_auto_on_this_machine_runs_and_says_why(checkpoint, cache_dir, caplog):
    caplog.set_level(logging.INFO)
    backend = make_backend("auto", checkpoint, input_size=(64, 96), cache_dir=cache_dir, threads=1)
    expected = "tensorrt" if _has_tensorrt_gpu() else "onnxruntime"
    assert backend.name == expected
    assert "backend auto: using" in caplog.text
    if not _has_tensorrt_gpu():
        assert "backend auto: skipping tensorrt" in caplog.text
