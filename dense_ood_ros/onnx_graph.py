"""The exported inference graph as a library: tensor names, metadata, export and cache.

The exported graph is :class:`dense_ood_ros.graph.InferenceGraph`: uint8 RGB NHWC in
(``images``), normalisation, network, argmax and anomaly scores inside, labels uint8
(``labels``, N x H x W) and scores float32 (``scores``, N x S x H x W) out, so no backend
re-implements pre- or post-processing. A graph without scores (``score_names=()``) has the
labels output alone, to measure what the scores cost.

The ONNX file carries metadata (``onnx.ModelProto.metadata_props``): format, class names,
the label set (names, colours, ignore index; JSON), score names, input size, whether
height/width are dynamic, opset, model name and the SHA-256 of the source checkpoint. It is
checked with ``onnx.checker`` after export, and written atomically
(:func:`dense_ood_ros.io.atomic_write`).
Every backend that runs ONNX gets its file from :func:`onnx_for_model`; ``dense-ood-export``
is the command line over this module.
"""

import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dense_ood_ros import cache
from dense_ood_ros.checkpoint import (checkpoint_label_set, load_model, read_checkpoint,
                                      score_smoothing)
from dense_ood_ros.graph import GRAPH_VERSION, InferenceGraph
from dense_ood_ros.io import atomic_write, file_sha256
from dense_ood_ros.label_set import LabelSet, LabelSetError, legacy_label_set

logger = logging.getLogger(__name__)

ONNX_FORMAT = "dense_ood_ros/onnx/v1"
#: Opset 17 is read by ONNX Runtime >= 1.11 and the TensorRT 8.6/10 ONNX parser.
DEFAULT_OPSET = 17
INPUT_NAME, LABELS_NAME, SCORES_NAME = "images", "labels", "scores"
#: Metadata key of the precision a graph variant computes in (``fp16``: :mod:`onnx_fp16`,
#: ``int8``: :mod:`quantization`); the FP32 export has none.
PRECISION_KEY = "precision"


class ModelFileError(RuntimeError):
    """An ONNX (or engine) file is missing, corrupt, not ours, or does not match the request."""


def check_output_names(names: Sequence[str], onnx_path: Union[str, Path]) -> None:
    """Raise :class:`ModelFileError` unless the outputs are the graph's: labels[, scores]."""
    if list(names) not in ([LABELS_NAME, SCORES_NAME], [LABELS_NAME]):
        raise ModelFileError(f"ONNX file {onnx_path} has outputs {list(names)}; "
                             f"expected {[LABELS_NAME, SCORES_NAME]} or {[LABELS_NAME]}")


@dataclass(frozen=True)
class OnnxInfo:
    """What an exported ONNX file declares in its metadata."""

    path: Path
    class_names: Tuple[str, ...]
    score_names: Tuple[str, ...]
    input_size: Tuple[int, int]
    dynamic_size: bool
    opset: int
    model: str
    checkpoint_sha256: str
    #: Names, colours, ignore index; CamVid's for a file exported before label sets were
    #: stored that has CamVid's class names (other such files are refused).
    label_set: LabelSet

    def run_size(self, input_size: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
        """Return the input size to run at: ``input_size`` (default: the recorded one).

        A fixed-size graph must match it (``ValueError`` otherwise).
        """
        size = tuple(input_size or self.input_size)
        if not self.dynamic_size and size != self.input_size:
            raise ValueError(f"ONNX file {self.path} has a fixed input size {self.input_size}, "
                             f"but input size {size} was asked for")
        return size


# --------------------------------------------------------------------------- adaptive pooling
# SwiftNet's spatial pyramid pooling uses adaptive average pooling to fixed grids, which the
# TorchScript ONNX exporter only handles when the grid divides the feature map. Written as
# two matrix products (rows, then columns) with PyTorch's window bounds
# start = floor(i * size / out), end = ceil((i + 1) * size / out), it exports for any size,
# static or dynamic, and runs on ONNX Runtime and TensorRT alike.

def _static_pool_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix of adaptive pooling along one axis."""
    matrix = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _dynamic_pool_matrix(g, size, out: int):
    """Build the same matrix as ONNX ops of the run-time ``size`` (int64 scalar)."""
    def const(value):
        return g.op("Constant", value_t=torch.tensor(value, dtype=torch.int64))

    index = g.op("Range", const(0), const(out), const(1))
    start = g.op("Div", g.op("Mul", index, size), const(out))
    end = g.op("Div", g.op("Add", g.op("Mul", g.op("Add", index, const(1)), size), const(out - 1)),
               const(out))
    start, end = (g.op("Unsqueeze", bound, const([1])) for bound in (start, end))
    position = g.op("Range", const(0), size, const(1))
    inside = g.op("And", g.op("Not", g.op("Less", position, start)), g.op("Less", position, end))
    count = g.op("Cast", g.op("Sub", end, start), to_i=1)  # 1 = FLOAT
    return g.op("Div", g.op("Cast", inside, to_i=1), count)


def _adaptive_avg_pool2d_symbolic(g, x, output_size):
    from torch.onnx import symbolic_helper

    output_size = symbolic_helper._maybe_get_const(output_size, "is")
    sizes = symbolic_helper._get_tensor_sizes(x) or [None] * 4
    matrices = []
    for axis, out in zip((2, 3), output_size):
        if sizes[axis] is not None:
            matrices.append(g.op("Constant",
                                 value_t=torch.from_numpy(_static_pool_matrix(sizes[axis], out))))
        else:
            size = g.op("Gather", g.op("Shape", x), g.op("Constant", value_t=torch.tensor(axis)),
                        axis_i=0)
            matrices.append(_dynamic_pool_matrix(g, size, out))
    rows = g.op("MatMul", matrices[0], x)  # (out_h, H) @ (N, C, H, W) -> (N, C, out_h, W)
    return g.op("MatMul", rows, g.op("Transpose", matrices[1], perm_i=[1, 0]))


# --------------------------------------------------------------------------- log-softmax
# The scores take log_softmax over the class axis (axis 1 of N,C,H,W). ONNX Runtime's CPU
# LogSoftmax on a non-last axis transposes the tensor there and back, which made the jsd
# score cost ~70% of the segmentation's latency at 360x480. The same function as
# reductions over axis 1, x - max - log(sum(exp(x - max))), costs a few percent.

def _reduce(g, op: str, x, axis: int):
    if g.opset >= 18 or (op == "ReduceSum" and g.opset >= 13):  # axes became an input
        return g.op(op, x, g.op("Constant", value_t=torch.tensor([axis], dtype=torch.int64)),
                    keepdims_i=1)
    return g.op(op, x, axes_i=[axis], keepdims_i=1)


def _log_softmax_symbolic(g, x, dim, dtype=None):
    from torch.onnx import symbolic_helper, symbolic_opset9

    dim = symbolic_helper._maybe_get_const(dim, "i")
    if not symbolic_helper._is_none(dtype) or not isinstance(dim, int):
        return symbolic_opset9.log_softmax(g, x, dim, dtype)
    shifted = g.op("Sub", x, _reduce(g, "ReduceMax", x, dim))
    return g.op("Sub", shifted, g.op("Log", _reduce(g, "ReduceSum", g.op("Exp", shifted), dim)))


def _register_symbolics(opset: int) -> None:
    torch.onnx.register_custom_op_symbolic("aten::adaptive_avg_pool2d",
                                           _adaptive_avg_pool2d_symbolic, opset)
    torch.onnx.register_custom_op_symbolic("aten::log_softmax", _log_softmax_symbolic, opset)


# --------------------------------------------------------------------------- export

def export_onnx(checkpoint: Union[str, Path], onnx_path: Union[str, Path],
                score_names: Sequence[str] = ("jsd",),
                input_size: Optional[Tuple[int, int]] = None, dynamic: bool = False,
                opset: int = DEFAULT_OPSET) -> OnnxInfo:
    """Export a checkpoint's whole inference graph to ONNX, check it and write its metadata.

    ``input_size`` (height, width) defaults to the checkpoint's; with ``dynamic`` height and
    width are symbolic (the batch always is) and ``input_size`` is recorded as the default.
    No ``score_names`` exports the labels-only graph.
    """
    import onnx

    segmenter, info = load_model(checkpoint)
    label_set = checkpoint_label_set(info, checkpoint)
    input_size = tuple(int(v) for v in (input_size or info["input_size"]))
    score_names = tuple(score_names)
    graph = InferenceGraph(segmenter, score_names, score_smoothing(info)).eval()
    outputs = [LABELS_NAME, SCORES_NAME] if score_names else [LABELS_NAME]
    spatial = {1: "height", 2: "width"} if dynamic else {}  # images N,H,W,3 and labels N,H,W
    dynamic_axes = {INPUT_NAME: {0: "batch", **spatial}, LABELS_NAME: {0: "batch", **spatial}}
    if score_names:  # scores N,S,H,W
        dynamic_axes[SCORES_NAME] = {0: "batch",
                                     **{axis + 1: name for axis, name in spatial.items()}}
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, *input_size, 3), dtype=torch.uint8)
    _register_symbolics(opset)
    metadata = {
        "format": ONNX_FORMAT,
        "class_names": json.dumps(list(info["class_names"])),
        "label_set": json.dumps(label_set.to_dict()),
        "score_names": json.dumps(list(score_names)),
        "input_size": json.dumps(list(input_size)),
        "dynamic_size": json.dumps(dynamic),
        "opset": str(opset),
        "graph_version": str(GRAPH_VERSION),
        "score_smoothing": str(score_smoothing(info)),
        "model": info["model"],
        "checkpoint_sha256": file_sha256(checkpoint),
        "exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__}",
    }
    exported = io.BytesIO()  # in memory: a failed write is then Python's OSError, not torch's
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # Python-float constants (class count, log(C)) are meant to be baked into the graph, and
        # the TorchScript exporter is chosen on purpose: the dynamo one needs onnxscript.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(graph, (example,), exported, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=outputs,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    model = onnx.load_model_from_string(exported.getvalue())
    onnx.helper.set_model_props(model, metadata)
    model.producer_name = "dense_ood_ros"
    onnx.checker.check_model(model, full_check=True)
    with atomic_write(onnx_path) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return read_onnx_info(onnx_path)


def read_onnx_info(onnx_path: Union[str, Path]) -> OnnxInfo:
    """Read the metadata of an exported ONNX file; :class:`ModelFileError` names what is wrong."""
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX file not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends for corrupt files
        raise ModelFileError(f"cannot read ONNX file {onnx_path}: "
                             f"{type(exc).__name__}: {exc}") from exc
    meta = {prop.key: prop.value for prop in model.metadata_props}
    if meta.get("format") != ONNX_FORMAT:
        raise ModelFileError(f"{onnx_path} was not exported by dense-ood-export (metadata "
                             f"'format' is {meta.get('format')!r}, expected {ONNX_FORMAT!r})")
    try:
        fields = {name: json.loads(meta[name]) for name in _JSON_METADATA}
        fields.update(opset=int(meta["opset"]), model=meta["model"],
                      checkpoint_sha256=meta["checkpoint_sha256"])
    except (KeyError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"ONNX file {onnx_path} has incomplete metadata: {exc!r}") from exc
    for name, problem in _JSON_METADATA.items():
        if problem(fields[name]):
            raise ModelFileError(f"ONNX file {onnx_path} has bad metadata: '{name}' is "
                                 f"{meta[name]!r}, {problem(fields[name])}")
    label_set = _onnx_label_set(meta, tuple(fields["class_names"]), onnx_path)
    return OnnxInfo(path=onnx_path, class_names=tuple(fields["class_names"]),
                    label_set=label_set,
                    score_names=tuple(fields["score_names"]),
                    input_size=tuple(fields["input_size"]), dynamic_size=fields["dynamic_size"],
                    opset=fields["opset"], model=fields["model"],
                    checkpoint_sha256=fields["checkpoint_sha256"])


def _onnx_label_set(meta, class_names, onnx_path: Path) -> LabelSet:
    """Read the ``label_set`` metadata (a file exported before it was stored: legacy rules)."""
    if "label_set" not in meta:
        try:
            return legacy_label_set(class_names, f"ONNX file {onnx_path}",
                                    "export it again from a checkpoint that has one (python "
                                    "-m training.label_set --dataset {dataset} CHECKPOINT)")
        except LabelSetError as exc:
            raise ModelFileError(str(exc)) from None
    try:
        label_set = LabelSet.from_dict(json.loads(meta["label_set"]),
                                       f"ONNX file {onnx_path} metadata")
    except (ValueError, RecursionError) as exc:  # LabelSetError and JSON errors
        raise ModelFileError(f"ONNX file {onnx_path} has bad metadata: 'label_set': "
                             f"{exc}") from exc
    if label_set.class_names != class_names:
        raise ModelFileError(f"ONNX file {onnx_path} has bad metadata: 'label_set' has the "
                             f"classes {list(label_set.class_names)}, 'class_names' "
                             f"{list(class_names)}")
    return label_set


def _names_problem(value) -> str:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        return "expected a JSON list of names"
    return ""


def _size_problem(value) -> str:
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(side, int) and not isinstance(side, bool) and side > 0
                    for side in value)):
        return "expected [height, width], positive integers"
    return ""


#: The metadata stored as JSON, with what checks its value (returns the problem, or '').
_JSON_METADATA = {
    "class_names": lambda value: _names_problem(value) or (
        "" if value else "expected at least one class name"),
    "score_names": _names_problem,
    "input_size": _size_problem,
    "dynamic_size": lambda value: "" if isinstance(value, bool) else "expected true or false",
}


def cached_onnx(checkpoint: Union[str, Path], cache_dir: Union[str, Path, None] = None,
                score_names: Sequence[str] = ("jsd",),
                input_size: Optional[Tuple[int, int]] = None, opset: int = DEFAULT_OPSET,
                dynamic: bool = False,
                status: Optional[cache.StatusCallback] = None) -> Path:
    """Export a checkpoint into the cache directory, or reuse a valid earlier export.

    The cache key holds the checkpoint checksum, graph version, input size, scores, opset,
    dynamic flag and torch version; a mismatched, corrupt or unrecorded file is exported again.
    """
    checkpoint = Path(checkpoint)
    if input_size is None:
        input_size = tuple(read_checkpoint(checkpoint)["input_size"])
    score_names = tuple(score_names)
    sha = file_sha256(checkpoint)
    key = {"checkpoint_sha256": sha, "graph_version": GRAPH_VERSION,
           "input_size": list(input_size), "score_names": list(score_names), "opset": opset,
           "dynamic_size": dynamic, "torch": torch.__version__}
    size = "dyn" if dynamic else f"{input_size[0]}x{input_size[1]}"
    name = (f"{checkpoint.stem}-{sha[:12]}-g{GRAPH_VERSION}-{size}-"
            f"{'+'.join(score_names) or 'labels'}-op{opset}.onnx")
    path = Path(cache_dir or cache.default_cache_dir()) / "onnx" / name

    def write(tmp: Path) -> None:
        export_onnx(checkpoint, tmp, score_names, input_size, dynamic, opset)

    return cache.ensure(path, key, write, "ONNX export", status, {"checkpoint": str(checkpoint)})


def onnx_for_model(model_path: Union[str, Path], score_names: Sequence[str] = ("jsd",),
                   input_size: Optional[Tuple[int, int]] = None,
                   cache_dir: Union[str, Path, None] = None,
                   status: Optional[cache.StatusCallback] = None) -> Path:
    """Return the ONNX file that computes ``score_names`` for a model file.

    A checkpoint (``.pt``) is exported into the cache, an exported ``.onnx`` is used as it is
    once its scores match.
    """
    model_path = Path(model_path)
    if model_path.suffix == ".pt":
        return cached_onnx(model_path, cache_dir, score_names, input_size, status=status)
    info = read_onnx_info(model_path)
    if info.score_names != tuple(score_names):
        raise ValueError(f"ONNX file {model_path} computes scores {list(info.score_names)}, but "
                         f"{list(score_names)} were asked for; export it again with those scores")
    return model_path
