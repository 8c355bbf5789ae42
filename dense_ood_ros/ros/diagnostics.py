"""Frame accounting of the detector node and its diagnostic_msgs form.

Every camera message the node's subscription receives ends in exactly one count:

    received = processed + bad (by reason) + dropped_stale + dropped_while_loading + pending

``pending`` is the newest frame waiting for the worker plus the one it runs (0 to 2); when the
node is idle it is 0 and the counts add up exactly. Messages the middleware lost before they
reached the subscription (``lost_in_transport``) were never received and are counted apart.
"""

import threading
import time
from collections import Counter, deque
from typing import Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

#: Latencies kept for the reported mean and percentiles (the most recent frames).
LATENCY_WINDOW = 100
#: Bad-frame reason of a frame the backend (or anything after conversion) failed on.
INFERENCE_ERROR = "inference_error"
#: Where a processed frame's time went, in order (seconds each, :meth:`add_processed`):
#: waiting for the worker, deserializing, the backend's inference, the rest of the pipeline
#: (conversion, resizes, output messages), publishing. All but ``wait`` and ``inference`` are
#: the node's own work.
STAGES = ("wait", "deserialize", "inference", "pipeline_other", "publish")


class FrameStatistics:
    """Thread-safe frame counts (see the module docstring) and recent latencies."""

    def __init__(self, error_after_failures: int = 5):
        self.error_after_failures = error_after_failures
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.bad: Counter = Counter()  # reason -> frames
        self.dropped_stale = 0
        self.dropped_while_loading = 0
        self.lost_in_transport = 0
        self.consecutive_failures = 0
        self.last_error: Optional[str] = None
        self.last_frame_bad = False
        self._latencies = deque(maxlen=LATENCY_WINDOW)
        self._stages = {stage: deque(maxlen=LATENCY_WINDOW) for stage in STAGES}
        self._processed_at_last_rate = 0
        self._last_rate_time = time.monotonic()

    def add_received(self) -> None:
        with self._lock:
            self.received += 1

    def add_processed(self, latency_s: float, stages: Optional[Dict[str, float]] = None) -> None:
        """Count a processed frame: its latency and, if given, its seconds per :data:`STAGES`."""
        with self._lock:
            self.processed += 1
            self.consecutive_failures = 0
            self.last_frame_bad = False
            self._latencies.append(latency_s)
            for stage, seconds in (stages or {}).items():
                self._stages[stage].append(seconds)

    def add_bad(self, reason: str, error: str) -> None:
        with self._lock:
            self.bad[reason] += 1
            if reason == INFERENCE_ERROR:  # a bad camera message does not end a failing run
                self.consecutive_failures += 1
            self.last_frame_bad = True
            self.last_error = error

    def add_dropped_stale(self) -> None:
        with self._lock:
            self.dropped_stale += 1

    def add_dropped_while_loading(self) -> None:
        with self._lock:
            self.dropped_while_loading += 1

    def add_lost(self, count: int) -> None:
        with self._lock:
            self.lost_in_transport += count

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    @property
    def pending(self) -> int:
        """Received frames not (yet) in any other count."""
        with self._lock:
            return self.received - (self.processed + self.bad_total + self.dropped_stale
                                    + self.dropped_while_loading)

    def snapshot(self) -> Dict[str, int]:
        """All counts at one instant (consistent with each other)."""
        with self._lock:
            counts = {"received": self.received, "processed": self.processed,
                      "bad": self.bad_total, "dropped_stale": self.dropped_stale,
                      "dropped_while_loading": self.dropped_while_loading,
                      "lost_in_transport": self.lost_in_transport}
            counts.update({f"bad_{reason}": count for reason, count in sorted(self.bad.items())})
        counts["pending"] = counts["received"] - (counts["processed"] + counts["bad"]
                                                  + counts["dropped_stale"]
                                                  + counts["dropped_while_loading"])
        return counts

    def latency_ms(self, quantile: float) -> Optional[float]:
        with self._lock:
            return _quantile_ms(self._latencies, quantile)

    def stage_ms(self, stage: str, quantile: float) -> Optional[float]:
        """Return a quantile of one stage's recent times (:data:`STAGES`) in ms."""
        with self._lock:
            return _quantile_ms(self._stages[stage], quantile)

    def take_rate(self) -> float:
        """Frames processed per second since the previous call."""
        now = time.monotonic()
        with self._lock:
            processed = self.processed
        rate = (processed - self._processed_at_last_rate) / max(now - self._last_rate_time, 1e-9)
        self._processed_at_last_rate, self._last_rate_time = processed, now
        return rate


def _quantile_ms(seconds, quantile: float) -> Optional[float]:
    values = sorted(seconds)
    if not values:
        return None
    return 1000 * values[min(int(quantile * len(values)), len(values) - 1)]


def detector_status(name: str, hardware_id: str, stats: FrameStatistics,
                    info: Dict[str, str], loading: Optional[str] = None) -> DiagnosticStatus:
    """Make the node's DiagnosticStatus.

    WARN while the model loads (``loading`` = its latest progress line, e.g. a TensorRT engine
    build), before the first frame, and when the latest frame was a bad camera message;
    ERROR after ``error_after_failures`` frames in a row failed in inference; OK otherwise.
    ``info`` adds fixed key/values (backend, model...).
    """
    if loading is not None:
        level, message = DiagnosticStatus.WARN, f"loading model: {loading}"
    elif stats.consecutive_failures >= stats.error_after_failures:
        level, message = (DiagnosticStatus.ERROR, f"the last {stats.consecutive_failures} "
                          f"frames failed in inference: {stats.last_error}")
    elif stats.last_frame_bad:
        level, message = DiagnosticStatus.WARN, f"last frame rejected: {stats.last_error}"
    elif stats.processed == 0:
        level, message = DiagnosticStatus.WARN, "waiting for camera frames"
    else:
        level, message = DiagnosticStatus.OK, "processing frames"
    values: List[KeyValue] = [KeyValue(key=key, value=value) for key, value in info.items()]
    values += [KeyValue(key=f"frames_{key}", value=str(count))
               for key, count in stats.snapshot().items()]
    values.append(KeyValue(key="frames_per_second", value=f"{stats.take_rate():.2f}"))
    for quantile in (0.5, 0.95):
        latency = stats.latency_ms(quantile)
        values.append(KeyValue(key=f"latency_p{round(100 * quantile)}_ms",
                               value="n/a" if latency is None else f"{latency:.1f}"))
    for stage in STAGES:
        median = stats.stage_ms(stage, 0.5)
        values.append(KeyValue(key=f"stage_{stage}_p50_ms",
                               value="n/a" if median is None else f"{median:.2f}"))
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=values)
