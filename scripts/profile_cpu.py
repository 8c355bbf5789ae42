#!/usr/bin/env python3
r"""Where the CPU time of one frame goes: ONNX Runtime per operator, and the detector per stage.

Sections (``--sections``, comma-separated, default all):

* ``machine``: the measured FLOP rate of this CPU through ONNX Runtime (fp32 MatMul 2048^3,
  the decoder's largest 3x3 convolution alone, and u8s8 MatMulInteger 2048^3).
* ``flops``: multiply-adds of every Conv and MatMul of the exported graph, from its tensor
  shapes (one run with those tensors as extra outputs), grouped by kind.
* ``ort``: ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) over ``--runs``
  inferences of the fp32 graph (and the int8 graph with ``--int8``), kernel time aggregated by
  operator type and by node, with each node's GFLOP/s where its FLOPs are known; and the
  floor: graph FLOPs / measured rate against the measured latency.
* ``detector``: the detector's stages on camera-sized frames (check, resize, inference, labels
  and scores back to the frame size) and what the node adds (colouring, message
  conversions), medians over ``--runs`` frames.
* ``levers``: inference latency of ONNX Runtime settings, each against the default in turn,
  timed interleaved (A, B, A, B, ...): graph optimisation level, intra-op threads, spinning,
  precision, and the score's cost (labels-only graph).
* ``encoder``: the encoder alone (uint8 image in, normalisation and the encoder's feature maps
  out, exported from the same checkpoint) timed interleaved with the whole graph: the part of
  the frame no decoder can remove, and the frame rate that bounds any decoder on this encoder.
* ``recipes``: which convolutions to quantize: a few INT8 recipes (calibrated alike on
  ``--recipe-frames`` CamVid train frames), each with its label agreement and mean score
  difference against fp32 on the frames, and latency, all timed interleaved.

Run it with the background training paused, e.g.::

    /work/with_training_paused.sh .venv/bin/python scripts/profile_cpu.py \
        --model models/default.pt --int8 --out docs/cpu_profile_tables

Writes PATH.json (every figure) and PATH.md (the tables); only measures, asserts nothing.
Before each timed block it waits (up to ``--quiet-timeout`` s) until other processes use
less than ``--quiet-cores`` of the CPU, and it reports what they used during the block.
"""

import argparse
import collections
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from dense_ood_ros.benchmark import (LoadMeter, describe_machine, load_frames,  # noqa: E402
                                     time_interleaved, wait_until_quiet)
from dense_ood_ros.cli import parse_size  # noqa: E402
from dense_ood_ros.io import show_report  # noqa: E402

logger = logging.getLogger("profile_cpu")

SECTIONS = ("machine", "flops", "ort", "detector", "levers", "encoder", "recipes")
#: Untimed runs before each timed series (and left out of ONNX Runtime's profile).
WARMUP = 3


# --------------------------------------------------------------------------- ONNX helpers

def session(onnx_path, threads: int = 2, spinning: bool = False, optimization: str = "all",
            profile_prefix: Optional[str] = None):
    """Return a CPU session with the backend's settings (or the given ones)."""
    import onnxruntime as ort

    from dense_ood_ros.backends.onnxruntime_backend import OPTIMIZATION_LEVELS

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               OPTIMIZATION_LEVELS[optimization])
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning",
                                     "1" if spinning else "0")
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    model = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def conv_matmul_flops(onnx_path, input_size: Tuple[int, int]) -> List[Dict[str, Any]]:
    """Count the FLOPs (2 x multiply-adds) of every Conv and MatMul node from a run's shapes.

    The graph is run once (no optimisation) with every Conv/MatMul input and output added as
    a graph output, so the shapes are the real ones whatever the graph computes them from.
    Conv: 2 * prod(output) * prod(weight[1:]) (grouped: weight[1] = in/group); MatMul:
    2 * prod(output) * inner dimension.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul")]
    wanted = set()
    for node in nodes:
        wanted.add(node.output[0])
        wanted.update(name for name in node.input[:2] if name and name not in weights)
    present = {o.name for o in model.graph.output}
    for name in sorted(wanted - present):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    run = session(model.SerializeToString(), optimization="none")
    names = [o.name for o in run.get_outputs()]
    feed = np.zeros((1, *input_size, 3), np.uint8)
    values = run.run(None, {"images": feed})
    shapes = {name: list(value.shape) for name, value in zip(names, values)}
    shapes.update(weights)
    rows = []
    for node in nodes:
        out = shapes[node.output[0]]
        if node.op_type == "Conv":
            weight = shapes[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            flops = 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
            kind = ("depthwise" if group > 1 else "stem (image)" if weight[1] <= 4
                    else f"{weight[2]}x{weight[3]} dense")
        else:
            weight = shapes[node.input[0]]
            flops = 2 * int(np.prod(out)) * int(weight[-1])
            kind = "matmul (pooling)"
        rows.append({"node": node.name, "op": node.op_type, "kind": kind, "weight": weight,
                     "output": out, "flops": flops})
    return rows


def read_profile(path: Path, skip: int = 0) -> Tuple[List[Dict[str, Any]], int]:
    """Kernel events of an ONNX Runtime profile and the number of runs they cover.

    The first ``skip`` runs (warm-up) and their kernels are left out.
    """
    events = json.loads(Path(path).read_text())
    runs = sorted((e for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    start = runs[skip - 1]["ts"] + runs[skip - 1]["dur"] if 0 < skip <= len(runs) else -1
    kernels = [e for e in events if e.get("cat") == "Node" and e["ts"] >= start
               and e.get("name", "").endswith("_kernel_time")]
    return kernels, len(runs) - min(skip, len(runs))


def _event_flops(event: Dict[str, Any], by_name: Dict[str, int]) -> Optional[int]:
    """Return the FLOPs of one kernel event: by its Conv weight shape, else the original node."""
    args = event.get("args", {})
    name = event["name"][:-len("_kernel_time")]
    if args.get("op_name") == "Conv":
        shapes = [next(iter(s.values())) for s in args.get("input_type_shape", [])]
        out = [next(iter(s.values())) for s in args.get("output_type_shape", [])]
        if len(shapes) >= 2 and len(shapes[1]) == 4 and out:
            return 2 * int(np.prod(out[0])) * int(np.prod(shapes[1][1:]))
    for original, flops in by_name.items():  # quantized nodes keep the original name as prefix
        if name.startswith(original + "_"):
            return flops
    return None


def aggregate_profile(kernels: Sequence[Dict[str, Any]], runs: int,
                      flops_by_node: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """Kernel time per run by operator type and by node (ms, share), heaviest first."""
    runs = max(runs, 1)
    by_op: Dict[str, float] = collections.Counter()
    by_node: Dict[str, float] = collections.Counter()
    info: Dict[str, Dict[str, Any]] = {}
    for event in kernels:
        name = event["name"][:-len("_kernel_time")]
        op = event.get("args", {}).get("op_name", "?")
        by_op[op] += event["dur"]
        by_node[name] += event["dur"]
        if name not in info:
            out = event.get("args", {}).get("output_type_shape", [])
            info[name] = {"op": op, "output": next(iter(out[0].values())) if out else None,
                          "flops": _event_flops(event, flops_by_node or {})}
    total = sum(by_op.values())
    ops = [{"op": op, "ms": us / runs / 1000.0, "share": us / total if total else 0.0}
           for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])]
    nodes = []
    for name, us in sorted(by_node.items(), key=lambda kv: -kv[1]):
        ms = us / runs / 1000.0
        flops = info[name]["flops"]
        nodes.append({"node": name, **info[name], "ms": ms,
                      "share": us / total if total else 0.0,
                      "gflops_per_s": flops / (ms / 1000.0) / 1e9 if flops and ms else None})
    return {"runs": runs, "kernel_ms_per_run": total / runs / 1000.0, "by_op": ops,
            "by_node": nodes}


# --------------------------------------------------------------------------- timing helpers

def time_calls(fn: Callable[[int], Any], runs: int, warmup: int = WARMUP) -> Dict[str, float]:
    """Latency statistics of ``fn(i)`` (after warm-up)."""
    return time_interleaved([fn], warmup, runs)[0]


def quiet(args) -> None:
    """Wait until other processes are (nearly) idle; log when they never were."""
    waited, load = wait_until_quiet(args.quiet_cores, args.quiet_timeout)
    if load > args.quiet_cores:
        logger.warning("other processes still use %.2f cores after %.0f s; measuring anyway",
                       load, waited)


def measured(args, fn: Callable[[], Any]) -> Tuple[Any, float]:
    """Run ``fn`` after waiting for quiet; return its result and other processes' load.

    When other processes used more than ``--quiet-cores`` meanwhile, it is measured again (up
    to ``--retries`` times) and the least disturbed measurement is kept.
    """
    best: Optional[Tuple[Any, float]] = None
    for _ in range(1 + max(0, args.retries)):
        quiet(args)
        with LoadMeter() as meter:
            result = fn()
        if best is None or meter.other_cores < best[1]:
            best = (result, meter.other_cores)
        if meter.other_cores <= args.quiet_cores:
            break
        logger.info("other processes used %.2f cores during the measurement; again",
                    meter.other_cores)
    return best


# --------------------------------------------------------------------------- sections

def section_machine(args) -> Dict[str, Any]:
    """Measured fp32 and int8 rates of ONNX Runtime's CPU kernels on this machine."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def model(nodes, inputs, outputs, inits):
        graph = helper.make_graph(nodes, "probe", inputs, outputs, inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    n = 2048
    probes = []
    weight = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "B")
    probes.append(("fp32 MatMul 2048x2048x2048", model(
        [helper.make_node("MatMul", ["A", "B"], ["C"])],
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])], [weight]),
        {"A": rng.standard_normal((n, n)).astype(np.float32)}, 2 * n ** 3))
    conv_w = numpy_helper.from_array((rng.standard_normal((128, 128, 3, 3)) * 0.05)
                                     .astype(np.float32), "W")
    probes.append(("fp32 Conv 3x3 128->128 at 90x120 (the decoder's largest)", model(
        [helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 128, 90, 120])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 128, 90, 120])], [conv_w]),
        {"X": rng.standard_normal((1, 128, 90, 120)).astype(np.float32)},
        2 * 90 * 120 * 128 * 128 * 9))
    int_w = numpy_helper.from_array(rng.integers(-127, 128, (n, n)).astype(np.int8), "B")
    probes.append(("u8s8 MatMulInteger 2048x2048x2048", model(
        [helper.make_node("MatMulInteger", ["A", "B", "az", "bz"], ["C"])],
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.INT32, [n, n])],
        [int_w, numpy_helper.from_array(np.array(128, np.uint8), "az"),
         numpy_helper.from_array(np.array(0, np.int8), "bz")]),
        {"A": rng.integers(0, 256, (n, n)).astype(np.uint8)}, 2 * n ** 3))
    rows = []
    for name, proto, feeds, flops in probes:
        onnx.checker.check_model(proto)
        run = session(proto.SerializeToString(), args.threads)
        stats, other = measured(args, lambda: time_calls(lambda i: run.run(None, feeds),
                                                         max(5, args.runs // 3)))
        rows.append({"probe": name, "flops": flops, "p50_ms": stats["p50_ms"],
                     "min_ms": stats["min_ms"], "gflops_per_s": flops / stats["p50_ms"] / 1e6,
                     "peak_gflops_per_s": flops / stats["min_ms"] / 1e6, "other_cores": other})
        logger.info("%s: %.1f GFLOP/s", name, rows[-1]["gflops_per_s"])
    return {"probes": rows}


def section_flops(args, graphs: Dict[str, Path]) -> Dict[str, Any]:
    """Graph FLOPs by node and kind."""
    rows = conv_matmul_flops(graphs["fp32"], args.size)
    kinds: Dict[str, int] = collections.Counter()
    for row in rows:
        kinds[row["kind"]] += row["flops"]
    total = sum(kinds.values())
    return {"total_flops": total, "nodes": len(rows),
            "by_kind": [{"kind": k, "flops": v, "share": v / total}
                        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])],
            "by_node": sorted(rows, key=lambda r: -r["flops"])}


def section_ort(args, graphs: Dict[str, Path], flops: Optional[Dict[str, Any]],
                frames: Sequence[np.ndarray]) -> Dict[str, Any]:
    """ONNX Runtime's profiler per graph, with the wall-clock latency with and without it."""
    from dense_ood_ros.preprocessing import resize_frame

    batches = [np.ascontiguousarray(resize_frame(f, args.size)[None]) for f in frames]
    flops_by_node = {r["node"]: r["flops"] for r in (flops or {}).get("by_node", [])}
    result = {}
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as folder:
        for label, path in graphs.items():
            plain = session(path, args.threads)

            def attempt():  # a fresh profiled session each time: its file holds these runs only
                profiled = session(path, args.threads, profile_prefix=str(Path(folder) / label))
                timings = time_interleaved(
                    [lambda i: plain.run(None, {"images": batches[i % len(batches)]}),
                     lambda i: profiled.run(None, {"images": batches[i % len(batches)]})],
                    WARMUP, args.runs)
                return timings, read_profile(Path(profiled.end_profiling()), skip=WARMUP)

            (timings, (kernels, runs)), other = measured(args, attempt)
            summary = aggregate_profile(kernels, runs, flops_by_node)
            summary.update(wall=timings[0], wall_profiled=timings[1], other_cores=other,
                           graph=Path(path).name, quantized_nodes=_quantized(path))
            result[label] = summary
            logger.info("%s: %.1f ms p50 (%.1f ms profiled, kernels %.1f ms/run)", label,
                        timings[0]["p50_ms"], timings[1]["p50_ms"],
                        summary["kernel_ms_per_run"])
    return result


def section_detector(args, frames: Sequence[np.ndarray]) -> Dict[str, Any]:
    """Per-stage latency of the detector and of what the node does around it.

    Every stage of every precision is timed in one interleaved series (one call of each per
    round), so a change in machine speed during the measurement hits them all alike and the
    precisions compare directly.
    """
    plan = [(precision, *_detector_stages(args, precision, frames))
            for precision in args.precisions]
    functions = [fn for *_, stages in plan for _, fn in stages]
    timings, other = measured(args, lambda: time_interleaved(functions, WARMUP, args.runs))
    result: Dict[str, Any] = {}
    for precision, describe, size, stages in plan:
        mine, timings = timings[:len(stages)], timings[len(stages):]
        rows = [{"stage": name, **stats, "other_cores": other}
                for (name, _), stats in zip(stages, mine)]
        result[precision] = {"describe": describe, "input_size": list(size),
                             "frame_size": list(frames[0].shape[:2]), "stages": rows}
    return result


def _detector_stages(args, precision: str, frames: Sequence[np.ndarray]):
    """(backend description, input size, [(stage, fn(i))]) of one precision's detector."""
    from dense_ood_ros.detector import Detector
    from dense_ood_ros.preprocessing import check_rgb_frame, resize_frame, resize_outputs

    detector = Detector.from_model(args.model, backend="onnxruntime", device="cpu",
                                   threads=args.threads, precision=precision,
                                   cache_dir=args.cache_dir)
    backend, label_set = detector.backend, detector.label_set
    size = backend.input_size
    small = [np.ascontiguousarray(resize_frame(f, size)[None]) for f in frames]
    labels, scores = backend.infer(small[0])
    big_labels, big_scores = resize_outputs(labels[0], scores[0], frames[0].shape[:2])
    count = len(frames)

    def palette_indexing(lab):  # colouring as it was: fancy indexing of the palette
        return label_set.palette[np.minimum(lab, label_set.num_classes)]

    stages = [
        ("check frame", lambda i: check_rgb_frame(frames[i % count])),
        ("resize frame to input (cv2 bilinear)", lambda i: resize_frame(frames[i % count], size)),
        ("inference (backend.infer)", lambda i: backend.infer(small[i % count])),
        ("labels + scores to frame size (resize_outputs)",
         lambda i: resize_outputs(labels[0], scores[0], frames[i % count].shape[:2])),
        ("whole detector (end to end)", lambda i: detector(frames[i % count])),
        ("colour labels at frame size: palette indexing (before)",
         lambda i: palette_indexing(big_labels)),
        ("colour labels at frame size: LabelSet.colorize (lookup table)",
         lambda i: label_set.colorize(big_labels)),
    ]
    stages += _node_stages(frames, big_labels, big_scores[0], label_set)
    return backend.describe(), size, stages


def _node_stages(frames, big_labels, score, label_set
                 ) -> List[Tuple[str, Callable[[int], Any]]]:
    """Message conversions the node does per frame (needs sensor_msgs; none without)."""
    try:
        from dense_ood_ros.ros.conversions import message_to_rgb, numpy_to_image
        numpy_to_image(big_labels[:8, :8].copy(), "mono8")
    except Exception as exc:  # no ROS message packages here: the node's part is not timed
        logger.warning("node conversions not timed: %s", exc)
        return []
    messages = [numpy_to_image(np.ascontiguousarray(f[:, :, ::-1]), "bgr8") for f in frames]
    colour = label_set.colorize(big_labels)
    return [("node: camera message bgr8 -> RGB frame (message_to_rgb)",
             lambda i: message_to_rgb(messages[i % len(messages)])),
            ("node: labels -> mono8 message", lambda i: numpy_to_image(big_labels, "mono8")),
            ("node: colour -> rgb8 message", lambda i: numpy_to_image(colour, "rgb8")),
            ("node: score -> 32FC1 message", lambda i: numpy_to_image(score, "32FC1"))]


def section_levers(args, frames: Sequence[np.ndarray]) -> Dict[str, Any]:
    """Inference latency of each setting against the default, interleaved pairwise."""
    from dense_ood_ros.backends import make_backend
    from dense_ood_ros.preprocessing import resize_frame

    base = {"device": "cpu", "threads": args.threads}
    variants = [
        ("graph optimisation: basic", {"optimization": "basic"}),
        ("graph optimisation: extended", {"optimization": "extended"}),
        ("graph optimisation: none", {"optimization": "none"}),
        ("1 intra-op thread", {"threads": 1}),
        ("spinning on", {"spinning": True}),
        ("labels only (no score)", {"labels_only": True}),
    ]
    if "int8" in args.precisions:
        variants += [("int8", {"precision": "int8"}),
                     ("int8, labels only (no score)", {"precision": "int8", "labels_only": True})]
    batches = [np.ascontiguousarray(resize_frame(f, args.size)[None]) for f in frames]
    reference = make_backend("onnxruntime", args.model, input_size=args.size,
                             cache_dir=args.cache_dir, **base)
    rows = []
    for name, change in variants:
        options = {**base, **change}
        labels_only = options.pop("labels_only", False)
        variant = make_backend("onnxruntime", args.model, input_size=args.size,
                               labels_only=labels_only, cache_dir=args.cache_dir, **options)
        # A spinning pool keeps its cores busy after each run, which would slow the runs
        # interleaved with it: spinning is timed in blocks instead (default, spinning, default).
        rows.append(_pair(args, name, reference, variant, batches,
                          interleave=not options.get("spinning")))
    if "int8" in args.precisions:  # the score's cost within int8 is against int8 labels-only
        pair = [make_backend("onnxruntime", args.model, input_size=args.size,
                             labels_only=labels_only, cache_dir=args.cache_dir,
                             precision="int8", **base) for labels_only in (True, False)]
        rows.append(_pair(args, "int8 with score (against int8 labels only)", *pair, batches))
    return {"reference": reference.describe(), "rows": rows}


def _pair(args, name: str, reference, variant, batches, interleave: bool = True
          ) -> Dict[str, Any]:
    """Time two backends interleaved; the variant's p50 relative to the reference's.

    Without ``interleave``: in blocks, reference (half the runs), variant, reference (the
    other half); the reference's figures cover both of its blocks.
    """
    def run(backend):
        return lambda i: backend.infer(batches[i % len(batches)])

    def blocks():
        half = max(1, args.runs // 2)
        first, second = time_calls(run(reference), half), None
        timing = time_calls(run(variant), args.runs)
        second = time_calls(run(reference), args.runs - half)
        merged = {key: (first[key] + second[key]) / 2 for key in first if key != "iterations"}
        merged.update(fps=2 / (1 / first["fps"] + 1 / second["fps"]),
                      min_ms=min(first["min_ms"], second["min_ms"]),
                      iterations=first["iterations"] + second["iterations"])
        return [merged, timing]

    (timings, other) = measured(args, (lambda: time_interleaved(
        [run(reference), run(variant)], WARMUP, args.runs)) if interleave else blocks)
    logger.info("%s: %.1f vs %.1f ms p50", name, timings[1]["p50_ms"], timings[0]["p50_ms"])
    return {"variant": name, "describe": variant.describe(), "default": timings[0],
            "variant_timing": timings[1], "interleaved": interleave,
            "change": timings[1]["p50_ms"] / timings[0]["p50_ms"] - 1.0, "other_cores": other}


def encoder_graph(segmenter):
    """Return the inference graph cut after the encoder: uint8 (N, H, W, 3) -> its maps."""
    from torch import nn

    from dense_ood_ros.preprocessing import Normalize

    return nn.Sequential(Normalize(), segmenter.encoder).eval()


def section_encoder(args, graphs: Dict[str, Path], frames: Sequence[np.ndarray]
                    ) -> Dict[str, Any]:
    """Time the encoder alone against the whole fp32 graph, interleaved."""
    import io
    import warnings

    import torch

    from dense_ood_ros.checkpoint import load_model
    from dense_ood_ros.preprocessing import resize_frame

    segmenter, _ = load_model(args.model)
    exported = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder_graph(segmenter), (torch.zeros((1, *args.size, 3),
                                                                 dtype=torch.uint8),),
                          exported, dynamo=False, input_names=["images"])
    encoder, whole = session(exported.getvalue(), args.threads), session(graphs["fp32"],
                                                                         args.threads)
    batches = [np.ascontiguousarray(resize_frame(f, args.size)[None]) for f in frames]
    timings, other = measured(args, lambda: time_interleaved(
        [lambda i: whole.run(None, {"images": batches[i % len(batches)]}),
         lambda i: encoder.run(None, {"images": batches[i % len(batches)]})], WARMUP, args.runs))
    logger.info("encoder alone %.1f ms p50 of the whole graph's %.1f ms",
                timings[1]["p50_ms"], timings[0]["p50_ms"])
    return {"whole": timings[0], "encoder": timings[1], "other_cores": other,
            "share": timings[1]["p50_ms"] / timings[0]["p50_ms"],
            "encoder_bound_fps": 1000.0 / timings[1]["p50_ms"],
            "encoder_bound_fps_best": 1000.0 / timings[1]["min_ms"]}


def _convs(model):
    """(node, weight shape, group) of every Conv with an initializer weight."""
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            yield node, weights[node.input[1]], group


def _classifier(model) -> str:
    """Name the last Conv of the graph (the logits)."""
    return [node.name for node, _, _ in _convs(model)][-1]


def select_large_dense(model) -> List[str]:
    """Select the recipe's convolutions plus the dense 1x1 ones with >= 40k weights."""
    from dense_ood_ros.quantization import quantized_nodes

    chosen = set(quantized_nodes(model))
    return [node.name for node, weight, group in _convs(model)
            if node.name in chosen or (group == 1 and int(np.prod(weight)) >= 40000)]


def select_all_but_depthwise(model) -> List[str]:
    """Select every dense convolution except the stem (image) and the classifier (logits)."""
    last = _classifier(model)
    return [node.name for node, weight, group in _convs(model)
            if group == 1 and weight[1] > 4 and node.name != last]


def select_all(model) -> List[str]:
    """Select every convolution."""
    return [node.name for node, _, _ in _convs(model)]


def section_recipes(args, graphs: Dict[str, Path], frames: Sequence[np.ndarray]
                    ) -> Dict[str, Any]:
    """INT8 recipes: agreement with fp32 and latency, timed interleaved with fp32."""
    from dense_ood_ros.backends.calibration import CalibrationSettings
    from dense_ood_ros.preprocessing import resize_frame
    from dense_ood_ros.quantization import calibration_batches, quantize_onnx, quantized_nodes

    recipes = [("dense 3x3 convolutions (the shipped recipe)", quantized_nodes),
               ("+ dense 1x1 convolutions with >= 40k weights", select_large_dense),
               ("every dense convolution but stem and classifier", select_all_but_depthwise),
               ("every convolution", select_all)]
    calibration = CalibrationSettings(args.calibration_dir, args.recipe_frames, "minmax")
    batches = calibration_batches(calibration, args.size)
    flops = {r["node"]: r["flops"] for r in section_flops(args, graphs)["by_node"]}
    total = sum(flops.values())
    inputs = [np.ascontiguousarray(resize_frame(f, args.size)[None]) for f in frames]
    rows, sessions = [], [session(graphs["fp32"], args.threads)]
    with tempfile.TemporaryDirectory(prefix="int8-recipes-") as folder:
        for index, (name, select) in enumerate(recipes):
            path = Path(folder) / f"recipe{index}.onnx"
            nodes = quantize_onnx(graphs["fp32"], path, batches, "minmax", select)
            rows.append({"recipe": name, "convolutions": len(nodes),
                         "flops_share": sum(flops.get(n, 0) for n in nodes) / total})
            sessions.append(session(path, args.threads))
    reference = [sessions[0].run(None, {"images": x}) for x in inputs]
    for row, run in zip(rows, sessions[1:]):
        agreement, diff = [], []
        for x, (ref_labels, ref_scores) in zip(inputs, reference):
            labels, scores = run.run(None, {"images": x})
            agreement.append(float((labels == ref_labels).mean()))
            diff.append(float(np.abs(scores - ref_scores).mean()))
        row.update(agreement_min=min(agreement), agreement_mean=float(np.mean(agreement)),
                   score_diff_mean=float(np.mean(diff)))
    timings, other = measured(args, lambda: time_interleaved(
        [lambda i, s=s: s.run(None, {"images": inputs[i % len(inputs)]}) for s in sessions],
        WARMUP, args.runs))
    for row, timing in zip(rows, timings[1:]):
        row.update(timing=timing, change=timing["p50_ms"] / timings[0]["p50_ms"] - 1.0)
    return {"fp32": timings[0], "rows": rows, "other_cores": other,
            "calibration": f"{len(batches)} frames of {args.calibration_dir}, minmax",
            "frames": len(inputs)}


# --------------------------------------------------------------------------- report

def _size(shape) -> str:
    return "x".join(str(v) for v in shape) if shape else "-"


def markdown(report: Dict[str, Any], top: int = 20) -> str:
    """Render the report's tables."""
    commands = sorted(set(report["commands"].values()))
    lines = ["# CPU profile (generated by scripts/profile_cpu.py)", "",
             "Commands (each run with the training paused, `/work/with_training_paused.sh "
             ".venv/bin/python ...`):", "", *[f"* `{c}`" for c in commands], "",
             f"Machine: {report['machine'].get('cpu')}, "
             f"{report['machine'].get('available_cpus')} cores, onnxruntime "
             f"{report['machine'].get('onnxruntime')}; model {report['settings']['model']}, "
             f"input {_size(report['settings']['size'])}, frames "
             f"{_size(report['settings']['frame_size'])}, {report['settings']['threads']} "
             f"threads, {report['settings']['runs']} timed runs per figure.", ""]
    sections = report["sections"]
    if "machine" in sections:
        lines += ["## Measured FLOP rate", "",
                  "| probe | GFLOP | p50 ms | GFLOP/s at p50 | GFLOP/s at best run | "
                  "other load (cores) |", "|---|---:|---:|---:|---:|---:|"]
        for r in sections["machine"]["probes"]:
            lines.append(f"| {r['probe']} | {r['flops'] / 1e9:.2f} | {r['p50_ms']:.1f} | "
                         f"{r['gflops_per_s']:.0f} | {r['peak_gflops_per_s']:.0f} | "
                         f"{r['other_cores']:.2f} |")
        lines.append("")
    if "flops" in sections:
        f = sections["flops"]
        lines += [f"## Graph FLOPs: {f['total_flops'] / 1e9:.2f} GFLOP per frame "
                  f"({f['nodes']} Conv/MatMul nodes)", "",
                  "| kind | GFLOP | share |", "|---|---:|---:|"]
        lines += [f"| {k['kind']} | {k['flops'] / 1e9:.3f} | {k['share']:.1%} |"
                  for k in f["by_kind"]]
        lines += ["", "| node | weight | output | GFLOP |", "|---|---|---|---:|"]
        lines += [f"| `{r['node']}` | {_size(r['weight'])} | {_size(r['output'])} | "
                  f"{r['flops'] / 1e9:.3f} |" for r in f["by_node"][:10]]
        lines.append("")
    for label, p in sections.get("ort", {}).items():
        floor = _floor(report, p)
        lines += [f"## ONNX Runtime profile: {label} ({p['graph']})", "",
                  f"Wall-clock p50 {p['wall']['p50_ms']:.1f} ms without the profiler, "
                  f"{p['wall_profiled']['p50_ms']:.1f} ms with it (same runs, interleaved); "
                  f"kernel time {p['kernel_ms_per_run']:.1f} ms per run; other processes used "
                  f"{p['other_cores']:.2f} cores meanwhile.{floor}", "",
                  "| operator type | ms / run | share |", "|---|---:|---:|"]
        lines += [f"| {o['op']} | {o['ms']:.2f} | {o['share']:.1%} |" for o in p["by_op"]]
        lines += ["", f"Top {top} nodes:", "",
                  "| node | op | output | ms / run | share | GFLOP/s |",
                  "|---|---|---|---:|---:|---:|"]
        for n in p["by_node"][:top]:
            rate = "-" if n["gflops_per_s"] is None else f"{n['gflops_per_s']:.0f}"
            lines.append(f"| `{n['node']}` | {n['op']} | {_size(n['output'])} | {n['ms']:.2f} | "
                         f"{n['share']:.1%} | {rate} |")
        lines.append("")
    for precision, d in sections.get("detector", {}).items():
        lines += [f"## Detector stages: {d['describe']}", "",
                  f"Frames {_size(d['frame_size'])} -> input {_size(d['input_size'])}.", "",
                  "| stage | p50 ms | p95 ms | min ms | other load (cores) |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {s['stage']} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['min_ms']:.2f} | "
                  f"{s['other_cores']:.2f} |" for s in d["stages"]]
        lines.append("")
    if "levers" in sections:
        lines += ["## Levers (inference only, each interleaved with the default)", "",
                  f"Default: {sections['levers']['reference']}. Rows marked (blocks) were "
                  "timed default, variant, default in blocks rather than interleaved; their "
                  "default p50 is the mean of the two default blocks' medians.", "",
                  "| variant | default p50 ms | variant p50 ms | variant p95 ms | change | "
                  "other load (cores) |", "|---|---:|---:|---:|---:|---:|"]
        for r in sections["levers"]["rows"]:
            blocks = "" if r.get("interleaved", True) else " (blocks)"
            lines.append(f"| {r['variant']}{blocks} | {r['default']['p50_ms']:.1f} | "
                         f"{r['variant_timing']['p50_ms']:.1f} | "
                         f"{r['variant_timing']['p95_ms']:.1f} | {r['change']:+.1%} | "
                         f"{r['other_cores']:.2f} |")
        lines.append("")
    if "encoder" in sections:
        e = sections["encoder"]
        lines += ["## The encoder alone", "",
                  "| graph | p50 ms | p95 ms | min ms | FPS at p50 |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {t['p50_ms']:.1f} | {t['p95_ms']:.1f} | {t['min_ms']:.1f} | "
                  f"{1000 / t['p50_ms']:.1f} |"
                  for name, t in (("whole graph (fp32, jsd)", e["whole"]),
                                  ("encoder alone (normalisation + encoder)", e["encoder"]))]
        lines += ["", f"The encoder is {e['share']:.0%} of the whole graph (p50, interleaved; "
                  f"other processes used {e['other_cores']:.2f} cores). Any decoder on this "
                  f"encoder is bound to {e['encoder_bound_fps']:.1f} FPS at p50 "
                  f"({e['encoder_bound_fps_best']:.1f} at the best run), with its own time, "
                  "the resizes and the node's work still to come.", ""]
    if "recipes" in sections:
        r = sections["recipes"]
        lines += ["## INT8 recipes (inference only, all interleaved)", "",
                  f"Calibration: {r['calibration']}; agreement and score difference against "
                  f"fp32 on {r['frames']} frames; fp32 p50 {r['fp32']['p50_ms']:.1f} ms; other "
                  f"processes used {r['other_cores']:.2f} cores meanwhile.", "",
                  "| recipe | convs | FLOP share | label agreement min / mean | "
                  "mean abs score diff | p50 ms | p95 ms | change vs fp32 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            lines.append(f"| {row['recipe']} | {row['convolutions']} | {row['flops_share']:.1%} "
                         f"| {row['agreement_min']:.2%} / {row['agreement_mean']:.2%} | "
                         f"{row['score_diff_mean']:.4f} | {row['timing']['p50_ms']:.1f} | "
                         f"{row['timing']['p95_ms']:.1f} | {row['change']:+.1%} |")
        lines.append("")
    return "\n".join(lines)


def _quantized(onnx_path) -> List[str]:
    """Names of the nodes an INT8 file records as quantized (none for fp32)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path),
                                              load_external_data=False).metadata_props}
    return json.loads(meta.get("quantized_nodes", "[]"))


def floor_ms(flops: Dict[str, Any], machine: Dict[str, Any],
             quantized: Sequence[str] = ()) -> Tuple[float, float, float]:
    """FLOP floor of the graph: (ms, best fp32 GFLOP/s, best int8 GOP/s).

    Quantized nodes' FLOPs at the best measured int8 rate, the others' at the best fp32 rate
    (the best run of each probe).
    """
    rates = {r["probe"]: r["peak_gflops_per_s"] for r in machine["probes"]}
    fp32 = max(v for k, v in rates.items() if k.startswith("fp32"))
    int8 = max((v for k, v in rates.items() if k.startswith("u8s8")), default=fp32)
    chosen = set(quantized)
    in_int8 = sum(r["flops"] for r in flops["by_node"] if r["node"] in chosen)
    return ((flops["total_flops"] - in_int8) / fp32 / 1e6 + in_int8 / int8 / 1e6, fp32, int8)


def _floor(report: Dict[str, Any], profile: Dict[str, Any]) -> str:
    """One sentence: the FLOP floor against the measured latency."""
    sections = report["sections"]
    if "flops" not in sections or "machine" not in sections:
        return ""
    quantized = profile.get("quantized_nodes") or []
    ms, fp32, int8 = floor_ms(sections["flops"], sections["machine"], quantized)
    rates = (f"{fp32:.0f} GFLOP/s fp32" if not quantized else
             f"{int8:.0f} GOP/s int8 for the {len(quantized)} quantized convolutions, "
             f"{fp32:.0f} GFLOP/s fp32 for the rest")
    wall = profile["wall"]["p50_ms"]
    return (f" Conv/MatMul FLOP floor at the best measured rates ({rates}): {ms:.1f} ms "
            f"({1000.0 / ms:.1f} FPS); measured p50 is {wall / ms:.2f}x that.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "default.pt")
    parser.add_argument("--size", type=parse_size, default=(360, 480), metavar="HxW",
                        help="network input size (default 360x480)")
    parser.add_argument("--frame-size", type=parse_size, default=(720, 1280), metavar="HxW",
                        help="camera frame size (default 720x1280)")
    parser.add_argument("--frames", type=Path,
                        default=REPO_ROOT.parent / "shared" / "data" / "camvid" / "test")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per figure (default 30)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", action="store_true", help="also profile the int8 graph")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--calibration-dir", type=Path,
                        default=REPO_ROOT.parent / "shared" / "data" / "camvid" / "train",
                        help="frames that calibrate the INT8 recipes compared (CamVid train)")
    parser.add_argument("--recipe-frames", type=int, default=16,
                        help="calibration frames per compared INT8 recipe (default 16)")
    parser.add_argument("--quiet-cores", type=float, default=0.15,
                        help="wait until other processes use fewer cores than this (0.15)")
    parser.add_argument("--quiet-timeout", type=float, default=60.0,
                        help="longest wait for quiet before each figure, s (default 60)")
    parser.add_argument("--retries", type=int, default=2,
                        help="measure a disturbed figure again up to N times (default 2)")
    parser.add_argument("--out", type=Path,
                        help="write PATH.json and PATH.md; sections already in PATH.json from "
                             "earlier runs are kept unless measured again")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"profile_cpu: unknown sections {unknown}; choose from {list(SECTIONS)}",
              file=sys.stderr)
        return 2
    args.precisions = ("fp32", "int8") if args.int8 else ("fp32",)
    from dense_ood_ros.onnx_graph import cached_onnx
    from dense_ood_ros.quantization import cached_int8_onnx

    graphs = {"fp32": cached_onnx(args.model, args.cache_dir, input_size=args.size)}
    if args.int8:
        graphs["int8"] = cached_int8_onnx(graphs["fp32"], cache_dir=args.cache_dir)
    frames = load_frames(args.frames, args.num_frames, args.frame_size)
    command = " ".join(["scripts/profile_cpu.py", *(argv if argv is not None else sys.argv[1:])])
    report: Dict[str, Any] = {"sections": {}, "commands": {}}
    if args.out and args.out.with_name(args.out.name + ".json").is_file():
        report = json.loads(args.out.with_name(args.out.name + ".json").read_text())
    report.update(machine=describe_machine(),
                  settings={"model": str(args.model), "size": list(args.size),
                            "frame_size": list(args.frame_size), "threads": args.threads,
                            "runs": args.runs,
                            "graphs": {k: str(v) for k, v in graphs.items()}})
    out = report["sections"]
    for name in sections + (["flops"] if "ort" in sections else []):
        report["commands"][name] = command
    if "machine" in sections:
        out["machine"] = section_machine(args)
    if "flops" in sections or "ort" in sections:
        out["flops"] = section_flops(args, graphs)
    if "ort" in sections:
        out["ort"] = section_ort(args, graphs, out.get("flops"), frames)
    if "detector" in sections:
        out["detector"] = section_detector(args, frames)
    if "levers" in sections:
        out["levers"] = section_levers(args, frames)
    if "encoder" in sections:
        out["encoder"] = section_encoder(args, graphs, frames)
    if "recipes" in sections:
        out["recipes"] = section_recipes(args, graphs, frames)
    show_report(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
