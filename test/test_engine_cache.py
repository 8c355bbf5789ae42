"""Engine cache keys, stale/corrupt artifacts, the TensorRT cache logic with a fake TensorRT.

And INT8 calibration batches from real CamVid frames. None of it needs TensorRT or a GPU.
"""

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dense_ood_ros import cache
from dense_ood_ros.backends import tensorrt_backend
from dense_ood_ros.backends.calibration import (CalibrationBatches, CalibrationSettings,
                                                calibration_images, make_calibrator)
from dense_ood_ros.backends.tensorrt_backend import engine_key
from dense_ood_ros.cache import read_record, record_path, stale_reason
from dense_ood_ros.io import file_sha256, read_rgb
from dense_ood_ros.onnx_graph import ModelFileError
from dense_ood_ros.preprocessing import resize_frame

DEMO_FRAMES = Path(__file__).resolve().parents[1] / "demo"
KEY = dict(onnx_sha256="ab" * 32, precision="fp16", input_shape=(1, 360, 480, 3),
           gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", tensorrt_version="10.3.0")


# --------------------------------------------------------------------- keys and records

def test_engine_key_holds_everything_an_engine_depends_on():
    key = engine_key(**KEY)
    assert key == {"onnx_sha256": "ab" * 32, "precision": "fp16", "input_shape": [1, 360, 480, 3],
                   "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                   "tensorrt": "10.3.0", "build": "typed", "graph": "fp16"}
    flags = engine_key(**KEY, build="flags")
    assert flags != key and (flags["build"], flags["graph"]) == ("flags", "fp32")
    assert engine_key(**{**KEY, "precision": "int8"})["graph"] == "int8-qdq"
    with pytest.raises(ValueError, match="unknown TensorRT build 'weak'"):
        engine_key(**KEY, build="weak")
    for field, other in [("onnx_sha256", "cd" * 32), ("precision", "int8"),
                         ("input_shape", (1, 720, 1280, 3)), ("gpu_name", "NVIDIA A100"),
                         ("compute_capability", "8.0"), ("tensorrt_version", "10.4.0")]:
        assert engine_key(**{**KEY, field: other}) != key, field
    assert engine_key(**KEY, calibration_id="c1")["calibration_id"] == "c1"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        engine_key(**{**KEY, "precision": "fp8"})


def test_engine_path_names_model_size_and_precision(tmp_path):
    path = tensorrt_backend.cached_engine_path(tmp_path, "/x/model.onnx", "ab" * 32, "int8",
                                               (720, 1280))
    assert path == tmp_path / "engines" / f"model-{'ab' * 6}-720x1280.int8.engine"


def test_stale_reason_covers_missing_unrecorded_mismatched_and_corrupt(tmp_path):
    key = engine_key(**KEY)
    artifact = tmp_path / "m.engine"
    assert "does not exist" in stale_reason(artifact, key)
    artifact.write_bytes(b"serialized engine")
    assert "missing" in stale_reason(artifact, key)
    record_path(artifact).write_text("[1, 2")
    assert "unreadable" in stale_reason(artifact, key)
    cache.store(artifact, lambda tmp: tmp.write_bytes(b"serialized engine"), key, {"note": "x"})
    assert stale_reason(artifact, key) is None
    assert read_record(artifact)["note"] == "x"
    reason = stale_reason(artifact, {**key, "gpu": "NVIDIA A100", "tensorrt": "10.4.0"})
    assert ("gpu: cached 'NVIDIA H100 80GB HBM3', needed 'NVIDIA A100'" in reason
            and "tensorrt" in reason)
    artifact.write_bytes(b"serialized engine, truncated")
    assert "corrupt" in stale_reason(artifact, key)


def test_a_key_without_calibration_id_accepts_any_calibration(tmp_path):
    artifact = tmp_path / "m.engine"
    cache.store(artifact, lambda tmp: tmp.write_bytes(b"e"),
                engine_key(**KEY, calibration_id="c1"))
    assert stale_reason(artifact, engine_key(**KEY)) is None
    assert "calibration_id" in stale_reason(artifact, engine_key(**KEY, calibration_id="c2"))


def test_ensure_builds_once_and_a_failed_build_leaves_nothing_behind(tmp_path):
    artifact, key, builds = tmp_path / "a" / "m.bin", {"v": 1}, []

    def write(tmp):
        builds.append(tmp)
        tmp.write_bytes(b"artifact")

    statuses = []
    assert cache.ensure(artifact, key, write, "thing", statuses.append) == artifact
    assert cache.ensure(artifact, key, write, "thing", statuses.append) == artifact
    assert len(builds) == 1 and len(statuses) == 1 and "building thing" in statuses[0]

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        cache.ensure(artifact, {"v": 2}, failing, "thing")
    # record gone, no temp files
    assert sorted(p.name for p in artifact.parent.iterdir()) == ["m.bin"]
    assert "missing" in stale_reason(artifact, {"v": 2})


# --------------------------------------------------------------------- TensorRT cache logic, faked

class _FakeCalibrator:
    def __init__(self, batches, method, cache_path, status=None, device_index=0):
        self.batches, self.method, self.cache_path = batches, method, cache_path
        self.shapes = [batch.shape for batch in batches]
        self.device_index = device_index


@pytest.fixture
def fake_trt(monkeypatch):
    """Replace TensorRT at its two seams: the environment key and the builder."""
    env = SimpleNamespace(gpu="NVIDIA H100 80GB HBM3", capability="9.0", version="10.3.0",
                          builds=[])

    def current_key(onnx_sha256, precision, input_size, calibration_id=None, device_index=0,
                    build="typed"):
        return engine_key(onnx_sha256, precision, (1, *input_size, 3), env.gpu, env.capability,
                          env.version, calibration_id, build)

    def build(onnx_path, precision, input_size, calibrator=None, workspace_gb=4.0, status=None,
              device_index=0, build="typed"):
        env.builds.append(SimpleNamespace(precision=precision, input_size=input_size,
                                          calibrator=calibrator, graph=Path(onnx_path),
                                          build=build))
        if status is not None:
            status("building TensorRT engine: fake phase (1/1)")
        return f"{precision} engine for {env.gpu}, TensorRT {env.version}".encode()

    monkeypatch.setattr(tensorrt_backend, "current_engine_key", current_key)
    monkeypatch.setattr(tensorrt_backend, "build_engine", build)
    monkeypatch.setattr(tensorrt_backend, "make_calibrator", _FakeCalibrator)
    return env


def test_engine_is_built_once_then_rebuilt_for_another_gpu_or_tensorrt(fake_trt, small_onnx,
                                                                       tmp_path, caplog):
    caplog.set_level(logging.INFO)
    statuses = []
    engine = tensorrt_backend.ensure_engine(small_onnx, precision="fp16", cache_dir=tmp_path,
                                            status=statuses.append)
    assert engine.parent == tmp_path / "engines" and len(fake_trt.builds) == 1
    assert any("building TensorRT fp16 engine" in s for s in statuses)
    assert any("fake phase (1/1)" in s for s in statuses)
    record = read_record(engine)
    assert record["key"]["input_shape"] == [1, 128, 160, 3] and record["score_names"] == ["jsd"]
    assert record["class_names"][0] == "sky" and record["onnx"] == str(small_onnx.resolve())

    assert tensorrt_backend.ensure_engine(small_onnx, precision="fp16",
                                          cache_dir=tmp_path) == engine
    assert len(fake_trt.builds) == 1

    fake_trt.gpu, fake_trt.capability = "NVIDIA A100-SXM4-40GB", "8.0"
    caplog.clear()
    assert tensorrt_backend.ensure_engine(small_onnx, precision="fp16",
                                          cache_dir=tmp_path) == engine
    assert len(fake_trt.builds) == 2 and "gpu: cached 'NVIDIA H100 80GB HBM3'" in caplog.text
    assert b"A100" in engine.read_bytes()

    fake_trt.version = "10.4.0"
    tensorrt_backend.ensure_engine(small_onnx, precision="fp16", cache_dir=tmp_path)
    assert len(fake_trt.builds) == 3

    engine.write_bytes(engine.read_bytes()[:10])
    caplog.clear()
    tensorrt_backend.ensure_engine(small_onnx, precision="fp16", cache_dir=tmp_path)
    assert len(fake_trt.builds) == 4 and "corrupt" in caplog.text

    fp32 = tensorrt_backend.ensure_engine(small_onnx, precision="fp32", cache_dir=tmp_path)
    assert fp32 != engine and fp32.name.endswith(".fp32.engine")


def test_engine_request_must_fit_a_fixed_size_onnx(fake_trt, small_onnx, tmp_path):
    with pytest.raises(ValueError, match="fixed input size"):
        tensorrt_backend.ensure_engine(small_onnx, precision="fp16", input_size=(360, 480),
                                       cache_dir=tmp_path)


def test_int8_engine_calibrates_on_real_frames_and_is_reused_without_settings(
        fake_trt, small_onnx, tmp_path, camvid_dir):
    """The ``flags`` build (TensorRT 10): a calibrator reads the frames during the build."""
    with pytest.raises(ValueError, match="--calib-dir"):
        tensorrt_backend.ensure_engine(small_onnx, precision="int8", cache_dir=tmp_path,
                                       build="flags")
    settings = CalibrationSettings(camvid_dir / "train", count=3, method="minmax")
    engine = tensorrt_backend.ensure_engine(small_onnx, precision="int8", calibration=settings,
                                            cache_dir=tmp_path, device_index=1, build="flags")
    (build,) = fake_trt.builds
    assert (build.calibrator.method == "minmax"
            and build.calibrator.shapes == [(1, 128, 160, 3)] * 3)
    assert build.calibrator.device_index == 1  # its buffer goes to the engine's GPU
    calibration_id = read_record(engine)["key"]["calibration_id"]
    assert build.calibrator.cache_path == tensorrt_backend.calibration_cache_path(
        engine, file_sha256(small_onnx), calibration_id)

    assert tensorrt_backend.ensure_engine(small_onnx, precision="int8", cache_dir=tmp_path,
                                          build="flags") == engine
    # the node opens the prebuilt engine without calibration settings
    assert len(fake_trt.builds) == 1

    fake_trt.version = "10.4.0"  # stale: rebuilt with the calibration data its record names
    tensorrt_backend.ensure_engine(small_onnx, precision="int8", cache_dir=tmp_path,
                                   build="flags")
    assert len(fake_trt.builds) == 2 and fake_trt.builds[1].calibrator.method == "minmax"


def test_typed_engines_are_built_from_the_fp16_and_qdq_graphs(fake_trt, small_onnx, tmp_path,
                                                              camvid_dir):
    """Each precision builds from its own graph; the record and the key name graph and build."""
    from dense_ood_ros.quantization import onnx_metadata

    settings = CalibrationSettings(camvid_dir / "train", count=3, method="minmax")
    engines = {precision: tensorrt_backend.ensure_engine(
        small_onnx, precision=precision, calibration=settings, cache_dir=tmp_path)
        for precision in ("fp32", "fp16", "int8")}
    assert len(set(engines.values())) == 3
    graphs = {build.precision: build.graph for build in fake_trt.builds}
    assert graphs["fp32"] == small_onnx
    assert onnx_metadata(graphs["fp16"])["precision"] == "fp16"
    qdq = onnx_metadata(graphs["int8"])
    assert (qdq["precision"], qdq["quant_recipe"]) == ("int8", "tensorrt")
    for precision, engine in engines.items():
        record = read_record(engine)
        assert record["key"]["build"] == "typed"
        assert record["graph_onnx"] == str(graphs[precision].resolve())
        assert record["key"]["onnx_sha256"] == file_sha256(small_onnx)
    assert read_record(engines["int8"])["key"]["calibration_id"] == qdq["calibration_id"]
    assert all(build.calibrator is None and build.build == "typed" for build in fake_trt.builds)
    # the flags build of the same precision is another engine
    flags = tensorrt_backend.ensure_engine(small_onnx, precision="fp16", cache_dir=tmp_path,
                                           build="flags")
    assert flags != engines["fp16"] and flags.name.endswith(".fp16.flags.engine")
    assert fake_trt.builds[-1].graph == small_onnx
    # a prebuilt typed INT8 engine opens without calibration settings
    assert tensorrt_backend.ensure_engine(small_onnx, precision="int8",
                                          cache_dir=tmp_path) == engines["int8"]
    assert len(fake_trt.builds) == 4


def test_calibration_table_of_a_retrained_model_is_not_reused(fake_trt, small_onnx, tmp_path):
    """An explicit --engine path keeps its name; the table's name follows the ONNX file."""
    import onnx

    settings = CalibrationSettings(DEMO_FRAMES, count=2)
    engine = tmp_path / "vehicle.int8.engine"
    retrained = tmp_path / "model.onnx"
    tables = []
    for doc in ("first training", "retrained"):
        model = onnx.load(str(small_onnx))
        model.doc_string = doc
        onnx.save(model, str(retrained))
        tensorrt_backend.ensure_engine(retrained, engine, "int8", calibration=settings,
                                       build="flags")
        table = fake_trt.builds[-1].calibrator.cache_path
        assert table.parent == tmp_path and table.name.startswith(engine.name)
        assert file_sha256(retrained)[:12] in table.name and table.suffix == ".calib"
        tables.append(table)
    assert len(fake_trt.builds) == 2 and tables[0] != tables[1]
    other_data = [tensorrt_backend.calibration_cache_path(engine, "ab" * 32, data_id)
                  for data_id in ("cd" * 32, "ef" * 32)]
    assert other_data[0] != other_data[1]


def test_engine_file_given_directly_is_checked_and_rebuilt_from_its_onnx(fake_trt, small_onnx,
                                                                         tmp_path):
    onnx_copy = tmp_path / "model.onnx"
    onnx_copy.write_bytes(small_onnx.read_bytes())
    engine = tensorrt_backend.ensure_engine(onnx_copy, tmp_path / "model.engine", precision="fp16")
    assert tensorrt_backend.check_engine_file(engine) == engine and len(fake_trt.builds) == 1

    fake_trt.gpu = "NVIDIA L4"
    assert tensorrt_backend.check_engine_file(engine) == engine
    assert len(fake_trt.builds) == 2 and b"L4" in engine.read_bytes()

    fake_trt.gpu = "NVIDIA T4"
    onnx_copy.unlink()
    with pytest.raises(ModelFileError, match="source ONNX .* is gone or changed"):
        tensorrt_backend.check_engine_file(engine)
    record_path(engine).unlink()
    with pytest.raises(ModelFileError, match="no usable record"):
        tensorrt_backend.check_engine_file(engine)


# --------------------------------------------------------------------- builder settings, faked

def _fake_tensorrt(builds, version="10.3.0"):
    """Fake the part of the TensorRT Python API that the builder and calibrator use.

    ``version`` 10.x has the FP16 / INT8 builder flags and the INT8 calibrators; 11.x has
    neither (weak typing removed). A builder config starts with TF32 on, as TensorRT's does;
    each build appends its config, with the network's creation flags, to ``builds``.
    """
    class Config:
        def __init__(self):
            self.flags = {"TF32"}

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool, size):
            pass

        def add_optimization_profile(self, profile):
            pass

        def set_calibration_profile(self, profile):
            pass

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return SimpleNamespace(creation_flags=flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return SimpleNamespace(set_shape=lambda name, low, optimum, high: None)

        def build_serialized_network(self, network, config):
            config.network_flags = network.creation_flags
            builds.append(config)
            return b"engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    class ProgressMonitor:
        def __init__(self):
            pass

    class Calibrator:
        def __init__(self):
            pass

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            pass

    module = SimpleNamespace(
        __version__=version, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        IProgressMonitor=ProgressMonitor, MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1),
        BuilderFlag=SimpleNamespace(TF32="TF32"))
    if version.startswith("10."):
        module.BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32")
        module.IInt8EntropyCalibrator2 = module.IInt8MinMaxCalibrator = Calibrator
    return module


STRONGLY_TYPED = 1 << 1  # the creation flag of the fakes' STRONGLY_TYPED (= 1)


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_typed_builds_are_strongly_typed_without_precision_flags_on_10_and_11(
        small_onnx, version, precision):
    """The graph carries the precision: no FP16 / INT8 flag, no calibrator, TF32 off."""
    builds = []
    tensorrt_backend._build_engine(_fake_tensorrt(builds, version), small_onnx, precision,
                                   (128, 160), None, 1.0, lambda message: None, "typed")
    (config,) = builds
    assert config.flags == set() and config.network_flags == STRONGLY_TYPED


@pytest.mark.parametrize("precision, flags", [("fp32", set()), ("fp16", {"TF32", "FP16"}),
                                              ("int8", {"TF32", "FP16", "INT8"})])
def test_flags_builds_on_tensorrt_10_set_precision_flags_and_fp32_has_no_tf32(
        small_onnx, precision, flags):
    builds = []
    calibrator = SimpleNamespace(get_batch_size=lambda: 1)
    tensorrt_backend._build_engine(_fake_tensorrt(builds), small_onnx, precision, (128, 160),
                                   calibrator, 1.0, lambda message: None, "flags")
    (config,) = builds
    assert config.flags == flags and config.network_flags == 0


def test_flags_builds_of_reduced_precision_are_refused_on_tensorrt_11(small_onnx):
    builds = []
    for precision in ("fp16", "int8"):
        with pytest.raises(RuntimeError, match=r"TensorRT 11.4.0 has no FP16/INT8 builder flags"
                                               r".*build 'typed'"):
            tensorrt_backend._build_engine(_fake_tensorrt(builds, "11.4.0"), small_onnx,
                                           precision, (128, 160), None, 1.0, print, "flags")
    tensorrt_backend._build_engine(_fake_tensorrt(builds, "11.4.0"), small_onnx, "fp32",
                                   (128, 160), None, 1.0, print, "flags")
    assert len(builds) == 1 and builds[0].flags == set()


def test_calibrator_buffer_is_allocated_on_the_engines_gpu(monkeypatch, tmp_path):
    allocated, real_empty = [], torch.empty

    def empty(*shape, dtype=None, device=None):
        allocated.append(device)
        return real_empty(*shape, dtype=dtype)

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt([]))
    monkeypatch.setattr(torch, "empty", empty)
    batches = CalibrationBatches([tmp_path / "frame.png"], (32, 48))
    calibrator = make_calibrator(batches, "minmax", tmp_path / "table.calib", device_index=1)
    assert allocated == [torch.device("cuda", 1)]
    assert calibrator.get_batch_size() == 1


# --------------------------------------------------------------------- calibration batches

@pytest.fixture(scope="module")
def train_dir(camvid_dir):
    return camvid_dir / "train"


def test_calibration_batches_are_full_resized_uint8_batches(train_dir):
    paths = calibration_images(train_dir, 5)
    batches = CalibrationBatches(paths, (96, 128), batch_size=2)
    assert len(batches) == 2 and batches.shape == (2, 96, 128, 3)
    produced = list(batches)
    assert len(produced) == 2  # the fifth frame cannot fill a batch and is dropped
    for batch in produced:
        assert (batch.shape == (2, 96, 128, 3) and batch.dtype == np.uint8
                and batch.flags.c_contiguous)
    np.testing.assert_array_equal(produced[1][1], resize_frame(read_rgb(paths[3]), (96, 128)))


def test_calibration_data_id_is_stable_and_tracks_the_data(train_dir):
    def data_id(count, size, method="entropy"):
        return CalibrationBatches(calibration_images(train_dir, count), size).data_id(method)

    assert data_id(4, (96, 128)) == data_id(4, (96, 128))
    assert data_id(4, (96, 128)) != data_id(4, (96, 128), "minmax")
    assert data_id(4, (96, 128)) != data_id(5, (96, 128))
    assert data_id(4, (96, 128)) != data_id(4, (64, 96))


def test_calibration_inputs_are_validated(tmp_path, train_dir):
    with pytest.raises(ValueError, match="not found"):
        calibration_images(tmp_path / "nowhere", 4)
    with pytest.raises(ValueError, match="no images"):
        calibration_images(tmp_path, 4)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        CalibrationBatches(calibration_images(train_dir, 2), (96, 128), batch_size=4)
    with pytest.raises(ValueError, match="unknown INT8 calibrator 'percentile'"):
        CalibrationSettings(train_dir, method="percentile")
    defaults = CalibrationSettings(train_dir)
    assert (defaults.method, defaults.count, defaults.batch_size) == ("entropy", 256, 1)
