"""Run an ASGI app under uvicorn in a background thread, on loopback, on a free port; the TLS floor.

Used by the test doubles (LINSTOR emulator, Kubernetes API stand-in), the tests that start the
extender over real HTTP, ``make demo`` and the benchmarks. Start-up and shutdown wait on uvicorn's
own ``started``/``should_exit`` state, never on sleeps.

Every server of ours (these threads and the main servers of the extender and the webhook) keeps
idle connections open for ``keep_alive`` seconds, 120 by default: kube-scheduler's HTTP client
(Go's default transport) keeps idle connections for 90 s, and a server that closes first (uvicorn's
default is 5 s) races the client's next request on that connection. The log goes to the root
logger (``log_config=None``), so ``--log-format json`` covers uvicorn's lines too. Every one that
serves TLS refuses protocol versions before 1.2 (``loaded_config``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from linstor_scheduler.aio import within

from .config import ConfigError
from .servingtls import MIN_TLS_VERSION, ServingTLS

if TYPE_CHECKING:  # uvicorn is imported only when a server starts (the CLI stays fast)
    import uvicorn

KEEP_ALIVE_SECONDS = 120.0  # above kube-scheduler's 90 s idle-connection timeout
_settings: dict[str, Any] = {"keep_alive": KEEP_ALIVE_SECONDS}


def configure(*, keep_alive: float | None = None) -> None:
    """Process-wide server settings from the CLI's common options (as logging is set up once)."""
    if keep_alive is not None:
        _settings["keep_alive"] = keep_alive


def uvicorn_options(**overrides: Any) -> dict[str, Any]:
    """uvicorn options every server of ours shares; ``overrides`` win."""
    return {"timeout_keep_alive": _settings["keep_alive"], "log_config": None, **overrides}


def _in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


class BodyTooLarge(Exception):
    """A request body over the server's limit: answered 413, read no further."""

    status = 413


def check_declared_length(value: str | bytes | None, limit: int) -> None:
    """A Content-Length over ``limit`` is refused before the body is read (``BodyTooLarge``);
    one that is not a number is a ``ValueError``."""
    if value is None:
        return
    try:
        declared = int(value)
    except ValueError:
        raise ValueError("invalid Content-Length header") from None
    if declared > limit:
        raise BodyTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refused (``BodyTooLarge``) as soon as it passes ``limit``: a chunked body
    declares no length, and an 8 MB limit that reads 8 GB first protects nothing."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


class ServerThread:
    """``with ServerThread(app) as srv: httpx.get(srv.url + "/healthz")``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *,
                 on_stop: Callable[[], None] | None = None, port_flag: str = "--port", **uvicorn_kwargs: Any) -> None:
        """``port_flag``: the flag that set ``port``, named when the port is in use."""
        kwargs = uvicorn_options(**{"log_level": "warning", "access_log": False, "lifespan": "on", "loop": "asyncio",
                                    **uvicorn_kwargs})
        import uvicorn  # here: the CLI imports this module for its settings before it knows it will serve

        self.config = loaded_config(app, host=host, port=port, **kwargs)
        self.server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=self._run, name="uvicorn-thread", daemon=True)
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._on_stop = on_stop  # ends the app's endless streams: uvicorn waits for open connections
        self.port_flag = port_flag

    def _run(self) -> None:
        try:
            if self.config.loop == "uvloop":
                import uvloop

                self.loop = uvloop.new_event_loop()
            else:
                self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
        finally:
            if self.loop is not None:
                self._shut_app_down(self.loop)
                self._finish(self.loop)

    def _shut_app_down(self, loop: asyncio.AbstractEventLoop, patience: float = 5.0) -> None:
        """A forced exit skips the app's lifespan shutdown (uvicorn's ``Server.shutdown``), which is
        where an app stops what it started (informers, LINSTOR loops, Leases): run it here, bounded,
        so a forced stop still ends them (a CI run under load left an extender's informers retrying
        a stand-in that was gone)."""
        lifespan = getattr(self.server, "lifespan", None)
        if not self.server.force_exit or lifespan is None:
            return
        with contextlib.suppress(Exception):
            loop.run_until_complete(within(lifespan.shutdown(), patience))

    @staticmethod
    def _finish(loop: asyncio.AbstractEventLoop, patience: float = 2.0) -> None:
        """Cancel what a forced exit left running (a request held open, the app's lifespan) and let it
        end here, in this thread. Left pending, those tasks are finalised by the garbage collector
        wherever it runs next: in CPython 3.11 that can be inside another thread's ``ast.parse``
        (pytest's assertion rewriting), whose recursion counter the finaliser's own imports then
        corrupt ("AST constructor recursion depth mismatch", a whole test run's INTERNALERROR)."""
        with contextlib.suppress(Exception):
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=patience))
            loop.run_until_complete(loop.shutdown_asyncgens())

    def start(self, timeout: float = 15.0) -> ServerThread:
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self.server.started:
            if self._error is not None or not self._thread.is_alive():
                if self.config.port and _in_use(self.config.host, self.config.port):
                    raise ConfigError(f"port {self.config.port} on {self.config.host} is in use: choose another "
                                      f"with {self.port_flag}, or {self.port_flag} 0 for any free port")
                raise RuntimeError(f"server failed to start: {self._error!r}")
            if waited >= timeout:
                raise TimeoutError("server did not start in time")
            deadline.wait(0.01)
            waited += 0.01
        return self

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``https://`` when started with ``ssl_certfile``/``ssl_keyfile`` (uvicorn's own TLS options)."""
        scheme = "https" if self.config.is_ssl else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    def stop(self, timeout: float = 10.0, force_after: float = 5.0) -> None:
        """Graceful first: uvicorn lets open requests finish for ``timeout`` seconds. A request that
        never ends (a double holding an answer for a fault, a client gone half-open) would keep the
        thread, and the app's loops with it, alive after its owner is gone (a test's extender polling
        its dead emulator minutes later, logging into a closed stream); so past ``timeout`` uvicorn is
        told to exit without waiting (``force_exit``), and given ``force_after`` more."""
        if self._on_stop is not None:
            self._on_stop()
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(force_after)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def loaded_config(app: Any, *, tls: ServingTLS | None = None, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's Config, loaded, with TLS before 1.2 refused when it serves TLS at all.

    uvicorn has no option for the lowest protocol version and leaves it to the local OpenSSL
    configuration (which may allow TLS 1.0/1.1): the context it built is raised to TLS 1.2 here,
    before the server starts. Every server of ours (the webhook, the doubles) is made this way.
    ``tls``: serve that context instead of uvicorn's (servingtls.py: certificate files re-read when
    they change, optional client certificates); uvicorn is given the same files so that it knows
    it serves TLS, and its own context is replaced before the server starts.
    """
    import uvicorn

    if tls is not None:
        kwargs = {**kwargs, "ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
    config = uvicorn.Config(app, **kwargs)
    config.load()
    if tls is not None:
        config.ssl = tls.context
    if config.ssl is not None and config.ssl.minimum_version < MIN_TLS_VERSION:
        config.ssl.minimum_version = MIN_TLS_VERSION
    return config


Hook = Callable[[], Awaitable[None]] | None


def lifespan_of(startup: Hook = None, shutdown: Hook = None) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """An ASGI lifespan running ``startup`` before serving and ``shutdown`` after, even on errors."""

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if startup:
            await startup()
        try:
            yield
        finally:
            if shutdown:
                await shutdown()

    return lifespan
