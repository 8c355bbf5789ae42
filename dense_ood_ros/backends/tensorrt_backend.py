"""TensorRT backend (native Python API, TensorRT 10 and 11): engine build, cache, inference.

Build (:data:`BUILDS`), by default ``typed``, on TensorRT 10 and 11 alike: reduced precision
comes from the graph itself, the FP16 graph (:mod:`dense_ood_ros.onnx_fp16`) or the Q/DQ
graph of the ``tensorrt`` INT8 recipe (:mod:`dense_ood_ros.quantization`, calibrated on real
frames), parsed into a strongly typed network (TensorRT 11 has no other kind; TensorRT 10 is
asked for one with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``). ``flags``, TensorRT 10
only: the FP32 graph with the FP16 / INT8 builder flags and an INT8 calibrator, as before
TensorRT 11 removed them. ``trt.Builder`` -> network -> ``trt.OnnxParser`` -> builder config
(workspace limit, TF32 off wherever a layer is meant to be FP32, progress monitor, one
optimization profile for batch 1 at the input size; ``flags`` INT8: calibrator and a
calibration profile at its batch size) -> ``build_serialized_network``.
Run: ``trt.Runtime.deserialize_cuda_engine`` -> execution context with named tensors
(``set_input_shape``, ``set_tensor_address``) -> ``execute_async_v3`` on a CUDA stream.
Device buffers, pinned host buffers and the stream are torch CUDA objects, so neither
pycuda nor cuda-python is needed.

Engines are cached with a JSON record (see :mod:`dense_ood_ros.cache`)
holding the GPU name and compute capability, TensorRT version, precision, build and graph
variant (``fp32``, ``fp16``, ``int8-qdq``), input shape, the FP32 ONNX checksum and, for INT8,
the calibration data id; any mismatch rebuilds the engine. The record names the graph file
the engine was built from (``graph_onnx``).
The record also carries class names, score names and the source ONNX path, so an engine
file is self-describing. A cached engine that is truncated or corrupt (checksum), or whose
record is missing, unreadable or lacks a field, is rebuilt with the reason reported; an
engine file given directly without a usable record is refused (:class:`ModelFileError`
naming it), one TensorRT cannot deserialize too, and a cached one of those is rebuilt once.
"""

import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from dense_ood_ros import cache
from dense_ood_ros.backends.base import Backend, BuildRequest, no_scores
from dense_ood_ros.backends.calibration import (CalibrationBatches, CalibrationSettings,
                                                make_calibrator)
from dense_ood_ros.cache import StatusCallback
from dense_ood_ros.io import file_sha256
from dense_ood_ros.label_set import LabelSet, LabelSetError, legacy_label_set
from dense_ood_ros.onnx_fp16 import cached_fp16_onnx
from dense_ood_ros.onnx_graph import (INPUT_NAME, LABELS_NAME, SCORES_NAME, ModelFileError,
                                      onnx_for_model, read_onnx_info)

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
#: How reduced precision reaches an engine: ``typed`` (from the graph's own types) or
#: ``flags`` (builder flags, TensorRT 10 only); see the module docstring.
BUILDS = ("typed", "flags")
#: Records written before builds had names were built with flags.
LEGACY_BUILD = "flags"


def graph_variant(precision: str, build: str) -> str:
    """Name the graph an engine is built from: ``fp32``, ``fp16`` or ``int8-qdq``."""
    if build == "flags" or precision == "fp32":
        return "fp32"
    return "fp16" if precision == "fp16" else "int8-qdq"


def engine_key(onnx_sha256: str, precision: str, input_shape, gpu_name: str,
               compute_capability: str, tensorrt_version: str,
               calibration_id: Optional[str] = None, build: str = "typed") -> Dict[str, Any]:
    """Everything a serialized TensorRT engine is specific to.

    ``input_shape`` is the engine's input (N, H, W, 3); ``calibration_id`` identifies the
    INT8 calibration data (left out of the key when the caller accepts any calibration).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if build not in BUILDS:
        raise ValueError(f"unknown TensorRT build {build!r}; choose one of {list(BUILDS)}")
    key = {"onnx_sha256": onnx_sha256, "precision": precision, "build": build,
           "graph": graph_variant(precision, build),
           "input_shape": [int(v) for v in input_shape], "gpu": gpu_name,
           "compute_capability": compute_capability, "tensorrt": tensorrt_version}
    if calibration_id is not None:
        key["calibration_id"] = calibration_id
    return key


def cached_engine_path(cache_dir: Union[str, Path], onnx_path: Union[str, Path], onnx_sha256: str,
                       precision: str, input_size, build: str = "typed") -> Path:
    """Where the cache keeps the engine of an ONNX file at one precision, build and input size.

    GPU and TensorRT version are not in the name: a mismatch there rebuilds the file in place.
    """
    height, width = input_size
    variant = "" if build == "typed" else f".{build}"
    name = (f"{Path(onnx_path).stem}-{onnx_sha256[:12]}-{height}x{width}.{precision}{variant}"
            ".engine")
    return Path(cache_dir) / "engines" / name


def calibration_cache_path(engine_path: Union[str, Path], onnx_sha256: str,
                           calibration_id: str) -> Path:
    """Where an INT8 engine's calibration table is kept, beside the engine.

    The name carries the ONNX checksum and the calibration data id, so a retrained model or
    other frames never reuse an old table (TensorRT leaves that check to the application).
    """
    engine_path = Path(engine_path)
    return engine_path.with_name(f"{engine_path.name}.onnx-{onnx_sha256[:12]}"
                                 f".data-{calibration_id[:12]}.calib")


def import_tensorrt():
    """Import ``tensorrt``, or raise an ImportError saying what the backend needs."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError("the tensorrt backend needs the 'tensorrt' Python package (TensorRT 10 "
                          f"or 11) and an NVIDIA GPU: {exc}") from exc
    return tensorrt


def gpu_identity(device_index: int = 0) -> Tuple[str, str]:
    """(GPU name, compute capability "major.minor") of a CUDA device, via torch."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the tensorrt backend needs a CUDA GPU; torch sees none")
    major, minor = torch.cuda.get_device_capability(device_index)
    return torch.cuda.get_device_name(device_index), f"{major}.{minor}"


def current_engine_key(onnx_sha256: str, precision: str, input_size: Tuple[int, int],
                       calibration_id: Optional[str] = None, device_index: int = 0,
                       build: str = "typed") -> Dict[str, Any]:
    """Return the cache key of an engine built here and now (this GPU, this TensorRT)."""
    trt = import_tensorrt()
    name, capability = gpu_identity(device_index)
    return engine_key(onnx_sha256, precision, (1, *input_size, 3), name, capability,
                      trt.__version__, calibration_id, build)


def _progress_monitor(trt, status: StatusCallback):
    """Make a ``trt.IProgressMonitor`` that forwards the builder's progress to ``status``.

    It reports the top-level phases, with their steps at every tenth of the phase.
    """

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._steps: Dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                with self._lock:
                    self._steps[phase_name] = num_steps
                status(f"building TensorRT engine: {phase_name} (0/{num_steps})")

        def step_complete(self, phase_name, step):
            with self._lock:
                total = self._steps.get(phase_name)
            if total is not None and (step + 1) * 10 // total != step * 10 // total:
                status(f"building TensorRT engine: {phase_name} ({step + 1}/{total})")
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self._lock:
                self._steps.pop(phase_name, None)

    return Monitor()


def build_engine(onnx_path: Union[str, Path], precision: str, input_size: Tuple[int, int],
                 calibrator=None, workspace_gb: float = 4.0,
                 status: Optional[StatusCallback] = None, device_index: int = 0,
                 build: str = "typed") -> bytes:
    """Build a serialized engine for batch 1 at ``input_size`` from an ONNX file.

    ``onnx_path`` is the graph of :func:`graph_variant` for the precision and build.
    """
    import torch

    with torch.cuda.device(device_index):
        return _build_engine(import_tensorrt(), onnx_path, precision, input_size, calibrator,
                             workspace_gb, status, build)


def tensorrt_major(trt) -> int:
    """Return the major version of a ``tensorrt`` module."""
    return int(str(trt.__version__).split(".")[0])


def check_build(trt, precision: str, build: str) -> None:
    """Refuse a build this TensorRT cannot do, saying which one can."""
    if build not in BUILDS:
        raise ValueError(f"unknown TensorRT build {build!r}; choose one of {list(BUILDS)}")
    if build == "flags" and precision != "fp32" and not hasattr(trt.BuilderFlag, "FP16"):
        raise RuntimeError(f"TensorRT {trt.__version__} has no FP16/INT8 builder flags (weak "
                           f"typing was removed in TensorRT 11): build {precision} engines "
                           "from the typed graphs (build 'typed', the default)")


def _network_flags(trt, build: str) -> int:
    """Creation flags of the network: strongly typed for ``typed`` builds.

    TensorRT 11 networks are always strongly typed (the flag is accepted and ignored there);
    TensorRT 10 needs it asked for.
    """
    if build == "typed" and hasattr(trt, "NetworkDefinitionCreationFlag") and \
            hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _build_engine(trt, onnx_path, precision, input_size, calibrator, workspace_gb,
                  status, build: str = "typed") -> bytes:
    """:func:`build_engine` on the current CUDA device."""
    check_build(trt, precision, build)
    if precision == "int8" and build == "flags" and calibrator is None:
        raise ValueError("an INT8 engine built with flags needs a calibrator")
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(_network_flags(trt, build))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"TensorRT cannot parse ONNX file {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    shape = (1, *input_size, 3)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, shape, shape, shape)
    config.add_optimization_profile(profile)
    if (precision == "fp32" or build == "typed") and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 is on by default and would run FLOAT layers with 10-bit mantissas (Ampere+):
        # an FP32 engine, and the scores' FP32 arithmetic of a typed one, stay FP32
        config.clear_flag(trt.BuilderFlag.TF32)
    if build == "flags" and precision in ("fp16", "int8"):
        # INT8 engines run layers without INT8 kernels in FP16
        config.set_flag(trt.BuilderFlag.FP16)
    if build == "flags" and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        calibration_shape = (calibrator.get_batch_size(), *input_size, 3)
        calibration_profile = builder.create_optimization_profile()
        calibration_profile.set_shape(INPUT_NAME, calibration_shape, calibration_shape,
                                      calibration_shape)
        config.set_calibration_profile(calibration_profile)
    monitor = _progress_monitor(trt, status or logger.info)  # must outlive the build
    config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT {trt.__version__} failed to build a {precision} ({build}) "
                           f"engine from {onnx_path} (see its log above)")
    return bytes(serialized)


def ensure_engine(onnx_path: Union[str, Path], engine_path: Union[str, Path, None] = None,
                  precision: str = "fp16", input_size: Optional[Tuple[int, int]] = None,
                  calibration: Optional[CalibrationSettings] = None,
                  cache_dir: Union[str, Path, None] = None, workspace_gb: float = 4.0,
                  status: Optional[StatusCallback] = None,
                  device_index: int = 0, build: str = "typed") -> Path:
    """Return a valid engine for this GPU and TensorRT: the cached one, or a fresh build.

    ``onnx_path`` is the FP32 export; a ``typed`` build makes its FP16 or Q/DQ graph first
    (cached too). ``engine_path`` defaults to a file in the cache directory named after the
    ONNX file, input size, precision and build. INT8 needs ``calibration`` unless a valid
    engine (any calibration) exists, or the engine's record names calibration data that still
    exists, or (``typed``) the default calibration frames are there
    (:func:`dense_ood_ros.quantization.default_calibration`).
    """
    from dense_ood_ros.quantization import default_calibration, onnx_metadata

    if build not in BUILDS:
        raise ValueError(f"unknown TensorRT build {build!r}; choose one of {list(BUILDS)}")
    info = read_onnx_info(onnx_path)
    input_size = info.run_size(input_size)
    onnx_sha = file_sha256(onnx_path)
    if engine_path is None:
        engine_path = cached_engine_path(cache_dir or cache.default_cache_dir(), onnx_path,
                                         onnx_sha, precision, input_size, build)
    engine_path = Path(engine_path)
    batches = calibration_id = None
    if precision == "int8":
        if calibration is None:
            key = current_engine_key(onnx_sha, precision, input_size, None, device_index,
                                     build=build)
            if cache.stale_reason(engine_path, key) is None:
                return engine_path
            calibration = _recorded_calibration(
                engine_path, default_calibration() if build == "typed" else None)
        if build == "flags":
            batches = CalibrationBatches.from_settings(calibration, input_size)
            calibration_id = batches.data_id(calibration.method)
    graph_path = _engine_graph(onnx_path, precision, build, calibration, input_size, cache_dir,
                               status)
    if precision == "int8" and build == "typed":
        calibration_id = onnx_metadata(graph_path)["calibration_id"]
    key = current_engine_key(onnx_sha, precision, input_size, calibration_id, device_index,
                             build=build)

    def write(tmp: Path) -> None:
        calibrator = None
        if batches is not None:
            calibrator = make_calibrator(batches, calibration.method,
                                         calibration_cache_path(engine_path, onnx_sha,
                                                                calibration_id),
                                         status, device_index)
        started = time.monotonic()
        tmp.write_bytes(build_engine(graph_path, precision, input_size, calibrator, workspace_gb,
                                     status, device_index, build=build))
        elapsed = time.monotonic() - started
        (status or logger.info)(f"built TensorRT {precision} engine ({build} build, "
                                f"{graph_variant(precision, build)} graph) "
                                f"{engine_path.name} in {elapsed:.0f} s")

    extra = {"onnx": str(Path(onnx_path).resolve()), "graph_onnx": str(graph_path.resolve()),
             "class_names": list(info.class_names), "label_set": info.label_set.to_dict(),
             "score_names": list(info.score_names),
             "calibration": None if calibration is None else {
                 "image_dir": str(Path(calibration.image_dir).resolve()),
                 "count": calibration.count, "method": calibration.method,
                 "batch_size": calibration.batch_size}}
    return cache.ensure(engine_path, key, write, f"TensorRT {precision} engine", status, extra)


def _engine_graph(onnx_path: Union[str, Path], precision: str, build: str,
                  calibration: Optional[CalibrationSettings], input_size: Tuple[int, int],
                  cache_dir: Union[str, Path, None],
                  status: Optional[StatusCallback]) -> Path:
    """Return the graph file of :func:`graph_variant` (the FP16 and Q/DQ ones are cached)."""
    from dense_ood_ros.quantization import cached_int8_onnx

    variant = graph_variant(precision, build)
    if variant == "fp16":
        return cached_fp16_onnx(onnx_path, cache_dir, status)
    if variant == "int8-qdq":
        return cached_int8_onnx(onnx_path, calibration, input_size, cache_dir, status,
                                recipe="tensorrt")
    return Path(onnx_path)


def _recorded_calibration(engine_path: Path,
                          default: Optional[CalibrationSettings] = None) -> CalibrationSettings:
    """Return the calibration settings that an earlier INT8 build recorded, else ``default``.

    With them the engine is rebuilt without asking for them again.
    """
    settings = None
    try:
        recorded = cache.read_record(engine_path).get("calibration")
        settings = CalibrationSettings(Path(recorded["image_dir"]), recorded["count"],
                                       recorded["method"], recorded["batch_size"])
    except (ValueError, TypeError, KeyError, AttributeError):  # no record, or a mangled one
        pass
    if settings is None or not settings.image_dir.is_dir():
        settings = default
    if settings is None:
        raise ValueError(f"no valid INT8 engine at {engine_path} and no calibration "
                         "data to build one: prebuild it with dense-ood-export "
                         "--engine ... --precision int8 --calib-dir DIR")
    return settings


def _record_problems(record: Dict[str, Any]) -> List[str]:
    """Name the fields of an engine record that are missing or of the wrong type."""
    key = record["key"]

    def names(value) -> bool:
        return isinstance(value, list) and all(isinstance(name, str) for name in value)

    shape = key.get("input_shape")
    checks = {
        "key.precision": key.get("precision") in PRECISIONS,
        "key.build": key.get("build", LEGACY_BUILD) in BUILDS,
        "key.input_shape": (isinstance(shape, list) and len(shape) == 4
                            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                    for v in shape)),
        "key.onnx_sha256": isinstance(key.get("onnx_sha256"), str),
        "key.calibration_id": isinstance(key.get("calibration_id", ""), str),
        "class_names": names(record.get("class_names")) and bool(record.get("class_names")),
        "score_names": names(record.get("score_names")),
        "onnx": isinstance(record.get("onnx", ""), str),
    }
    return [name for name, valid in checks.items() if not valid]


def read_engine_record(engine_path: Union[str, Path]) -> Dict[str, Any]:
    """Read an engine's record and check its fields; :class:`ModelFileError` names the engine."""
    engine_path = Path(engine_path)
    try:
        record = cache.read_record(engine_path)
    except ValueError as exc:
        raise ModelFileError(f"engine {engine_path} has no usable record ({exc}); "
                             "build engines with dense-ood-export --engine") from None
    problems = _record_problems(record)
    if problems:
        raise ModelFileError(f"engine {engine_path} has no usable record "
                             f"({cache.record_path(engine_path)} lacks valid "
                             f"{', '.join(problems)}); build engines with dense-ood-export "
                             "--engine")
    return record


def engine_label_set(record: Dict[str, Any], engine_path: Union[str, Path]) -> LabelSet:
    """Return the label set an engine's record holds (older records: the legacy rules)."""
    source = f"engine {engine_path}"
    try:
        if "label_set" not in record:
            return legacy_label_set(record["class_names"], source,
                                    "build it again from a checkpoint that has one (python -m "
                                    "training.label_set --dataset {dataset} CHECKPOINT)")
        label_set = LabelSet.from_dict(record["label_set"], f"{source} record")
    except LabelSetError as exc:
        raise ModelFileError(str(exc)) from None
    if list(label_set.class_names) != list(record["class_names"]):
        raise ModelFileError(f"{source} record: 'label_set' has the classes "
                             f"{list(label_set.class_names)}, 'class_names' "
                             f"{record['class_names']}")
    return label_set


def check_engine_file(engine_path: Union[str, Path], status: Optional[StatusCallback] = None,
                      device_index: int = 0) -> Path:
    """Validate an engine file given directly against this GPU and TensorRT.

    Rebuild it from the ONNX file its record names when stale, or raise
    :class:`ModelFileError` saying why not.
    """
    engine_path = Path(engine_path)
    record = read_engine_record(engine_path)
    key = record["key"]
    input_size = tuple(key["input_shape"][1:3])
    build = key.get("build", LEGACY_BUILD)
    needed = current_engine_key(key["onnx_sha256"], key["precision"], input_size,
                                key.get("calibration_id"), device_index, build=build)
    reason = cache.stale_reason(engine_path, needed)
    if reason is None:
        return engine_path
    onnx_path = Path(record.get("onnx", ""))
    if not onnx_path.is_file() or file_sha256(onnx_path) != key["onnx_sha256"]:
        raise ModelFileError(f"engine {engine_path} cannot be used ({reason}) "
                             f"and its source ONNX {onnx_path} is gone or "
                             "changed; rebuild it with dense-ood-export --engine")
    (status or logger.info)(f"engine {engine_path} is stale ({reason}); "
                            f"rebuilding it from {onnx_path}")
    calibration = None
    if record.get("calibration"):
        calibration = _recorded_calibration(engine_path)
    return ensure_engine(onnx_path, engine_path, key["precision"], input_size, calibration,
                         status=status, device_index=device_index, build=build)


class TensorRTBackend(Backend):
    """Runs a serialized engine (batch 1 per launch; larger batches loop over frames)."""

    name = "tensorrt"
    suffixes = (".pt", ".onnx", ".engine")
    #: ``precision``: of an engine built here (default fp16; an ``.engine`` file has its own);
    #: ``calibration``: :class:`~dense_ood_ros.backends.calibration.CalibrationSettings` for INT8;
    #: ``build``: ``typed`` (default) or ``flags`` (TensorRT 10 only), see :data:`BUILDS`.
    options = {"precision": PRECISIONS, "calibration": None, "build": BUILDS}

    @classmethod
    def unavailable_reason(cls, **options) -> Optional[str]:
        try:
            import_tensorrt()
        except ImportError:
            return "the tensorrt Python package is not installed"
        import torch

        if not torch.cuda.is_available():
            return "torch sees no CUDA GPU"
        return None

    @classmethod
    def from_model(cls, model_path: Path, request: BuildRequest, precision: Optional[str] = None,
                   calibration: Optional[CalibrationSettings] = None,
                   build: Optional[str] = None) -> "TensorRTBackend":
        import_tensorrt()  # fail fast, before any export
        if model_path.suffix == ".engine":
            backend = cls(check_engine_file(model_path, request.status))
            backend.check_request(request.score_names, request.input_size, precision, build)
            return backend
        onnx_path = onnx_for_model(model_path, request.score_names, request.input_size,
                                   request.cache_dir, request.status)
        return open_engine(onnx_path, precision or "fp16", request.input_size, calibration,
                           request.cache_dir, status=request.status, build=build or "typed")

    def __init__(self, engine_path: Union[str, Path], device_index: int = 0):
        import torch

        trt = import_tensorrt()
        self.engine_path = Path(engine_path)
        record = read_engine_record(self.engine_path)
        key = record["key"]
        self.precision = key["precision"]
        self.build = key.get("build", LEGACY_BUILD)
        self.graph = graph_variant(self.precision, self.build)
        self.input_size = tuple(key["input_shape"][1:3])
        self.label_set = engine_label_set(record, self.engine_path)
        self.class_names = self.label_set.class_names
        self.score_names = tuple(record["score_names"])
        self.device = torch.device("cuda", device_index)
        self._trt_version = trt.__version__
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise ModelFileError(f"TensorRT {trt.__version__} cannot deserialize engine "
                                     f"{self.engine_path}")
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(self.device)
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names
                      if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if n not in inputs]
            if inputs != [INPUT_NAME] or LABELS_NAME not in outputs:
                raise ModelFileError(f"engine {self.engine_path} has inputs {inputs} "
                                     f"and outputs {outputs}; expected input "
                                     f"{INPUT_NAME!r} and output {LABELS_NAME!r}")
            self._context.set_input_shape(INPUT_NAME, (1, *self.input_size, 3))
            self._device = {}
            self._host = {}
            for name in names:
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = _torch_dtype(trt, self._engine.get_tensor_dtype(name))
                self._device[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self._host[name] = torch.empty(shape, dtype=dtype, pin_memory=True)
                self._context.set_tensor_address(name, self._device[name].data_ptr())

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        import torch

        expected = (*self.input_size, 3)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"tensorrt backend expects uint8 (N, {expected[0]}, {expected[1]}, "
                             f"3) images, got {images.dtype} {images.shape}")
        labels, scores = [], []
        for image in images:
            with torch.cuda.stream(self._stream):
                self._host[INPUT_NAME].numpy()[0] = image
                self._device[INPUT_NAME].copy_(self._host[INPUT_NAME], non_blocking=True)
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError(f"TensorRT execution failed for engine {self.engine_path}")
                for name in (LABELS_NAME, SCORES_NAME):
                    if name in self._device:
                        self._host[name].copy_(self._device[name], non_blocking=True)
            self._stream.synchronize()
            labels.append(self._host[LABELS_NAME].numpy().copy())
            if SCORES_NAME in self._host:
                scores.append(self._host[SCORES_NAME].numpy().copy())
        labels = np.concatenate(labels)
        if not scores:
            return labels, no_scores(len(images), self.input_size)
        return labels, np.concatenate(scores)

    def check_request(self, score_names, input_size, precision, build=None) -> None:
        """Refuse a request that differs from the engine's scores, size, precision or build."""
        problems = []
        if tuple(score_names) != tuple(self.score_names):
            problems.append(f"scores {list(self.score_names)} (asked {list(score_names)})")
        if input_size is not None and tuple(input_size) != tuple(self.input_size):
            problems.append(f"input size {self.input_size} (asked {tuple(input_size)})")
        if precision is not None and precision != self.precision:
            problems.append(f"precision {self.precision} (asked {precision})")
        if build is not None and build != self.build:
            problems.append(f"build {self.build} (asked {build})")
        if problems:
            raise ValueError(f"engine {self.engine_path} was built for " + ", ".join(problems))

    def describe(self) -> str:
        import torch

        return (f"tensorrt {self._trt_version} ({self.precision}, {self.build} build, "
                f"{self.graph} graph, {torch.cuda.get_device_name(self.device)}, "
                f"{self.engine_path.name})")


def _torch_dtype(trt, dtype):
    import torch

    types = trt.DataType
    table = {types.UINT8: torch.uint8, types.FLOAT: torch.float32, types.HALF: torch.float16,
             types.INT32: torch.int32, types.INT64: torch.int64, types.INT8: torch.int8,
             types.BOOL: torch.bool}
    if dtype not in table:
        raise ModelFileError(f"engine tensor type {dtype} is not "
                             "supported by the tensorrt backend")
    return table[dtype]


def open_engine(onnx_path: Union[str, Path], precision: str = "fp16",
                input_size: Optional[Tuple[int, int]] = None,
                calibration: Optional[CalibrationSettings] = None,
                cache_dir: Union[str, Path, None] = None, workspace_gb: float = 4.0,
                status: Optional[StatusCallback] = None,
                device_index: int = 0, build: str = "typed") -> TensorRTBackend:
    """Open a backend for an ONNX file via the engine cache.

    An engine that TensorRT cannot load is rebuilt once.
    """
    engine = ensure_engine(onnx_path, None, precision, input_size, calibration, cache_dir,
                           workspace_gb, status, device_index, build)
    try:
        return TensorRTBackend(engine, device_index)
    except ModelFileError as exc:
        logger.warning("rebuilding engine %s: %s", engine, exc)
        if precision == "int8" and calibration is None:
            calibration = _recorded_calibration(engine)
        cache.record_path(engine).unlink(missing_ok=True)
        engine = ensure_engine(onnx_path, engine, precision, input_size, calibration, cache_dir,
                               workspace_gb, status, device_index, build)
        return TensorRTBackend(engine, device_index)
