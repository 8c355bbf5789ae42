"""The FP16 graph and TensorRT's Q/DQ INT8 graph of the shipped model, checked on the CPU.

Their types and structure (what TensorRT's strongly typed build and explicit quantization
take), and their labels against the FP32 graph on real CamVid frames (ONNX Runtime CPU; the
Q/DQ pairs computed in float, as TensorRT's INT8 kernels compute them).
"""

import numpy as np
import pytest

from dense_ood_ros.backends import make_backend
from dense_ood_ros.backends.calibration import CalibrationSettings
from dense_ood_ros.io import list_images, read_rgb
from dense_ood_ros.preprocessing import resize_frame

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from dense_ood_ros.onnx_fp16 import cached_fp16_onnx, fp16_model  # noqa: E402
from dense_ood_ros.onnx_graph import ModelFileError, cached_onnx, read_onnx_info  # noqa: E402
from dense_ood_ros.quantization import (cached_int8_onnx, onnx_metadata,  # noqa: E402
                                        tensorrt_quantized_nodes)

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
#: Least share of pixels whose label equals the FP32 graph's, per frame (measured: FP16
#: 99.87-99.92 % on the Lite0 default before; Q/DQ 98.5 % on average there, and on the Lite2
#: default 96.3 % at the least of these 4 frames with this test's 16-frame calibration, 97.0 %
#: with the default 128 frames; a Q/DQ graph run by kernels that saturate falls to ~70 %).
MIN_AGREEMENT = {"fp16": 0.99, "int8": 0.955}
#: Largest mean |jsd difference| from the FP32 graph per frame (jsd is in [0, 1]; Q/DQ on the
#: Lite2 default: 0.035 at the most with the 16-frame calibration).
MAX_MEAN_SCORE_DIFF = {"fp16": 0.01, "int8": 0.045}


@pytest.fixture(scope="module")
def graphs(model_path, camvid_dir, tmp_path_factory):
    """Make the shipped model's FP32 export (360x480, jsd), its FP16 and TensorRT Q/DQ graphs."""
    folder = tmp_path_factory.mktemp("graph-variants")
    fp32 = cached_onnx(model_path, folder)
    calibration = CalibrationSettings(camvid_dir / "train", count=16, method="minmax")
    return {"fp32": fp32, "fp16": cached_fp16_onnx(fp32, folder),
            "int8": cached_int8_onnx(fp32, calibration, cache_dir=folder, recipe="tensorrt")}


def _types(path):
    """Element type of every tensor of a graph (ONNX type inference)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    graph = model.graph
    types = {i.name: i.type.tensor_type.elem_type
             for i in (*graph.value_info, *graph.input, *graph.output)}
    types.update({init.name: init.data_type for init in graph.initializer})
    return graph, types


def test_fp16_graph_runs_the_network_in_fp16_and_keeps_inputs_outputs_and_score_in_fp32(graphs):
    graph, types = _types(graphs["fp16"])
    convs = [node for node in graph.node if node.op_type == "Conv"]
    fp32_graph, _ = _types(graphs["fp32"])
    assert len(convs) == sum(node.op_type == "Conv" for node in fp32_graph.node) > 50
    for node in convs:  # activations in, weights, output
        assert {types[node.input[0]], types[node.input[1]], types[node.output[0]]} == {FLOAT16}
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == \
        [("images", onnx.TensorProto.UINT8)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in graph.output] == \
        [("labels", onnx.TensorProto.UINT8), ("scores", FLOAT)]
    # the score's log-space arithmetic and the labels' argmax read float32
    for node in graph.node:
        if node.op_type in ("Log", "Exp", "ReduceSum", "ReduceMax", "ArgMax"):
            assert types[node.input[0]] == FLOAT, node.name
    info, meta = read_onnx_info(graphs["fp16"]), onnx_metadata(graphs["fp16"])
    assert info.class_names == read_onnx_info(graphs["fp32"]).class_names
    assert meta["precision"] == "fp16"
    assert graphs["fp16"].stat().st_size < 0.55 * graphs["fp32"].stat().st_size


def test_fp16_rewrite_refuses_a_graph_without_the_labels_chain(small_onnx):
    model = onnx.load(str(small_onnx))
    for node in model.graph.node:
        if node.op_type == "ArgMax":
            node.op_type = "ArgMin"
    with pytest.raises(ModelFileError, match="ArgMax <- Resize <- Cast"):
        fp16_model(model)


def test_fp16_graph_is_cached_by_the_source_checksum(graphs, tmp_path):
    stamp = graphs["fp16"].stat().st_mtime_ns
    assert cached_fp16_onnx(graphs["fp32"], graphs["fp16"].parents[1]) == graphs["fp16"]
    assert graphs["fp16"].stat().st_mtime_ns == stamp


def test_tensorrt_qdq_graph_has_the_placement_tensorrt_fuses(graphs):
    model = onnx.load(str(graphs["int8"]))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    fp32_model = onnx.load(str(graphs["fp32"]))
    expected = tensorrt_quantized_nodes(fp32_model)
    convs = {node.name: node for node in graph.node if node.op_type == "Conv"}
    quantized = []
    for name, conv in convs.items():
        data, weight = (producers.get(conv.input[i]) for i in (0, 1))
        if data is None or data.op_type != "DequantizeLinear":
            assert weight is None or weight.op_type != "DequantizeLinear", name
            continue
        quantized.append(name)
        out_channels = initializers[weight.input[0]].dims[0]
        assert initializers[weight.input[0]].data_type == onnx.TensorProto.INT8
        assert list(initializers[weight.input[1]].dims) == [out_channels]  # per channel
        assert len(conv.input) < 3 or conv.input[2] in initializers  # float bias, no Q/DQ
        assert initializers[conv.input[2]].data_type == FLOAT if len(conv.input) > 2 else True
    assert sorted(quantized) == sorted(expected) and len(quantized) > 20
    for node in graph.node:  # int8 activations, zero point 0
        if node.op_type == "QuantizeLinear":
            zero = onnx.numpy_helper.to_array(initializers[node.input[2]])
            assert zero.dtype == np.int8 and not zero.any()
    depthwise_or_stem = [name for name in convs if name not in expected]
    assert depthwise_or_stem and not set(depthwise_or_stem) & set(quantized)
    assert onnx_metadata(graphs["int8"])["quant_recipe"] == "tensorrt"


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_graph_variant_labels_agree_with_fp32_on_real_frames(graphs, camvid_dir, variant,
                                                             record_property):
    fp32 = make_backend("onnxruntime", graphs["fp32"], device="cpu")
    other = make_backend("onnxruntime", graphs[variant], device="cpu")
    assert other.precision == variant
    if variant == "int8":  # Q/DQ in float, as TensorRT computes it
        assert "optimization none" in other.describe()
    paths = list_images(camvid_dir / "test", "CamVid test")
    agreement = []
    for path in paths[::len(paths) // 4][:4]:  # both test sequences
        batch = np.ascontiguousarray(resize_frame(read_rgb(path), fp32.input_size)[None])
        (ref_labels, ref_scores), (labels, scores) = fp32.infer(batch), other.infer(batch)
        assert labels.dtype == np.uint8 and scores.dtype == np.float32
        agreement.append(float((labels == ref_labels).mean()))
        assert float(np.abs(scores - ref_scores).mean()) < MAX_MEAN_SCORE_DIFF[variant]
    record_property(f"{variant}_label_agreement", min(agreement))
    assert min(agreement) >= MIN_AGREEMENT[variant], agreement
