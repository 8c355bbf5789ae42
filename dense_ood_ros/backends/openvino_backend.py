"""OpenVINO backend (CPU): the same exported ONNX graph, compiled by OpenVINO.

Precisions: ``fp32``; ``bf16`` (OpenVINO's ``INFERENCE_PRECISION_HINT``: bfloat16 kernels on
CPUs with AVX512-BF16 or AMX, refused with the CPU's capabilities named elsewhere); ``int8``
(the project's statically quantized Q/DQ graph, :mod:`dense_ood_ros.quantization`, calibrated
on CamVid train frames read as the detector reads them; OpenVINO runs its Q/DQ pairs as INT8
kernels, with VNNI or AMX where the CPU has them).

The compiled model is cached (:mod:`dense_ood_ros.cache`) under a key of the ONNX file's
checksum, OpenVINO's version, the CPU (name and capabilities), precision, input size and
performance hint; a stale or corrupt blob is compiled again with the reason logged.
``threads`` (default: the available cores) and ``hint`` (``latency``, default, or
``throughput``) are the options a node sets.
"""

import functools
import io
import logging
import platform
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from dense_ood_ros import cache
from dense_ood_ros.backends.base import Backend, BuildRequest, no_scores
from dense_ood_ros.host import available_cpu_count, cpu_flags
from dense_ood_ros.io import file_sha256
from dense_ood_ros.onnx_graph import ModelFileError, check_output_names, onnx_for_model

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
#: OpenVINO's CPU capability each precision needs (``OPTIMIZATION_CAPABILITIES``).
REQUIRED_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}
#: Precisions ``auto`` may choose: each within 1 point of fp32 on CamVid test mIoU,
#: CamVid-Paste test and road_anomaly_val jsd AP / FPR95 (README, OpenVINO). bf16 is not
#: listed: its accuracy has not been measured on a CPU with BF16 kernels.
AUTO_PRECISIONS = ("int8",)
#: CPU flags (/proc/cpuinfo) without which a precision is no faster than fp32: INT8 dot
#: products (VNNI, AMX) and bfloat16 (AVX512-BF16, AMX).
AUTO_CPU_FLAGS = {"int8": {"avx512_vnni", "avx_vnni", "amx_int8"},
                  "bf16": {"avx512_bf16", "amx_bf16"}}
#: Version of how this module compiles (bump when the compile settings change).
COMPILE_VERSION = 1


@functools.lru_cache(maxsize=1)
def cpu_description() -> Dict[str, Any]:
    """Describe the CPU as OpenVINO sees it: name and optimisation capabilities (read once)."""
    import openvino as ov

    core = ov.Core()
    return {"name": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
            "capabilities": sorted(str(c) for c in
                                   core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}


def precision_problem(precision: str, capabilities) -> Optional[str]:
    """Why ``precision`` cannot run on a CPU with ``capabilities``; None when it can."""
    needed = REQUIRED_CAPABILITY[precision]
    if needed in capabilities:
        return None
    hardware = {"BF16": "AVX512-BF16 or AMX", "INT8": "INT8 kernels"}.get(needed, needed)
    return (f"openvino precision {precision} needs a CPU with {hardware}; OpenVINO reports this "
            f"CPU's capabilities as {list(capabilities)}")


def compile_config(precision: str, hint: str) -> Dict[str, str]:
    """Return OpenVINO's compile properties of a precision and performance hint."""
    return {"PERFORMANCE_HINT": HINTS[hint],
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}


class OpenVinoBackend(Backend):
    """Runs an exported ONNX graph with OpenVINO on the CPU."""

    name = "openvino"
    suffixes = (".pt", ".onnx")
    #: ``precision``: fp32 (default), bf16, int8; ``threads``: inference threads (default:
    #: available cores); ``hint``: OpenVINO performance hint; ``calibration``: a
    #: :class:`~dense_ood_ros.backends.calibration.CalibrationSettings` for int8.
    options = {"precision": PRECISIONS, "threads": None, "hint": tuple(HINTS),
               "calibration": None, "device": ("cpu",)}

    @classmethod
    def unavailable_reason(cls, precision: str = "fp32", **options) -> Optional[str]:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed (pip install openvino)"
        return precision_problem(precision, cpu_description()["capabilities"])

    @classmethod
    def auto_reason(cls, precision: str) -> Optional[str]:
        """Why ``auto`` does not choose this backend at ``precision`` here; None if it may.

        On x86 only (ONNX Runtime stays the choice on ARM), at a precision that
        :data:`AUTO_PRECISIONS` allows (accuracy within 1 point of fp32, measured) and whose
        fast kernels this CPU has (:data:`AUTO_CPU_FLAGS`, from /proc/cpuinfo).
        """
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return f"auto uses OpenVINO on x86 only (this machine is {platform.machine()})"
        if precision not in AUTO_PRECISIONS:
            return (f"precision {precision} is opt-in: its accuracy against fp32 is not "
                    "established within 1 point (README, OpenVINO)")
        wanted = AUTO_CPU_FLAGS.get(precision)
        flags = cpu_flags()
        if wanted and not wanted & flags:
            return (f"precision {precision} is fast only with CPU flags {sorted(wanted)}; this "
                    f"CPU has none of them")
        return cls.unavailable_reason(precision)

    @classmethod
    def from_model(cls, model_path: Path, request: BuildRequest, precision: str = "fp32",
                   threads: Optional[int] = None, hint: str = "latency", calibration=None,
                   device: str = "cpu") -> "OpenVinoBackend":
        from dense_ood_ros.quantization import cached_int8_onnx, onnx_precision

        problem = cls.unavailable_reason(precision)
        if problem:
            raise RuntimeError(problem)
        onnx_path = onnx_for_model(model_path, request.score_names, request.input_size,
                                   request.cache_dir, request.status)
        if precision == "int8" and onnx_precision(onnx_path) == "fp32":
            onnx_path = cached_int8_onnx(onnx_path, calibration, request.input_size,
                                         request.cache_dir, request.status)
        return cls(onnx_path, precision, request.input_size, threads, hint, request.cache_dir,
                   request.status)

    def __init__(self, onnx_path: Union[str, Path], precision: str = "fp32",
                 input_size: Optional[Tuple[int, int]] = None, threads: Optional[int] = None,
                 hint: str = "latency", cache_dir: Union[str, Path, None] = None,
                 status: Optional[cache.StatusCallback] = None):
        import openvino as ov

        self._adopt_graph(onnx_path, input_size)
        self.precision, self.hint = precision, hint
        self.threads = threads or available_cpu_count()
        # the Core outlives what it compiled: kept here, released after them
        self._core = core = ov.Core()
        blob = compiled_blob(core, self.onnx_path, precision, self.input_size, hint, cache_dir,
                             status)
        try:
            self.compiled = core.import_model(io.BytesIO(blob.read_bytes()), "CPU",
                                              {"INFERENCE_NUM_THREADS": self.threads})
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable blobs
            raise ModelFileError(f"openvino cannot load the compiled model {blob}: {exc}") from exc
        self._outputs = list(self.compiled.outputs)  # labels[, scores], in that order
        check_output_names([output.get_any_name() for output in self._outputs], onnx_path)
        self.request = self.compiled.create_infer_request()

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Run each image of the batch (the model is compiled for batch 1: static shapes)."""
        labels, scores = [], []
        for image in images:
            results = self.request.infer({0: image[None]})
            labels.append(results[self._outputs[0]])
            if len(self._outputs) == 2:
                scores.append(results[self._outputs[1]])
        if not scores:
            return np.concatenate(labels), no_scores(images.shape[0], images.shape[1:3])
        return np.concatenate(labels), np.concatenate(scores)

    def describe(self) -> str:
        return (f"openvino (CPU, {self.threads} thread{'s' * (self.threads != 1)}, "
                f"{self.precision}, {self.hint}, {self.onnx_path.name})")


def compiled_blob(core, onnx_path: Path, precision: str, input_size: Tuple[int, int], hint: str,
                  cache_dir: Union[str, Path, None] = None,
                  status: Optional[cache.StatusCallback] = None) -> Path:
    """Return the cached compiled model of an ONNX file, compiling it if stale or missing."""
    import openvino as ov

    sha = file_sha256(onnx_path)
    cpu = cpu_description()
    key = {"source_onnx_sha256": sha, "openvino": ov.__version__, "cpu": cpu,
           "precision": precision, "input_size": list(input_size), "hint": hint,
           "compile_version": COMPILE_VERSION}
    name = (f"{onnx_path.stem}-{sha[:12]}-{input_size[0]}x{input_size[1]}-{precision}-{hint}"
            ".ov.blob")
    path = Path(cache_dir or cache.default_cache_dir()) / "openvino" / name

    def write(tmp: Path) -> None:
        model = core.read_model(str(onnx_path))
        model.reshape({model.inputs[0]: [1, *input_size, 3]})
        compiled = core.compile_model(model, "CPU", compile_config(precision, hint))
        exported = compiled.export_model()  # BytesIO (older releases: bytes)
        tmp.write_bytes(exported.getvalue() if hasattr(exported, "getvalue") else exported)

    return cache.ensure(path, key, write, "OpenVINO compiled model", status,
                        {"source_onnx": str(onnx_path.resolve())})
