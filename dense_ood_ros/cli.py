"""One command-line dialect for every ``dense-ood-*`` and ``training.*`` command.

The same option means the same thing everywhere: ``--model`` (a model file), ``--out``
(where results go), sizes as ``HEIGHTxWIDTH``, ``--backend``, ``--device``, ``--precision``,
``--threads``, ``--cache-dir``, ``--scores`` (comma-separated) or ``--score`` (one).
Each command's ``--help`` ends with what it writes (:func:`command_parser`'s ``writes``), and
each exits with one of three codes: :data:`EXIT_OK`, :data:`EXIT_INCOMPLETE` or
:data:`EXIT_BAD_INPUT` (:func:`refuse`).
"""

import argparse
import math
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from dense_ood_ros.backends import BACKEND_NAMES, PRECISIONS
from dense_ood_ros.backends.torch_backend import PRECISIONS as TORCH_PRECISIONS
from dense_ood_ros.metrics import METRIC_MODES
from dense_ood_ros.scores import SCORES

#: Smallest accepted network input side (the encoder's output stride is 32).
MIN_SIDE = 32
#: Exit codes: complete / problems with some frames (partial results saved) / bad input
#: (including an --out folder that cannot be written).
EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT = 0, 1, 2
#: Kinds of ground truth: anomaly labels (``--labels``) and class-index labels
#: (``--semantic-labels``).
LABEL_KINDS = ("anomaly", "semantic")


class BadInput(Exception):
    """Input a command refuses before it evaluates anything; its ``main`` reports it."""


def refuse(prog: str, problem: object) -> int:
    """Print ``<prog>: error: <problem>`` on stderr; return :data:`EXIT_BAD_INPUT`."""
    print(f"{prog}: error: {problem}", file=sys.stderr)
    return EXIT_BAD_INPUT


def command_parser(prog: str, description: str, writes: str) -> argparse.ArgumentParser:
    """Make an argument parser whose help ends with what the command writes."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=f"Writes: {writes}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_size(text: str) -> Tuple[int, int]:
    """``"360x480"`` -> (360, 480): height x width."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("size must be HEIGHTxWIDTH, "
                                         f"e.g. 360x480, got {text!r}") from None
    if height < MIN_SIDE or width < MIN_SIDE:
        raise argparse.ArgumentTypeError("size must be at least "
                                         f"{MIN_SIDE}x{MIN_SIDE}, got {text!r}")
    return height, width


def parse_scores(text: str) -> Tuple[str, ...]:
    """``"jsd,msp"`` -> ("jsd", "msp"), each a known anomaly score."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [name for name in names if name not in SCORES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown anomaly score(s) {unknown or [text]}; choose "
                                         f"from {sorted(SCORES)}")
    return names


def parse_ints(text: str) -> Tuple[int, ...]:
    """``"1,2"`` -> (1, 2)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated "
                                         f"integers, got {text!r}") from None


def parse_nonnegative(text: str, number: Callable[[str], Any] = float) -> Any:
    """``"0.5"`` -> 0.5: a finite number >= 0 (``number`` Decimal: exact, for seconds)."""
    try:
        value = number(text)
        finite = math.isfinite(value)
    except (ValueError, ArithmeticError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not finite or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def parse_positive(text: str) -> float:
    """``"2"`` -> 2.0: a finite number > 0."""
    value = parse_nonnegative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def parse_seconds_ns(text: str) -> int:
    """``"1700000000.25"`` -> 1700000000250000000: seconds >= 0 in nanoseconds, exactly."""
    return int(parse_nonnegative(text, Decimal) * 1_000_000_000)


def add_model(parser: argparse.ArgumentParser,
              help: str = "model file: checkpoint .pt, "
                          "exported .onnx, or TensorRT .engine") -> None:
    """``--model PATH`` (required)."""
    parser.add_argument("--model", required=True, type=Path, help=help)


def add_out(parser: argparse.ArgumentParser, help: str, default: Optional[Path] = None) -> None:
    """``--out PATH``: where the command writes (required when there is no default)."""
    parser.add_argument("--out", type=Path, default=default, required=default is None, help=help)


def add_input_size(parser: argparse.ArgumentParser) -> None:
    """``--input-size HxW``: the network's input size (default: the model's)."""
    parser.add_argument("--input-size", type=parse_size, metavar="HxW",
                        help="network input size HEIGHTxWIDTH (default: the model's)")


def add_scores(parser: argparse.ArgumentParser, default: Sequence[str] = ("jsd",)) -> None:
    """``--scores a,b``: the anomaly scores computed."""
    parser.add_argument("--scores", type=parse_scores, default=tuple(default),
                        help="comma-separated anomaly scores from "
                             f"{sorted(SCORES)} (default {','.join(default)})")


def add_score(parser: argparse.ArgumentParser, default: str = "jsd") -> None:
    """``--score NAME``: the one anomaly score used."""
    parser.add_argument("--score", default=default, choices=sorted(SCORES),
                        help=f"anomaly score (default {default})")


def add_backend(parser: argparse.ArgumentParser, default: str = "torch") -> None:
    """``--backend``, ``--device``, ``--precision``, ``--threads``, ``--cache-dir``.

    Which backend runs the model, and how.
    """
    parser.add_argument("--backend", default=default, choices=BACKEND_NAMES,
                        help=f"inference backend (default {default})")
    parser.add_argument("--device",
                        help="torch device (cpu, cuda, cuda:1; default cpu) or onnxruntime "
                             "device (auto, cpu, cuda; default auto)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="tensorrt precision (default fp16); torch "
                             f"{'/'.join(TORCH_PRECISIONS)} (default fp32, fp16 on cuda only); "
                             "onnxruntime fp32 (default) or int8 (static INT8, calibrated once "
                             "on CamVid train frames or $DENSE_OOD_CALIBRATION_DIR, cached); "
                             "openvino fp32 (default), bf16 (CPUs with BF16 kernels) or int8 "
                             "(the same INT8 graph)")
    add_threads(parser)
    add_cache_dir(parser)


def add_label_folders(parser, matched: str) -> None:
    """``--labels``, ``--semantic-labels``: folders of label PNGs, ``matched`` to the frames."""
    parser.add_argument("--labels", type=Path,
                        help=f"folder of anomaly label PNGs ({matched})")
    parser.add_argument("--semantic-labels", type=Path,
                        help=f"folder of class-index label PNGs ({matched}) for IoU/mIoU")


def label_folders(anomaly: Optional[Path], semantic: Optional[Path]) -> Dict[str, Path]:
    """Return the label folders given (``--labels``, ``--semantic-labels``), by kind."""
    return {kind: folder for kind, folder in zip(LABEL_KINDS, (anomaly, semantic))
            if folder is not None}


def add_label_values(parser) -> None:
    """``--semantic-ignore``, ``--anomaly-values``, ``--ignore-values``: what label values mean."""
    parser.add_argument("--semantic-ignore", type=int,
                        help="ignored value in semantic labels (default: the model's label "
                             "set's ignore index, e.g. 11 for CamVid, 255 for Cityscapes)")
    parser.add_argument("--anomaly-values", type=parse_ints, default=(1,),
                        help="comma-separated anomaly label values (default 1; RoadAnomaly: 2)")
    parser.add_argument("--ignore-values", type=parse_ints, default=(255,),
                        help="comma-separated ignored anomaly label values (default 255)")


def add_metric_mode(parser) -> None:
    """``--metric-mode``: how AP, FPR95 and AUROC are computed."""
    parser.add_argument("--metric-mode", choices=METRIC_MODES, default="sklearn",
                        help="AP/FPR95/AUROC definitions: sklearn (fine histogram) or smiyc "
                             "(SegmentMeIfYouCan thresholds); default sklearn")


def add_no_progress(parser) -> None:
    """``--no-progress``: no progress bar."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads."""
    parser.add_argument("--threads", type=int,
                        help="CPU threads of torch and onnxruntime (default: the available cores)")


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    """``--cache-dir DIR``: ONNX exports and engines."""
    parser.add_argument("--cache-dir", type=Path,
                        help="ONNX/engine cache (default $DENSE_OOD_CACHE or "
                             "~/.cache/dense_ood_ros)")


def backend_options(args: argparse.Namespace) -> Dict[str, Any]:
    """Return the keywords of :func:`~dense_ood_ros.backends.make_backend`.

    They are the values of :func:`add_backend`'s options.
    """
    return {"device": args.device, "precision": args.precision, "threads": args.threads,
            "cache_dir": args.cache_dir}
