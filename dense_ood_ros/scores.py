"""Dense anomaly scores: pure, vectorised functions of logits.

Every function takes logits of shape ``(N, C, H, W)`` (any float dtype, classes on dim 1)
and returns a score of shape ``(N, H, W)`` where **higher means more anomalous**.
All work in log-space (``log_softmax``) and stay finite for any finite logits.

NFlowJS score (Grcić et al., arXiv 2112.12833). With ``p = softmax(z)``, the uniform
distribution ``u = 1/C`` and their mixture ``m = (p + u) / 2``::

    JSD(p || u) = 1/2 * sum_c p_c (log p_c - log m_c) + 1/2 * sum_c u (log u - log m_c)

JSD is 0 for the uniform prediction and largest, ``JSD_max(C)``, for a one-hot one.
The score is ``jsd = 1 - JSD(p || u) / JSD_max(C)`` in [0, 1]: 1 where the classifier
predicts the uniform distribution (what NFlowJS trains it to do on negatives), 0 where
it is certain. The same divergence is the training loss on negative pixels
(:func:`jsd_to_uniform`).
"""

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F


def jsd_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between softmax(logits) and uniform, per pixel."""
    num_classes = logits.shape[1]
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    # m >= 1/(2C) > 0, so log(m) is always finite.
    log_m = torch.log(0.5 * (p + 1.0 / num_classes))
    log_u = -math.log(num_classes)
    kl_p_m = (p * (log_p - log_m)).sum(dim=1)
    kl_u_m = (log_u - log_m).sum(dim=1) / num_classes
    return 0.5 * (kl_p_m + kl_u_m)


def max_jsd_to_uniform(num_classes: int) -> float:
    """JSD between a one-hot distribution over ``num_classes`` and uniform (the maximum)."""
    c = float(num_classes)
    kl_p_m = math.log(2.0 * c / (c + 1.0))
    kl_u_m = (math.log(2.0 / (c + 1.0)) + (c - 1.0) * math.log(2.0)) / c
    return 0.5 * (kl_p_m + kl_u_m)


def jsd(logits: torch.Tensor) -> torch.Tensor:
    """Compute the NFlowJS score: ``1 - JSD(softmax || uniform) / JSD_max``, in [0, 1]."""
    return 1.0 - jsd_to_uniform(logits) / max_jsd_to_uniform(logits.shape[1])


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Max-softmax baseline (Hendrycks & Gimpel): ``1 - max_c softmax_c``."""
    return 1.0 - F.log_softmax(logits, dim=1).max(dim=1).values.exp()


def maxlogit(logits: torch.Tensor) -> torch.Tensor:
    """Max-logit baseline (Hendrycks et al.): ``-max_c z_c``."""
    return -logits.max(dim=1).values


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Predictive entropy in nats: ``-sum_c p_c log p_c``."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


SCORES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "jsd": jsd,
    "msp": msp,
    "maxlogit": maxlogit,
    "entropy": entropy,
}


def get_score(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Look up a score function by name; a clear error lists the known ones."""
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown anomaly score {name!r}; "
                         f"choose one of {sorted(SCORES)}") from None
