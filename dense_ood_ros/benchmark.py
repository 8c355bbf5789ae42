r"""``dense-ood-benchmark``: throughput and latency of every available backend.

For each backend and input size it times, after warm-up,
  * end to end: :class:`~dense_ood_ros.detector.Detector` on a camera-sized frame (check,
    resize to the input size, inference with host<->device copies, labels/scores back to
    the frame size);
  * inference alone: ``backend.infer`` on a batch already at the input size;
and reports frames per second, latency p50/p95/p99, process RSS and GPU memory in use.
With score costing on (default) the ONNX Runtime and TensorRT backends also run a
labels-only graph (inference alone), timed interleaved with the full one (A, B, A, B, ...)
so that load changes on a shared machine hit both alike: what the anomaly score adds to
the latency of segmentation alone.
Results go to JSON and a Markdown table, with the machine described. It only measures:
nothing here asserts a speed.

Example::

    dense-ood-benchmark --model models/default.pt --sizes 360x480,720x1280 \
        --warmup 5 --iters 20 --out docs/benchmark_cpu
"""

import argparse
import gc
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dense_ood_ros.backends import BACKENDS, availability, make_backend
from dense_ood_ros.cli import (add_cache_dir, add_model, add_scores, add_threads, command_parser,
                               parse_size)
from dense_ood_ros.detector import Detector
from dense_ood_ros.host import available_cpu_count
from dense_ood_ros.io import list_images, read_rgb
from dense_ood_ros.preprocessing import resize_frame

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = Path("../shared/data/camvid/test")
LABELS_ONLY = "labels only"
THROUGHPUT = "throughput vs torch:cpu"
SCORE_COST = "score cost (p50 inference latency added)"
#: Backend specs "name[:option[:option]]", each backend's options in this order, e.g.
#: torch:cpu, torch:cuda:fp16 (device, precision), onnxruntime:cuda, tensorrt:int8.
SPEC_OPTIONS = {"torch": ("device", "precision"), "onnxruntime": ("device",),
                "tensorrt": ("precision",)}
#: The spec of each GPU candidate of ``auto``.
GPU_SPECS = {"onnxruntime-gpu": "onnxruntime:cuda", "torch-cuda": "torch:cuda:fp16",
             "tensorrt": "tensorrt:fp16"}


def gpu_backends() -> List[str]:
    """Every GPU backend spec that can run here: ONNX Runtime GPU, torch CUDA fp16, TensorRT."""
    available = {candidate for candidate, reason in availability() if reason is None}
    return [spec for candidate, spec in GPU_SPECS.items() if candidate in available]


def default_backends() -> List[str]:
    """Every backend spec that can run here: torch and ONNX Runtime on the CPU, then the GPU's."""
    return ["torch:cpu", "onnxruntime:cpu", *gpu_backends()]


def parse_spec(spec: str) -> Tuple[str, Dict[str, str]]:
    """``"torch:cuda:fp16"`` -> ("torch", {"device": "cuda", "precision": "fp16"})."""
    name, *values = spec.split(":")
    if name not in SPEC_OPTIONS:
        raise ValueError(f"unknown backend {name!r} in {spec!r}; "
                         f"choose from {sorted(SPEC_OPTIONS)}")
    names = SPEC_OPTIONS[name]
    if len(values) > len(names):
        raise ValueError(f"backend spec {spec!r} has {len(values)} options, but {name} takes at "
                         f"most {len(names)}: {':'.join((name, *names))}")
    return name, {option: value for option, value in zip(names, values) if value}


def latency_stats(seconds: Sequence[float]) -> Dict[str, float]:
    """FPS (frames / total time) and latency mean/p50/p95/p99 in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"fps": float(len(ms) / (ms.sum() / 1000.0)), "mean_ms": float(ms.mean()),
            "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "iterations": len(ms)}


def time_interleaved(fns: Sequence[Callable[[int], Any]], warmup: int,
                     iterations: int) -> List[Dict[str, float]]:
    """Warm up, then time ``fn(i)`` for each of ``fns`` in turn per iteration (A, B, A, B, ...).

    Interleaving makes drifts in machine load hit every variant alike. Returns one latency
    summary per function.
    """
    for i in range(warmup):
        for fn in fns:
            fn(i)
    seconds: List[List[float]] = [[] for _ in fns]
    for i in range(iterations):
        for fn, times in zip(fns, seconds):
            start = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - start)
    return [latency_stats(times) for times in seconds]


def rss_mb() -> Optional[float]:
    """Resident memory of this process (Linux /proc), MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def gpu_used_mb() -> Optional[float]:
    """Memory in use on the current CUDA device (all processes), MiB; None without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def describe_machine() -> Dict[str, Any]:
    """CPU, memory, load, GPUs and library versions, for reading the numbers later."""
    import torch

    machine: Dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime
        machine["onnxruntime"] = onnxruntime.__version__
        machine["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        machine["onnxruntime"], machine["onnxruntime_providers"] = None, []
    try:
        machine["available_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo
                     if line.startswith("model name")]
        machine["cpu"] = names[0] if names else machine["cpu"]
        with open("/proc/meminfo") as meminfo:
            machine["memory_gb"] = round(int(meminfo.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        import tensorrt
        machine["tensorrt"] = tensorrt.__version__
    except ImportError:
        machine["tensorrt"] = None
    machine["gpus"] = [
        {"name": torch.cuda.get_device_name(i),
         "compute_capability": "%d.%d" % torch.cuda.get_device_capability(i),
         "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
        for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return machine


def load_frames(folder: Path, count: int, frame_size: Tuple[int, int]) -> List[np.ndarray]:
    """``count`` real frames from ``folder``, resized once to the camera size ``frame_size``."""
    return [resize_frame(read_rgb(p), frame_size) for p in list_images(folder, "frame", count)]


def run_backend(model: Path, spec: str, input_size: Tuple[int, int], frames: Sequence[np.ndarray],
                args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Build a backend (and its labels-only twin when costing scores) and time it.

    Times the full graph end to end, then every graph's inference, interleaved. One result per
    graph.
    """
    name, options = parse_spec(spec)
    variants = [False, True] if args.score_cost else [False]
    rss_before, gpu_before = rss_mb(), gpu_used_mb()
    results, timed = [], []
    for labels_only in variants:
        result: Dict[str, Any] = {"backend": spec, "input_size": list(input_size),
                                  "graph": LABELS_ONLY if labels_only else "+".join(args.scores)}
        results.append(result)
        started = time.perf_counter()
        try:
            backend = make_backend(name, model, args.scores, input_size, labels_only=labels_only,
                                   threads=(args.threads if "threads" in BACKENDS[name].options
                                            else None),
                                   cache_dir=args.cache_dir, **options)
        except Exception as exc:  # a backend that cannot start is reported, not fatal
            result["error"] = f"{type(exc).__name__}: {exc}"
            logger.warning("%s at %dx%d: %s", spec, *input_size, result["error"])
            continue
        result["setup_s"] = time.perf_counter() - started
        result["describe"] = backend.describe()
        timed.append((result, backend))
    if timed and timed[0][0]["graph"] != LABELS_ONLY:
        detector = Detector(timed[0][1])
        (timed[0][0]["end_to_end"],
         ) = time_interleaved([lambda i: detector(frames[i % len(frames)])],
                              args.warmup, args.iters)
    batches = [np.ascontiguousarray(resize_frame(f, input_size)[None]) for f in frames]
    inference = time_interleaved([lambda i, b=b: b.infer(batches[i % len(batches)])
                                  for _, b in timed],
                                 args.warmup, args.iters)
    rss, gpu = rss_mb(), gpu_used_mb()
    for (result, _), infer in zip(timed, inference):
        result.update(inference=infer, rss_mb=rss, rss_delta_mb=_delta(rss, rss_before),
                      gpu_used_mb=gpu, gpu_delta_mb=_delta(gpu, gpu_before))
        logger.info("%s %dx%d %s: %.2f FPS inference", spec, *input_size, result["graph"],
                    infer["fps"])
    del timed
    gc.collect()
    return results


def _delta(after: Optional[float], before: Optional[float]) -> Optional[float]:
    return None if after is None or before is None else after - before


def ratios(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Compare the results of each input size.

    Per size: throughput of each backend relative to torch on CPU, and the p50 inference
    latency the scores add to the same backend's labels-only graph.
    """
    done = [r for r in results if "error" not in r]
    rows = []
    for r in done:
        same = [o for o in done if o["input_size"] == r["input_size"]]
        if r["graph"] == LABELS_ONLY:
            full = next((o for o in same if o["backend"] == r["backend"]
                         and o["graph"] != LABELS_ONLY), None)
            if full is not None:
                rows.append({"kind": SCORE_COST, "backend": r["backend"],
                             "input_size": r["input_size"], "end_to_end": None,
                             "inference": (full["inference"]["p50_ms"] / r["inference"]["p50_ms"]
                                           - 1.0)})
            continue
        base = next((o for o in same if o["backend"] == "torch:cpu" and o["graph"] != LABELS_ONLY),
                    None)
        if base is not None and r is not base:
            rows.append({"kind": THROUGHPUT, "backend": r["backend"],
                         "input_size": r["input_size"],
                         "end_to_end": r["end_to_end"]["fps"] / base["end_to_end"]["fps"],
                         "inference": r["inference"]["fps"] / base["inference"]["fps"]})
    return rows


def _latencies(timing: Optional[Dict[str, float]]) -> str:
    if timing is None:
        return "- | -"
    return (f"{timing['fps']:.2f} | {timing['p50_ms']:.1f} / "
            f"{timing['p95_ms']:.1f} / {timing['p99_ms']:.1f}")


def _ratio(value: Optional[float], kind: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if kind == THROUGHPUT else f"{value:+.1%}"


def markdown(report: Dict[str, Any]) -> str:
    """Render the report as a Markdown section: machine, table, ratios."""
    m, s = report["machine"], report["settings"]
    gpus = ", ".join(g["name"] for g in m["gpus"]) or "none"
    load = ", ".join(f"{v:.2f}" for v in m["load_average_1_5_15"] or [])
    lines = [
        "## Benchmark", "",
        f"Machine: {m['cpu']}, {m.get('available_cpus', m['logical_cpus'])} cores available, "
        f"{m.get('memory_gb', '?')} GB RAM, GPU: {gpus}; load average at start {load}; torch "
        f"{m['torch']}, onnxruntime {m['onnxruntime'] or 'not installed'}, tensorrt "
        f"{m['tensorrt'] or 'not installed'}.",
        f"Settings: {s['warmup']} warm-up + {s['iters']} timed iterations, CPU threads: "
        f"{s['threads']}, camera frames {s['frame_size'][0]}x{s['frame_size'][1]}, batch 1.", "",
        "| backend | input | graph | e2e FPS | e2e p50 / p95 / p99 ms | infer FPS | infer p50 / "
        "p95 / p99 ms | RSS MB | GPU MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        size = f"{r['input_size'][0]}x{r['input_size'][1]}"
        if "error" in r:
            lines.append(f"| {r['backend']} | {size} | {r['graph']} | "
                         f"error: {r['error']} | | | | | |")
            continue
        gpu = "-" if r["gpu_used_mb"] is None else f"{r['gpu_used_mb']:.0f}"
        lines.append(f"| {r['describe']} | {size} | {r['graph']} | "
                     f"{_latencies(r.get('end_to_end'))} | {_latencies(r['inference'])} | "
                     f"{r['rss_mb']:.0f} | {gpu} |")
    if report["ratios"]:
        lines += ["", "| ratio | backend | input | end to end | inference |",
                  "|---|---|---|---:|---:|"]
        for q in report["ratios"]:
            size = f"{q['input_size'][0]}x{q['input_size'][1]}"
            lines.append(f"| {q['kind']} | {q['backend']} | {size} | "
                         f"{_ratio(q['end_to_end'], q['kind'])} | "
                         f"{_ratio(q['inference'], q['kind'])} |")
    return "\n".join(lines) + "\n"


def _parser():
    parser = command_parser("dense-ood-benchmark", __doc__.split("\n\n")[0],
                            "the Markdown table on stdout; with --out PATH, PATH.json (every "
                            "figure, the machine, the settings) and PATH.md (the table).")
    add_model(parser, "model checkpoint (.pt)")
    parser.add_argument("--backends",
                        help="comma-separated specs NAME[:OPTION...]: torch:DEVICE[:PRECISION], "
                             "onnxruntime:DEVICE, tensorrt:PRECISION, e.g. torch:cpu,"
                             "torch:cuda:fp16,onnxruntime:cpu,tensorrt:fp16 (default: every "
                             "backend available here; on a GPU also torch:cuda:fp16, "
                             "onnxruntime:cuda, tensorrt:fp16)")
    parser.add_argument("--sizes", default="360x480,720x1280",
                        help="comma-separated network input sizes "
                             "HEIGHTxWIDTH (default 360x480,720x1280)")
    parser.add_argument("--frame-size", type=parse_size, default=(720, 1280), metavar="HxW",
                        help="camera frame size for end-to-end timing (default 720x1280)")
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES,
                        help=f"real frames (default {DEFAULT_FRAMES})")
    parser.add_argument("--num-frames", type=int, default=8,
                        help="frames cycled through (default 8)")
    add_scores(parser)
    parser.add_argument("--no-score-cost", dest="score_cost", action="store_false",
                        help="skip the labels-only runs that measure what the scores cost")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations (default 5)")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations (default 20)")
    add_threads(parser)
    add_cache_dir(parser)
    parser.add_argument("--out", type=Path,
                        help="write PATH.json and PATH.md (e.g. docs/benchmark_cpu)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    args.threads = args.threads or available_cpu_count()
    torch.set_num_threads(args.threads)  # the same number of CPU threads for torch and onnxruntime
    try:
        specs = args.backends.split(",") if args.backends else default_backends()
        for spec in specs:
            parse_spec(spec)
        sizes = [parse_size(s) for s in args.sizes.split(",")]
        frames = load_frames(args.frames, args.num_frames, args.frame_size)
    except (ValueError, OSError, argparse.ArgumentTypeError) as exc:
        print(f"dense-ood-benchmark: error: {exc}", file=sys.stderr)
        return 2
    machine = describe_machine()
    results = []
    for size in sizes:
        for spec in specs:
            results.extend(run_backend(args.model, spec, size, frames, args))
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report = {"machine": machine,
              "settings": {"model": str(args.model), "warmup": args.warmup, "iters": args.iters,
                           "frame_size": list(args.frame_size), "frames": str(args.frames),
                           "scores": list(args.scores), "threads": args.threads},
              "results": results, "ratios": ratios(results)}
    table = markdown(report)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.name + ".json").write_text(json.dumps(report, indent=2))
        args.out.with_name(args.out.name + ".md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
