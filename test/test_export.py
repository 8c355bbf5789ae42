"""Whole-graph ONNX export.

Checked model, metadata, fixed/dynamic sizes, labels-only, CLI, cache.
"""

import json
import logging

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from _fixtures_backends import SMALL_SIZE
from dense_ood_ros.cache import record_path
from dense_ood_ros.checkpoint import load_model
from dense_ood_ros.export import main
from dense_ood_ros.io import file_sha256
from dense_ood_ros.graph import InferenceGraph
from dense_ood_ros.onnx_graph import (DEFAULT_OPSET, ModelFileError, _static_pool_matrix,
                                      cached_onnx, export_onnx, read_onnx_info)
from dense_ood_ros.preprocessing import resize_frame

torch.set_num_threads(1)


def _elem_type(value_info):
    return value_info.type.tensor_type.elem_type


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _assert_uint8_input_feeds_one_cast(model):
    """Check the uint8 input's one consumer is a Cast: TensorRT accepts no other."""
    consumers = [node.op_type for node in model.graph.node if "images" in node.input]
    assert consumers == ["Cast"], consumers


def _ort_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("height, width, out",
                         [(12, 15, 8), (4, 8, 4), (3, 2, 8), (23, 9, 2), (5, 5, 1)])
def test_pool_matrices_match_torch_adaptive_pooling(height, width, out):
    x = torch.randn(1, 2, height, width)
    rows, cols = (torch.from_numpy(_static_pool_matrix(n, out)) for n in (height, width))
    assert torch.allclose(rows @ x @ cols.T, F.adaptive_avg_pool2d(x, out), atol=1e-6)


def test_fixed_size_export_is_checked_and_self_describing(small_onnx, checkpoint):
    model = onnx.load(str(small_onnx))
    onnx.checker.check_model(model, full_check=True)
    (images,), outputs = model.graph.input, model.graph.output
    assert images.name == "images" and _elem_type(images) == onnx.TensorProto.UINT8
    assert _dims(images) == ["batch", *SMALL_SIZE, 3]
    assert [o.name for o in outputs] == ["labels", "scores"]
    assert [_elem_type(o) for o in outputs] == [onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT]
    assert {op.domain: op.version for op in model.opset_import}[""] == DEFAULT_OPSET
    _assert_uint8_input_feeds_one_cast(model)
    # exported as reductions: faster
    assert "LogSoftmax" not in {node.op_type for node in model.graph.node}
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["class_names"])[:2] == ["sky", "building"]
    assert json.loads(meta["score_names"]) == ["jsd"]
    assert json.loads(meta["input_size"]) == list(SMALL_SIZE)
    assert meta["checkpoint_sha256"] == file_sha256(checkpoint)
    info = read_onnx_info(small_onnx)
    assert info.opset == DEFAULT_OPSET and not info.dynamic_size and info.input_size == SMALL_SIZE


def test_dynamic_export_matches_torch_at_two_sizes(checkpoint, tmp_path, camvid_frames):
    path = tmp_path / "dynamic.onnx"
    info = export_onnx(checkpoint, path, ("jsd", "msp"), dynamic=True, opset=18)
    assert info.dynamic_size and info.opset == 18 and info.score_names == ("jsd", "msp")
    assert info.input_size == (360, 480)  # the checkpoint's, recorded as the default
    model = onnx.load(str(path))
    assert _dims(model.graph.input[0]) == ["batch", "height", "width", 3]
    _assert_uint8_input_feeds_one_cast(model)
    session = _ort_session(path)
    segmenter, _ = load_model(checkpoint)
    graph = InferenceGraph(segmenter, ("jsd", "msp")).eval()
    for size, frame in zip([(96, 128), (360, 480)], camvid_frames):
        batch = np.ascontiguousarray(resize_frame(frame, size)[None])
        labels, scores = session.run(None, {"images": batch})
        with torch.inference_mode():
            ref_labels, ref_scores = (t.numpy() for t in graph(torch.from_numpy(batch)))
        assert labels.shape == (1, *size) and scores.shape == (1, 2, *size)
        assert (labels == ref_labels).mean() >= 0.995
        assert np.abs(scores - ref_scores).max() <= 1e-3


def test_labels_only_export_has_only_the_labels_output(checkpoint, tmp_path):
    path = tmp_path / "labels.onnx"
    info = export_onnx(checkpoint, path, score_names=(), input_size=(64, 96))
    assert info.score_names == ()
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["labels"]
    _assert_uint8_input_feeds_one_cast(model)
    (labels,) = _ort_session(path).run(None, {"images": np.zeros((2, 64, 96, 3), np.uint8)})
    assert labels.shape == (2, 64, 96) and labels.dtype == np.uint8


def test_cli_exports_onnx(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    args = ["--model", str(checkpoint), "--onnx", str(out), "--input-size", "64x96",
            "--scores", "jsd,entropy"]
    assert main(args) == 0
    assert read_onnx_info(out).score_names == ("jsd", "entropy")
    assert "opset 17" in capsys.readouterr().out


def test_cli_exports_the_fp16_and_tensorrt_qdq_graphs(checkpoint, camvid_dir, tmp_path,
                                                      capsys):
    from dense_ood_ros.quantization import onnx_metadata

    common = ["--model", str(checkpoint), "--input-size", "64x96",
              "--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "--onnx", str(tmp_path / "fp16.onnx"), "--graph", "fp16"]) == 0
    assert onnx_metadata(tmp_path / "fp16.onnx")["precision"] == "fp16"
    assert main([*common, "--onnx", str(tmp_path / "qdq.onnx"), "--graph", "int8-qdq"]) == 1
    assert "--graph int8-qdq needs --calib-dir" in capsys.readouterr().err
    assert main([*common, "--onnx", str(tmp_path / "qdq.onnx"), "--graph", "int8-qdq",
                 "--calib-dir", str(camvid_dir / "train"), "--calib-count", "2"]) == 0
    meta = onnx_metadata(tmp_path / "qdq.onnx")
    assert (meta["quant_recipe"], meta["calibration_method"]) == ("tensorrt", "minmax")
    assert read_onnx_info(tmp_path / "qdq.onnx").input_size == (64, 96)


def test_cli_reports_bad_inputs(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing.pt"), "--onnx", str(tmp_path / "x.onnx")]) == 1
    assert "missing.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "missing.pt")])  # neither --onnx nor --engine
    with pytest.raises(SystemExit):
        main(["--model", "m.pt", "--onnx", "x.onnx", "--input-size", "360by480"])


def test_cli_int8_engine_needs_calibration_frames(small_onnx, capsys):
    assert main(["--model", str(small_onnx), "--engine", "x.engine", "--precision", "int8"]) == 1
    assert "--calib-dir" in capsys.readouterr().err


def test_cli_engine_without_tensorrt_says_what_is_missing(small_onnx, tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed: engine builds are tested in test_backends")
    except ImportError:
        pass
    assert main(["--model", str(small_onnx), "--engine", str(tmp_path / "x.engine")]) == 1
    assert "tensorrt" in capsys.readouterr().err


def test_read_onnx_info_names_the_problem(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        read_onnx_info(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(ModelFileError, match="garbage.onnx"):
        read_onnx_info(garbage)
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ModelFileError, match="not exported by dense-ood-export"):
        read_onnx_info(foreign)


def test_cached_onnx_reuses_valid_exports_and_rebuilds_bad_ones(checkpoint, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = cached_onnx(checkpoint, tmp_path, input_size=(64, 96))
    assert read_onnx_info(path).checkpoint_sha256 == file_sha256(checkpoint)
    stamp = path.stat().st_mtime_ns
    assert cached_onnx(checkpoint, tmp_path, input_size=(64, 96)) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not exported again

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    caplog.clear()
    assert cached_onnx(checkpoint, tmp_path, input_size=(64, 96)) == path
    assert "corrupt" in caplog.text
    read_onnx_info(path)

    record_path(path).write_text("{not json")
    caplog.clear()
    cached_onnx(checkpoint, tmp_path, input_size=(64, 96))
    assert "unreadable" in caplog.text

    other = cached_onnx(checkpoint, tmp_path, ("msp",), input_size=(64, 96))
    assert other != path and read_onnx_info(other).score_names == ("msp",)
