"""dense-ood-benchmark: report structure, statistics and failure handling.

Timings are measured, never asserted.
"""

import json

import numpy as np
import pytest
import torch

from dense_ood_ros import benchmark
from dense_ood_ros.benchmark import (LABELS_ONLY, MODEL_SPEED_UP, SCORE_COST, THROUGHPUT,
                                     LoadMeter, best_of, default_backends, latency_stats, main,
                                     parse_spec, ratios, wait_until_quiet)


def test_latency_stats():
    stats = latency_stats([0.010] * 98 + [0.020, 0.110])
    assert stats["iterations"] == 100
    assert stats["fps"] == pytest.approx(100 / 1.11)
    assert stats["p50_ms"] == pytest.approx(10.0)
    assert stats["p99_ms"] == pytest.approx(np.percentile([10.0] * 98 + [20.0, 110.0], 99))
    assert stats["p95_ms"] <= stats["p99_ms"]


def test_parse_spec():
    assert parse_spec("tensorrt:int8") == ("tensorrt", {"precision": "int8"})
    assert parse_spec("onnxruntime:cpu") == ("onnxruntime", {"device": "cpu"})
    assert parse_spec("torch") == ("torch", {})
    assert parse_spec("torch:cuda:fp16") == ("torch", {"device": "cuda", "precision": "fp16"})
    assert parse_spec("openvino:bf16") == ("openvino", {"precision": "bf16"})
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        parse_spec("tflite:cpu")
    with pytest.raises(ValueError, match="'tensorrt:fp16:cuda' has 2 options, but tensorrt takes "
                                         "at most 1: tensorrt:precision"):
        parse_spec("tensorrt:fp16:cuda")


def test_parse_spec_takes_onnxruntime_precision_and_named_options():
    assert parse_spec("onnxruntime:cpu:int8") == ("onnxruntime", {"device": "cpu",
                                                                  "precision": "int8"})
    assert parse_spec("onnxruntime:cpu:fp32:spinning=1:threads=1") == (
        "onnxruntime", {"device": "cpu", "precision": "fp32", "spinning": True, "threads": 1})
    assert parse_spec("onnxruntime:::optimization=basic") == ("onnxruntime",
                                                              {"optimization": "basic"})
    with pytest.raises(ValueError, match="no named option 'warp'"):
        parse_spec("onnxruntime:cpu:warp=9")
    with pytest.raises(ValueError, match="spinning must be one of"):
        parse_spec("onnxruntime:cpu:spinning=maybe")
    with pytest.raises(ValueError, match="has 3 options"):
        parse_spec("onnxruntime:cpu:int8:extra")


def test_parse_spec_takes_another_model_file_for_any_backend():
    assert parse_spec("onnxruntime:cpu:int8:model=models/other.pt") == (
        "onnxruntime", {"device": "cpu", "precision": "int8", "model": "models/other.pt"})
    assert parse_spec("torch:cpu:model=a.pt") == ("torch", {"device": "cpu", "model": "a.pt"})
    with pytest.raises(ValueError, match="model= needs a model file"):
        parse_spec("torch:cpu:model=")


def test_load_meter_and_quiet_wait_report_other_processes_cpu():
    with LoadMeter() as meter:
        sum(range(10000))
    assert isinstance(meter.other_cores, float) and meter.other_cores >= 0.0
    waited, load = wait_until_quiet(max_other_cores=1e9, timeout_s=5.0, sample_s=0.01)
    assert 0.0 <= waited < 5.0 and load >= 0.0  # any load is quiet enough: one sample
    assert latency_stats([0.002, 0.001, 0.003])["min_ms"] == pytest.approx(1.0)


def test_default_backends_add_every_gpu_backend_available(monkeypatch):
    def availability(*gpu_candidates):
        """Make auto's candidates: the CPU ones and ``gpu_candidates`` available."""
        gpu = [(c, None if c in gpu_candidates else "not here")
               for c in ("tensorrt", "onnxruntime-gpu", "torch-cuda")]
        return lambda: gpu + [("onnxruntime-cpu", None), ("torch", None)]

    monkeypatch.setattr(benchmark, "availability", availability())
    assert default_backends() == ["torch:cpu", "onnxruntime:cpu"]
    monkeypatch.setattr(benchmark, "availability", availability("torch-cuda"))
    assert default_backends() == ["torch:cpu", "onnxruntime:cpu", "torch:cuda:fp16"]
    monkeypatch.setattr(benchmark, "availability",
                        availability("torch-cuda", "tensorrt", "onnxruntime-gpu"))
    assert default_backends() == ["torch:cpu", "onnxruntime:cpu", "onnxruntime:cuda",
                                  "torch:cuda:fp16", "tensorrt:fp32", "tensorrt:fp16",
                                  "tensorrt:int8"]


def test_ratios_compare_with_torch_and_labels_only():
    def result(backend, graph, fps, p50):
        timing = {"fps": fps, "p50_ms": p50}
        return {"backend": backend, "graph": graph, "input_size": [360, 480], "end_to_end": timing,
                "inference": timing}

    rows = ratios([result("torch:cpu", "jsd", 2.0, 500.0),
                   result("onnxruntime:cpu", "jsd", 4.0, 250.0),
                   result("onnxruntime:cpu", LABELS_ONLY, 4.2, 240.0),
                   {"backend": "tensorrt:fp16", "graph": "jsd", "input_size": [360, 480],
                    "error": "no GPU"}])
    assert [(r["kind"], r["backend"]) for r in rows] == [(THROUGHPUT, "onnxruntime:cpu"),
                                                         (SCORE_COST, "onnxruntime:cpu")]
    assert (rows[0]["inference"] == pytest.approx(2.0)
            and rows[0]["end_to_end"] == pytest.approx(2.0))
    assert (rows[1]["inference"] == pytest.approx(250.0 / 240.0 - 1.0)
            and rows[1]["end_to_end"] is None)


def test_ratios_compare_a_second_model_with_the_same_backend():
    def result(backend, fps):
        timing = {"fps": fps, "p50_ms": 1000.0 / fps}
        return {"backend": backend, "graph": "jsd", "input_size": [360, 480],
                "end_to_end": timing, "inference": timing}

    rows = ratios([result("onnxruntime:cpu", 10.0), result("onnxruntime:cpu:int8", 12.0),
                   result("onnxruntime:cpu:model=light.pt", 15.0),
                   result("onnxruntime:cpu:int8:model=light.pt", 20.0)])
    assert [(r["kind"], r["backend"]) for r in rows] == [
        (MODEL_SPEED_UP, "onnxruntime:cpu:model=light.pt"),
        (MODEL_SPEED_UP, "onnxruntime:cpu:int8:model=light.pt")]
    assert rows[0]["inference"] == pytest.approx(1.5)
    assert rows[1]["end_to_end"] == pytest.approx(20.0 / 12.0)
    # an empty option before model= (onnxruntime:cpu::model=X) is the same backend
    (row,) = ratios([result("onnxruntime:cpu", 10.0),
                     result("onnxruntime:cpu::model=light.pt", 8.0)])
    assert row["kind"] == MODEL_SPEED_UP and row["inference"] == pytest.approx(0.8)


def test_benchmark_writes_json_and_markdown(checkpoint, camvid_dir, tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    specs = "torch:cpu,onnxruntime:cpu,onnxruntime:cpu:fp32:spinning=1"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        specs += ",tensorrt:fp16"  # reported as an error, not a crash
    code = main(["--model", str(checkpoint), "--backends", specs, "--sizes", "64x96",
                 "--frame-size", "96x128", "--frames", str(camvid_dir / "test"),
                 "--num-frames", "2", "--warmup", "1", "--iters", "2", "--threads", "1",
                 "--cache-dir", str(tmp_path / "cache"), "--node", "--retries", "1",
                 "--rounds", "2", "--out", str(tmp_path / "bench")])
    assert code == 0
    report = json.loads(out_json.read_text())
    assert {"cpu", "logical_cpus", "gpus", "torch", "onnxruntime",
            "load_average_1_5_15"} <= set(report["machine"])
    graphs = [(r["backend"], r["graph"]) for r in report["results"]]
    assert ("torch:cpu", "jsd") in graphs and ("onnxruntime:cpu", LABELS_ONLY) in graphs
    for r in report["results"]:
        if r["backend"].startswith("tensorrt"):
            assert "tensorrt" in r["error"]
            continue
        timings = [r["inference"]] + ([] if r["graph"] == LABELS_ONLY else [r["end_to_end"]])
        for timing in timings:
            assert timing["iterations"] == 2 and timing["fps"] > 0
            assert timing["p50_ms"] <= timing["p95_ms"] <= timing["p99_ms"]
        assert r["rss_mb"] > 0 and r["input_size"] == [64, 96] and r["other_cores"] >= 0.0
    assert any("spinning" in r.get("describe", "") for r in report["results"])
    assert report["settings"]["node"] is True and report["settings"]["rounds"] == 2
    assert {q["kind"] for q in report["ratios"]} == {THROUGHPUT, SCORE_COST}
    table = out_md.read_text()
    assert "| backend | input | graph | e2e FPS" in table and "Machine:" in table
    assert table in capsys.readouterr().out


def test_benchmark_compares_two_architectures_in_one_run(checkpoint, camvid_dir, tmp_path):
    from dense_ood_ros.checkpoint import save_checkpoint
    from dense_ood_ros.label_set import description_label_set
    from dense_ood_ros.models import build_model

    separable = tmp_path / "separable.pt"
    torch.manual_seed(0)
    camvid = description_label_set("camvid")
    save_checkpoint(separable, build_model("efficientnet_lite0_swiftnet_separable",
                                           camvid.num_classes, pretrained=False),
                    "efficientnet_lite0_swiftnet_separable", camvid, (64, 96), {})
    code = main(["--model", str(checkpoint), "--backends",
                 f"onnxruntime:cpu,onnxruntime:cpu:model={separable}", "--sizes", "64x96",
                 "--frame-size", "96x128", "--frames", str(camvid_dir / "test"),
                 "--num-frames", "2", "--warmup", "1", "--iters", "2", "--threads", "1",
                 "--no-score-cost", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "bench")])
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [r["model"] for r in report["results"]] == [str(checkpoint), str(separable)]
    assert all(r["inference"]["fps"] > 0 for r in report["results"])
    assert [q["kind"] for q in report["ratios"]] == [MODEL_SPEED_UP]
    table = (tmp_path / "bench.md").read_text()
    assert "`separable.pt`" in table and f"`{checkpoint.name}`" in table


def test_benchmark_rejects_bad_arguments(checkpoint, tmp_path, capsys):
    assert main(["--model", str(checkpoint), "--backends", "tflite",
                 "--frames", str(tmp_path)]) == 2
    assert "tflite" in capsys.readouterr().err
    assert main(["--model", str(checkpoint), "--frames", str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err


def test_best_of_rounds_keeps_each_rows_fastest_timings():
    def row(e2e, infer, graph="jsd"):
        result = {"backend": "onnxruntime:cpu", "graph": graph, "input_size": [64, 96],
                  "inference": {"p50_ms": infer}}
        if e2e is not None:
            result["end_to_end"] = {"p50_ms": e2e}
        return result

    error = {"backend": "tensorrt:fp16", "graph": "jsd", "error": "no GPU"}
    merged = best_of([[row(10.0, 8.0), row(None, 7.0, LABELS_ONLY), error],
                      [row(12.0, 6.0), row(None, 9.0, LABELS_ONLY), error]])
    assert merged[0]["inference"]["p50_ms"] == 6.0 and merged[0]["end_to_end"]["p50_ms"] == 10.0
    assert merged[1]["inference"]["p50_ms"] == 7.0 and "end_to_end" not in merged[1]
    assert merged[2]["error"] == "no GPU" and merged[0]["rounds"] == 2
