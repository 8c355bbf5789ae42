"""INT8 static quantization for ONNX Runtime: agreement with fp32, cache key, rebuilds.

Speeds are measured in docs/cpu_profile.md, never asserted here.
"""

import logging

import numpy as np
import pytest

from dense_ood_ros import cache
from dense_ood_ros.backends import make_backend
from dense_ood_ros.backends.calibration import CalibrationSettings
from dense_ood_ros.io import file_sha256, list_images, read_rgb
from dense_ood_ros.preprocessing import resize_frame

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnx", reason="the onnx package is not installed")

from dense_ood_ros.quantization import (CALIBRATION_ENV, calibration_batches,  # noqa: E402
                                        calibration_frames, calibration_id, cached_int8_onnx,
                                        default_calibration, int8_path, onnx_precision,
                                        quantized_nodes)

#: Lower bound on the share of pixels whose int8 label equals the fp32 one (shipped model, real
#: CamVid test frames at 360x480). Measured: 99.9 % (docs/cpu_profile.md).
MIN_LABEL_AGREEMENT = 0.98


@pytest.fixture(scope="module")
def shipped_pair(model_path, camvid_dir, tmp_path_factory):
    """fp32 and int8 onnxruntime backends of the shipped model, int8 calibrated on 16 frames."""
    folder = tmp_path_factory.mktemp("int8-cache")
    calibration = CalibrationSettings(camvid_dir / "train", count=16, method="minmax")
    fp32 = make_backend("onnxruntime", model_path, device="cpu", cache_dir=folder)
    int8 = make_backend("onnxruntime", model_path, device="cpu", cache_dir=folder,
                        precision="int8", calibration=calibration)
    return fp32, int8


def test_int8_labels_agree_with_fp32_on_real_frames(shipped_pair, camvid_dir, record_property):
    fp32, int8 = shipped_pair
    assert (fp32.precision, int8.precision) == ("fp32", "int8") and "int8" in int8.describe()
    paths = list_images(camvid_dir / "test", "CamVid test")
    agreement, score_diff = [], []
    for path in paths[::len(paths) // 6][:6]:  # both test sequences
        batch = np.ascontiguousarray(resize_frame(read_rgb(path), fp32.input_size)[None])
        (ref_labels, ref_scores), (labels, scores) = fp32.infer(batch), int8.infer(batch)
        assert labels.dtype == np.uint8 and scores.dtype == np.float32
        assert labels.shape == ref_labels.shape and scores.shape == ref_scores.shape
        agreement.append(float((labels == ref_labels).mean()))
        score_diff.append(float(np.abs(scores - ref_scores).mean()))
    record_property("int8_label_agreement", min(agreement))
    print(f"int8 vs fp32: label agreement min {min(agreement):.4f}, mean "
          f"{np.mean(agreement):.4f}; mean |score difference| {np.mean(score_diff):.4f}")
    assert min(agreement) >= MIN_LABEL_AGREEMENT
    assert np.mean(score_diff) < 0.02  # jsd is in [0, 1]


def test_the_recipe_quantizes_the_dense_spatial_convolutions_only(shipped_pair):
    import onnx

    fp32, int8 = shipped_pair
    assert quantized_nodes(onnx.load(str(fp32.onnx_path))) == [
        f"/decoder/ladder.{i}/blend/blend.2/Conv" for i in range(3)]
    model = onnx.load(str(int8.onnx_path))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("DequantizeLinear") > 0 and "ArgMax" in ops
    meta = {prop.key: prop.value for prop in model.metadata_props}
    assert meta["precision"] == "int8" and meta["format"] == "dense_ood_ros/onnx/v1"
    assert meta["calibration_count"] == "16" and meta["calibration_method"] == "minmax"


def test_calibration_frames_are_spread_and_read_like_the_detector(camvid_dir):
    paths = list_images(camvid_dir / "train", "CamVid train")
    chosen = calibration_frames(camvid_dir / "train", 4)
    assert chosen[0] == paths[0] and chosen[-1] == paths[-1] and len(set(chosen)) == 4
    assert len({p.name.split("_")[0] for p in chosen}) > 1  # more than one drive
    assert calibration_frames(camvid_dir / "train", 10 ** 6) == paths
    batches = calibration_batches(CalibrationSettings(camvid_dir / "train", 2, "minmax"),
                                  (64, 96))
    first = next(iter(batches))
    assert first.dtype == np.uint8 and first.shape == (1, 64, 96, 3)
    assert batches.paths[0] == chosen[0]
    assert np.array_equal(first[0], resize_frame(read_rgb(chosen[0]), (64, 96)))


def test_calibration_id_follows_content_count_and_method(camvid_dir, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in list_images(camvid_dir / "train", "CamVid train")[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    settings = CalibrationSettings(folder, 3, "minmax")
    reference = calibration_id(calibration_batches(settings, (64, 96)), "minmax")
    assert calibration_id(calibration_batches(settings, (64, 96)), "minmax") == reference
    assert calibration_id(calibration_batches(settings, (64, 96)), "entropy") != reference
    assert calibration_id(calibration_batches(settings, (32, 48)), "minmax") != reference
    assert calibration_id(calibration_batches(CalibrationSettings(folder, 2), (64, 96)),
                          "minmax") != reference
    last = sorted(folder.iterdir())[-1]
    data = last.read_bytes()
    last.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same name and size, other content
    assert calibration_id(calibration_batches(settings, (64, 96)), "minmax") != reference


@pytest.fixture()
def frames_dir(camvid_dir, tmp_path):
    """Three CamVid train frames in a folder of their own (quick calibration)."""
    folder = tmp_path / "calib"
    folder.mkdir()
    for path in list_images(camvid_dir / "train", "CamVid train")[::120][:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _messages(caplog):
    return [r.getMessage() for r in caplog.records]


def test_int8_cache_reuses_and_rebuilds_on_key_changes(small_onnx, frames_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    settings = CalibrationSettings(frames_dir, 3, "minmax")
    first = cached_int8_onnx(small_onnx, settings, cache_dir=tmp_path)
    record = cache.read_record(first)
    assert onnx_precision(first) == "int8" and onnx_precision(small_onnx) == "fp32"
    assert record["key"]["calibration_count"] == 3
    assert record["key"]["source_onnx_sha256"] == file_sha256(small_onnx)
    stamp = first.stat().st_mtime_ns
    caplog.clear()
    assert cached_int8_onnx(small_onnx, settings, cache_dir=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp and any("using cached INT8" in m
                                                     for m in _messages(caplog))
    caplog.clear()  # other calibration data: same file, rebuilt, the reason logged
    again = cached_int8_onnx(small_onnx, CalibrationSettings(frames_dir, 2, "minmax"),
                             cache_dir=tmp_path)
    assert again == first and cache.read_record(again)["key"]["calibration_count"] == 2
    assert any("cache key differs" in m and "calibration_id" in m for m in _messages(caplog))
    # No calibration folder anywhere: a valid file of any calibration is used as it is ...
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CALIBRATION_ENV, "")
        patch.setattr("dense_ood_ros.quantization.default_calibration", lambda: None)
        assert cached_int8_onnx(small_onnx, cache_dir=tmp_path) == first
        # ... and none at all is an error that says what to pass.
        with pytest.raises(ValueError, match="no calibration frames"):
            cached_int8_onnx(small_onnx, cache_dir=tmp_path / "empty")


def test_corrupt_or_unrecorded_int8_file_is_rebuilt_with_the_reason_logged(small_onnx, frames_dir,
                                                                           tmp_path, caplog):
    caplog.set_level(logging.INFO)
    settings = CalibrationSettings(frames_dir, 2, "minmax")
    path = cached_int8_onnx(small_onnx, settings, cache_dir=tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    caplog.clear()
    assert cached_int8_onnx(small_onnx, settings, cache_dir=tmp_path) == path
    assert any("building INT8 ONNX" in m and "corrupt" in m for m in _messages(caplog))
    backend = make_backend("onnxruntime", path, device="cpu")  # loads: it is whole again
    assert backend.precision == "int8"
    cache.record_path(path).unlink()
    caplog.clear()
    cached_int8_onnx(small_onnx, settings, cache_dir=tmp_path)
    assert any("building INT8 ONNX" in m and "missing" in m for m in _messages(caplog))


def test_precision_option_of_the_onnxruntime_backend(small_onnx, frames_dir, tmp_path):
    settings = CalibrationSettings(frames_dir, 2, "minmax")
    int8 = make_backend("onnxruntime", small_onnx, device="cpu", precision="int8",
                        calibration=settings, cache_dir=tmp_path)
    assert int8.onnx_path == int8_path(tmp_path, small_onnx, file_sha256(small_onnx),
                                       int8.input_size)
    assert make_backend("onnxruntime", int8.onnx_path, device="cpu").precision == "int8"
    with pytest.raises(ValueError, match="is int8; precision fp32 was asked for"):
        make_backend("onnxruntime", int8.onnx_path, device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="precision 'bf16' is not available"):
        make_backend("onnxruntime", small_onnx, precision="bf16")
    fp16 = make_backend("onnxruntime", small_onnx, device="cpu", precision="fp16",
                        cache_dir=tmp_path)
    assert fp16.precision == "fp16" and fp16.onnx_path.parent.name == "onnx-fp16"
    with pytest.raises(ValueError, match="is fp16; precision int8 was asked for"):
        make_backend("onnxruntime", fp16.onnx_path, device="cpu", precision="int8")
    fp32 = make_backend("onnxruntime", small_onnx, device="cpu", precision="fp32")
    assert fp32.precision == "fp32" and "fp32" in fp32.describe()


def test_default_calibration_is_camvid_train_or_the_environment(camvid_dir, monkeypatch,
                                                                tmp_path):
    monkeypatch.delenv(CALIBRATION_ENV, raising=False)
    settings = default_calibration()
    assert settings is not None
    assert settings.image_dir.resolve() == (camvid_dir / "train").resolve()
    assert settings.method == "minmax"
    monkeypatch.setenv(CALIBRATION_ENV, str(tmp_path))
    assert default_calibration().image_dir == tmp_path


def test_calibration_reader_serves_ranges_of_batches_like_iteration(camvid_dir):
    from dense_ood_ros.quantization import _chunk, _FrameReader

    batches = calibration_batches(CalibrationSettings(camvid_dir / "train", 6, "minmax",
                                                      batch_size=2), (32, 48))
    reader = _FrameReader(batches, lambda message: None)
    assert len(reader) == 3
    served = [reader.get_next()["images"] for _ in range(3)]
    assert reader.get_next() is None
    for got, expected in zip(served, batches):
        assert got.shape == (2, 32, 48, 3) and np.array_equal(got, expected)
    reader.set_range(1, 2)
    assert np.array_equal(reader.get_next()["images"], served[1]) and reader.get_next() is None
    assert (_chunk(128), _chunk(3), _chunk(127), _chunk(12)) == (8, 3, 1, 6)
