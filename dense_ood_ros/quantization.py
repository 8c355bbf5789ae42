"""INT8 static quantization of the exported graph, for the CPU runtimes and for TensorRT.

:func:`cached_int8_onnx` turns the fp32 ONNX file of :mod:`dense_ood_ros.onnx_graph` into a
QDQ-format INT8 graph with ``onnxruntime.quantization.quantize_static`` and keeps it in the
artefact cache (:mod:`dense_ood_ros.cache`). Two recipes (:data:`RECIPES`): ``cpu`` for ONNX
Runtime and OpenVINO (below), ``tensorrt`` for TensorRT's explicit quantization (every
convolution but the stem, int8 activations with zero point 0, float biases:
:func:`tensorrt_quantized_nodes`).

* What the ``cpu`` recipe quantizes (:func:`quantized_nodes`): the dense (``group == 1``)
  spatial (k x k, k > 1) convolutions that do not read the image itself, i.e. the decoder's
  three 3x3 blend convolutions, 60 % of the graph's multiply-adds. Weights int8 per output channel
  (symmetric), activations uint8 (asymmetric, the U8S8 kernels of ONNX Runtime's x86 CPU
  provider). Everything else stays fp32: on a CPU without VNNI the quantize / dequantize pairs
  around the depthwise and small 1x1 convolutions of the encoder cost more than int8 saves,
  and quantizing them loses accuracy (``docs/cpu_profile.md`` has the measurements). The
  normalisation, argmax and anomaly scores always stay fp32.
* Calibration: real frames read exactly as the detector reads them (``read_rgb`` then
  :func:`dense_ood_ros.preprocessing.resize_frame` to the input size, uint8 NHWC; the graph
  normalises them itself), ``count`` frames spread evenly over the folder's sorted files
  (default: 128 frames of CamVid train), ranges by MinMax (``minmax``) or entropy.
* Cache key: SHA-256 of the fp32 source ONNX (hence of the checkpoint, graph version, scores
  and input size), SHA-256 of the calibration frames' contents with their count, size and
  method, the quantization recipe version (:data:`QUANT_VERSION`) and the onnxruntime
  version. A file whose record differs, or that is corrupt (its checksum is recorded), is
  rebuilt and the reason logged.
"""

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from dense_ood_ros import cache
from dense_ood_ros.backends.calibration import CalibrationBatches, CalibrationSettings
from dense_ood_ros.io import file_sha256, list_images, read_rgb
from dense_ood_ros.onnx_graph import INPUT_NAME, PRECISION_KEY, ModelFileError, read_onnx_info
from dense_ood_ros.preprocessing import resize_frame

logger = logging.getLogger(__name__)

#: Bumped whenever the quantization recipe (nodes, types, options) changes.
QUANT_VERSION = 1
#: Precisions of the onnxruntime backend.
PRECISIONS = ("fp32", "int8")
#: Calibration frames used when the caller gives no count.
DEFAULT_CALIBRATION_COUNT = 128
#: Calibration method used when the caller gives none.
DEFAULT_CALIBRATION_METHOD = "minmax"
#: Environment variable naming the default calibration folder.
CALIBRATION_ENV = "DENSE_OOD_CALIBRATION_DIR"
_REPO_CAMVID_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid" / "train"


def default_calibration_dir() -> Optional[Path]:
    """Return ``$DENSE_OOD_CALIBRATION_DIR``, else ``../shared/data/camvid/train`` if present."""
    if os.environ.get(CALIBRATION_ENV):
        return Path(os.environ[CALIBRATION_ENV])
    return _REPO_CAMVID_TRAIN if _REPO_CAMVID_TRAIN.is_dir() else None


def default_calibration() -> Optional[CalibrationSettings]:
    """Return the calibration used when none is given (None without a calibration folder)."""
    folder = default_calibration_dir()
    if folder is None:
        return None
    return CalibrationSettings(folder, DEFAULT_CALIBRATION_COUNT, DEFAULT_CALIBRATION_METHOD)


def calibration_frames(image_dir: Union[str, Path], count: int) -> List[Path]:
    """Return ``count`` images spread evenly over a folder's sorted files (all if fewer).

    Spread, not the first ``count``: CamVid's sorted names run sequence by sequence, so the
    first files would all come from one drive.
    """
    paths = list_images(image_dir, "calibration")
    if count >= len(paths):
        return paths
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round()]


def calibration_batches(settings: CalibrationSettings,
                        input_size: Tuple[int, int]) -> CalibrationBatches:
    """Return the uint8 NHWC batches of ``settings`` at ``input_size`` (the detector's way)."""
    return CalibrationBatches(calibration_frames(settings.image_dir, settings.count), input_size,
                              settings.batch_size)


def calibration_id(batches: CalibrationBatches, method: str) -> str:
    """Identify calibration data by content: method, batch shape and each frame's SHA-256."""
    digest = hashlib.sha256(f"{method}|{batches.shape}|{len(batches)}".encode())
    for path in batches.paths[:len(batches) * batches.batch_size]:
        digest.update(f"|{file_sha256(path)}".encode())
    return digest.hexdigest()


def onnx_metadata(onnx_path: Union[str, Path]) -> Dict[str, str]:
    """Return the metadata of an ONNX file (its weights are not read)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def onnx_precision(onnx_path: Union[str, Path]) -> str:
    """Return the precision an ONNX file declares (``int8``, ``fp16``), else fp32."""
    return declared_precision(onnx_metadata(onnx_path))


def declared_precision(meta: Dict[str, str]) -> str:
    """Return the precision metadata (:func:`onnx_metadata`) declare, else fp32."""
    return meta.get(PRECISION_KEY, "fp32")


def declared_quant_recipe(meta: Dict[str, str]) -> Optional[str]:
    """Return the INT8 recipe of a quantized file's metadata (files before recipes: cpu)."""
    if declared_precision(meta) != "int8":
        return None
    return meta.get("quant_recipe", "cpu")


def _convolutions(model) -> Iterator[Tuple[str, int, List[int]]]:
    """Yield (name, group, weight shape [out, in / group, kh, kw]) of each constant-weight Conv."""
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            attributes = {a.name: a for a in node.attribute}
            group = attributes["group"].i if "group" in attributes else 1
            yield node.name, group, weights[node.input[1]]


def quantized_nodes(model) -> List[str]:
    """Name the Conv nodes of an ONNX model that the INT8 recipe quantizes.

    Dense (``group == 1``) convolutions with a spatial kernel (k x k, k > 1) and more than 4
    input channels: in this network the decoder's 3x3 blend convolutions (the stem, which
    reads the 3-channel image, and the depthwise convolutions stay fp32).
    """
    return [name for name, group, (_, in_channels, *kernel) in _convolutions(model)
            if group == 1 and in_channels > 4 and max(kernel, default=1) > 1]


def tensorrt_quantized_nodes(model) -> List[str]:
    """Name the Conv nodes of the TensorRT recipe: the dense and 1x1 convolutions.

    TensorRT fuses a Q/DQ pair on a convolution's input and weights into an INT8 kernel. The
    stem (it reads the 3-channel image) and the depthwise convolutions stay in the graph's
    float type: quantized, the depthwise ones alone cost 4 % of label agreement with fp32 on
    CamVid frames (Q/DQ simulated in float), for little work.
    """
    return [name for name, group, (_, in_channels, *_) in _convolutions(model)
            if group == 1 and in_channels > 4]


@dataclass(frozen=True)
class QuantRecipe:
    """What a runtime's Q/DQ graph quantizes, and how.

    Weights are always int8, symmetric, per output channel. Activations are uint8 with a zero
    point (ONNX Runtime's x86 U8S8 kernels) or, ``symmetric_activations``, int8 with zero point
    0 (TensorRT's explicit quantization takes only that). TensorRT wants float biases.
    """

    select: Callable[[Any], List[str]]
    symmetric_activations: bool
    quantize_bias: bool


#: The INT8 recipes: ``cpu`` for ONNX Runtime and OpenVINO, ``tensorrt`` for TensorRT engines.
RECIPES = {"cpu": QuantRecipe(quantized_nodes, symmetric_activations=False, quantize_bias=True),
           "tensorrt": QuantRecipe(tensorrt_quantized_nodes, symmetric_activations=True,
                                   quantize_bias=False)}


def batch_at(batches: CalibrationBatches, index: int) -> np.ndarray:
    """Return batch ``index`` of ``batches``, made as iterating over them makes it.

    Each frame is read as RGB and resized with
    :func:`dense_ood_ros.preprocessing.resize_frame` (the detector's own pre-processing).
    """
    size = batches.batch_size
    paths = batches.paths[index * size:(index + 1) * size]
    return np.ascontiguousarray(np.stack([resize_frame(read_rgb(p), batches.input_size)
                                          for p in paths]))


#: Calibration batches whose intermediate tensors onnxruntime holds at once (at most): it
#: computes and merges the ranges chunk by chunk (``CalibStridedMinMax``), so memory does not
#: grow with the number of frames (128 frames at 720x1280 would need tens of GB).
CALIBRATION_CHUNK = 8


def _chunk(count: int) -> int:
    """Return the largest chunk size <= :data:`CALIBRATION_CHUNK` that divides ``count``."""
    return max(size for size in range(1, CALIBRATION_CHUNK + 1) if count % size == 0)


class _FrameReader:
    """``CalibrationDataReader`` over :class:`CalibrationBatches` (onnxruntime's protocol).

    Supports ``len`` and ``set_range``, which onnxruntime's strided calibration uses.
    """

    def __init__(self, batches: CalibrationBatches, status):
        self.batches = batches
        self.status = status
        self.done = 0
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._indices = iter(range(start_index, min(end_index, len(self.batches))))

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        index = next(self._indices, None)
        if index is None:
            return None
        self.done += 1
        if self.done % 32 == 0 or self.done == len(self.batches):
            self.status(f"INT8 calibration: batch {self.done}/{len(self.batches)}")
        return {INPUT_NAME: batch_at(self.batches, index)}


def quantize_onnx(onnx_path: Union[str, Path], out_path: Union[str, Path],
                  batches: CalibrationBatches, method: str = DEFAULT_CALIBRATION_METHOD,
                  select: Optional[Callable[[Any], Sequence[str]]] = None,
                  status: Optional[cache.StatusCallback] = None,
                  metadata: Optional[Dict[str, str]] = None, recipe: str = "cpu") -> List[str]:
    """Quantize an exported ONNX file to a QDQ INT8 file; return the quantized node names.

    The graph is first pre-processed (ONNX shape inference and ONNX Runtime's basic
    optimisations: constants folded, as the quantizer recommends); ``select`` names the Conv
    nodes of the pre-processed graph to quantize (default: the recipe's; others serve to
    compare recipes). ``recipe`` is a key of :data:`RECIPES`. The output keeps the source's
    metadata, plus ``precision: int8``, the recipe, the quantized nodes and ``metadata``.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"unknown INT8 calibration method {method!r}; "
                         f"choose one of {list(methods)}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown INT8 recipe {recipe!r}; choose one of {list(RECIPES)}")
    rules = RECIPES[recipe]
    report = status or logger.info
    source = onnx.load(str(onnx_path))
    with tempfile.TemporaryDirectory(prefix="dense_ood_quant-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(source, str(prepared), skip_symbolic_shape=True)
        nodes = list((select or rules.select)(onnx.load(str(prepared))))
        if not nodes:
            raise ModelFileError(f"{onnx_path} has no convolution that the INT8 recipe "
                                 "quantizes")
        started = time.monotonic()
        quantize_static(str(prepared), str(out_path), _FrameReader(batches, report),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        nodes_to_quantize=list(nodes), per_channel=True, reduce_range=False,
                        activation_type=(QuantType.QInt8 if rules.symmetric_activations
                                         else QuantType.QUInt8),
                        weight_type=QuantType.QInt8, calibrate_method=methods[method],
                        extra_options={"CalibStridedMinMax": _chunk(len(batches)),
                                       "ActivationSymmetric": rules.symmetric_activations,
                                       "WeightSymmetric": True,
                                       "QuantizeBias": rules.quantize_bias})
    model = onnx.load(str(out_path))
    props = {prop.key: prop.value for prop in source.metadata_props}
    props.update({PRECISION_KEY: "int8", "quant_recipe": recipe,
                  "quantized_nodes": json.dumps(list(nodes)),
                  **(metadata or {})})
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(out_path))
    report(f"quantized {len(nodes)} convolutions to INT8 in {time.monotonic() - started:.0f} s "
           f"({len(batches)} calibration batches, {method})")
    return list(nodes)


def int8_key(source_sha256: str, input_size: Tuple[int, int], calibration: Optional[str],
             method: Optional[str], count: Optional[int],
             recipe: str = "cpu") -> Dict[str, object]:
    """Return the cache key of an INT8 file; None calibration fields are left out."""
    import onnxruntime

    key = {"source_onnx_sha256": source_sha256, "input_size": list(input_size),
           "quant_version": QUANT_VERSION, "recipe": recipe,
           "onnxruntime": onnxruntime.__version__}
    if calibration is not None:
        key.update(calibration_id=calibration, calibration_method=method,
                   calibration_count=count)
    return key


def int8_path(cache_dir: Union[str, Path, None], onnx_path: Union[str, Path], source_sha256: str,
              input_size: Tuple[int, int], recipe: str = "cpu") -> Path:
    """Where the cache keeps the INT8 file of an fp32 ONNX file at one input size and recipe."""
    name = (f"{Path(onnx_path).stem}-{source_sha256[:12]}-{input_size[0]}x{input_size[1]}"
            f".int8{'' if recipe == 'cpu' else '-' + recipe}.onnx")
    return Path(cache_dir or cache.default_cache_dir()) / "onnx-int8" / name


def cached_int8_onnx(onnx_path: Union[str, Path],
                     calibration: Optional[CalibrationSettings] = None,
                     input_size: Optional[Tuple[int, int]] = None,
                     cache_dir: Union[str, Path, None] = None,
                     status: Optional[cache.StatusCallback] = None,
                     recipe: str = "cpu") -> Path:
    """Return the INT8 version of an exported fp32 ONNX file: cached, or quantized now.

    ``calibration`` defaults to :func:`default_calibration`. Without any calibration folder a
    valid cached file (of any calibration) is used; with none either, ValueError says what to
    pass. ``recipe``: a key of :data:`RECIPES` (``tensorrt`` for TensorRT's engines).
    """
    info = read_onnx_info(onnx_path)
    input_size = info.run_size(input_size)
    source_sha = file_sha256(onnx_path)
    path = int8_path(cache_dir, onnx_path, source_sha, input_size, recipe)
    calibration = calibration or default_calibration()
    if calibration is None:
        if cache.stale_reason(path, int8_key(source_sha, input_size, None, None, None,
                                             recipe)) is None:
            return path
        raise ValueError(f"no valid INT8 file at {path} and no calibration frames to build one: "
                         f"pass calibration=CalibrationSettings(folder) or set {CALIBRATION_ENV}")
    batches = calibration_batches(calibration, input_size)
    data_id = calibration_id(batches, calibration.method)
    key = int8_key(source_sha, input_size, data_id, calibration.method, len(batches), recipe)

    def write(tmp: Path) -> None:
        quantize_onnx(onnx_path, tmp, batches, calibration.method, status=status,
                      metadata={"calibration_id": data_id,
                                "calibration_method": calibration.method,
                                "calibration_count": str(len(batches))}, recipe=recipe)

    extra = {"source_onnx": str(Path(onnx_path).resolve()),
             "calibration_dir": str(Path(calibration.image_dir).resolve())}
    return cache.ensure(path, key, write, "INT8 ONNX", status, extra)
