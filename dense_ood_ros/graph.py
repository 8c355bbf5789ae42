"""The whole inference graph as one torch module: uint8 image in, labels and scores out.

This is what every backend runs (torch directly, ONNX Runtime and TensorRT via ONNX
export), so no backend re-implements pre- or post-processing.
"""

from typing import Sequence, Tuple

import torch
from torch import nn

from dense_ood_ros.preprocessing import Normalize
from dense_ood_ros.scores import get_score


class InferenceGraph(nn.Module):
    """uint8 RGB (N, H, W, 3) -> labels uint8 (N, H, W), scores float32 (N, S, H, W).

    ``score_names`` selects the anomaly scores (S of them, in that order) from
    :mod:`dense_ood_ros.scores`.
    """

    def __init__(self, segmenter: nn.Module, score_names: Sequence[str] = ("jsd",)):
        super().__init__()
        if not score_names:
            raise ValueError("at least one anomaly score is needed")
        self.normalize = Normalize()
        self.segmenter = segmenter
        self.score_names = tuple(score_names)
        self._score_fns = [get_score(name) for name in self.score_names]

    def forward(self, images_nhwc: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.segmenter(self.normalize(images_nhwc)).float()
        labels = logits.argmax(dim=1).to(torch.uint8)
        scores = torch.stack([fn(logits) for fn in self._score_fns], dim=1)
        return labels, scores
