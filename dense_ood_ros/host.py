"""What this machine gives the process: the CPU cores it may run on, and their flags."""

import os
from pathlib import Path
from typing import FrozenSet


def available_cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> FrozenSet[str]:
    """Return the instruction-set flags the CPU reports (Linux ``flags``, ARM ``Features``).

    Empty where the file does not exist or says nothing.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()
