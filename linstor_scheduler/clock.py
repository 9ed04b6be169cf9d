"""The one clock for ages, grace periods and Lease deadlines: ``CLOCK_BOOTTIME``.

``time.monotonic`` (``CLOCK_MONOTONIC``) stops while the host is suspended (clock_gettime(2): "does
not count time that the system is suspended"); ``CLOCK_BOOTTIME`` is the same clock that goes on
counting through suspend. A host suspended for 60 s between a read and a write must see evidence 60 s
older and a Lease 60 s nearer its end, not the same ones: otherwise it acts on what it saw before it
slept (a deleted pod whose node was back). Falls back to ``time.monotonic`` where the kernel has no
boot-time clock (not Linux), which then has the weakness the boot-time clock removes.
"""

from __future__ import annotations

import time

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def now() -> float:
    """Seconds on a clock that never goes back and counts suspend (an arbitrary origin)."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()  # pragma: no cover - not Linux
