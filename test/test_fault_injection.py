"""Fault injection (issue 17): corrupt model files and caches; folders and disks refusing writes.

Model files and caches, each: a clear error naming the file, or rebuilt with the reason
reported, as its contract says. Checkpoints (truncated at 25 lengths, a byte flipped at 96
places, fields of the wrong type, weights of another shape; also through the command lines
and the backends), ONNX files (truncated, bytes flipped), TensorRT engines (TensorRT faked:
a cached engine truncated, its record truncated, deleted or lacking a field, an engine
TensorRT cannot deserialize), INT8 calibration tables (truncated, unrecorded, of other data)
and training states.

Writes: a read-only folder (chmod, skipped as root, whom it does not stop; and a file where
the folder should be, which stops root too) and a full disk (the file size limit stops every
writer midway with EFBIG; one write stopped halfway with ENOSPC), for the evaluation report
(every file of it), dense-ood-evaluate and dense-ood-export, ONNX exports, cache artifacts,
checkpoints, training states, images and calibration tables. Each: an OSError naming the
final path (or the command's error message and exit code), nothing under the final name or
the old file intact, no temporary file left.
"""

import errno
import io
import json
import logging
import os
import re
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hostile_files import (VALID_ONNX_METADATA, fail_midway, file_size_limit, leftovers,
                           tiny_onnx)

from dense_ood_ros import cache
from dense_ood_ros import evaluate as evaluate_module
from dense_ood_ros import export as export_module
from dense_ood_ros.backends import make_backend, tensorrt_backend
from dense_ood_ros.backends.calibration import (CalibrationBatches, make_calibrator,
                                                read_calibration_table,
                                                write_calibration_table)
from dense_ood_ros.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, load_model,
                                      read_checkpoint, save_checkpoint)
from dense_ood_ros.evaluate import EXIT_BAD_INPUT, write_results
from dense_ood_ros.evaluation import Evaluation
from dense_ood_ros.io import atomic_write, check_writable_folder, write_rgb
from dense_ood_ros.label_set import description_label_set
from dense_ood_ros.metrics import AnomalyMetrics, SemanticMetrics
from dense_ood_ros.models import build_model
from dense_ood_ros.onnx_graph import ModelFileError, export_onnx, read_onnx_info
from training.common import load_state, save_state

CAMVID_CLASSES = description_label_set("camvid").class_names

MODEL = "efficientnet_lite0_swiftnet"
not_root = pytest.mark.skipif(os.geteuid() == 0,
                              reason="root writes into read-only folders: chmod stops nothing")


def named(path) -> str:
    """Return a regex matching ``path`` literally, for ``pytest.raises(match=...)``."""
    return re.escape(str(path))


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """Save a real checkpoint (untrained weights) at a small input size."""
    path = tmp_path_factory.mktemp("model") / "small.pt"
    torch.manual_seed(0)
    save_checkpoint(path, build_model(MODEL, len(CAMVID_CLASSES), pretrained=False), MODEL,
                    CAMVID_CLASSES, (64, 96), {"note": "fault injection"})
    return path


@pytest.fixture(scope="module")
def small_payload() -> dict:
    """Return a checkpoint dict with a small state dict: cheap to corrupt many copies of."""
    return {"format": CHECKPOINT_FORMAT, "model": MODEL, "num_classes": 11,
            "class_names": list(CAMVID_CLASSES), "input_size": [64, 96],
            "state_dict": {"weight": torch.arange(1000.0), "bias": torch.ones(3, 5)},
            "meta": {"note": "x"}}


def _saved(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _same_payload(loaded: dict, original: dict) -> bool:
    return (loaded.keys() == original.keys()
            and all(loaded[key] == original[key] for key in original if key != "state_dict")
            and loaded["state_dict"].keys() == original["state_dict"].keys()
            and all(torch.equal(loaded["state_dict"][name], tensor)
                    for name, tensor in original["state_dict"].items()))


# ================================================================= checkpoints

def test_a_truncated_checkpoint_is_named(tmp_path, small_payload):
    data = _saved(small_payload)
    cuts = sorted({0, 1, 3, 4, 10, 64, *(len(data) * k // 16 for k in range(1, 16)),
                   len(data) - 100, len(data) - 22, len(data) - 2, len(data) - 1})
    path = tmp_path / "model.pt"
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cannot read checkpoint {named(path)}"):
            read_checkpoint(path)


def test_a_checkpoint_with_a_flipped_byte_is_refused_or_reads_the_same(tmp_path, small_payload):
    """torch.load checks no CRC: without the archive check most flips load wrong weights."""
    data = _saved(small_payload)
    path = tmp_path / "model.pt"
    refused = 0
    for at in np.linspace(0, len(data) - 1, 96).round().astype(int):
        flipped = bytearray(data)
        flipped[at] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            loaded = read_checkpoint(path)
        except CheckpointError as exc:
            assert str(path) in str(exc)
            refused += 1
        else:
            assert _same_payload(loaded, small_payload), f"byte {at} flipped loads other values"
    assert refused >= 80


@pytest.mark.parametrize("field, value, problem", [
    ("num_classes", "11", "'num_classes' must be a positive integer"),
    ("class_names", ["sky"] * 3, "'class_names' must be a list of 11 names"),
    ("input_size", [64, 0], "'input_size' must be"),
    ("model", None, "'model' must be a model name"),
    ("state_dict", [1, 2], "'state_dict' must be a dict of tensors"),
])
def test_checkpoint_fields_of_the_wrong_type_are_named(tmp_path, small_payload, field, value,
                                                       problem):
    path = tmp_path / "model.pt"
    path.write_bytes(_saved({**small_payload, field: value}))
    with pytest.raises(CheckpointError, match=f"checkpoint {named(path)}: {problem}"):
        read_checkpoint(path)


def test_weights_of_another_shape_are_named(tmp_path, small_payload):
    path = tmp_path / "model.pt"
    path.write_bytes(_saved(small_payload))  # its state dict is no SwiftNet's
    with pytest.raises(CheckpointError, match=f"checkpoint {named(path)} does not match model"):
        load_model(path)


def test_a_truncated_checkpoint_is_named_by_the_backends_and_commands(tmp_path, small_checkpoint,
                                                                      capsys):
    path = tmp_path / "truncated.pt"
    path.write_bytes(small_checkpoint.read_bytes()[:200_000])
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(CheckpointError, match=named(path)):
            make_backend(backend, path, cache_dir=tmp_path / "cache")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "f.png"), np.zeros((8, 8, 3), np.uint8))
    assert evaluate_module.main(["--model", str(path), "--images", str(images), "--labels",
                                 str(images), "--out", str(tmp_path / "eval"),
                                 "--no-progress"]) == EXIT_BAD_INPUT
    assert f"cannot load model: cannot read checkpoint {path}" in capsys.readouterr().err
    assert export_module.main(["--model", str(path), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert f"error: cannot read checkpoint {path}" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists() and not leftovers(tmp_path)


def test_a_corrupt_training_state_is_named(tmp_path):
    path = tmp_path / "state.pt"
    save_state(path, {"step": 3, "weights": torch.ones(100)})
    assert load_state(path)["step"] == 3
    data = path.read_bytes()
    for corrupt in (data[:len(data) // 2], data[:40] + bytes([data[40] ^ 1]) + data[41:]):
        path.write_bytes(corrupt)
        with pytest.raises(CheckpointError, match=named(path)):
            load_state(path)


# ================================================================= ONNX files

def test_a_truncated_onnx_file_is_named(tmp_path):
    original = tmp_path / "original.onnx"
    tiny_onnx(original, VALID_ONNX_METADATA)
    data, path = original.read_bytes(), tmp_path / "model.onnx"
    for cut in sorted({0, 1, 5, *(len(data) * k // 12 for k in range(1, 12)), len(data) - 1}):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match=named(path)):
            read_onnx_info(path)


def test_an_onnx_file_with_a_flipped_byte_is_refused_naming_it_or_read_well_typed(tmp_path):
    """Protobuf has no checksum: a flip inside a string or a weight can go unnoticed.

    (A class name of ``sky`` read as ``&ky``, say.) An exported file given directly has no
    record to check it against; a cached export has, and is rebuilt (see the cache tests).
    So the property is weaker than for checkpoints: never another exception, never a value
    of the wrong type.
    """
    original = tmp_path / "original.onnx"
    tiny_onnx(original, VALID_ONNX_METADATA)
    data, path = original.read_bytes(), tmp_path / "model.onnx"
    refused = 0
    for at in range(len(data)):
        flipped = bytearray(data)
        flipped[at] ^= 0x55
        path.write_bytes(bytes(flipped))
        try:
            info = read_onnx_info(path)
        except ModelFileError as exc:
            assert str(path) in str(exc)
            refused += 1
        else:
            assert len(info.class_names) == len(CAMVID_CLASSES) and info.input_size == (32, 48)
            assert all(isinstance(name, str) for name in info.class_names)
    assert refused > len(data) // 4


# ================================================================= cache artifacts

def test_a_cached_artifact_or_record_that_is_damaged_is_rebuilt_with_the_reason(tmp_path):
    artifact, key, builds = tmp_path / "cache" / "model.onnx", {"checksum": "ab"}, []

    def write(tmp: Path) -> None:
        builds.append(tmp)
        tmp.write_bytes(b"exported graph" * 100)

    def ensure() -> str:
        statuses = []
        cache.ensure(artifact, key, write, "ONNX export", statuses.append)
        return " ".join(statuses)

    assert "does not exist" in ensure()
    record = cache.record_path(artifact)
    damages = {
        "corrupt": lambda: artifact.write_bytes(artifact.read_bytes()[:100]),
        "unreadable": lambda: record.write_text(record.read_text()[:30]),
        "missing": record.unlink,
        "no 'key' object": lambda: record.write_text("[1, 2]"),
        "cache key differs": lambda: record.write_text(json.dumps(
            {**json.loads(record.read_text()), "key": {"checksum": "cd"}})),
    }
    for reason, damage in damages.items():
        damage()
        assert reason in ensure()
        assert cache.stale_reason(artifact, key) is None
    assert len(builds) == 1 + len(damages) and not leftovers(tmp_path)
    assert ensure() == ""  # valid now: used as it is


@pytest.mark.parametrize("failing", ["model.engine", "model.engine.json"])
def test_a_cache_store_on_a_full_disk_names_the_file_and_leaves_a_stale_entry(
        tmp_path, monkeypatch, failing):
    artifact, key = tmp_path / "model.engine", {"gpu": "x"}
    cache.store(artifact, lambda tmp: tmp.write_bytes(b"old engine"), key)
    fail_midway(monkeypatch, failing)
    with pytest.raises(OSError, match=f"cannot write {named(tmp_path / failing)}") as error:
        cache.store(artifact, lambda tmp: tmp.write_bytes(b"new engine" * 100), {"gpu": "y"})
    assert error.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert "missing" in cache.stale_reason(artifact, key)  # rebuilt next time
    assert artifact.read_bytes() in (b"old engine", b"new engine" * 100)  # never half
    assert not leftovers(tmp_path)


# ================================================================= TensorRT engines (faked)

@pytest.fixture
def fake_trt(monkeypatch):
    """Fake TensorRT's two seams: the key of this GPU/TensorRT, and the builder."""
    builds = []

    def current_key(onnx_sha256, precision, input_size, calibration_id=None, device_index=0,
                    build="typed"):
        return tensorrt_backend.engine_key(onnx_sha256, precision, (1, *input_size, 3),
                                           "NVIDIA H200", "9.0", "10.3.0", calibration_id, build)

    def build(onnx_path, precision, input_size, calibrator=None, workspace_gb=4.0, status=None,
              device_index=0, build="typed"):
        builds.append(precision)
        return b"serialized engine" * 64

    monkeypatch.setattr(tensorrt_backend, "current_engine_key", current_key)
    monkeypatch.setattr(tensorrt_backend, "build_engine", build)
    return builds


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    tiny_onnx(path, VALID_ONNX_METADATA)
    return path


def test_a_damaged_cached_engine_is_rebuilt_with_the_reason(fake_trt, onnx_file, tmp_path):
    def ensure() -> str:
        statuses = []
        tensorrt_backend.ensure_engine(onnx_file, precision="fp16", cache_dir=tmp_path,
                                       status=statuses.append, build="flags")
        return " ".join(statuses)

    ensure()
    (engine,) = (tmp_path / "engines").glob("*.engine")
    record = cache.record_path(engine)
    for reason, damage in (
            ("corrupt", lambda: engine.write_bytes(engine.read_bytes()[:100])),
            ("unreadable", lambda: record.write_text(record.read_text()[:-10])),
            ("missing", record.unlink),
            ("cache key differs", lambda: record.write_text(json.dumps(
                {**json.loads(record.read_text()), "key": {"precision": "fp16"}})))):
        damage()
        assert reason in ensure()
        tensorrt_backend.read_engine_record(engine)
    assert len(fake_trt) == 5 and not leftovers(tmp_path)


@pytest.mark.parametrize("damage, problem", [
    (lambda record: record.write_text(record.read_text()[:50]), "is unreadable"),
    (lambda record: record.unlink(), "is missing"),
    (lambda record: record.write_text(json.dumps(
        {k: v for k, v in json.loads(record.read_text()).items() if k != "class_names"})),
     "lacks valid class_names"),
    (lambda record: record.write_text(json.dumps(
        {**json.loads(record.read_text()), "key": {"precision": "fp16", "input_shape": "big"}})),
     "lacks valid key.input_shape, key.onnx_sha256"),
])
def test_an_engine_given_directly_with_a_damaged_record_is_refused_naming_it(
        fake_trt, onnx_file, tmp_path, damage, problem):
    engine = tensorrt_backend.ensure_engine(onnx_file, tmp_path / "given.engine", "fp16",
                                            build="flags")
    damage(cache.record_path(engine))
    with pytest.raises(ModelFileError, match=f"engine {named(engine)} has no usable record "
                                             f".*{problem}"):
        tensorrt_backend.check_engine_file(engine)


def _fake_tensorrt_runtime(monkeypatch):
    """Install a TensorRT whose runtime deserializes nothing (a corrupt or foreign engine)."""
    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    runtime = SimpleNamespace(deserialize_cuda_engine=lambda data: None)
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(
        __version__="10.3.0", Logger=Logger, Runtime=lambda logger: runtime))
    monkeypatch.setattr(torch.cuda, "device", lambda device: nullcontext())


def test_an_engine_tensorrt_cannot_deserialize_is_named(fake_trt, onnx_file, tmp_path,
                                                        monkeypatch):
    engine = tensorrt_backend.ensure_engine(onnx_file, tmp_path / "given.engine", "fp16",
                                            build="flags")
    _fake_tensorrt_runtime(monkeypatch)
    with pytest.raises(ModelFileError, match=f"cannot deserialize engine {named(engine)}"):
        tensorrt_backend.TensorRTBackend(engine)


def test_a_cached_engine_tensorrt_cannot_load_is_rebuilt_once(fake_trt, onnx_file, tmp_path,
                                                              monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    opened = []

    class Backend:  # stands in for TensorRTBackend: refuses the first engine it is given
        def __init__(self, engine_path, device_index=0):
            opened.append(engine_path)
            if len(opened) == 1:
                raise ModelFileError(f"TensorRT 10.3.0 cannot deserialize engine {engine_path}")

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", Backend)
    backend = tensorrt_backend.open_engine(onnx_file, "fp16", cache_dir=tmp_path, build="flags")
    assert isinstance(backend, Backend) and len(opened) == 2 and len(fake_trt) == 2
    assert "rebuilding engine" in caplog.text and "cannot deserialize" in caplog.text


# ================================================================= INT8 calibration tables

@pytest.fixture
def batches(tmp_path) -> CalibrationBatches:
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(2):
        cv2.imwrite(str(frames / f"f{index}.png"), np.full((16, 24, 3), index * 60, np.uint8))
    return CalibrationBatches(sorted(frames.iterdir()), (16, 24))


def test_a_damaged_calibration_table_is_not_used_and_calibration_runs_again(tmp_path, batches):
    table, key = tmp_path / "model.engine.calib", {"calibration_id": batches.data_id("minmax"),
                                                   "method": "minmax"}
    messages = []
    assert read_calibration_table(table, key, messages.append) is None and not messages
    write_calibration_table(table, key, b"TRT-1003-MinMaxCalibration\n" * 20, messages.append)
    assert read_calibration_table(table, key, messages.append).startswith(b"TRT-1003")
    assert "using INT8 calibration cache" in messages[-1]
    record = cache.record_path(table)
    for reason, damage in (
            ("corrupt", lambda: table.write_bytes(table.read_bytes()[:30])),
            ("missing", record.unlink),  # a table of an older version, without a record
            ("cache key differs", lambda: None)):
        write_calibration_table(table, key, b"TRT-1003-MinMaxCalibration\n" * 20, print)
        damage()
        other = {**key, "calibration_id": "other frames"} if "key" in reason else key
        assert read_calibration_table(table, other, messages.append) is None
        assert f"not using INT8 calibration cache {table}, calibrating again" in messages[-1]
        assert reason in messages[-1]


def test_the_calibrator_recalibrates_over_a_truncated_table_and_survives_a_full_disk(
        tmp_path, batches, monkeypatch):
    class Base:
        def __init__(self):
            pass

    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(
        IInt8EntropyCalibrator2=Base, IInt8MinMaxCalibrator=Base))
    monkeypatch.setattr(torch, "empty", lambda *shape, dtype=None, device=None: None)
    table, messages = tmp_path / "t.calib", []
    calibrator = make_calibrator(batches, "entropy", table, messages.append)
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(b"calibration table")
    assert calibrator.read_calibration_cache() == b"calibration table"
    table.write_bytes(b"calib")  # truncated
    assert calibrator.read_calibration_cache() is None and "corrupt" in messages[-1]
    fail_midway(monkeypatch, table.name)
    calibrator.write_calibration_cache(b"calibration table")  # reported, not raised
    assert "INT8 calibration cache not saved: [Errno 28] cannot write" in messages[-1]
    assert str(table) in messages[-1] and not leftovers(tmp_path)


# ================================================================= evaluation reports

@pytest.fixture
def evaluation() -> Evaluation:
    rng = np.random.default_rng(0)
    result = Evaluation(AnomalyMetrics(["jsd", "msp"]), SemanticMetrics(CAMVID_CLASSES, 255),
                        frames=2, pixels=2 * 40 * 56)
    for _ in range(2):
        label = (rng.random((40, 56)) < 0.2).astype(np.uint8)
        result.anomaly.update({name: rng.random((40, 56)).astype(np.float32)
                               for name in ("jsd", "msp")}, label == 1, label < 255)
        result.semantic.update(rng.integers(0, 11, (40, 56)), rng.integers(0, 11, (40, 56)))
    return result


INFO = {"complete": True, "model": "m.pt", "backend": "torch", "input_size": [40, 56],
        "score_names": ["jsd", "msp"], "images": "images", "labels": "labels",
        "anomaly_values": [1], "ignore_values": [255], "semantic_labels": "semantic",
        "semantic_ignore": 255, "metric_mode": "sklearn", "stopped": None}
REPORT_FILES = ["accumulators/anomaly.npz", "pr_curve.png", "roc_curve.png",
                "accumulators/semantic.json", "metrics.md", "metrics.json"]


def _check_complete(out: Path) -> None:
    """Every report file that exists is whole: it loads."""
    for path in out.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            assert cv2.imread(str(path)) is not None, path
        elif path.suffix == ".npz":
            AnomalyMetrics.load(path)


def _old_run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text('{"frames": 999}')
    (out / "metrics.md").write_text("# an earlier run\n")


@pytest.mark.parametrize("failing", REPORT_FILES)
def test_each_report_file_failing_midway_is_named_and_not_left_half_written(
        tmp_path, evaluation, monkeypatch, failing):
    out = tmp_path / "eval"
    _old_run(out)
    fail_midway(monkeypatch, Path(failing).name)
    with pytest.raises(OSError, match=f"cannot write {named(out / failing)}: No space") as error:
        write_results(evaluation, out, "sklearn", INFO)
    monkeypatch.undo()
    assert error.value.errno == errno.ENOSPC
    assert not (out / failing).exists() and not leftovers(tmp_path)
    assert not (out / "metrics.json").exists()  # neither the earlier run's nor a new one
    _check_complete(out)
    write_results(evaluation, out, "sklearn", INFO)  # space again: all of it
    assert json.loads((out / "metrics.json").read_text())["frames"] == 2


@pytest.mark.parametrize("limit", [0, 600, 3000, 20_000])
def test_reports_on_a_disk_that_fills_up_fail_naming_a_file_and_leave_whole_files(
        tmp_path, evaluation, limit):
    out = tmp_path / "eval"
    _old_run(out)
    with file_size_limit(limit), pytest.raises(OSError) as error:
        write_results(evaluation, out, "sklearn", INFO)
    assert error.value.errno == errno.EFBIG
    assert any(f"cannot write {out / name}:" in str(error.value) for name in REPORT_FILES)
    assert not (out / "metrics.json").exists() and not leftovers(tmp_path)
    _check_complete(out)


@not_root
def test_reports_into_a_read_only_folder_are_refused_naming_it(tmp_path, evaluation):
    out = tmp_path / "eval"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=named(out)):
            write_results(evaluation, out, "sklearn", INFO)
        with pytest.raises(PermissionError, match=f"--out folder {named(out)} is not writable"):
            check_writable_folder(out, "--out")
    finally:
        out.chmod(0o755)
    assert not any(out.iterdir())


# ================================================================= the command lines

@pytest.fixture
def frames(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    for kind in ("images", "labels"):
        (tmp_path / kind).mkdir()
    for index in range(2):
        cv2.imwrite(str(tmp_path / "images" / f"f{index}.png"),
                    rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / "labels" / f"f{index}.png"),
                    (rng.random((40, 56)) < 0.2).astype(np.uint8))
    return tmp_path


def _evaluate(model, frames: Path, out: Path):
    return evaluate_module.main(["--model", str(model), "--images", str(frames / "images"),
                                 "--labels", str(frames / "labels"), "--out", str(out),
                                 "--input-size", "64x96", "--no-progress"])


def test_evaluate_refuses_an_out_folder_it_cannot_create_before_loading_the_model(frames,
                                                                                  capsys):
    blocker = frames / "blocker"
    blocker.write_text("a file where a folder should be")
    # the model does not exist: the --out check must come first
    assert _evaluate(frames / "no_model.pt", frames, blocker / "eval") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"--out folder {blocker / 'eval'} is not writable" in err
    assert "cannot load model" not in err


@not_root
def test_evaluate_refuses_a_read_only_out_folder(frames, capsys):
    out = frames / "eval"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert _evaluate(frames / "no_model.pt", frames, out) == EXIT_BAD_INPUT
    finally:
        out.chmod(0o755)
    assert f"--out folder {out} is not writable" in capsys.readouterr().err


def test_evaluate_on_a_full_disk_prints_the_metrics_and_names_the_file(small_checkpoint, frames,
                                                                       monkeypatch, capsys):
    out = frames / "eval"
    fail_midway(monkeypatch, "metrics.json")
    assert _evaluate(small_checkpoint, frames, out) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert f"the results above could not be saved: [Errno 28] cannot write " \
           f"{out / 'metrics.json'}: No space left on device" in captured.err
    assert "# Evaluation of" in captured.out and "| jsd |" in captured.out
    assert not (out / "metrics.json").exists() and not leftovers(frames)


def test_export_on_a_full_disk_names_the_file_and_leaves_nothing(small_checkpoint, tmp_path,
                                                                 capsys):
    onnx_path = tmp_path / "out" / "model.onnx"
    onnx_path.parent.mkdir()
    with file_size_limit(4096), pytest.raises(OSError, match=f"cannot write {named(onnx_path)}"):
        export_onnx(small_checkpoint, onnx_path, ("jsd",))
    assert not onnx_path.exists() and not leftovers(tmp_path)
    with file_size_limit(4096):
        code = export_module.main(["--model", str(small_checkpoint), "--onnx", str(onnx_path)])
    assert code == 1
    assert f"dense-ood-export: error: [Errno 27] cannot write {onnx_path}: File too large" \
        in capsys.readouterr().err
    assert not onnx_path.exists() and not leftovers(tmp_path)


@not_root
def test_export_into_a_read_only_folder_names_the_file(small_checkpoint, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=f"cannot write {named(folder / 'm.onnx')}"):
            export_onnx(small_checkpoint, folder / "m.onnx", ("jsd",))
    finally:
        folder.chmod(0o755)
    assert not any(folder.iterdir())


# ================================================================= checkpoints, states, images

def test_a_checkpoint_saved_on_a_full_disk_leaves_the_old_one_intact(small_checkpoint, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(small_checkpoint.read_bytes())
    model = build_model(MODEL, len(CAMVID_CLASSES), pretrained=False)
    with file_size_limit(1 << 20), pytest.raises(OSError, match=f"cannot write {named(path)}"):
        save_checkpoint(path, model, MODEL, CAMVID_CLASSES, (64, 96), {"note": "new"})
    assert read_checkpoint(path)["meta"] == {"note": "fault injection"}
    assert not leftovers(tmp_path)


def test_a_training_state_saved_on_a_full_disk_leaves_the_old_one_intact(tmp_path):
    path = tmp_path / "state.pt"
    save_state(path, {"step": 1})
    with file_size_limit(1 << 16), pytest.raises(OSError, match=f"cannot write {named(path)}"):
        save_state(path, {"step": 2, "weights": torch.zeros(1 << 16)})
    assert load_state(path) == {"step": 1} and not leftovers(tmp_path)


def test_images_on_a_full_disk_or_of_an_unknown_format_are_named(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "overlay.png"
    with file_size_limit(1000), pytest.raises(OSError, match=f"cannot write {named(path)}"):
        write_rgb(path, image)
    assert not path.exists() and not leftovers(tmp_path)
    with pytest.raises(ValueError, match=f"cannot write image file {named(tmp_path / 'x.xyz')}"):
        write_rgb(tmp_path / "x.xyz", image)
    write_rgb(path, image)
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], image)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="writer crashed"):
        with atomic_write(path) as tmp:
            tmp.write_text("new, half")
            raise RuntimeError("writer crashed")
    assert path.read_text() == "old" and not leftovers(tmp_path)
    with atomic_write(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".md" and tmp.name.startswith(".")
        tmp.write_text("new")
    assert path.read_text() == "new" and not leftovers(tmp_path)
