"""Clean exits on SIGINT and SIGTERM, whenever they come (no rclpy here: it imports in ms).

Two phases. Until rclpy is initialised nothing needs cleaning up, so :func:`exit_on_signals`
makes either signal end the process at once with code 0 (no KeyboardInterrupt traceback from
the middle of an import). From then on :class:`StopRequest` only records the signal: the
node's spin loop sees it between callbacks, so a frame in flight is finished and published
while the rclpy context is still valid, and then the node is destroyed and rclpy shut down.
rclpy's own handlers, which shut the context down from under a running callback, are not
installed (``SignalHandlerOptions.NO``).
"""

import os
import signal
import sys
import threading
from typing import Optional

#: The signals that stop the node cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_now(code: int = 0) -> None:
    """Flush stdout and stderr and end the process with ``code``, skipping interpreter clean-up.

    For a process that has nothing to clean up yet, or a thread that cannot be stopped (a
    model still loading), whose native code must not run on during interpreter finalisation.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or missing
            pass
    os._exit(code)


def exit_on_signals() -> None:
    """Make SIGINT and SIGTERM end the process at once with code 0 (start-up phase)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: exit_now(0))


class StopRequest:
    """Records SIGINT/SIGTERM (main thread only) instead of raising; see the module docstring."""

    def __init__(self):
        self._event = threading.Event()
        self.signal_name: Optional[str] = None
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop signal has arrived."""
        return self._event.is_set()
