"""Inference backends behind one interface; ``make_backend`` builds one by name."""

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from dense_ood_ros.backends.base import Backend

BACKEND_NAMES = ("torch",)


def make_backend(name: str, model_path: Union[str, Path], score_names: Sequence[str] = ("jsd",),
                 input_size: Optional[Tuple[int, int]] = None) -> Backend:
    """Build the backend ``name`` for a model file."""
    if name == "torch":
        from dense_ood_ros.backends.torch_backend import TorchBackend
        return TorchBackend(model_path, score_names, input_size)
    raise ValueError(f"unknown backend {name!r}; choose one of {list(BACKEND_NAMES)}")
