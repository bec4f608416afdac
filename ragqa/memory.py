"""This process's memory, for benchmarks and evaluation reports (Linux; NaN elsewhere)."""

from __future__ import annotations

from pathlib import Path


def rss_mb() -> float:
    """Resident memory of this process (VmRSS), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def settle() -> None:
    """Frees what can be freed (and hands freed heap back to the OS), so an RSS delta measures
    what a load really adds rather than reuse of memory freed earlier."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
