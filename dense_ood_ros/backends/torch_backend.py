"""Reference backend: the checkpoint's model in PyTorch, on the CPU or a CUDA GPU.

On a CUDA device the network's weights are channels_last (its input already is: the NHWC
image permuted to NCHW), in half precision with ``precision="fp16"`` (labels and scores are
still computed from float32 logits), and the graph at the backend's input size, batch 1 (what
the detector runs) is captured once as a CUDA graph and replayed, which saves the launch
overhead of its few hundred small kernels. Should the capture fail, the graph runs eagerly,
with the reason logged and shown by :meth:`TorchBackend.describe`.
"""

import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from dense_ood_ros.backends.base import Backend, BuildRequest, no_scores
from dense_ood_ros.checkpoint import checkpoint_label_set, load_model, score_smoothing
from dense_ood_ros.graph import InferenceGraph

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
#: Eager runs before a CUDA graph capture (lazy initialisation, cuDNN's algorithm choice).
CAPTURE_WARMUP_RUNS = 3


class HalfPrecisionSegmenter(nn.Module):
    """A segmenter with half-precision weights that takes the float32 images Normalize gives."""

    def __init__(self, segmenter: nn.Module):
        super().__init__()
        self.segmenter = segmenter.half()

    def decoder_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.segmenter.decoder_logits(images.half())


class CapturedGraph:
    """A module captured as a CUDA graph for one input shape: a static input, replayed outputs."""

    def __init__(self, module: nn.Module, example: torch.Tensor):
        self.images = example.clone()
        side_stream = torch.cuda.Stream(example.device)
        side_stream.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side_stream):
            for _ in range(CAPTURE_WARMUP_RUNS):
                module(self.images)
        torch.cuda.current_stream(example.device).wait_stream(side_stream)
        self.cuda_graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (a node's executor) do not void the capture
        with torch.cuda.graph(self.cuda_graph, capture_error_mode="thread_local"):
            self.outputs = module(self.images)

    def __call__(self, images: torch.Tensor):
        """Copy ``images`` (any device) into the static input, replay; return the outputs."""
        self.images.copy_(images)
        self.cuda_graph.replay()
        return self.outputs


class TorchBackend(Backend):
    """Runs the checkpoint's :class:`~dense_ood_ros.graph.InferenceGraph` in PyTorch."""

    name = "torch"
    suffixes = (".pt",)
    #: ``device``: a torch device ("cpu", "cuda", "cuda:1"; default cpu); ``threads``: torch's
    #: intra-op CPU threads, for the whole process (default: torch's own choice);
    #: ``precision``: fp32 (default) or fp16 (CUDA only: half-precision weights).
    options = {"device": None, "threads": None, "precision": PRECISIONS}

    def __init__(self, model_path: Union[str, Path], score_names: Sequence[str] = ("jsd",),
                 input_size: Optional[Tuple[int, int]] = None, device: str = "cpu",
                 precision: str = "fp32"):
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        if precision == "fp16" and not on_cuda:
            raise ValueError(f"precision 'fp16' needs a CUDA device on the torch backend, "
                             f"but device is {device!r}")
        if on_cuda and not torch.cuda.is_available():
            raise RuntimeError(f"torch device {device!r} needs a CUDA GPU; torch sees none")
        segmenter, info = load_model(model_path)
        if precision == "fp16":
            segmenter = HalfPrecisionSegmenter(segmenter)
        if on_cuda:
            segmenter = segmenter.to(memory_format=torch.channels_last)
        self.precision = precision
        self.graph = InferenceGraph(segmenter, score_names,
                                    score_smoothing(info)).to(self.device).eval()
        self.label_set = checkpoint_label_set(info, model_path)
        self.class_names = self.label_set.class_names
        self.score_names = self.graph.score_names
        self.input_size = tuple(input_size or info["input_size"])
        self.captured: Optional[CapturedGraph] = None
        self.capture_error: Optional[str] = None
        if on_cuda:
            self._capture()

    @classmethod
    def unavailable_reason(cls, device: str = "cpu", **options) -> Optional[str]:
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            return "torch sees no CUDA GPU"
        return None

    @classmethod
    def from_model(cls, model_path: Path, request: BuildRequest, device: str = "cpu",
                   threads: Optional[int] = None, precision: str = "fp32") -> "TorchBackend":
        if threads is not None:
            torch.set_num_threads(threads)
        return cls(model_path, request.score_names, request.input_size, device, precision)

    @torch.inference_mode()
    def _capture(self) -> None:
        example = torch.zeros((1, *self.input_size, 3), dtype=torch.uint8, device=self.device)
        try:
            with torch.cuda.device(self.device):
                self.captured = CapturedGraph(self.graph, example)
        except Exception as exc:  # torch raises several types; eager mode runs the same graph
            self.capture_error = f"{type(exc).__name__}: {exc}"
            logger.warning("torch backend: CUDA graph capture failed, running eagerly: %s",
                           self.capture_error)

    @torch.inference_mode()
    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        batch = torch.from_numpy(images)
        if self.captured is not None and batch.shape == self.captured.images.shape:
            with torch.cuda.device(self.device):
                outputs = self.captured(batch)
        else:
            outputs = self.graph(batch.to(self.device))
        if not self.score_names:  # labels-only graph
            return outputs.cpu().numpy(), no_scores(images.shape[0], images.shape[1:3])
        labels, scores = outputs
        return labels.cpu().numpy(), scores.cpu().numpy()

    def describe(self) -> str:
        if self.device.type != "cuda":
            return f"torch ({self.device}, {torch.get_num_threads()} threads)"
        mode = ("CUDA graph" if self.captured is not None
                else f"eager, CUDA graph capture failed: {self.capture_error}")
        return (f"torch ({self.device}, {torch.cuda.get_device_name(self.device)}, "
                f"{self.precision}, channels_last, {mode})")
