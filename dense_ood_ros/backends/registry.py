"""The backend registry: every backend class by name, ``make_backend`` and ``auto`` as lookups.

``auto`` tries the candidates of :data:`AUTO_ORDER` in turn (TensorRT > ONNX Runtime GPU >
torch CUDA fp16 > OpenVINO bf16 > OpenVINO int8 (x86; each only where the CPU has its fast
kernels and its accuracy is established, see ``OpenVinoBackend.auto_reason``) > ONNX Runtime
CPU (fp32: OpenVINO fp32 is no faster, so it is not a candidate) > torch CPU): a candidate
whose backend cannot run here (its ``unavailable_reason``), cannot run the model file (its
``suffixes``) or fails to start is skipped with the reason logged, and the next one is tried.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

from dense_ood_ros.backends.base import Backend, BuildRequest
from dense_ood_ros.checkpoint import CheckpointError
from dense_ood_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from dense_ood_ros.backends.openvino_backend import OpenVinoBackend
from dense_ood_ros.backends.tensorrt_backend import TensorRTBackend
from dense_ood_ros.backends.torch_backend import TorchBackend
from dense_ood_ros.cache import StatusCallback

logger = logging.getLogger(__name__)

#: Backend classes by name.
BACKENDS: Dict[str, Type[Backend]] = {cls.name: cls for cls in (TorchBackend, OnnxRuntimeBackend,
                                                                OpenVinoBackend,
                                                                TensorRTBackend)}
#: Names ``make_backend`` accepts.
BACKEND_NAMES = ("auto", *BACKENDS)
#: Every numeric precision some backend offers (each backend checks its own).
PRECISIONS = tuple(sorted({p for cls in BACKENDS.values()
                           for p in (cls.options.get("precision") or ())}))


@dataclass(frozen=True)
class Candidate:
    """One choice of ``auto``: a backend with fixed options."""

    label: str
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def unavailable_reason(self, model_path: Union[str, Path]) -> Optional[str]:
        """Why this candidate cannot run ``model_path`` here; None when it may."""
        cls = BACKENDS[self.backend]
        suffix = Path(model_path).suffix
        if suffix not in cls.suffixes:
            return f"it cannot run a {suffix or 'suffix-less'} file"
        if cls is OpenVinoBackend:
            return cls.auto_reason(self.options["precision"])
        return cls.unavailable_reason(**self.options)


#: ``auto``'s candidates, best first.
AUTO_ORDER: Tuple[Candidate, ...] = (
    Candidate("tensorrt", "tensorrt"),
    Candidate("onnxruntime-gpu", "onnxruntime", {"device": "cuda"}),
    Candidate("torch-cuda", "torch", {"device": "cuda", "precision": "fp16"}),
    Candidate("openvino-bf16", "openvino", {"precision": "bf16"}),
    Candidate("openvino-int8", "openvino", {"precision": "int8"}),
    Candidate("onnxruntime-cpu", "onnxruntime", {"device": "cpu"}),
    Candidate("torch", "torch", {"device": "cpu", "precision": "fp32"}),
)


def backend_class(name: str) -> Type[Backend]:
    """Return the backend class registered as ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {list(BACKEND_NAMES)}")
    return BACKENDS[name]


def make_backend(name: str, model_path: Union[str, Path], score_names: Sequence[str] = ("jsd",),
                 input_size: Optional[Tuple[int, int]] = None, *, labels_only: bool = False,
                 cache_dir: Union[str, Path, None] = None, status: Optional[StatusCallback] = None,
                 **options: Any) -> Backend:
    """Build the backend ``name`` (or ``auto``'s choice) for a model file.

    ``options`` are the backend's own (see each class's ``options``; None = its default):
    torch ``device``, ``threads``, ``precision`` (fp32; fp16 on CUDA); onnxruntime ``device``,
    ``threads``, ``precision`` (fp32, fp16, int8), ``calibration``, ``spinning``,
    ``optimization``; tensorrt ``precision``, ``calibration``, ``build``; openvino
    ``precision``, ``threads``, ``hint``. ``auto`` hands each candidate the options it
    declares and accepts.
    ``labels_only``: segmentation without scores (benchmarking what the scores cost).
    ``cache_dir``: ONNX exports and engines (default ``$DENSE_OOD_CACHE`` or
    ~/.cache/dense_ood_ros).
    ``status``: receives progress lines (auto's choice, exports, engine builds) instead of the
    loggers, e.g. for a node's log and diagnostics; builds can take minutes.
    """
    request = BuildRequest(() if labels_only else tuple(score_names),
                           None if input_size is None else tuple(input_size), cache_dir, status)
    if name != "auto":
        return backend_class(name).create(model_path, request, **options)

    def build(candidate: Candidate) -> Backend:
        cls = BACKENDS[candidate.backend]
        accepted = {key: value for key, value in options.items()
                    if key in cls.options
                    and (cls.options[key] is None or value in cls.options[key])}
        return cls.create(model_path, request, **{**accepted, **candidate.options})

    return select_backend(model_path, build, status or logger.info)


def select_backend(model_path: Union[str, Path], build: Callable[[Candidate], Backend],
                   log: Callable[[str], None] = logger.info) -> Backend:
    """Build the best working candidate of :data:`AUTO_ORDER` with ``build(candidate)``.

    A model file no backend can read (every candidate tried raised CheckpointError) raises
    that CheckpointError: the file is at fault, not the backends.
    """
    reasons, errors = [], []
    for candidate in AUTO_ORDER:
        reason = candidate.unavailable_reason(model_path)
        if reason is None:
            try:
                backend = build(candidate)
            except Exception as exc:  # any failure means: fall back to the next candidate
                errors.append(exc)
                reason = f"failed to start: {type(exc).__name__}: {exc}"
            else:
                log(f"backend auto: using {candidate.label} ({backend.describe()})")
                return backend
        reasons.append(f"{candidate.label}: {reason}")
        log(f"backend auto: skipping {candidate.label}: {reason}")
    if errors and all(isinstance(error, CheckpointError) for error in errors):
        raise errors[0]
    raise RuntimeError(f"backend auto: no backend can run {model_path}: " + "; ".join(reasons))


def availability() -> List[Tuple[str, Optional[str]]]:
    """(candidate, reason it is unavailable or None) for every ``auto`` candidate, best first."""
    return [(candidate.label, candidate.unavailable_reason("model.pt"))
            for candidate in AUTO_ORDER]
