"""What both HTTP doubles share: a request log, serving on loopback, and ending open streams."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from linstor_scheduler.httpserver import ServerThread


@dataclass
class Subscriber:
    """An open stream (watch, server-sent events) fed from other threads through its loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class HttpDouble:
    app: Any

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._subscribers: list[Any] = []
        self._closing = False
        self.requests: list[tuple[str, str]] = []  # (method, path with query) of every request

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self, method: str = "GET", path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
        return ServerThread(self.app, host=host, port=port, on_stop=self.close_streams)

    def close_streams(self) -> None:
        """End every open stream now (server shutdown waits for open connections)."""
        with self._lock:
            self._closing = True
            subs = list(self._subscribers)
        for sub in subs:
            sub.put(None)
