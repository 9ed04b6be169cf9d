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


def stop_gracefully(child: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    """SIGTERM a served subcommand, wait for it to end (kill after ``timeout``), return its output.

    uvicorn shuts down gracefully, then re-raises the SIGTERM it caught: exit status -15 is a clean
    stop, and the output then says "Application shutdown complete"."""
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(5)
    assert child.stdout is not None
    output = child.stdout.read().decode()
    assert child.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output
    return output


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
