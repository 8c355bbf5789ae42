r"""Compare every GPU backend that can run here with torch on the CPU (fp32), on real frames.

Part of ``scripts/gpu_check.sh``. Backends: torch CUDA fp16, ONNX Runtime GPU, TensorRT fp32,
fp16 and int8 engines built from the model (typed builds: the FP16 graph, the Q/DQ graph
calibrated on ``--calib-dir``), and the FP16 graph on ONNX Runtime CPU (the graph TensorRT's
FP16 engine is built from, where TensorRT is missing); one that cannot run here is reported
with the reason and skipped. For each: the share of pixels whose label agrees with torch CPU
fp32 and the largest score difference, against the bound of its precision (fp32: >= 99.5 %
and <= 1e-3, fp16: >= 99 % and <= 5e-2, int8: >= 97 % and <= 0.3), and the seconds the
backend took to start (for TensorRT: graph conversion and engine build). Runs with this
repository on PYTHONPATH::

    python scripts/gpu_parity.py --model models/default.pt --frames demo --out OUT/parity
"""

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from dense_ood_ros.backends import BACKENDS, make_backend
from dense_ood_ros.backends.calibration import CalibrationSettings
from dense_ood_ros.quantization import (DEFAULT_CALIBRATION_COUNT, DEFAULT_CALIBRATION_METHOD,
                                        default_calibration_dir)
from dense_ood_ros.benchmark import parse_spec
from dense_ood_ros.cli import add_cache_dir, add_model, command_parser, parse_size
from dense_ood_ros.io import list_images, read_rgb
from dense_ood_ros.preprocessing import resize_frame

SPECS = ("torch:cuda:fp16", "onnxruntime:cuda", "tensorrt:fp32", "tensorrt:fp16",
         "tensorrt:int8", "onnxruntime:cpu:fp16")
#: Precision -> (least label agreement, largest score difference) with torch CPU fp32.
BOUNDS = {"fp32": (0.995, 1e-3), "fp16": (0.99, 5e-2), "int8": (0.97, 0.3)}


def skip_reason(name: str, options: Dict[str, str]) -> Optional[str]:
    """Why backend ``name`` cannot run a checkpoint here; None when it may."""
    if name != "torch" and importlib.util.find_spec("onnx") is None:
        return "the onnx package is not installed (it exports the checkpoint to ONNX)"
    return BACKENDS[name].unavailable_reason(**options)


def compare(spec: str, args, batches: List[np.ndarray], reference: List[tuple]) -> Dict[str, Any]:
    """Build one backend and measure its agreement with the reference outputs."""
    name, options = parse_spec(spec)
    row: Dict[str, Any] = {"backend": spec}
    reason = skip_reason(name, options)
    if reason is not None:
        row["skipped"] = reason
        return row
    if name == "tensorrt" and options.get("precision") == "int8":
        options["calibration"] = CalibrationSettings(args.calib_dir, DEFAULT_CALIBRATION_COUNT,
                                                     DEFAULT_CALIBRATION_METHOD)
    started = time.monotonic()
    try:
        backend = make_backend(name, args.model, input_size=args.input_size,
                               cache_dir=args.cache_dir, **options)
    except Exception as exc:  # reported per backend; the others still run
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    row["setup_s"] = time.monotonic() - started
    agreement, max_diff = [], 0.0
    for batch, (ref_labels, ref_scores) in zip(batches, reference):
        labels, scores = backend.infer(batch)
        agreement.append(float((labels == ref_labels).mean()))
        max_diff = max(max_diff, float(np.abs(scores - ref_scores).max()))
    least, largest = BOUNDS[options.get("precision", "fp32")]
    row.update(describe=backend.describe(), label_agreement=float(np.mean(agreement)),
               max_score_diff=max_diff,
               bound={"label_agreement": least, "max_score_diff": largest})
    row["within_bound"] = row["label_agreement"] >= least and max_diff <= largest
    return row


def markdown(rows: List[Dict[str, Any]], settings: Dict[str, Any]) -> str:
    """Render the rows as a Markdown table."""
    lines = ["## Parity with torch CPU fp32", "",
             f"Model {settings['model']}, {settings['frames']} frames from "
             f"{settings['folder']} at {settings['input_size'][0]}x{settings['input_size'][1]}.",
             "",
             "| backend | label agreement | max score diff | bound | setup s | result |",
             "|---|---:|---:|---|---:|---|"]
    for row in rows:
        if "within_bound" not in row:
            outcome = (f"skipped: {row['skipped']}" if "skipped" in row
                       else f"error: {row['error']}")
            lines.append(f"| {row['backend']} | | | | | {outcome} |")
            continue
        bound = row["bound"]
        lines.append(f"| {row['describe']} | {row['label_agreement']:.4%} | "
                     f"{row['max_score_diff']:.2e} | >= {bound['label_agreement']:.1%}, "
                     f"<= {bound['max_score_diff']:.0e} | {row['setup_s']:.1f} | "
                     f"{'within' if row['within_bound'] else 'OUTSIDE'} |")
    return "\n".join(lines) + "\n"


def _parser():
    parser = command_parser("gpu_parity.py", __doc__.split("\n\n")[0],
                            "the Markdown table on stdout, OUT.json and OUT.md; exit status 1 "
                            "when a backend misses its bound or fails to start.")
    add_model(parser, "model checkpoint (.pt)")
    parser.add_argument("--frames", type=Path, required=True, help="folder of real frames")
    parser.add_argument("--num-frames", type=int, default=5, help="frames compared (default 5)")
    parser.add_argument("--input-size", type=parse_size, default=(360, 480), metavar="HxW",
                        help="network input size HEIGHTxWIDTH (default 360x480)")
    parser.add_argument("--calib-dir", type=Path,
                        help="frames that calibrate the INT8 engine (default: the project's "
                             "calibration folder, $DENSE_OOD_CALIBRATION_DIR or CamVid train, "
                             "when present, else --frames)")
    add_cache_dir(parser)
    parser.add_argument("--out", type=Path, required=True, help="write OUT.json and OUT.md")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.calib_dir is None:
        args.calib_dir = default_calibration_dir() or args.frames
    paths = list_images(args.frames, "frame", args.num_frames)
    batches = [np.ascontiguousarray(resize_frame(read_rgb(p), args.input_size)[None])
               for p in paths]
    torch_cpu = make_backend("torch", args.model, input_size=args.input_size, device="cpu")
    reference = [torch_cpu.infer(batch) for batch in batches]
    rows = [compare(spec, args, batches, reference) for spec in SPECS]
    settings = {"model": str(args.model), "folder": str(args.frames), "frames": len(paths),
                "input_size": list(args.input_size)}
    table = markdown(rows, settings)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.name + ".json").write_text(
        json.dumps({"settings": settings, "results": rows}, indent=2))
    args.out.with_name(args.out.name + ".md").write_text(table)
    return 0 if all(row.get("within_bound", "skipped" in row) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
