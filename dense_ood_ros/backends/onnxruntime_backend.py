"""ONNX Runtime backend: runs an exported graph (see :mod:`dense_ood_ros.onnx_graph`).

Execution providers, best first, among those the installed onnxruntime offers:
``device="auto"``: TensorRT EP, CUDA EP, CPU; ``"cuda"``: TensorRT EP, CUDA EP (an error
when neither loads); ``"cpu"``: CPU only. The CPU session uses all graph optimisations
(``ORT_ENABLE_ALL``), sequential execution and one intra-op thread per available core.
"""

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from dense_ood_ros import cache
from dense_ood_ros.backends.base import Backend, BuildRequest, no_scores
from dense_ood_ros.host import available_cpu_count
from dense_ood_ros.onnx_graph import (INPUT_NAME, LABELS_NAME, SCORES_NAME, ModelFileError,
                                      onnx_for_model, read_onnx_info)

logger = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
DEVICES = ("auto", "cpu", "cuda")


def select_providers(device: str, available: Sequence[str]) -> List[str]:
    """Choose execution providers for ``device`` among ``available`` (ORT's list), best first."""
    if device not in DEVICES:
        raise ValueError(f"unknown onnxruntime device {device!r}; choose one of {list(DEVICES)}")
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and not gpu:
        raise RuntimeError(f"onnxruntime device 'cuda' needs one of {list(GPU_PROVIDERS)}; this "
                           f"onnxruntime offers {list(available)} (install onnxruntime-gpu)")
    return gpu + ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """Runs an exported ONNX graph with ONNX Runtime."""

    name = "onnxruntime"
    suffixes = (".pt", ".onnx")
    #: ``device``: see :func:`select_providers`; ``threads``: intra-op threads (default: available
    #: cores).
    options = {"device": DEVICES, "threads": None, "precision": ("fp32",)}

    @classmethod
    def unavailable_reason(cls, device: str = "auto", **options) -> Optional[str]:
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed"
        available = onnxruntime.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            return f"onnxruntime offers no CUDA provider (it has {available})"
        return None

    @classmethod
    def from_model(cls, model_path: Path, request: BuildRequest, device: str = "auto",
                   threads: Optional[int] = None, precision: str = "fp32") -> "OnnxRuntimeBackend":
        onnx_path = onnx_for_model(model_path, request.score_names, request.input_size,
                                   request.cache_dir, request.status)
        return cls(onnx_path, request.input_size, device, threads, request.cache_dir)

    def __init__(self, onnx_path: Union[str, Path], input_size: Optional[Tuple[int, int]] = None,
                 device: str = "auto", threads: Optional[int] = None,
                 cache_dir: Union[str, Path, None] = None):
        import onnxruntime as ort

        info = read_onnx_info(onnx_path)
        self.onnx_path = Path(onnx_path)
        self.class_names = info.class_names
        self.score_names = info.score_names
        self.input_size = info.run_size(input_size)
        self.threads = threads or available_cpu_count()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: on a robot the cores idle between camera frames belong
        # to the other nodes (and interleaved benchmark runs must not steal each other's cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only; provider fallbacks are reported below
        providers = select_providers(device, ort.get_available_providers())
        provider_options = [self._provider_options(p, cache_dir) for p in providers]
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers,
                                                provider_options=provider_options)
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
        if self._outputs not in ([LABELS_NAME, SCORES_NAME], [LABELS_NAME]):
            raise ModelFileError(f"ONNX file {onnx_path} has outputs {self._outputs}; "
                                 f"expected {[LABELS_NAME, SCORES_NAME]} or {[LABELS_NAME]}")

    @staticmethod
    def _provider_options(provider: str, cache_dir) -> dict:
        if provider == "TensorrtExecutionProvider":
            folder = Path(cache_dir or cache.default_cache_dir()) / "ort-tensorrt"
            return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(folder)}
        return {}

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        outputs = self.session.run(self._outputs, {INPUT_NAME: images})
        if len(outputs) == 1:  # labels-only graph
            return outputs[0], no_scores(images.shape[0], images.shape[1:3])
        return outputs[0], outputs[1]

    def describe(self) -> str:
        provider = self.providers[0].replace("ExecutionProvider", "")
        threads = (f", {self.threads} thread{'s' * (self.threads != 1)}" if provider == "CPU"
                   else "")
        return f"onnxruntime ({provider}{threads}, {self.onnx_path.name})"
