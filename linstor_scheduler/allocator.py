"""Keep large request buffers in the heap between requests (glibc malloc settings for the HTTP services).

Why: in full-Node mode (``nodeCacheCapable: false``) every kube-scheduler request carries the Node
objects, about 3 MB at 1,000 nodes, and answering it takes a few buffers of that size (the body,
its chunks, the answer). With glibc's defaults each such buffer is freed at the top of the heap,
the heap is trimmed back to the kernel when a request ends, and the next request faults the same
pages in again: measured from outside (``bench/extender_bench.py``, minor faults of the server
process), about 2,200 page faults per request and a third of the throughput lost (105 against
153 requests/s). Before, the bench had hidden this only because the old snapshot reader left a
gigabyte of freed heap below the top, which later buffers reused; a live extender has no such
luck (docs/performance.md).

The fix is the one glibc documents for it (mallopt(3)): serve allocations up to
``MMAP_THRESHOLD`` from the heap rather than from a fresh ``mmap`` each time, and give memory back
only when more than ``TRIM_THRESHOLD`` is free at the top. The cost is bounded: memory the process
has already touched at its peak stays with it (up to ``TRIM_THRESHOLD``) instead of being returned
and faulted back per request; the peak itself does not change.

An operator who sets glibc's own variables (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``glibc.malloc.*`` in ``GLIBC_TUNABLES``) keeps them:
we change nothing then. Elsewhere than glibc (musl, macOS) there is nothing to tune.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 128 * 1024 * 1024
OPERATOR_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def operator_setting(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The glibc malloc setting the operator made, if any (then it is theirs, not ours)."""
    for name in OPERATOR_VARIABLES:
        if name in environ:
            return name
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def keep_large_buffers() -> str:
    """Apply the settings above to this process; says what was done (one line in the log)."""
    chosen = operator_setting()
    if chosen is not None:
        outcome = f"left to the operator ({chosen} is set)"
    else:
        mallopt = _mallopt()
        if mallopt is None:
            outcome = "not glibc: nothing to tune"
        elif mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
            outcome = (f"tuned: allocations up to {MMAP_THRESHOLD >> 20} MiB from the heap, "
                       f"trimmed above {TRIM_THRESHOLD >> 20} MiB free")
        else:
            outcome = "glibc refused the settings: left at its defaults"
    log.info("malloc: %s", outcome)
    return outcome


def is_glibc() -> bool:
    """This process runs on glibc (the only C library whose malloc we tune)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (not POSIX), or the name unknown
        return False


def _mallopt() -> ctypes._CFuncPtr | None:
    if not is_glibc():
        return None
    try:  # the interpreter's own symbols include libc's (find_library would run ldconfig)
        fn = getattr(ctypes.CDLL(None), "mallopt", None)
    except OSError:
        return None
    if fn is None:
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn
