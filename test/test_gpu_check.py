"""scripts/gpu_check.sh and scripts/gpu_parity.py where there is no GPU.

The script's arguments, its no-GPU message, and that its Python steps run without the
packages a GPU machine's Python may lack (onnx, tensorrt, pytest, tqdm, yaml; the benchmark
also without onnxruntime).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
#: Packages a GPU machine's Python may lack.
MAY_LACK = ("onnx", "tensorrt", "pytest", "tqdm", "yaml")
#: ``python -c WITHOUT_PACKAGES a,b MODULE ARGS...`` runs MODULE (or a script) as __main__ as
#: if packages a and b were not installed.
WITHOUT_PACKAGES = """
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # import raises ImportError, importlib.util.find_spec gives None
module, sys.argv = sys.argv[2], sys.argv[2:]
if module.endswith(".py"):
    runpy.run_path(module, run_name="__main__")
else:
    runpy.run_module(module, run_name="__main__")
"""


def _run_script(*args, timeout=60):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _run_without_packages(packages, *args, timeout=300):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-c", WITHOUT_PACKAGES, ",".join(packages), *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


def test_gpu_check_parses_and_checks_its_arguments(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    missing = _run_script()
    assert missing.returncode == 2 and "OUT_DIR missing" in missing.stderr
    assert "unknown option --fast" in _run_script(str(tmp_path), "--fast").stderr
    no_frames = _run_script(str(tmp_path), "--frames", str(tmp_path / "nowhere"))
    assert no_frames.returncode == 2 and "frames folder not found" in no_frames.stderr


def test_gpu_check_says_there_is_no_gpu_and_fails(tmp_path):
    out = tmp_path / "out"
    result = _run_script(str(out))
    assert result.returncode == 1, result.stderr
    assert "no CUDA GPU visible to" in result.stderr and "NVIDIA GPU" in result.stderr
    assert not out.exists()


def test_benchmark_module_runs_without_the_packages_it_may_lack(model_path, tmp_path):
    out = tmp_path / "bench"
    result = _run_without_packages(
        (*MAY_LACK, "onnxruntime"), "dense_ood_ros.benchmark", "--model", str(model_path),
        "--backends", "torch:cpu", "--sizes", "64x96", "--frame-size", "96x128",
        "--frames", str(REPO / "demo"), "--num-frames", "2", "--warmup", "1", "--iters", "2",
        "--threads", "1", "--no-score-cost", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.with_name("bench.json").read_text())
    (row,) = report["results"]
    assert row["backend"] == "torch:cpu" and row["inference"]["iterations"] == 2
    assert report["machine"]["onnxruntime"] is None


def test_parity_script_skips_every_gpu_backend_here_with_its_reason(model_path, tmp_path):
    out = tmp_path / "parity"
    result = _run_without_packages(
        MAY_LACK, "scripts/gpu_parity.py", "--model", str(model_path),
        "--frames", str(REPO / "demo"), "--num-frames", "1", "--input-size", "64x96",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.with_name("parity.json").read_text())["results"]
    reasons = {row["backend"]: row["skipped"] for row in rows}
    assert reasons["torch:cuda:fp16"] == "torch sees no CUDA GPU"
    for spec in ("onnxruntime:cuda", "tensorrt:fp32", "tensorrt:fp16", "tensorrt:int8",
                 "onnxruntime:cpu:fp16"):
        assert "onnx package is not installed" in reasons[spec]
    assert "skipped: torch sees no CUDA GPU" in out.with_name("parity.md").read_text()


def test_parity_runs_the_fp16_graph_on_the_cpu_and_says_tensorrt_is_missing(model_path,
                                                                            tmp_path):
    """Check the parity and summary where TensorRT is not installed (here; the lent GPU machine).

    Its rows say so plainly, the FP16 graph is still checked, and the summary puts it all in
    one table.
    """
    pytest.importorskip("onnx")
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    out = tmp_path / "out"
    out.mkdir()
    result = _run_without_packages(
        ("tensorrt",), "scripts/gpu_parity.py", "--model", str(model_path),
        "--frames", str(REPO / "demo"), "--num-frames", "2",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out / "parity"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {row["backend"]: row for row in
            json.loads((out / "parity.json").read_text())["results"]}
    for spec in ("tensorrt:fp32", "tensorrt:fp16", "tensorrt:int8"):
        assert rows[spec]["skipped"] == "the tensorrt Python package is not installed"
    fp16 = rows["onnxruntime:cpu:fp16"]
    assert fp16["within_bound"] and fp16["label_agreement"] >= 0.99, fp16
    assert "fp16" in fp16["describe"] and fp16["setup_s"] > 0
    summary = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_summary.py"),
                              str(out)], capture_output=True, text=True, cwd=REPO)
    assert summary.returncode == 0, summary.stderr
    table = (out / "summary.md").read_text()
    assert table == summary.stdout.rstrip("\n") + "\n"
    line = next(row for row in table.splitlines() if row.startswith("| tensorrt:int8 |"))
    assert line.endswith("| skipped: the tensorrt Python package is not installed |")
    fp16_line = next(row for row in table.splitlines()
                     if row.startswith("| onnxruntime:cpu:fp16 |"))
    assert f"{fp16['label_agreement']:.2%}" in fp16_line


@pytest.mark.parametrize("bad", ["--frames", "--model"])
def test_gpu_check_options_need_a_value(bad, tmp_path):
    result = _run_script(str(tmp_path), bad)
    assert result.returncode != 0 and f"{bad} needs a" in result.stderr
