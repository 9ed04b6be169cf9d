"""Waiting on conditions, never on sleeps: poll a predicate until it holds or a bound passes."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        tick.wait(0.01)


def stop_child(child: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, as the kubelet sends it; killed only if it does not end within ``timeout``."""
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(5)
