"""Backends behind one interface.

Parity with torch on real CamVid frames, model-file handling, errors, and the ``auto``
fallback order.

Parity runs for every backend present on the machine; GPU/TensorRT cases skip with a reason.
"""

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _fixtures_backends import SMALL_SIZE, agreement_and_max_diff
from dense_ood_ros.backends import (AUTO_ORDER, BACKEND_NAMES, BACKENDS, availability,
                                    make_backend, select_backend)
from dense_ood_ros.backends.onnxruntime_backend import (GPU_BUILD_HINT, OnnxRuntimeBackend,
                                                        select_providers)
from dense_ood_ros.backends.torch_backend import HalfPrecisionSegmenter
from dense_ood_ros.checkpoint import load_model
from dense_ood_ros.detector import Detector
from dense_ood_ros.graph import InferenceGraph
from dense_ood_ros.io import file_sha256
from dense_ood_ros.onnx_graph import ModelFileError
from dense_ood_ros.preprocessing import resize_frame

torch.set_num_threads(1)

README = Path(__file__).resolve().parents[1] / "README.md"
TENSORRT_EP, CUDA_EP, CPU_EP = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                "CPUExecutionProvider")


def _has_tensorrt_gpu():
    return BACKENDS["tensorrt"].unavailable_reason() is None


def _has_onnxruntime_gpu():
    return BACKENDS["onnxruntime"].unavailable_reason(device="cuda") is None


def _has_torch_cuda():
    return BACKENDS["torch"].unavailable_reason(device="cuda") is None


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


@pytest.mark.gpu
@pytest.mark.skipif(not _has_onnxruntime_gpu(),
                    reason="onnxruntime has no CUDAExecutionProvider here")
def test_onnxruntime_gpu_matches_torch(torch_small, small_onnx, camvid_frames, record_property):
    backend = make_backend("onnxruntime", small_onnx, device="cuda")
    agreement, max_diff = agreement_and_max_diff(torch_small, backend, camvid_frames)
    record_property("max_abs_score_diff", max_diff)
    assert agreement >= 0.995 and max_diff <= 1e-3


@pytest.mark.gpu
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


@pytest.mark.gpu
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


@pytest.mark.gpu
@pytest.mark.skipif(not _has_torch_cuda(), reason="torch sees no CUDA GPU")
def test_torch_cuda_fp16_matches_torch_cpu_fp32(checkpoint, camvid_frames, record_property):
    reference = make_backend("torch", checkpoint, device="cpu")
    backend = make_backend("torch", checkpoint, device="cuda", precision="fp16")
    assert "fp16" in backend.describe()
    agreement, max_diff = agreement_and_max_diff(reference, backend, camvid_frames)
    record_property("label_agreement", agreement)
    record_property("max_abs_score_diff", max_diff)
    print(f"torch cuda fp16 ({backend.describe()}): label agreement "
          f"{agreement:.5f}, max |score diff| {max_diff:.2e}")
    assert agreement >= 0.99 and max_diff <= 1e-2


def test_half_precision_graph_stays_within_the_fp16_bound(checkpoint, camvid_frames):
    """The fp16 torch path's model (half weights, channels_last), run on the CPU here."""
    reference = InferenceGraph(load_model(checkpoint)[0]).eval()
    half = InferenceGraph(HalfPrecisionSegmenter(load_model(checkpoint)[0])
                          .to(memory_format=torch.channels_last)).eval()
    assert next(half.segmenter.parameters()).dtype == torch.float16
    agreement, max_diff = [], 0.0
    with torch.inference_mode():
        for frame in camvid_frames:
            batch = torch.from_numpy(np.ascontiguousarray(resize_frame(frame, SMALL_SIZE)[None]))
            (ref_labels, ref_scores), (labels, scores) = reference(batch), half(batch)
            assert scores.dtype == torch.float32
            agreement.append(float((labels == ref_labels).float().mean()))
            max_diff = max(max_diff, float((scores - ref_scores).abs().max()))
    assert np.mean(agreement) >= 0.99 and max_diff <= 1e-2


def test_torch_fp16_needs_a_cuda_device_and_cuda_needs_a_gpu(checkpoint, monkeypatch):
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA device on the torch "
                                         "backend, but device is 'cpu'"):
        make_backend("torch", checkpoint, precision="fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert BACKENDS["torch"].unavailable_reason(device="cuda") == "torch sees no CUDA GPU"
    assert BACKENDS["torch"].unavailable_reason(device="cpu") is None
    with pytest.raises(RuntimeError, match="torch device 'cuda:1' needs a CUDA GPU"):
        make_backend("torch", checkpoint, device="cuda:1", precision="fp16")


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
                       match="precision 'bf16' is not available on the onnxruntime backend"):
        make_backend("onnxruntime", small_onnx, precision="bf16")
    with pytest.raises(ValueError, match="the torch backend has no option 'calibration'"):
        make_backend("torch", small_onnx.with_suffix(".pt"), calibration=object())
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(small_onnx.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt.onnx"):
        make_backend("onnxruntime", corrupt)
    assert set(BACKEND_NAMES) == {"auto", "torch", "onnxruntime", "openvino", "tensorrt"}


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


def test_the_gpu_build_of_onnxruntime_is_explained_one_way(monkeypatch):
    import onnxruntime

    with pytest.raises(RuntimeError) as refused:
        select_providers("cuda", [CPU_EP])
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CPU_EP])
    reason = BACKENDS["onnxruntime"].unavailable_reason(device="cuda")
    for message in (str(refused.value), reason):
        assert GPU_BUILD_HINT in message
    assert "pip uninstall onnxruntime onnxruntime-gpu" in GPU_BUILD_HINT
    readme = " ".join(README.read_text().split())
    assert "pip uninstall onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in readme


class _RecordingSession:
    """Stands in for onnxruntime.InferenceSession: records what it was asked to start."""

    started = []

    def __init__(self, path, options, providers, provider_options):
        folders = [Path(o["trt_engine_cache_path"]) for o in provider_options if o]
        self.started.append(SimpleNamespace(providers=providers, options=provider_options,
                                            folders_existed=[f.is_dir() for f in folders]))
        self.providers = providers

    def get_providers(self):
        return self.providers

    def get_outputs(self):
        return [SimpleNamespace(name="labels"), SimpleNamespace(name="scores")]


def test_tensorrt_provider_caches_engines_per_onnx_checksum(monkeypatch, small_onnx, tmp_path):
    import onnx
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: [TENSORRT_EP, CUDA_EP, CPU_EP])
    monkeypatch.setattr(onnxruntime, "InferenceSession", _RecordingSession)
    monkeypatch.setattr(_RecordingSession, "started", [])
    cache_dir = tmp_path / "not" / "yet" / "made"
    reexported = tmp_path / "reexported" / small_onnx.name  # same name, other contents
    model = onnx.load(str(small_onnx))
    model.doc_string = "exported again"
    reexported.parent.mkdir()
    onnx.save(model, str(reexported))
    for path in (small_onnx, reexported):
        backend = OnnxRuntimeBackend(path, device="cuda", cache_dir=cache_dir)
        assert backend.providers == [TENSORRT_EP, CUDA_EP, CPU_EP]
    folders = []
    for session, path in zip(_RecordingSession.started, (small_onnx, reexported)):
        assert session.folders_existed == [True]  # made, parents too, before the session
        trt_options, *others = session.options
        assert trt_options["trt_engine_cache_enable"] == "True" and others == [{}, {}]
        folder = Path(trt_options["trt_engine_cache_path"])
        assert folder == cache_dir / "ort-tensorrt" / file_sha256(path)[:16]
        folders.append(folder)
    assert folders[0] != folders[1]


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
            on_gpu = device == "cuda"
            label = {"onnxruntime": f"onnxruntime_{'gpu' if on_gpu else 'cpu'}",
                     "torch": "torch_cuda" if on_gpu else "torch"}.get(name, name)
            return reasons.get(label)
        return classmethod(unavailable_reason)

    for name, cls in BACKENDS.items():
        monkeypatch.setattr(cls, "unavailable_reason", probe(name))

    def openvino_probe(cls, precision):  # openvino_bf16, openvino_int8: off unless named
        return reasons.get(f"openvino_{precision}", "openvino is not part of this test")

    monkeypatch.setattr(BACKENDS["openvino"], "auto_reason", classmethod(openvino_probe))


def test_auto_prefers_tensorrt_then_onnxruntime_gpu_then_torch_cuda_then_the_cpu(monkeypatch):
    assert [c.label for c in AUTO_ORDER] == ["tensorrt", "onnxruntime-gpu", "torch-cuda",
                                             "openvino-bf16", "openvino-int8",
                                             "onnxruntime-cpu", "torch"]
    _patch_probes(monkeypatch)
    assert select_backend("m.pt", _Fake).name == "tensorrt"
    _patch_probes(monkeypatch, tensorrt="no tensorrt")
    assert select_backend("m.pt", _Fake).options == {"device": "cuda"}
    _patch_probes(monkeypatch, tensorrt="no tensorrt", onnxruntime_gpu="no CUDA provider")
    chosen = select_backend("m.pt", _Fake)
    assert (chosen.name, chosen.options) == ("torch", {"device": "cuda", "precision": "fp16"})
    _patch_probes(monkeypatch, tensorrt="x", onnxruntime_gpu="x", torch_cuda="no GPU")
    assert select_backend("m.pt", _Fake).options == {"device": "cpu"}
    _patch_probes(monkeypatch, tensorrt="x", onnxruntime_gpu="x", torch_cuda="x",
                  onnxruntime_cpu="x")
    chosen = select_backend("m.pt", _Fake)
    assert (chosen.name, chosen.options) == ("torch", {"device": "cpu", "precision": "fp32"})


def test_torch_cuda_candidate_here_says_torch_sees_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dict(availability())["torch-cuda"] == "torch sees no CUDA GPU"


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
    assert "torch-cuda: failed to start: RuntimeError: CUDA driver too old" in messages[2]
    assert "skipping openvino-bf16" in messages[3] and "skipping openvino-int8" in messages[4]
    assert "using onnxruntime-cpu" in messages[5]


def test_auto_names_every_reason_when_nothing_works(monkeypatch):
    _patch_probes(monkeypatch, tensorrt="no tensorrt", onnxruntime_gpu="no gpu",
                  torch_cuda="no gpu", onnxruntime_cpu="no ort")
    with pytest.raises(RuntimeError,
                       match=r"no backend can run m\.onnx.*torch: it cannot run a \.onnx file"):
        select_backend("m.onnx", _Fake, lambda message: None)


def test_auto_hands_each_candidate_only_the_options_it_takes(monkeypatch, checkpoint):
    _patch_probes(monkeypatch, tensorrt="no tensorrt", onnxruntime_gpu="no gpu")
    received = []

    def from_model(cls, model_path, request, **options):
        received.append((cls.name, options))
        raise RuntimeError("stop here")

    for cls in BACKENDS.values():
        monkeypatch.setattr(cls, "from_model", classmethod(from_model))
    with pytest.raises(RuntimeError, match="no backend can run"):
        make_backend("auto", checkpoint, threads=3, precision="int8", device="cuda")
    assert received == [("torch", {"device": "cuda", "threads": 3, "precision": "fp16"}),
                        ("onnxruntime", {"device": "cpu", "threads": 3, "precision": "int8"}),
                        ("torch", {"device": "cpu", "threads": 3, "precision": "fp32"})]


def test_auto_on_this_machine_runs_and_says_why(checkpoint, cache_dir, caplog):
    caplog.set_level(logging.INFO)
    backend = make_backend("auto", checkpoint, input_size=(64, 96), cache_dir=cache_dir, threads=1)
    first_available = next(label for label, reason in availability() if reason is None)
    expected = {c.label: c.backend for c in AUTO_ORDER}[first_available]
    assert backend.name == expected
    assert "backend auto: using" in caplog.text
    if not _has_tensorrt_gpu():
        assert "backend auto: skipping tensorrt" in caplog.text
