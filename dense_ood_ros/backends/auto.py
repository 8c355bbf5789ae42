"""``backend: auto``: TensorRT > ONNX Runtime GPU > ONNX Runtime CPU > torch, whichever works.

Each candidate is first probed (is its package installed, is there a GPU?) and then built;
a candidate that is missing or fails to build is skipped with the reason logged, and the
next one is tried.
"""

import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from dense_ood_ros.backends.base import Backend

logger = logging.getLogger(__name__)

#: (candidate, backend name, backend options), best first.
AUTO_ORDER: Tuple[Tuple[str, str, Dict[str, str]], ...] = (
    ("tensorrt", "tensorrt", {}),
    ("onnxruntime-gpu", "onnxruntime", {"device": "cuda"}),
    ("onnxruntime-cpu", "onnxruntime", {"device": "cpu"}),
    ("torch", "torch", {"device": "cpu"}),
)

#: Model file suffixes each backend accepts.
SUFFIXES = {"tensorrt": (".pt", ".onnx", ".engine"), "onnxruntime": (".pt", ".onnx"), "torch": (".pt",)}


def _probe_tensorrt() -> Optional[str]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return None


def _probe_onnxruntime_gpu() -> Optional[str]:
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return f"onnxruntime offers no CUDA provider (it has {onnxruntime.get_available_providers()})"
    return None


def _probe_onnxruntime_cpu() -> Optional[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"
    return None


def _probe_torch() -> Optional[str]:
    return None


#: candidate -> function returning why it cannot run here (None: it may).
PROBES: Dict[str, Callable[[], Optional[str]]] = {
    "tensorrt": _probe_tensorrt,
    "onnxruntime-gpu": _probe_onnxruntime_gpu,
    "onnxruntime-cpu": _probe_onnxruntime_cpu,
    "torch": _probe_torch,
}


def availability() -> List[Tuple[str, Optional[str]]]:
    """(candidate, reason it is unavailable or None) for every candidate, best first."""
    return [(candidate, PROBES[candidate]()) for candidate, _, _ in AUTO_ORDER]


def select_backend(model_path, build: Callable[..., Backend],
                   log: Callable[[str], None] = logger.info) -> Backend:
    """Build the best working backend: ``build(name, **options)`` for each candidate in turn."""
    suffix = Path(model_path).suffix
    reasons = []
    for candidate, name, options in AUTO_ORDER:
        reason = PROBES[candidate]()
        if reason is None and suffix not in SUFFIXES[name]:
            reason = f"it cannot run a {suffix or 'suffix-less'} file"
        if reason is None:
            try:
                backend = build(name, **options)
            except Exception as exc:  # any failure means: fall back to the next candidate
                reason = f"failed to start: {type(exc).__name__}: {exc}"
            else:
                log(f"backend auto: using {candidate} ({backend.describe()})")
                return backend
        reasons.append(f"{candidate}: {reason}")
        log(f"backend auto: skipping {candidate}: {reason}")
    raise RuntimeError(f"backend auto: no backend can run {model_path}: " + "; ".join(reasons))
