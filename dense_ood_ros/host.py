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


#: The CPU flags that decide which kernels and precisions are fast (reported with every speed
#: figure): vector width, INT8 dot products, bfloat16, AMX.
SPEED_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
               "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp")


def speed_flags() -> list:
    """Return which of :data:`SPEED_FLAGS` this CPU has, in that order."""
    flags = cpu_flags()
    return [flag for flag in SPEED_FLAGS if flag in flags]


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
