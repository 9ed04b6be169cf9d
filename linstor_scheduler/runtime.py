"""What every long-running subcommand does around its own work, written once.

- **Signals.** SIGTERM (the kubelet stopping the pod) and SIGINT (Ctrl-C) ask for a graceful stop:
  the loop finishes its current pass, the Lease is released (the standby takes over at once instead
  of after the lease duration), the health port and the clients are closed, and the process exits 0.
- **Health port.** Workers serve ``/healthz``, ``/readyz`` and ``/metrics`` on a side port
  (``--listen-address``/``--port``, 0: none) while they run; the HTTP services (extender,
  webhook) serve them on a side port too (``--metrics-address``/``--metrics-port``), apart from
  their verbs (the extender's on loopback) and ``/mutate``.
- **Lease.** A singleton (sync-classes, fencing, locality-exporter) works only while it holds its
  Lease; the elector runs beside the work and is stopped, and the Lease released, on the way out:
  never before the work has ended (no second leader acts while we still do), and concurrently with
  the rest of the shutdown (the standby takes over at once, not after the slow parts).
- **Graceful shutdown, within 2 s.** Once the work has returned, the slow parts run at the same
  time, each in a thread: the Lease released, the health port stopped, and the closers a service
  passes (informers stopped, clients closed). Sequentially they took over 2 s; the kubelet kills
  after its grace period, and a new leader should not wait on us. One line says how long it took.
- **What ends the process.** Only a signal (exit 0) or an error before the service runs: bad flags
  or configuration, no Kubernetes credentials, a port in use. These propagate to
  ``linstor_scheduler.cli.main``, which prints one line and exits 2 for a setting to fix
  (``ConfigError``: a value out of range such as ``--storm-share 2``, a missing kubeconfig, a side
  port in use; ``config.invalid`` and ``config.parsed`` word it, naming the flag and its variable),
  1 otherwise. Once running, a failed pass (LINSTOR or the API server unreachable, an error answer)
  is logged, counted and retried with backoff by the component's loop: it never ends the process,
  since a restart would only lose the in-memory state and hammer the API servers.
- **The end, at once.** When a worker's service has stopped (everything released: the Lease, the
  health port, the closers), its CLI entry (``wiring.run*``) ends the process with ``exit_now``:
  logs, stdout and stderr flushed, then ``os._exit``, skipping Python's own teardown (a last garbage
  collection, then every module and object freed one by one), which took over a second with
  fencing's state of 100,000 replicas when SIGTERM must end it within 2 s. ``run_service`` (and a
  component's ``serve``) only returns the exit code: tests run those in-process. ``--once`` returns.

``run_service`` is the entry for workers (sync-node, sync-classes, locality-exporter, fencing),
``exit_now`` their end; nothing ``run_service`` does blocks the event loop (the elector's start and
stop, the health port's start and stop and the sync closers run in threads). ``serve_asgi`` runs
the HTTP services under uvicorn with one set of settings (uvicorn handles SIGTERM itself, drains
open requests for ``GRACEFUL_SECONDS``, then re-raises SIGTERM, which ends the process without a
teardown too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from .config import PORT_OR_0, ConfigError, add_option

if TYPE_CHECKING:  # the health app (Starlette) is imported only when a side port is served
    from .health import Check

log = logging.getLogger("linstor_scheduler.runtime")
GRACEFUL_SECONDS = 10  # open requests drained on SIGTERM (Kubernetes waits 30 s by default before SIGKILL)


class Elector(Protocol):
    def start(self) -> Any: ...
    def stop(self, release: bool = True) -> None: ...


@dataclass(frozen=True)
class Health:
    """What the side port serves: the component's metrics registry and its readiness check."""

    registry: Any
    ready: Check
    host: str = "0.0.0.0"
    port: int = 0  # 0: no side port
    alive: Check | None = None  # /healthz: None answers ok while the process serves


def add_health_options(parser: argparse.ArgumentParser, port: int) -> None:
    group = parser.add_argument_group("serving /healthz, /readyz, /metrics")
    add_option(group, "--listen-address", default="0.0.0.0", help="address to listen on")
    add_option(group, "--port", type=int, default=port, range=PORT_OR_0,
               help="port for health and metrics (0: do not serve)")


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``. Installed only from the main thread's loop (a service run
    by a test in another thread is stopped through ``stop_flag`` instead)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


def start_health_port(health: Health | None) -> Any:
    """``/healthz``, ``/readyz``, ``/metrics`` on the side port (a started ``ServerThread``), or None
    when there is none. Blocks until uvicorn listens: call it in a thread, never on the loop."""
    if health is None or not health.port:
        return None
    from .health import health_app
    from .httpserver import ServerThread

    app = health_app(health.registry, ready=health.ready, alive=health.alive)
    srv = ServerThread(app, health.host, health.port).start()
    log.info("serving /healthz, /readyz, /metrics on %s:%d", health.host, srv.port)
    return srv


Closer = Callable[[], Any]


async def _close(part: Closer) -> Any:
    """An async closer is awaited on the loop; a plain one (it may block: a thread join, an HTTP
    call) runs in a thread."""
    if inspect.iscoroutinefunction(part):
        return await part()
    return await asyncio.to_thread(part)


async def run_service(name: str, work: Callable[[asyncio.Event], Awaitable[Any]], *, health: Health | None = None,
                      elector: Elector | None = None, stop_flag: threading.Event | None = None,
                      closers: Sequence[Closer] = ()) -> int:
    """Run ``work(stop)`` until it returns; ``stop`` is set by SIGTERM/SIGINT (or ``stop_flag``).

    ``elector`` is started first, then the health port; both in threads. When the work has ended
    (returned or raised), the shutdown runs its slow parts concurrently: the elector stopped with
    the Lease released, the health port stopped, and ``closers`` (a service's informers, clients:
    async functions awaited, plain ones in threads). A failing part is logged and does not hold up
    the others. Errors of ``work`` (and of the start-up: a port in use) propagate after the
    shutdown: a component's loop handles what it can retry."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    watcher = None
    if stop_flag is not None:
        watcher = asyncio.create_task(asyncio.to_thread(stop_flag.wait))
        watcher.add_done_callback(lambda _: stop.set())
    server = None
    try:
        if elector is not None:
            await asyncio.to_thread(elector.start)
        server = await asyncio.to_thread(start_health_port, health)
        await work(stop)
    finally:
        began = time.monotonic()
        if stop_flag is not None:
            stop_flag.set()  # ends the watcher thread
        parts: list[tuple[str, Closer]] = []
        if elector is not None:
            parts.append(("the Lease release", lambda: elector.stop(release=True)))
        if server is not None:
            parts.append(("the health port", server.stop))
        parts += [(getattr(part, "__qualname__", repr(part)), part) for part in closers]
        results = await asyncio.gather(*(_close(part) for _, part in parts), return_exceptions=True)
        for (what, _), result in zip(parts, results, strict=True):
            if isinstance(result, Exception):
                log.warning("%s: stopping %s failed: %s", name, what, result)
        if watcher is not None:
            await watcher
        log.info("%s stopped (shutdown took %.2fs)", name, time.monotonic() - began)
    return 0


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` at once: the logs and stdout/stderr flushed, then ``os._exit``.

    For a worker's CLI entry once its service has stopped (everything it holds is released by then:
    the Lease, the health port, the closers). Python's own teardown would free the service's heap
    object by object, over a second with fencing's 100,000 replicas; the kubelet waits for none of
    it. Never call it where a test runs the service in-process: that is ``run_service`` (or a
    component's ``serve``), which returns."""
    logging.shutdown()  # flushes and closes every handler (the JSON lines included)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe must not keep us alive
            stream.flush()
    os._exit(code)


def serve_asgi(app: Any, *, host: str, port: int, log_level: str, ops: Any = None, ops_host: str = "0.0.0.0",
               ops_port: int = 0, drain_seconds: float = 0.0, on_drain: Callable[[], None] | None = None,
               **uvicorn_kwargs: Any) -> int:
    """An HTTP service (extender, webhook) under uvicorn: uvloop + httptools (measured 2x faster,
    docs/performance.md), no access log (requests are counted in metrics instead), open requests
    drained for ``GRACEFUL_SECONDS`` on SIGTERM, TLS (if any) 1.2 or newer (``loaded_config``), large
    request buffers kept in the heap between requests (``allocator.keep_large_buffers``).

    ``ops``, an ASGI app with ``/healthz``, ``/readyz``, ``/metrics``, is served on its own listener
    ``ops_host:ops_port`` (in a thread) for as long as the service runs: kubelet and Prometheus reach
    that one, and only that one has to be reachable from the pod network.

    ``drain_seconds``: on SIGTERM, ``on_drain()`` first (the service's readiness turns false, so the
    endpoint is taken out of its Service), then it keeps serving for that long (calls routed before
    the endpoint update are answered), and only then stops as above. A second SIGTERM or SIGINT
    stops it at once."""
    import uvicorn

    from .allocator import keep_large_buffers
    from .httpserver import ServerThread, loaded_config, uvicorn_options

    keep_large_buffers()  # multi-MB request bodies: no page faults per request (allocator.py)

    def config() -> uvicorn.Config:  # made last: uvicorn's Config sets its loggers' level globally
        # keep-alive above kube-scheduler's 90 s, logs through ours (uvicorn_options); TLS >= 1.2 (loaded_config)
        return loaded_config(app, **uvicorn_options(host=host, port=port, loop="uvloop", http="httptools",
                                                    access_log=False, log_level=log_level,
                                                    timeout_graceful_shutdown=GRACEFUL_SECONDS,
                                                    interface="asgi3",  # ``app`` may be a bound method
                                                    **uvicorn_kwargs))

    def server(cfg: uvicorn.Config) -> uvicorn.Server:
        return draining_server(cfg, drain_seconds, on_drain) if drain_seconds > 0 else uvicorn.Server(cfg)

    if ops is None:
        server(config()).run()
        return 0
    if port == ops_port:
        raise ConfigError(f"--port and --metrics-port must differ (both {port}): the service and its "
                          "health and metrics are served apart, so that only the latter need be reachable")
    with ServerThread(ops, host=ops_host, port=ops_port, port_flag="--metrics-port") as side:
        main = config()
        log.info("serving /healthz, /readyz, /metrics on http://%s:%d; the service on %s://%s:%d", ops_host,
                 side.port, "https" if main.is_ssl else "http", host, port)
        server(main).run()
    return 0


def _draining_server_class() -> type:
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        """uvicorn's server, whose first SIGTERM/SIGINT starts a drain window (``serve_asgi``)."""

        def __init__(self, config: uvicorn.Config, drain_seconds: float, on_drain: Callable[[], None] | None) -> None:
            super().__init__(config)
            self.drain_seconds, self.on_drain = drain_seconds, on_drain
            self.drain: threading.Timer | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.drain is not None or self.should_exit:  # the second signal: stop now
                if self.drain is not None:
                    self.drain.cancel()
                super().handle_exit(sig, frame)
                return
            if self.on_drain is not None:
                self.on_drain()
            log.info("signal %d: not ready, serving for %gs more (--drain-seconds), then stopping", sig,
                     self.drain_seconds)
            self.drain = threading.Timer(self.drain_seconds, super().handle_exit, args=(sig, frame))
            self.drain.daemon = True
            self.drain.start()

    return _DrainingServer


def draining_server(config: Any, drain_seconds: float, on_drain: Callable[[], None] | None) -> Any:
    return _draining_server_class()(config, drain_seconds, on_drain)
