"""Facts about the machine that sizing decisions need (memory), read from the OS."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_memory", "total_memory"]


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> int:
    """Bytes of memory available for new allocations without swapping."""
    value = _meminfo("MemAvailable")
    if value is not None:
        return value
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8 << 30


def total_memory() -> int:
    """Bytes of physical memory."""
    value = _meminfo("MemTotal")
    if value is not None:
        return value
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 16 << 30
