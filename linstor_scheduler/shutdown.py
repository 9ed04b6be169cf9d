"""Graceful shutdown of an asyncio service: one ``asyncio.Event`` set by SIGTERM/SIGINT or by a
``threading.Event`` (tests stop a service running in a thread this way)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading


def stop_event(stop_flag: threading.Event | None = None) -> asyncio.Event:
    """Call inside the running loop. Signal handlers only install in the main thread (else skipped)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not in the main thread (tests)
            loop.add_signal_handler(sig, stop.set)
    if stop_flag is not None:
        watcher = loop.create_task(asyncio.to_thread(stop_flag.wait))
        watcher.add_done_callback(lambda _t: stop.set())
    return stop
