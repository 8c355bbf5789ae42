"""NFlowJS training losses."""

import torch
import torch.nn.functional as F

from dense_ood_ros.scores import jsd_to_uniform


def negative_jsd_loss(logits: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Return the mean JSD(softmax || uniform) over negative pixels.

    Minimising it drives predictions to uniform.
    """
    if not negative.any():
        return logits.sum() * 0.0
    return jsd_to_uniform(logits)[negative].mean()


def inlier_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                         ignore_index: int) -> torch.Tensor:
    """Cross-entropy over labelled inlier pixels (negatives and void carry ``ignore_index``)."""
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)
