r"""``dense-ood-export``: the whole inference graph to ONNX, and TensorRT engines prebuilt.

The command line over :mod:`dense_ood_ros.onnx_graph` (the graph, its metadata and the
export cache), its FP16 and Q/DQ INT8 variants (:mod:`dense_ood_ros.onnx_fp16`,
:mod:`dense_ood_ros.quantization`) and the TensorRT engine builder of
:mod:`dense_ood_ros.backends.tensorrt_backend`.

Examples::

    dense-ood-export --model models/default.pt --onnx default.onnx
    dense-ood-export --model models/default.pt --onnx default.onnx --dynamic --opset 17
    dense-ood-export --model models/default.pt --onnx default.fp16.onnx --graph fp16
    dense-ood-export --model models/default.pt --engine default.fp16.engine --precision fp16
    dense-ood-export --model models/default.pt --engine default.int8.engine --precision int8 \
        --calib-dir ../shared/data/camvid/train
    dense-ood-export --model models/default.pt --engine default.int8.engine --precision int8 \
        --build flags --calib-dir ../shared/data/camvid/train --calibrator entropy  # TensorRT 10
"""

import logging
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from dense_ood_ros import cache
from dense_ood_ros.backends.calibration import CALIBRATORS, CalibrationSettings
from dense_ood_ros.backends.tensorrt_backend import BUILDS, PRECISIONS, ensure_engine
from dense_ood_ros.cli import add_cache_dir, add_input_size, add_model, add_scores, command_parser
from dense_ood_ros.io import atomic_write
from dense_ood_ros.onnx_fp16 import cached_fp16_onnx
from dense_ood_ros.onnx_graph import DEFAULT_OPSET, ModelFileError, cached_onnx, export_onnx
from dense_ood_ros.quantization import cached_int8_onnx

#: Graph variants ``--graph`` writes: the FP32 export, its FP16 variant and its Q/DQ INT8
#: variant for TensorRT (the ``tensorrt`` recipe).
GRAPHS = ("fp32", "fp16", "int8-qdq")
#: INT8 calibration defaults per build: the Q/DQ graph is calibrated by ONNX Runtime (MinMax
#: merges ranges chunk by chunk; its entropy calibrator holds every frame's tensors), the
#: ``flags`` build by TensorRT's calibrator.
CALIBRATION_DEFAULTS = {"typed": (128, "minmax"), "flags": (256, "entropy")}


def _parser():
    parser = command_parser(
        "dense-ood-export",
        "Export the whole inference graph to ONNX and/or prebuild a TensorRT engine.",
        "the ONNX file given by --onnx (checked, with metadata; the --graph variant); the "
        "TensorRT engine given by --engine, beside it its key record (.json) "
        "and, for INT8, the calibration table (.calib); without --onnx the "
        "ONNX graph an engine is built from goes to the cache folder.")
    add_model(parser, "model checkpoint (.pt); an exported .onnx is accepted with --engine")
    parser.add_argument("--onnx", type=Path, help="write the ONNX graph here")
    parser.add_argument("--graph", default="fp32", choices=GRAPHS,
                        help="--onnx: which graph, the FP32 export (default), its FP16 variant "
                             "or its Q/DQ INT8 variant for TensorRT (needs --calib-dir)")
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
    parser.add_argument("--build", default="typed", choices=BUILDS,
                        help="TensorRT build: typed (default; TensorRT 10 and 11: the FP16 or "
                             "Q/DQ graph, strongly typed) or flags (TensorRT 10 only: builder "
                             "flags and a calibrator on the FP32 graph)")
    parser.add_argument("--calib-dir", type=Path,
                        help="INT8: folder of real frames, e.g. ../shared/data/camvid/train")
    parser.add_argument("--calib-count", type=int,
                        help="INT8: number of frames (default 128 typed, 256 flags)")
    parser.add_argument("--calib-batch", type=int, default=1,
                        help="INT8: frames per calibration batch (default 1)")
    parser.add_argument("--calibrator", choices=CALIBRATORS,
                        help="INT8 calibration (default minmax typed, entropy flags)")
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
        calibration = _calibration(args)
        if args.model.suffix == ".onnx":
            if args.onnx is not None:
                raise ModelFileError(f"--model {args.model} is already "
                                     "ONNX; --onnx needs a checkpoint")
            onnx_path = args.model
        elif args.onnx is not None and args.graph != "fp32":
            onnx_path = cached_onnx(args.model, args.cache_dir, scores, args.input_size,
                                    args.opset, args.dynamic)
            _write_variant(args, onnx_path, calibration)
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
            if args.precision == "int8" and calibration is None:
                raise ValueError("--precision int8 needs --calib-dir with real frames "
                                 "(e.g. ../shared/data/camvid/train)")
            engine = ensure_engine(onnx_path, args.engine, args.precision, args.input_size,
                                   calibration if args.precision == "int8" else None,
                                   workspace_gb=args.workspace_gb, build=args.build)
            print(f"engine ready: {engine} (key in {cache.record_path(engine)})")
    # OSError: an output that cannot be written (it names the file; nothing half-written is
    # left under its name)
    except (ModelFileError, ValueError, RuntimeError, ImportError, OSError) as exc:
        print(f"dense-ood-export: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _calibration(args) -> Optional[CalibrationSettings]:
    """Return the INT8 calibration the arguments ask for (None without ``--calib-dir``)."""
    if args.calib_dir is None:
        return None
    count, method = CALIBRATION_DEFAULTS[args.build]
    return CalibrationSettings(args.calib_dir, args.calib_count or count,
                               args.calibrator or method, args.calib_batch)


def _write_variant(args, onnx_path: Path, calibration: Optional[CalibrationSettings]) -> None:
    """Write the FP16 or Q/DQ INT8 variant of the FP32 export ``onnx_path`` to ``--onnx``."""
    if args.graph == "fp16":
        variant = cached_fp16_onnx(onnx_path, args.cache_dir)
    elif calibration is None:
        raise ValueError("--graph int8-qdq needs --calib-dir with real frames "
                         "(e.g. ../shared/data/camvid/train)")
    else:
        variant = cached_int8_onnx(onnx_path, calibration, args.input_size, args.cache_dir,
                                   recipe="tensorrt")
    with atomic_write(args.onnx) as tmp:
        shutil.copyfile(variant, tmp)
    print(f"wrote {args.onnx}: the {args.graph} graph of {onnx_path.name}")


if __name__ == "__main__":
    sys.exit(main())
