r"""``dense-ood-export``: the whole inference graph to ONNX, and TensorRT engines prebuilt.

The command line over :mod:`dense_ood_ros.onnx_graph` (the graph, its metadata and the
export cache) and the TensorRT engine builder of :mod:`dense_ood_ros.backends.tensorrt_backend`.

Examples::

    dense-ood-export --model models/default.pt --onnx default.onnx
    dense-ood-export --model models/default.pt --onnx default.onnx --dynamic --opset 17
    dense-ood-export --model models/default.pt --engine default.fp16.engine --precision fp16
    dense-ood-export --model models/default.pt --engine default.int8.engine --precision int8 \
        --calib-dir ../shared/data/camvid/train --calibrator entropy
"""

import logging
import sys
from pathlib import Path
from typing import List, Optional

from dense_ood_ros import cache
from dense_ood_ros.backends.calibration import CALIBRATORS, CalibrationSettings
from dense_ood_ros.backends.tensorrt_backend import PRECISIONS, ensure_engine
from dense_ood_ros.cli import add_cache_dir, add_input_size, add_model, add_scores, command_parser
from dense_ood_ros.onnx_graph import DEFAULT_OPSET, ModelFileError, cached_onnx, export_onnx


def _parser():
    parser = command_parser(
        "dense-ood-export",
        "Export the whole inference graph to ONNX and/or prebuild a TensorRT engine.",
        "the ONNX file given by --onnx (checked, with metadata); the "
        "TensorRT engine given by --engine, beside it its key record (.json) "
        "and, for INT8, the calibration table (.calib); without --onnx the "
        "ONNX graph an engine is built from goes to the cache folder.")
    add_model(parser, "model checkpoint (.pt); an exported .onnx is accepted with --engine")
    parser.add_argument("--onnx", type=Path, help="write the ONNX graph here")
    parser.add_argument("--engine", type=Path,
                        help="build a TensorRT engine here (needs tensorrt and a GPU)")
    add_scores(parser)
    parser.add_argument("--labels-only", action="store_true",
                        help="export segmentation only, no score "
                             "output (to measure what scores cost)")
    add_input_size(parser)
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic height and width in the ONNX graph")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--precision", default="fp16", choices=PRECISIONS,
                        help="TensorRT engine precision (default fp16)")
    parser.add_argument("--calib-dir", type=Path,
                        help="INT8: folder of real frames, e.g. ../shared/data/camvid/train")
    parser.add_argument("--calib-count", type=int, default=256,
                        help="INT8: number of frames (default 256)")
    parser.add_argument("--calib-batch", type=int, default=1,
                        help="INT8: frames per calibration batch (default 1)")
    parser.add_argument("--calibrator", default="entropy", choices=CALIBRATORS,
                        help="INT8 calibrator (default entropy)")
    parser.add_argument("--workspace-gb", type=float, default=4.0,
                        help="TensorRT workspace limit (default 4)")
    add_cache_dir(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.onnx is None and args.engine is None:
        parser.error("nothing to do: give --onnx OUT.onnx and/or --engine OUT.engine")
    scores = () if args.labels_only else args.scores
    try:
        if args.model.suffix == ".onnx":
            if args.onnx is not None:
                raise ModelFileError(f"--model {args.model} is already "
                                     "ONNX; --onnx needs a checkpoint")
            onnx_path = args.model
        elif args.onnx is not None:
            info = export_onnx(args.model, args.onnx, scores, args.input_size, args.dynamic,
                               args.opset)
            onnx_path = info.path
            print(f"wrote {onnx_path}: opset {info.opset}, "
                  f"input {'dynamic, default ' if info.dynamic_size else ''}"
                  f"{info.input_size[0]}x{info.input_size[1]}, scores {list(info.score_names)}, "
                  f"checkpoint sha256 {info.checkpoint_sha256[:12]}; label set "
                  f"{info.label_set.name!r}, {info.label_set.num_classes} classes: "
                  f"{', '.join(info.label_set.class_names)}")
        else:
            onnx_path = cached_onnx(args.model, args.cache_dir, scores, args.input_size,
                                    args.opset, args.dynamic)
        if args.engine is not None:
            calibration = None
            if args.precision == "int8":
                if args.calib_dir is None:
                    raise ValueError("--precision int8 needs --calib-dir with real frames "
                                     "(e.g. ../shared/data/camvid/train)")
                calibration = CalibrationSettings(args.calib_dir, args.calib_count,
                                                  args.calibrator, args.calib_batch)
            engine = ensure_engine(onnx_path, args.engine, args.precision, args.input_size,
                                   calibration, workspace_gb=args.workspace_gb)
            print(f"engine ready: {engine} (key in {cache.record_path(engine)})")
    # OSError: an output that cannot be written (it names the file; nothing half-written is
    # left under its name)
    except (ModelFileError, ValueError, RuntimeError, ImportError, OSError) as exc:
        print(f"dense-ood-export: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
