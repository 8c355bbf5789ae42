"""Pictures of results for people: anomaly-score heat maps."""

from typing import Optional, Tuple

import cv2
import numpy as np


def score_range(score: np.ndarray) -> Tuple[float, float]:
    """Colour-map range: [0, 1] for bounded scores (jsd, msp), else the frame's min..max."""
    low, high = float(score.min()), float(score.max())
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    return low, max(high, low + 1e-6)


def heat_map(score: np.ndarray, value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Score HxW -> RGB heat map (inferno: dark = confident, yellow = anomalous)."""
    low, high = value_range or score_range(score)
    scaled = np.clip((score - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
