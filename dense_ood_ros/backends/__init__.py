"""Inference backends behind one interface, looked up by name in one registry.

Backends: ``torch`` (reference PyTorch; on a CUDA GPU also fp16 and CUDA graphs),
``onnxruntime`` (CPU; CUDA/TensorRT providers when installed), ``openvino`` (x86 CPUs: fp32,
bf16, int8), ``tensorrt`` (native TensorRT 10
engine) and ``auto`` (the best of those that work here). Every backend accepts a ``.pt``
checkpoint; ``onnxruntime`` and ``tensorrt`` export it to ONNX in the cache directory first
(and ``tensorrt`` builds an engine there), or take an exported ``.onnx`` (``tensorrt`` also a
built ``.engine``).
"""

from dense_ood_ros.backends.base import Backend, BuildRequest
from dense_ood_ros.backends.registry import (AUTO_ORDER, BACKEND_NAMES, BACKENDS, PRECISIONS,
                                             Candidate, availability, backend_class,
                                             make_backend, select_backend)

__all__ = ["AUTO_ORDER", "BACKENDS", "BACKEND_NAMES", "Backend", "BuildRequest", "Candidate",
           "PRECISIONS", "availability", "backend_class", "make_backend", "select_backend"]
