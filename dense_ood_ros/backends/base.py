"""The one backend interface used by the detector node, the evaluator and the benchmark.

A backend class declares what it is (``name``), which model files it runs (``suffixes``)
and which options it takes (``options``: name -> accepted values, ``None`` for any), and
builds itself from a model file (:meth:`Backend.from_model`). :meth:`Backend.create`
checks a request against those declarations first, so every backend refuses a wrong file
or option with the same message.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from dense_ood_ros.cache import StatusCallback
from dense_ood_ros.label_set import LabelSet


@dataclass(frozen=True)
class BuildRequest:
    """What any backend is asked to run, besides its own options."""

    score_names: Tuple[str, ...] = ("jsd",)  # () = the labels-only graph
    input_size: Optional[Tuple[int, int]] = None  # None = the model file's own
    cache_dir: Union[str, Path, None] = None  # ONNX exports and engines (None = the default cache)
    status: Optional[StatusCallback] = None  # progress lines (exports, engine builds)


def no_scores(batch: int, input_size: Sequence[int]) -> np.ndarray:
    """Return the scores array of a labels-only graph: (N, 0, H, W) float32."""
    return np.zeros((batch, 0, *input_size), np.float32)


class Backend(ABC):
    """Runs :class:`dense_ood_ros.graph.InferenceGraph` (or its exported form).

    Attributes set by every implementation:
      ``input_size``: (height, width) the graph expects;
      ``class_names``: semantic classes, index = label value;
      ``label_set``: the model file's label set (class names, colours, ignore index);
      ``score_names``: the anomaly scores returned, in order.
    """

    #: Registry name ("torch", "onnxruntime", ...).
    name: ClassVar[str]
    #: Model file suffixes the backend runs.
    suffixes: ClassVar[Tuple[str, ...]]
    #: Option name -> accepted values (None: any value); ``from_model`` takes these keywords.
    options: ClassVar[Mapping[str, Optional[Tuple[Any, ...]]]] = {}

    input_size: Tuple[int, int]
    class_names: Sequence[str]
    label_set: LabelSet
    score_names: Sequence[str]

    @classmethod
    def unavailable_reason(cls, **options: Any) -> Optional[str]:
        """Return why this backend cannot run here with ``options``; None if it may.

        The reason is e.g. a missing package, or no GPU.
        """
        return None

    @classmethod
    def create(cls, model_path: Union[str, Path], request: BuildRequest,
               **options: Any) -> "Backend":
        """Check the model file and options against the declarations, then build the backend.

        Options whose value is None are left to the backend's defaults.
        """
        model_path = Path(model_path)
        if model_path.suffix not in cls.suffixes:
            raise ValueError(f"the {cls.name} backend takes a "
                             f"{' or '.join(cls.suffixes)} file, got {model_path}")
        given = {key: value for key, value in options.items() if value is not None}
        for key, value in given.items():
            if key not in cls.options:
                raise ValueError(f"the {cls.name} backend has no option {key!r}; it takes "
                                 f"{sorted(cls.options)}")
            accepted = cls.options[key]
            if accepted is not None and value not in accepted:
                raise ValueError(f"{key} {value!r} is not available on the {cls.name} backend; "
                                 f"choose one of {list(accepted)}")
        return cls.from_model(model_path, request, **given)

    @classmethod
    @abstractmethod
    def from_model(cls, model_path: Path, request: BuildRequest, **options: Any) -> "Backend":
        """Build the backend for a model file of one of its ``suffixes``."""

    @abstractmethod
    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Run on uint8 RGB (N, H, W, 3) images at ``input_size``.

        Returns labels uint8 (N, H, W) and scores float32 (N, S, H, W).
        """

    def describe(self) -> str:
        """One line for logs: backend, device/precision details."""
        return self.name

    def _adopt_graph(self, onnx_path: Union[str, Path],
                     input_size: Optional[Tuple[int, int]]) -> None:
        """Set ``onnx_path`` and the attributes above from an exported graph's metadata."""
        from dense_ood_ros.onnx_graph import read_onnx_info  # torch-heavy: only ONNX backends

        info = read_onnx_info(onnx_path)
        self.onnx_path = Path(onnx_path)
        self.class_names = info.class_names
        self.label_set = info.label_set
        self.score_names = info.score_names
        self.input_size = info.run_size(input_size)
