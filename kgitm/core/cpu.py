"""Facts about the CPU that size work to its cache (exact evaluation's blocks)."""

from __future__ import annotations

import functools
from pathlib import Path


#: cache size assumed when it cannot be read from sysfs (MiB).
FALLBACK_CACHE_MB = 32.0


@functools.lru_cache(maxsize=1)
def last_level_cache_mb() -> float:
    """Size of the largest CPU cache of ``cpu0`` in MiB, from ``/sys/devices/system/cpu``;
    :data:`FALLBACK_CACHE_MB` where sysfs does not say."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 2**-10, "M": 1.0, "G": 2**10}.get(text[-1:], None)
        value = text[:-1] if scale is not None else text
        if value.isdigit():
            sizes.append(int(value) * (scale if scale is not None else 2**-20))
    return max(sizes) if sizes else FALLBACK_CACHE_MB
