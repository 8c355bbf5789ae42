"""Reference backend: the checkpoint's model in PyTorch eager mode."""

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dense_ood_ros.backends.base import Backend, BuildRequest, no_scores
from dense_ood_ros.checkpoint import load_model
from dense_ood_ros.graph import InferenceGraph


class TorchBackend(Backend):
    """Runs the checkpoint's :class:`~dense_ood_ros.graph.InferenceGraph` in PyTorch eager mode."""

    name = "torch"
    suffixes = (".pt",)
    #: ``device``: a torch device ("cpu", "cuda", "cuda:1"; default cpu); ``threads``: torch's
    #: intra-op CPU threads, for the whole process (default: torch's own choice).
    options = {"device": None, "threads": None, "precision": ("fp32",)}

    def __init__(self, model_path: Union[str, Path], score_names: Sequence[str] = ("jsd",),
                 input_size: Optional[Tuple[int, int]] = None, device: str = "cpu"):
        segmenter, info = load_model(model_path)
        self.device = torch.device(device)
        self.graph = InferenceGraph(segmenter, score_names).to(self.device).eval()
        self.class_names = tuple(info["class_names"])
        self.score_names = self.graph.score_names
        self.input_size = tuple(input_size or info["input_size"])

    @classmethod
    def from_model(cls, model_path: Path, request: BuildRequest, device: str = "cpu",
                   threads: Optional[int] = None, precision: str = "fp32") -> "TorchBackend":
        if threads is not None:
            torch.set_num_threads(threads)
        return cls(model_path, request.score_names, request.input_size, device)

    @torch.inference_mode()
    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        outputs = self.graph(torch.from_numpy(images).to(self.device))
        if not self.score_names:  # labels-only graph
            return outputs.cpu().numpy(), no_scores(images.shape[0], images.shape[1:3])
        labels, scores = outputs
        return labels.cpu().numpy(), scores.cpu().numpy()

    def describe(self) -> str:
        return f"torch ({self.device}, {torch.get_num_threads()} threads)"
