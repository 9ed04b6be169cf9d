"""Kubernetes calls from async code: bounded thread pools, one per kind of call, each call with a deadline.

The official client blocks, so an async component runs its calls in threads. asyncio's default
pool (``min(32, CPUs + 4)`` threads) is shared by everything: a backend that accepts and never
answers held every thread with Event creations and Lease calls, and every later read and write of
fencing queued behind them (0 of 8 pods failed over once the API server was healthy again). Here
each kind of call has its own small pool, so a hung call of one kind cannot starve another:

- ``reads``: live reads before a decision (a pod, a list); retried at most once after a transport
  error (connection reset, refused), inside the same deadline, because a read changes nothing;
- ``writes``: taints, evictions, deletes, patches; sent once, never retried here (a write whose
  answer was lost may have been done: the caller re-reads before it tries again).

Events have their own queue and thread (``events.EventRecorder``), the Lease its own thread
(``lease.LeaderElector``), and each informer its own thread. The client itself has no hidden
retries and a default deadline on every call (``client.timed_client``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from linstor_scheduler.aio import within
from linstor_scheduler.clock import now as boottime

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_transport_error(exc: BaseException) -> bool:
    """No HTTP answer at all (refused, reset, timed out): not an ``ApiException`` with a status."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return False
    if isinstance(exc, OSError | TimeoutError):
        return True
    return any(name in type(exc).__name__ for name in ("ProtocolError", "TimeoutError", "NewConnectionError",
                                                        "MaxRetryError", "RemoteDisconnected"))


class CallPool:
    """``workers`` threads for one kind of call; each call waits at most ``timeout`` (+1 s) for its
    thread's answer (the client's own deadline ends the thread's call about then)."""

    def __init__(self, name: str, workers: int, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"kube-{name}")
        self._lock = threading.Lock()
        self.in_flight = 0
        self.outcomes: Counter[str] = Counter()  # ok, api_error, timeout, error

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            self.in_flight += 1
        try:
            result = await within(
                loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs)),
                (timeout or self.timeout) + 1.0)
        except BaseException as exc:
            self._count(exc)
            raise
        finally:
            with self._lock:
                self.in_flight -= 1
        self.outcomes["ok"] += 1
        return result

    def _count(self, exc: BaseException) -> None:
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, ApiException):
            self.outcomes["api_error"] += 1
        elif isinstance(exc, TimeoutError) or is_transport_error(exc):
            self.outcomes["timeout" if "imeout" in type(exc).__name__ or isinstance(exc, TimeoutError)
                          else "error"] += 1
        else:
            self.outcomes["error"] += 1

    def shutdown(self) -> None:
        """Stop taking calls; running ones end at their deadline (threads are not waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class KubeCalls:
    """The component's pools: ``await calls.read(api.read_namespaced_pod, name, ns)``."""

    def __init__(self, timeout: float = 10.0, *, read_workers: int = 4, write_workers: int = 4) -> None:
        self.timeout = timeout
        self.reads = CallPool("reads", read_workers, timeout)
        self.writes = CallPool("writes", write_workers, timeout)

    @property
    def pools(self) -> tuple[CallPool, ...]:
        return (self.reads, self.writes)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the read pool; after a transport error, once more if at least a
        second of the deadline is left (the second try gets what is left, as ``_request_timeout``
        when ``fn`` is an API method that takes one)."""
        deadline = boottime() + self.timeout
        try:
            return await self.reads.run(fn, *args, **kwargs)
        except Exception as exc:
            left = deadline - boottime()
            if not is_transport_error(exc) or left < 1.0:
                raise
            log.info("Kubernetes read %s: %s; trying once more within the %.0fs left",
                     getattr(fn, "__name__", fn), exc, left)
            if "_request_timeout" in kwargs or _takes_request_timeout(fn):
                kwargs["_request_timeout"] = (min(3.0, left), left)
            return await self.reads.run(fn, *args, timeout=left, **kwargs)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the write pool, sent once."""
        return await self.writes.run(fn, *args, **kwargs)

    def shutdown(self) -> None:
        for pool in self.pools:
            pool.shutdown()


def _takes_request_timeout(fn: Callable[..., Any]) -> bool:
    """The official client's API methods take ``_request_timeout``; our own wrappers may not."""
    import inspect

    try:
        return "_request_timeout" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
