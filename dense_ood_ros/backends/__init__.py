"""Inference backends behind one interface; ``make_backend`` builds one by name.

Backends: ``torch`` (reference, eager PyTorch), ``onnxruntime`` (CPU; CUDA/TensorRT
providers when installed), ``tensorrt`` (native TensorRT 10 engine) and ``auto`` (the best
of those that work here). Every backend accepts a ``.pt`` checkpoint; ``onnxruntime`` and
``tensorrt`` export it to ONNX in the cache directory first (and ``tensorrt`` builds an
engine there), or take an exported ``.onnx`` (``tensorrt`` also a built ``.engine``).
"""

import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from dense_ood_ros.backends.base import Backend
from dense_ood_ros.backends.engine_cache import StatusCallback

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "torch", "onnxruntime", "tensorrt")


def make_backend(name: str, model_path: Union[str, Path], score_names: Sequence[str] = ("jsd",),
                 input_size: Optional[Tuple[int, int]] = None, *, device: Optional[str] = None,
                 precision: Optional[str] = None, threads: Optional[int] = None,
                 cache_dir: Union[str, Path, None] = None, calibration=None, labels_only: bool = False,
                 status: Optional[StatusCallback] = None) -> Backend:
    """Build the backend ``name`` for a model file.

    ``device``: torch "cpu"/"cuda" (default cpu); onnxruntime "auto"/"cpu"/"cuda" (default auto).
    ``precision``: tensorrt "fp32"/"fp16"/"int8" (default fp16); other backends run fp32.
    ``threads``: onnxruntime intra-op threads (default: available cores).
    ``cache_dir``: ONNX exports and engines (default ``$DENSE_OOD_CACHE`` or ~/.cache/dense_ood_ros).
    ``calibration``: :class:`~dense_ood_ros.backends.calibration.CalibrationSettings` for INT8.
    ``labels_only``: segmentation without scores (benchmarking what the scores cost).
    ``status``: receives progress lines (auto's choice, exports, engine builds) instead of the
    loggers, e.g. for a node's log and diagnostics; builds can take minutes.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {list(BACKEND_NAMES)}")
    model_path = Path(model_path)
    if name == "auto":
        from dense_ood_ros.backends.auto import select_backend

        def build(backend_name: str, **options) -> Backend:
            merged = {"device": device, "precision": precision if backend_name == "tensorrt" else None,
                      "threads": threads, "cache_dir": cache_dir, "calibration": calibration,
                      "labels_only": labels_only, "status": status, **options}
            return make_backend(backend_name, model_path, score_names, input_size, **merged)

        return select_backend(model_path, build, status or logger.info)
    if precision not in (None, "fp32") and name != "tensorrt":
        raise ValueError(f"precision {precision!r} is for the tensorrt backend; {name} runs fp32")
    if name == "torch":
        _check_suffix(name, model_path, (".pt",))
        from dense_ood_ros.backends.torch_backend import TorchBackend
        return TorchBackend(model_path, () if labels_only else score_names, input_size, device=device or "cpu")
    if name == "onnxruntime":
        from dense_ood_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
        onnx_path = _onnx_for(name, model_path, score_names, input_size, cache_dir, labels_only, status)
        return OnnxRuntimeBackend(onnx_path, input_size, device or "auto", threads, cache_dir)
    from dense_ood_ros.backends import tensorrt_backend
    tensorrt_backend.import_tensorrt()  # fail fast, before any export
    onnx_path = _onnx_for(name, model_path, score_names, input_size, cache_dir, labels_only, status)
    if onnx_path is None:  # an engine file given directly
        engine = tensorrt_backend.check_engine_file(model_path, status)
        backend = tensorrt_backend.TensorRTBackend(engine)
        _check_engine_request(backend, () if labels_only else score_names, input_size, precision)
        return backend
    return tensorrt_backend.open_engine(onnx_path, precision or "fp16", input_size, calibration, cache_dir,
                                        status=status)


def _check_suffix(name: str, model_path: Path, suffixes: Sequence[str]) -> None:
    if model_path.suffix not in suffixes:
        raise ValueError(f"the {name} backend takes a {' or '.join(suffixes)} file, got {model_path}")


def _onnx_for(name, model_path, score_names, input_size, cache_dir, labels_only, status) -> Optional[Path]:
    """The ONNX file to run: exported from a checkpoint into the cache, or given; None for an engine."""
    from dense_ood_ros.export import cached_onnx, read_onnx_info

    _check_suffix(name, model_path, (".pt", ".onnx", ".engine") if name == "tensorrt" else (".pt", ".onnx"))
    if model_path.suffix == ".pt":
        return cached_onnx(model_path, cache_dir, score_names, input_size, labels_only=labels_only, status=status)
    if model_path.suffix == ".engine":
        return None
    info = read_onnx_info(model_path)
    wanted = () if labels_only else tuple(score_names)
    if info.score_names != wanted:
        raise ValueError(f"ONNX file {model_path} computes scores {list(info.score_names)}, "
                         f"but {list(wanted)} were asked for; export it again with those scores")
    return model_path


def _check_engine_request(backend: Backend, score_names, input_size, precision) -> None:
    """An engine given directly fixes scores, input size and precision: refuse a different request."""
    problems = []
    if tuple(score_names) != tuple(backend.score_names):
        problems.append(f"scores {list(backend.score_names)} (asked {list(score_names)})")
    if input_size is not None and tuple(input_size) != tuple(backend.input_size):
        problems.append(f"input size {backend.input_size} (asked {tuple(input_size)})")
    if precision is not None and precision != backend.precision:
        problems.append(f"precision {backend.precision} (asked {precision})")
    if problems:
        raise ValueError(f"engine {backend.engine_path} was built for " + ", ".join(problems))
