"""What this machine can hold: sizes and counts are checked against it before work starts.

A command that would need more memory or disk than the machine has is
refused up front, with the estimate, what is available and the fix, instead
of running the machine out of memory (``data miniworld --size 100000``) or
filling the disk half way. Estimates are the caller's (each says how it
computes its bytes); this module only knows what is available:

- memory: ``MemAvailable`` of ``/proc/meminfo`` (what the kernel can give
  without swapping), else physical pages x page size; at most
  :data:`MEMORY_SHARE` of it may be planned for, leaving room for the rest
  of the process (torch, Python) and other programs;
- disk: the free space of the nearest existing folder of the output path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from erasablemask.experiments.errors import UserError

__all__ = [
    "MEMORY_SHARE",
    "ResourceLimitError",
    "available_memory",
    "check_disk",
    "check_memory",
    "free_disk",
    "human_bytes",
]


class ResourceLimitError(UserError, ValueError):
    """A size or count needs more memory or disk than this machine has (a ``ValueError`` too)."""


# Share of the available memory one planned allocation may take.
MEMORY_SHARE = 0.5


def human_bytes(n: float) -> str:
    """``1.5 GB``-style size (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available_memory() -> int:
    """Bytes of memory the kernel can give now (``MemAvailable``), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def free_disk(path: str | os.PathLike) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_memory(need: int, what: str, fix: str) -> None:
    """Raise :class:`ResourceLimitError` if ``need`` bytes exceed ``MEMORY_SHARE`` of the available memory.

    Args:
        need: the estimated peak bytes.
        what: what needs it, with the inputs that set it (e.g. "--size 100000 ...").
        fix: what to change.
    """
    have = available_memory()
    if need > MEMORY_SHARE * have:
        raise ResourceLimitError(
            f"{what} needs about {human_bytes(need)} of memory, more than this machine can give it "
            f"({MEMORY_SHARE:.0%} of {human_bytes(have)} available); {fix}"
        )


def check_disk(need: int, path: str | os.PathLike, what: str, fix: str) -> None:
    """Raise :class:`ResourceLimitError` if ``need`` bytes exceed the free disk space at ``path``."""
    have = free_disk(path)
    if need > have:
        raise ResourceLimitError(
            f"{what} needs about {human_bytes(need)} of disk at '{path}', more than the {human_bytes(have)} free; {fix}"
        )
