"""The whole inference graph as one torch module: uint8 image in, labels and scores out.

This is what every backend runs (torch directly, ONNX Runtime and TensorRT via ONNX
export), so no backend re-implements pre- or post-processing.

Labels are the argmax of the logits upsampled to the input size. Anomaly scores are computed
from the decoder's logits at its output stride (4) and the score maps are upsampled: the same
divergence per location on 16x fewer pixels and one channel to upsample instead of C, which
keeps the score's cost a few percent of segmentation's.

A model file may declare ``score_smoothing``: the standard deviation, in score-map cells (4
input pixels each), of a Gaussian that smooths every score map before upsampling (zero
padding, renormalised at the borders). Per-pixel divergences are noisy on texture and class
boundaries, while an anomaly on the road is a region: the smoothing cuts those isolated false
alarms (Jung et al., *Standardized Max Logits*, ICCV 2021, smooth their score the same way).
0, the default of files that do not declare it, leaves the scores as they are.
"""

import math
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from dense_ood_ros.models.segmenter import upsample
from dense_ood_ros.preprocessing import Normalize
from dense_ood_ros.scores import get_score

#: Bumped whenever the graph's computation or exported form changes, so cached ONNX exports
#: and engines of an older graph are rebuilt rather than reused stale.
GRAPH_VERSION = 4


class InferenceGraph(nn.Module):
    """uint8 RGB (N, H, W, 3) -> labels uint8 (N, H, W), scores float32 (N, S, H, W).

    ``score_names`` selects the anomaly scores (S of them, in that order) from
    :mod:`dense_ood_ros.scores`; with none, the graph returns the labels alone
    (segmentation only, e.g. to measure what the scores cost).
    """

    def __init__(self, segmenter: nn.Module, score_names: Sequence[str] = ("jsd",),
                 score_smoothing: float = 0.0):
        super().__init__()
        self.normalize = Normalize()
        self.segmenter = segmenter
        self.score_names = tuple(score_names)
        self._score_fns = [get_score(name) for name in self.score_names]
        self.smoothing = GaussianSmoothing(score_smoothing) if score_smoothing > 0 else None

    def forward(self, images_nhwc: torch.Tensor) -> Union[torch.Tensor,
                                                          Tuple[torch.Tensor, torch.Tensor]]:
        images = self.normalize(images_nhwc)
        # Sizes from the float tensor, not the uint8 input: TensorRT takes a uint8 network input
        # only when its one consumer is a Cast (the exported graph's Shape nodes read this one).
        size = images.shape[2:]
        logits = self.segmenter.decoder_logits(images).float()
        labels = upsample(logits, size).argmax(dim=1).to(torch.uint8)
        if not self._score_fns:
            return labels
        scores = torch.stack([fn(logits) for fn in self._score_fns], dim=1)
        if self.smoothing is not None:
            scores = self.smoothing(scores)
        return labels, upsample(scores, size)


class GaussianSmoothing(nn.Module):
    """Separable Gaussian of standard deviation ``sigma`` (cells) over each channel (N, S, H, W).

    Zero padding, divided by the smoothed all-ones map: at the borders only the map's own
    values are averaged.
    """

    def __init__(self, sigma: float):
        super().__init__()
        radius = max(1, math.ceil(3.0 * sigma))
        taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2
                         / (2.0 * sigma ** 2))
        self.register_buffer("taps", (taps / taps.sum()).view(1, 1, 1, -1), persistent=False)
        self.radius = radius

    def _blur(self, maps: torch.Tensor) -> torch.Tensor:
        flat = maps.reshape(-1, 1, *maps.shape[2:])
        flat = F.conv2d(flat, self.taps, padding=(0, self.radius))
        flat = F.conv2d(flat, self.taps.transpose(2, 3), padding=(self.radius, 0))
        return flat.reshape(maps.shape)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self._blur(maps) / self._blur(torch.ones_like(maps[:, :1]))
