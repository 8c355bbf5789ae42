"""scripts/profile_cpu.py: FLOP counting, profile aggregation, the report (no timing asserts)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
onnx = pytest.importorskip("onnx", reason="the onnx package is not installed")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "profile_cpu.py"


@pytest.fixture(scope="module")
def profile_cpu():
    spec = importlib.util.spec_from_file_location("profile_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_graph(path: Path, height: int, width: int) -> Path:
    """uint8 NHWC images -> Cast -> Transpose -> 3x3 Conv (3 -> 4 channels) -> MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    matrix = numpy_helper.from_array(np.ones((width, 5), np.float32), "M")
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("MatMul", ["y", "M"], ["out"], name="matmul")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                      [1, height, width, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [weight, matrix])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_flops_come_from_the_real_tensor_shapes(profile_cpu, tmp_path):
    rows = profile_cpu.conv_matmul_flops(_tiny_graph(tmp_path / "tiny.onnx", 6, 8), (6, 8))
    by_node = {r["node"]: r for r in rows}
    assert by_node["conv"]["flops"] == 2 * (4 * 6 * 8) * (3 * 3 * 3)
    assert by_node["conv"]["kind"] == "stem (image)" and by_node["conv"]["output"] == [1, 4, 6, 8]
    assert by_node["matmul"]["flops"] == 2 * (4 * 6 * 5) * 8


def test_profile_events_are_aggregated_per_run_by_op_and_node(profile_cpu):
    def event(name, op, dur, weight=None):
        shapes = [{"float": [1, 8, 4, 4]}] + ([{"float": weight}] if weight else [])
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur,
                "args": {"op_name": op, "input_type_shape": shapes,
                         "output_type_shape": [{"float": [1, 8, 4, 4]}]}}

    kernels = [event("a_nchwc", "Conv", 3000, [8, 8, 1, 1]), event("r", "Resize", 1000),
               event("q/Conv_token_7", "QLinearConv", 2000)] * 2
    summary = profile_cpu.aggregate_profile(kernels, 2, {"q/Conv": 10 ** 6})
    assert summary["kernel_ms_per_run"] == pytest.approx(6.0)
    assert [(o["op"], o["ms"]) for o in summary["by_op"]] == [("Conv", 3.0), ("QLinearConv", 2.0),
                                                              ("Resize", 1.0)]
    nodes = {n["node"]: n for n in summary["by_node"]}
    assert nodes["a_nchwc"]["flops"] == 2 * 8 * 16 * 8  # from the Conv's weight shape
    assert nodes["q/Conv_token_7"]["flops"] == 10 ** 6  # from the original node's name
    assert nodes["q/Conv_token_7"]["gflops_per_s"] == pytest.approx(10 ** 6 / 2e-3 / 1e9)
    assert nodes["r"]["flops"] is None and nodes["r"]["share"] == pytest.approx(1 / 6)


def test_script_writes_and_merges_its_report(profile_cpu, checkpoint, camvid_dir, tmp_path):
    common = ["--model", str(checkpoint), "--size", "64x96", "--frame-size", "96x128",
              "--frames", str(camvid_dir / "test"), "--num-frames", "2", "--runs", "2",
              "--threads", "1", "--quiet-timeout", "0", "--retries", "0",
              "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "profile")]
    assert profile_cpu.main(common + ["--sections", "ort"]) == 0
    assert profile_cpu.main(common + ["--sections", "detector"]) == 0
    report = json.loads((tmp_path / "profile.json").read_text())
    assert set(report["sections"]) == {"flops", "ort", "detector"}
    fp32 = report["sections"]["ort"]["fp32"]
    assert fp32["runs"] >= 2 and fp32["by_op"][0]["share"] >= fp32["by_op"][-1]["share"]
    assert report["sections"]["flops"]["total_flops"] > 0
    stages = [s["stage"] for s in report["sections"]["detector"]["fp32"]["stages"]]
    assert "inference (backend.infer)" in stages and any("colorize" in s for s in stages)
    table = (tmp_path / "profile.md").read_text()
    assert "## ONNX Runtime profile: fp32" in table and "## Detector stages" in table
    assert "--sections ort" in table and "--sections detector" in table
    assert profile_cpu.main(common + ["--sections", "nothing"]) == 2


def test_warm_up_runs_are_left_out_of_the_profile(profile_cpu, tmp_path):
    def run(ts):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 10}

    def kernel(ts):
        return {"cat": "Node", "name": "c_kernel_time", "ts": ts, "dur": 5,
                "args": {"op_name": "Conv"}}

    path = tmp_path / "profile.json"
    path.write_text(json.dumps([run(0), kernel(1), run(20), kernel(21), run(40), kernel(41),
                                {"cat": "Node", "name": "c_fence_before", "ts": 42, "dur": 0}]))
    kernels, runs = profile_cpu.read_profile(path, skip=1)
    assert runs == 2 and [k["ts"] for k in kernels] == [21, 41]
    assert profile_cpu.read_profile(path)[1] == 3


def test_flop_floor_counts_quantized_nodes_at_the_int8_rate(profile_cpu):
    machine = {"probes": [{"probe": "fp32 MatMul", "peak_gflops_per_s": 100.0},
                          {"probe": "fp32 Conv", "peak_gflops_per_s": 150.0},
                          {"probe": "u8s8 MatMulInteger", "peak_gflops_per_s": 300.0}]}
    flops = {"total_flops": 3e9,
             "by_node": [{"node": "a", "flops": 1.5e9}, {"node": "b", "flops": 1.5e9}]}
    assert profile_cpu.floor_ms(flops, machine) == (pytest.approx(20.0), 150.0, 300.0)
    ms, _, _ = profile_cpu.floor_ms(flops, machine, ["a"])
    assert ms == pytest.approx(10.0 + 5.0)


def test_encoder_graph_is_the_whole_graph_cut_after_the_encoder(profile_cpu, checkpoint):
    from dense_ood_ros.checkpoint import load_model
    from dense_ood_ros.graph import InferenceGraph

    segmenter, _ = load_model(checkpoint)
    images = torch.randint(0, 256, (1, 64, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        features = profile_cpu.encoder_graph(segmenter)(images)
        whole = InferenceGraph(segmenter, ()).eval()
        logits = segmenter.decoder(features)
        expected = segmenter.decoder_logits(whole.normalize(images))
    assert len(features) > 1 and torch.equal(logits, expected)


def test_encoder_section_times_both_graphs(profile_cpu, checkpoint, camvid_dir, tmp_path):
    assert profile_cpu.main(["--model", str(checkpoint), "--size", "64x96", "--frame-size",
                             "96x128", "--frames", str(camvid_dir / "test"), "--num-frames", "2",
                             "--runs", "2", "--threads", "1", "--quiet-timeout", "0",
                             "--retries", "0", "--cache-dir", str(tmp_path / "cache"),
                             "--sections", "encoder", "--out", str(tmp_path / "profile")]) == 0
    encoder = json.loads((tmp_path / "profile.json").read_text())["sections"]["encoder"]
    assert encoder["whole"]["iterations"] == encoder["encoder"]["iterations"] == 2
    assert encoder["encoder_bound_fps"] == pytest.approx(1000 / encoder["encoder"]["p50_ms"])
    assert "## The encoder alone" in (tmp_path / "profile.md").read_text()
