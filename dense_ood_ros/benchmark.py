r"""``dense-ood-benchmark``: throughput and latency of every available backend.

For each backend and input size it times, after warm-up,
  * end to end: :class:`~dense_ood_ros.detector.Detector` on a camera-sized frame (check,
    resize to the input size, inference with host<->device copies, labels/scores back to
    the frame size; with ``--node`` also the colour image of the labels that the node
    publishes);
  * inference alone: ``backend.infer`` on a batch already at the input size;
and reports frames per second, latency p50/p95/p99, process RSS and GPU memory in use.
With score costing on (default) the ONNX Runtime and TensorRT backends also run a
labels-only graph (inference alone), timed interleaved with the full one (A, B, A, B, ...)
so that load changes on a shared machine hit both alike: what the anomaly score adds to
the latency of segmentation alone.
Results go to JSON and a Markdown table, with the machine described and, per row, the CPU
that other processes used meanwhile (``--wait-quiet`` waits for a quiet machine first). It
only measures: nothing here asserts a speed.

Example::

    dense-ood-benchmark --model models/default.pt --sizes 360x480,720x1280 \
        --warmup 5 --iters 20 --out docs/benchmark_cpu
    dense-ood-benchmark --model models/default.pt --backends onnxruntime:cpu,onnxruntime:cpu:int8 \
        --node --wait-quiet 30
"""

import argparse
import gc
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
from dense_ood_ros.host import available_cpu_count, speed_flags
from dense_ood_ros.io import list_images, read_rgb, show_report
from dense_ood_ros.preprocessing import resize_frame

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = Path("../shared/data/camvid/test")
LABELS_ONLY = "labels only"
THROUGHPUT = "throughput vs torch:cpu"
SCORE_COST = "score cost (p50 inference latency added)"
MODEL_SPEED_UP = "throughput vs the same backend on --model"
#: Backend specs "name[:option[:option]][:key=value...]": each backend's positional options
#: in this order, e.g. torch:cpu, torch:cuda:fp16 (device, precision), onnxruntime:cpu:int8
#: (device, precision), tensorrt:int8; then any other option of the backend by name, e.g.
#: onnxruntime:cpu:fp32:spinning=1 or onnxruntime:cpu::optimization=basic.
SPEC_OPTIONS = {"torch": ("device", "precision"), "onnxruntime": ("device", "precision"),
                "openvino": ("precision",), "tensorrt": ("precision",)}
#: Other processes' CPU use (cores) under which the machine counts as quiet.
QUIET_CORES = 0.15
#: Named spec values that are not strings.
_SPEC_VALUES = {"spinning": {"0": False, "1": True, "false": False, "true": True},
                "threads": None}
#: The named spec value that picks another model file for a row (any backend).
MODEL_KEY = "model"
#: The spec of each GPU candidate of ``auto``.
GPU_SPECS = {"onnxruntime-gpu": ("onnxruntime:cuda",), "torch-cuda": ("torch:cuda:fp16",),
             "tensorrt": ("tensorrt:fp32", "tensorrt:fp16", "tensorrt:int8")}


def gpu_backends() -> List[str]:
    """Every GPU backend spec that can run here: ONNX Runtime GPU, torch CUDA fp16, TensorRT."""
    available = {candidate for candidate, reason in availability() if reason is None}
    return [spec for candidate, specs in GPU_SPECS.items() if candidate in available
            for spec in specs]


def default_backends() -> List[str]:
    """Every backend spec that can run here: torch and ONNX Runtime on the CPU, then the GPU's."""
    return ["torch:cpu", "onnxruntime:cpu", *gpu_backends()]


def parse_spec(spec: str) -> Tuple[str, Dict[str, Any]]:
    """``"torch:cuda:fp16"`` -> ("torch", {"device": "cuda", "precision": "fp16"}).

    Positional values come first (:data:`SPEC_OPTIONS`; empty ones are skipped), then
    ``key=value`` pairs for any other option the backend declares:
    ``"onnxruntime:cpu:int8:spinning=1"`` -> ("onnxruntime", {"device": "cpu",
    "precision": "int8", "spinning": True}). Every backend also takes ``model=PATH``, a model
    file other than ``--model`` for that row, so that architectures are compared in one run.
    """
    name, *values = spec.split(":")
    if name not in SPEC_OPTIONS:
        raise ValueError(f"unknown backend {name!r} in {spec!r}; "
                         f"choose from {sorted(SPEC_OPTIONS)}")
    names = SPEC_OPTIONS[name]
    positional = [v for v in values if "=" not in v]
    named = [v for v in values if "=" in v]
    if len(positional) > len(names) or values[:len(positional)] != positional:
        raise ValueError(f"backend spec {spec!r} has {len(positional)} options, but {name} takes "
                         f"at most {len(names)}: {':'.join((name, *names))}"
                         f"{'[:key=value...]' if named else ''}")
    options: Dict[str, Any] = {option: value for option, value in zip(names, positional) if value}
    declared = BACKENDS[name].options
    for pair in named:
        key, value = pair.split("=", 1)
        if key == MODEL_KEY:
            if not value:
                raise ValueError(f"backend spec {spec!r}: {MODEL_KEY}= needs a model file")
            options[key] = value
            continue
        if key not in declared or key in names:
            raise ValueError(f"backend spec {spec!r}: {name} has no named option {key!r}; "
                             f"it takes {sorted(set(declared) - set(names) | {MODEL_KEY})}")
        table = _SPEC_VALUES.get(key, {})
        if key == "threads":
            options[key] = int(value)
        elif table and value.lower() not in table:
            raise ValueError(f"backend spec {spec!r}: {key} must be one of {sorted(table)}")
        else:
            options[key] = table[value.lower()] if table else value
    return name, options


def latency_stats(seconds: Sequence[float]) -> Dict[str, float]:
    """FPS (frames / total time) and latency mean/min/p50/p95/p99 in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"fps": float(len(ms) / (ms.sum() / 1000.0)), "mean_ms": float(ms.mean()),
            "min_ms": float(ms.min()), "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99), "iterations": len(ms)}


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


def _cpu_ticks() -> Optional[Tuple[int, int]]:
    """(busy clock ticks of all CPUs, clock ticks of this process) from /proc; None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        with open("/proc/self/stat") as own:
            mine = own.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy, int(mine[11]) + int(mine[12])  # utime + stime of all threads


class LoadMeter:
    """Measures the CPU that *other* processes use during a ``with`` block, in cores.

    Machine busy time minus this process's, over the block's wall time (Linux /proc; 0.0
    elsewhere). On a shared machine it says how much a timing was disturbed.
    """

    def __enter__(self) -> "LoadMeter":
        self._start, self._ticks = time.perf_counter(), _cpu_ticks()
        self.other_cores = 0.0
        return self

    def __exit__(self, *exc) -> None:
        end, elapsed = _cpu_ticks(), time.perf_counter() - self._start
        if end is None or self._ticks is None or elapsed <= 0:
            return
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        other = (end[0] - self._ticks[0]) - (end[1] - self._ticks[1])
        self.other_cores = max(0.0, other / hz / elapsed)


def wait_until_quiet(max_other_cores: float = 0.15, timeout_s: float = 30.0,
                     sample_s: float = 0.5) -> Tuple[float, float]:
    """Wait until other processes use fewer than ``max_other_cores`` cores (or ``timeout_s``).

    Returns (seconds waited, the last load measured).
    """
    started = time.perf_counter()
    while True:
        with LoadMeter() as meter:
            time.sleep(sample_s)
        waited = time.perf_counter() - started
        if meter.other_cores < max_other_cores or waited >= timeout_s:
            return waited, meter.other_cores


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
    machine["cpu_flags"] = speed_flags()
    try:
        import tensorrt
        machine["tensorrt"] = tensorrt.__version__
    except ImportError:
        machine["tensorrt"] = None
    try:
        import openvino
        machine["openvino"] = openvino.__version__
    except ImportError:
        machine["openvino"] = None
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
    model = Path(options.pop(MODEL_KEY, model))
    variants = [False, True] if args.score_cost else [False]
    rss_before, gpu_before = rss_mb(), gpu_used_mb()
    results, timed = [], []
    for labels_only in variants:
        result: Dict[str, Any] = {"backend": spec, "model": str(model),
                                  "input_size": list(input_size),
                                  "graph": LABELS_ONLY if labels_only else "+".join(args.scores)}
        results.append(result)
        started = time.perf_counter()
        threads = args.threads if "threads" in BACKENDS[name].options else None
        try:
            backend = make_backend(name, model, args.scores, input_size, labels_only=labels_only,
                                   cache_dir=args.cache_dir, **{"threads": threads, **options})
        except Exception as exc:  # a backend that cannot start is reported, not fatal
            result["error"] = f"{type(exc).__name__}: {exc}"
            logger.warning("%s at %dx%d: %s", spec, *input_size, result["error"])
            continue
        result["setup_s"] = time.perf_counter() - started
        result["describe"] = backend.describe()
        timed.append((result, backend))
    batches = [np.ascontiguousarray(resize_frame(f, input_size)[None]) for f in frames]
    best = None
    for _ in range(1 + max(0, args.retries)):  # a disturbed measurement is taken again
        if args.wait_quiet > 0:
            wait_until_quiet(QUIET_CORES, timeout_s=args.wait_quiet)
        with LoadMeter() as load:
            end_to_end = None
            if timed and timed[0][0]["graph"] != LABELS_ONLY:
                end_to_end = _time_end_to_end(Detector(timed[0][1]), frames, args)
            inference = time_interleaved([lambda i, b=b: b.infer(batches[i % len(batches)])
                                          for _, b in timed],
                                         args.warmup, args.iters)
        if best is None or load.other_cores < best[2]:
            best = (end_to_end, inference, load.other_cores)
        if load.other_cores <= QUIET_CORES:
            break
        logger.info("%s at %dx%d: other processes used %.2f cores meanwhile; timing again",
                    spec, *input_size, load.other_cores)
    end_to_end, inference, other = best
    if end_to_end is not None:
        timed[0][0]["end_to_end"] = end_to_end
    rss, gpu = rss_mb(), gpu_used_mb()
    for (result, _), infer in zip(timed, inference):
        result.update(inference=infer, rss_mb=rss, rss_delta_mb=_delta(rss, rss_before),
                      gpu_used_mb=gpu, gpu_delta_mb=_delta(gpu, gpu_before),
                      other_cores=other)
        logger.info("%s %dx%d %s: %.2f FPS inference", spec, *input_size, result["graph"],
                    infer["fps"])
    del timed
    gc.collect()
    return results


def best_of(rounds: Sequence[Sequence[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Merge repeated rounds of the same results: per row, the fastest round's timings.

    Rows match by position (every round runs the same backends in the same order). End to
    end and inference are chosen separately, each by the lowest p50, so a round that a busy
    machine slowed down does not stand for the backend; ``rounds`` records how many there were.
    """
    merged = []
    for rows in zip(*rounds):
        done = [r for r in rows if "error" not in r]
        if not done:
            merged.append(dict(rows[0]))
            continue
        best = dict(min(done, key=lambda r: r["inference"]["p50_ms"]))
        with_e2e = [r for r in done if r.get("end_to_end")]
        if with_e2e:
            best["end_to_end"] = min(with_e2e, key=lambda r: r["end_to_end"]["p50_ms"])[
                "end_to_end"]
        best["rounds"] = len(rows)
        merged.append(best)
    return merged


def _time_end_to_end(detector: Detector, frames: Sequence[np.ndarray],
                     args: argparse.Namespace) -> Dict[str, float]:
    """Latency of the detector on camera frames (and of the node's colouring with --node)."""
    def end_to_end(i: int) -> None:
        output = detector(frames[i % len(frames)])
        if args.node:
            detector.label_set.colorize(output.labels)

    return time_interleaved([end_to_end], args.warmup, args.iters)[0]


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
        other_model = _spec_without_model(r["backend"])
        same_backend = next((o for o in same if o["backend"] == other_model
                             and o["graph"] == r["graph"]), None)
        if other_model != r["backend"] and same_backend is not None:
            rows.append({"kind": MODEL_SPEED_UP, "backend": r["backend"],
                         "input_size": r["input_size"],
                         "end_to_end": _fps_ratio(r, same_backend, "end_to_end"),
                         "inference": _fps_ratio(r, same_backend, "inference")})
    return rows


def _spec_without_model(spec: str) -> str:
    """Drop ``model=...`` and the empty options left before it (``onnxruntime:cpu::model=X``)."""
    kept = ":".join(part for part in spec.split(":") if not part.startswith(MODEL_KEY + "="))
    return kept.rstrip(":")


def _fps_ratio(result: Dict[str, Any], base: Dict[str, Any], timing: str) -> Optional[float]:
    if not result.get(timing) or not base.get(timing):
        return None
    return result[timing]["fps"] / base[timing]["fps"]


def _latencies(timing: Optional[Dict[str, float]]) -> str:
    if timing is None:
        return "- | -"
    return (f"{timing['fps']:.2f} | {timing['p50_ms']:.1f} / "
            f"{timing['p95_ms']:.1f} / {timing['p99_ms']:.1f}")


def _ratio(value: Optional[float], kind: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if kind in (THROUGHPUT, MODEL_SPEED_UP) else f"{value:+.1%}"


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
        f"{m['tensorrt'] or 'not installed'}, openvino {m.get('openvino') or 'not installed'}; "
        f"CPU flags: {' '.join(m.get('cpu_flags') or []) or 'none of interest'}.",
        f"Settings: {s['warmup']} warm-up + {s['iters']} timed iterations, CPU threads: "
        f"{s['threads']}, camera frames {s['frame_size'][0]}x{s['frame_size'][1]}, batch 1"
        f"{'; end to end includes colouring the labels (--node)' if s.get('node') else ''}"
        f"{'; best of %d rounds per row' % s['rounds'] if s.get('rounds', 1) > 1 else ''}.",
        "",
        "| backend | input | graph | e2e FPS | e2e p50 / p95 / p99 ms | infer FPS | infer p50 / "
        "p95 / p99 ms | RSS MB | GPU MB | other load |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    several_models = len({r.get("model", s["model"]) for r in report["results"]}) > 1
    for r in report["results"]:
        size = f"{r['input_size'][0]}x{r['input_size'][1]}"
        model = f" `{Path(r.get('model', s['model'])).name}`" if several_models else ""
        if "error" in r:
            lines.append(f"| {r['backend']} | {size} | {r['graph']} | "
                         f"error: {r['error']} | | | | | | |")
            continue
        gpu = "-" if r["gpu_used_mb"] is None else f"{r['gpu_used_mb']:.0f}"
        other = "-" if r.get("other_cores") is None else f"{r['other_cores']:.2f}"
        lines.append(f"| {r['describe']}{model} | {size} | {r['graph']} | "
                     f"{_latencies(r.get('end_to_end'))} | {_latencies(r['inference'])} | "
                     f"{r['rss_mb']:.0f} | {gpu} | {other} |")
    lines += ["", "RSS: the benchmark process's resident memory after the row's runs (every "
              "backend built so far included). Other load: CPU cores that other processes used "
              "while the row was timed (0 = undisturbed)."]
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
                        help="comma-separated specs NAME[:OPTION...][:KEY=VALUE...]: "
                             "torch:DEVICE[:PRECISION], onnxruntime:DEVICE[:PRECISION], "
                             "tensorrt:PRECISION, then other options by name, e.g. torch:cpu,"
                             "torch:cuda:fp16,onnxruntime:cpu,onnxruntime:cpu:int8,"
                             "onnxruntime:cpu:fp32:spinning=1,tensorrt:fp16 (default: every "
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
    parser.add_argument("--node", action="store_true",
                        help="also time the node's colouring of the labels (LabelSet.colorize) "
                             "inside the end-to-end timing, as the detector node publishes it")
    add_threads(parser)
    add_cache_dir(parser)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before timing each backend, wait up to SECONDS until other "
                             f"processes use under {QUIET_CORES} cores (default 0: do not wait)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every backend and size N times over and report, per row, "
                             "the round with the lowest p50 (default 1); on a machine whose "
                             "speed drifts, what a backend can do rather than when it ran")
    parser.add_argument("--retries", type=int, default=0,
                        help="time a backend again, up to N times, when other processes used "
                             f"over {QUIET_CORES} cores meanwhile; the least disturbed timing "
                             "is kept (default 0)")
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
    rounds = []
    for _ in range(max(1, args.rounds)):
        rounds.append([result for size in sizes for spec in specs
                       for result in run_backend(args.model, spec, size, frames, args)])
    results = best_of(rounds)
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report = {"machine": machine,
              "settings": {"model": str(args.model), "warmup": args.warmup, "iters": args.iters,
                           "frame_size": list(args.frame_size), "frames": str(args.frames),
                           "scores": list(args.scores), "threads": args.threads,
                           "node": args.node, "rounds": max(1, args.rounds)},
              "results": results, "ratios": ratios(results)}
    show_report(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
