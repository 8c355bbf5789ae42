"""ONNX Runtime backend: runs an exported graph (see :mod:`dense_ood_ros.onnx_graph`).

Execution providers, best first, among those the installed onnxruntime offers:
``device="auto"``: TensorRT EP, CUDA EP, CPU; ``"cuda"``: TensorRT EP, CUDA EP (an error
when neither loads); ``"cpu"``: CPU only. The CPU session uses all graph optimisations
(``ORT_ENABLE_ALL``), sequential execution and one intra-op thread per available core; no
busy-waiting (spinning) unless asked (``spinning=True``). ``docs/cpu_profile.md`` measures
each of these settings on two cores.

``precision="int8"`` runs the statically quantized graph of :mod:`dense_ood_ros.quantization`
(built once, calibrated on real frames, cached beside the fp32 export); ``fp16`` the FP16 graph
of :mod:`dense_ood_ros.onnx_fp16` (TensorRT's FP16 engines are built from it; on the CPU,
ONNX Runtime computes each op without an FP16 kernel in FP32 between FP16 tensors: for its
accuracy, not for speed); ``fp32`` (default) the export itself. An ``.onnx`` file that is
already INT8 or FP16 runs as it is. A Q/DQ file of the ``tensorrt`` recipe runs without graph
optimisations unless asked otherwise: its Q/DQ pairs then compute in float, which is what
TensorRT's INT8 kernels compute (exact int32 sums), whereas ONNX Runtime's fused x86 kernels
for int8 activations saturate (label agreement with fp32 on CamVid frames: 98.5 % in float,
70 % fused, for the 1x1 convolutions quantized alone).
The TensorRT EP caches its engines in a folder of their own per ONNX file checksum (its own
cache key does not cover the weights).

The GPU providers come with the ``onnxruntime-gpu`` package, which installs the same module
(``onnxruntime``) as the CPU package: the two must not be installed side by side.
"""

import importlib.util
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dense_ood_ros import cache
from dense_ood_ros.backends.base import Backend, BuildRequest, no_scores
from dense_ood_ros.host import available_cpu_count
from dense_ood_ros.io import file_sha256
from dense_ood_ros.onnx_fp16 import cached_fp16_onnx
from dense_ood_ros.onnx_graph import (INPUT_NAME, ModelFileError, check_output_names,
                                      onnx_for_model)

logger = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
DEVICES = ("auto", "cpu", "cuda")
#: Precisions: the fp32 export, or its INT8 quantization (:mod:`dense_ood_ros.quantization`).
PRECISIONS = ("fp32", "fp16", "int8")
#: Graph optimisation levels by name (ONNX Runtime's ``GraphOptimizationLevel``).
OPTIMIZATION_LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
#: How to get the GPU providers (README, "Acceleration", says the same).
GPU_BUILD_HINT = ("for the GPU build: pip uninstall onnxruntime onnxruntime-gpu, then pip "
                  "install onnxruntime-gpu (both packages install the module onnxruntime, so "
                  "only one may be installed)")


def select_providers(device: str, available: Sequence[str]) -> List[str]:
    """Choose execution providers for ``device`` among ``available`` (ORT's list), best first."""
    if device not in DEVICES:
        raise ValueError(f"unknown onnxruntime device {device!r}; choose one of {list(DEVICES)}")
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and not gpu:
        raise RuntimeError(f"onnxruntime device 'cuda' needs one of {list(GPU_PROVIDERS)}; this "
                           f"onnxruntime offers {list(available)} ({GPU_BUILD_HINT})")
    return gpu + ["CPUExecutionProvider"]


def provider_options(provider: str, onnx_path: Union[str, Path],
                     cache_dir: Union[str, Path, None] = None) -> Dict[str, str]:
    """Options of one execution provider for a session on ``onnx_path``.

    The TensorRT EP gets an engine cache folder named after the ONNX file's checksum (its own
    engine key hashes names and versions, not the weights, so a re-exported file under the same
    name would run the old engine), created here with its parents (the EP creates it without
    them and, failing, falls back to CUDA/CPU silently).
    """
    if provider != "TensorrtExecutionProvider":
        return {}
    folder = (Path(cache_dir or cache.default_cache_dir()) / "ort-tensorrt"
              / file_sha256(onnx_path)[:16])
    folder.mkdir(parents=True, exist_ok=True)
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(folder)}


class OnnxRuntimeBackend(Backend):
    """Runs an exported ONNX graph with ONNX Runtime."""

    name = "onnxruntime"
    suffixes = (".pt", ".onnx")
    #: ``device``: see :func:`select_providers`; ``threads``: intra-op threads (default: available
    #: cores); ``precision``: fp32 (default), fp16 or int8; ``calibration``: a
    #: :class:`~dense_ood_ros.backends.calibration.CalibrationSettings` for int8 (default:
    #: :func:`dense_ood_ros.quantization.default_calibration`); ``spinning``: intra-op threads
    #: busy-wait for work (default False); ``optimization``: ONNX Runtime's graph optimisation
    #: level (default ``all``; ``none`` for a TensorRT Q/DQ file).
    options = {"device": DEVICES, "threads": None, "precision": PRECISIONS, "calibration": None,
               "spinning": (False, True), "optimization": tuple(OPTIMIZATION_LEVELS)}

    @classmethod
    def unavailable_reason(cls, device: str = "auto", **options) -> Optional[str]:
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed"
        if importlib.util.find_spec("onnx") is None:
            return "the onnx package is not installed (it reads and exports the ONNX graph)"
        available = onnxruntime.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            return f"onnxruntime offers no CUDA provider (it has {available}; {GPU_BUILD_HINT})"
        return None

    @classmethod
    def from_model(cls, model_path: Path, request: BuildRequest, device: str = "auto",
                   threads: Optional[int] = None, precision: Optional[str] = None,
                   calibration=None, spinning: bool = False,
                   optimization: Optional[str] = None) -> "OnnxRuntimeBackend":
        # Imported here: quantization imports the backends package (calibration frames).
        from dense_ood_ros.quantization import cached_int8_onnx, onnx_precision

        onnx_path = onnx_for_model(model_path, request.score_names, request.input_size,
                                   request.cache_dir, request.status)
        declared = onnx_precision(onnx_path)
        if precision == "int8" and declared == "fp32":
            onnx_path = cached_int8_onnx(onnx_path, calibration, request.input_size,
                                         request.cache_dir, request.status)
        elif precision == "fp16" and declared == "fp32":
            onnx_path = cached_fp16_onnx(onnx_path, request.cache_dir, request.status)
        elif precision is not None and precision != declared:
            raise ValueError(f"ONNX file {onnx_path} is {declared}; precision {precision} was "
                             "asked for (run the fp32 export, or quantize that)")
        return cls(onnx_path, request.input_size, device, threads, request.cache_dir, spinning,
                   optimization)

    def __init__(self, onnx_path: Union[str, Path], input_size: Optional[Tuple[int, int]] = None,
                 device: str = "auto", threads: Optional[int] = None,
                 cache_dir: Union[str, Path, None] = None, spinning: bool = False,
                 optimization: Optional[str] = None):
        import onnxruntime as ort

        from dense_ood_ros.quantization import (declared_precision, declared_quant_recipe,
                                                onnx_metadata)

        meta = onnx_metadata(onnx_path)
        if optimization is None:
            optimization = "none" if declared_quant_recipe(meta) == "tensorrt" else "all"
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"unknown onnxruntime optimization level {optimization!r}; choose "
                             f"one of {list(OPTIMIZATION_LEVELS)}")
        self._adopt_graph(onnx_path, input_size)
        self.precision = declared_precision(meta)
        self.threads = threads or available_cpu_count()
        self.spinning = bool(spinning)
        self.optimization = optimization
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   OPTIMIZATION_LEVELS[optimization])
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # No busy-waiting between runs by default: on a robot the cores idle between camera
        # frames belong to the other nodes (and interleaved benchmark runs must not steal each
        # other's cores).
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if self.spinning else "0")
        options.log_severity_level = 3  # errors only; provider fallbacks are reported below
        providers = select_providers(device, ort.get_available_providers())
        options_per_provider = [provider_options(p, onnx_path, cache_dir) for p in providers]
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers,
                                                provider_options=options_per_provider)
        # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        except Exception as exc:
            raise ModelFileError(f"onnxruntime cannot load {onnx_path}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self.providers = self.session.get_providers()
        if device == "cuda" and not set(self.providers) & set(GPU_PROVIDERS):
            raise RuntimeError(f"onnxruntime could not start a GPU provider (asked {providers}, "
                               f"got {self.providers})")
        dropped = [p for p in providers if p not in self.providers]
        if dropped:
            logger.warning("onnxruntime did not start %s; running on %s", dropped, self.providers)
        self._outputs = [o.name for o in self.session.get_outputs()]
        check_output_names(self._outputs, onnx_path)

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        outputs = self.session.run(self._outputs, {INPUT_NAME: images})
        if len(outputs) == 1:  # labels-only graph
            return outputs[0], no_scores(images.shape[0], images.shape[1:3])
        return outputs[0], outputs[1]

    def describe(self) -> str:
        provider = self.providers[0].replace("ExecutionProvider", "")
        threads = (f", {self.threads} thread{'s' * (self.threads != 1)}" if provider == "CPU"
                   else "")
        extra = "".join(part for part, on in ((", spinning", self.spinning),
                                              (f", optimization {self.optimization}",
                                               self.optimization != "all")) if on)
        return f"onnxruntime ({provider}{threads}, {self.precision}{extra}, {self.onnx_path.name})"
