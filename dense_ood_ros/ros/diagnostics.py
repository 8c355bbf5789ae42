"""Frame statistics of the detector node and their diagnostic_msgs form."""

import time
from collections import deque
from typing import Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

#: Latencies averaged for the reported mean (the most recent frames).
LATENCY_WINDOW = 100


class FrameStatistics:
    """Counts processed, bad and lost frames and keeps recent processing latencies."""

    def __init__(self):
        self.processed = 0
        self.bad = 0
        self.lost = 0
        self.dropped_while_loading = 0
        self.last_error: Optional[str] = None
        self.last_frame_bad = False
        self._latencies = deque(maxlen=LATENCY_WINDOW)
        self._processed_at_last_rate = 0
        self._last_rate_time = time.monotonic()

    def add_processed(self, latency_s: float) -> None:
        self.processed += 1
        self.last_frame_bad = False
        self._latencies.append(latency_s)

    def add_bad(self, error: str) -> None:
        self.bad += 1
        self.last_frame_bad = True
        self.last_error = error

    def add_dropped_while_loading(self) -> None:
        self.dropped_while_loading += 1

    def add_lost(self, count: int) -> None:
        self.lost += count

    @property
    def mean_latency_s(self) -> Optional[float]:
        return sum(self._latencies) / len(self._latencies) if self._latencies else None

    def take_rate(self) -> float:
        """Frames processed per second since the previous call."""
        now = time.monotonic()
        rate = ((self.processed - self._processed_at_last_rate)
                / max(now - self._last_rate_time, 1e-9))
        self._processed_at_last_rate, self._last_rate_time = self.processed, now
        return rate


def detector_status(name: str, hardware_id: str, stats: FrameStatistics,
                    info: Dict[str, str], loading: Optional[str] = None) -> DiagnosticStatus:
    """Make the node's DiagnosticStatus.

    WARN while the model loads (``loading`` = its latest progress line, e.g. a TensorRT engine
    build) or before the first frame, OK while frames are processed, ERROR when the latest
    frame was bad. ``info`` adds fixed key/values (backend, model...).
    """
    if loading is not None:
        level, message = DiagnosticStatus.WARN, f"loading model: {loading}"
    elif stats.last_frame_bad:
        level, message = DiagnosticStatus.ERROR, f"last frame rejected: {stats.last_error}"
    elif stats.processed == 0:
        level, message = DiagnosticStatus.WARN, "waiting for camera frames"
    else:
        level, message = DiagnosticStatus.OK, "processing frames"
    mean_latency = stats.mean_latency_s
    values: List[KeyValue] = [KeyValue(key=key, value=value) for key, value in info.items()]
    values += [
        KeyValue(key="frames_processed", value=str(stats.processed)),
        KeyValue(key="frames_per_second", value=f"{stats.take_rate():.2f}"),
        KeyValue(key="mean_latency_ms",
                 value="n/a" if mean_latency is None else f"{1000 * mean_latency:.1f}"),
        KeyValue(key="bad_frames", value=str(stats.bad)),
        KeyValue(key="lost_frames", value=str(stats.lost)),
        KeyValue(key="frames_dropped_while_loading", value=str(stats.dropped_while_loading)),
    ]
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=values)
