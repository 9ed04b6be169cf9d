"""Waiting on conditions, never on sleeps: poll a predicate until it holds or a bound passes; the
child processes of tests that run a subcommand as deploy/ does."""

from __future__ import annotations

import signal
import socket
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


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on every address, for a child process (uvicorn.run cannot report a
    port 0 back). Another process could take one in between: unlikely enough on a test machine."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("0.0.0.0", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
