"""The extender's HTTP surface: ``/filter``, ``/prioritize`` (extender v1), ``/explain`` on one
listener (loopback), ``/healthz``, ``/readyz``, ``/metrics`` on another (see ``ExtenderApp``).

The two verbs kube-scheduler calls are served as plain ASGI on the raw body (``ExtenderApp``: no
router, no Request object on the hot path) and answered by answers.py; everything a person calls
goes through FastAPI so it is documented at ``/docs``. A request never makes a LINSTOR or
API-server call in steady state: it reads the in-memory index (judge.py). Bad input answers 4xx
with a message, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from linstor_scheduler.httpserver import BodyTooLarge, check_declared_length, lifespan_of, read_limited

from .answers import Answerer, verdict_rows
from .codec import BadRequest, decode_args, encode_error
from .judge import Extender
from .metrics import ExtenderMetrics
from .placements import PlacementReporter
from .reservations import hold_rows
from .scoring import all_node_names

log = logging.getLogger(__name__)
JSON = "application/json"
DEFAULT_MAX_BODY = 64 * 1024 * 1024  # full Node objects of 5,000 nodes fit well below this


def check_length_header(value: str | bytes | None, limit: int) -> None:
    """A Content-Length over ``limit`` is refused before the body is read (413)."""
    try:
        check_declared_length(value, limit)
    except BodyTooLarge as exc:
        raise BadRequest(str(exc), exc.status) from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def read_body(request: Request, limit: int) -> bytes:
    check_length_header(request.headers.get("content-length"), limit)
    try:
        return await read_limited(request.stream(), limit)
    except BodyTooLarge as exc:
        raise BadRequest(str(exc), exc.status) from None


def create_app(
    extender: Extender,
    *,
    metrics: ExtenderMetrics | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
    alive: Callable[[], tuple[bool, str]] | None = None,
    kube_details: Callable[[], dict[str, Any]] | None = None,
    placements: PlacementReporter | None = None,
) -> ExtenderApp:
    """``alive``: the live extender's loops (``/healthz`` fails with its text when they stopped
    turning); ``kube_details``: more fields for ``/readyz`` (the informers' errors); ``placements``:
    told of each /filter, to judge where the pod is bound (placements.py)."""
    metrics = metrics or ExtenderMetrics()
    holder = extender.holder
    metrics.bind_freshness(extender.freshness)
    answerer = Answerer(extender, metrics, placements)
    metrics.bind_caches(extender.caches)
    answer, counters = answerer.answer, answerer.counters

    async def raw_verb(verb: str, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The verbs kube-scheduler calls, as plain ASGI: no router, no Request object. It only ever
        POSTs (pkg/scheduler/extender.go, ``HTTPExtender.send``); another method is a 405, as a
        router would answer it."""
        if scope["method"] != "POST":
            await send(_start(405, METHOD_NOT_ALLOWED, ALLOW_POST))
            await send({"type": "http.response.body", "body": METHOD_NOT_ALLOWED})
            return
        try:
            try:
                body = await read_raw_body(scope, receive, max_body)
            except BadRequest as exc:
                counters[verb, "bad_request"].inc()
                status, out = exc.status, encode_error(exc.message)
            else:
                status, out = await answer(verb, body)
        except Exception as exc:  # a bug of ours must not leak a traceback; the log keeps it
            log.exception("internal error answering POST /%s", verb)
            counters[verb, "error"].inc()
            status, out = 500, encode_error(f"internal error: {type(exc).__name__}: {exc}")
        await send(_start(status, out))
        await send({"type": "http.response.body", "body": out})

    app = FastAPI(
        title="linstor-scheduler extender",
        description="kube-scheduler extender v1 (filter, prioritize) placing pods next to their LINSTOR replicas",
        lifespan=lifespan_of(startup, shutdown),
    )

    @app.post("/explain")
    async def explain(request: Request) -> Response:
        """Why would this pod go where? Body: ExtenderArgs (as kube-scheduler sends), or
        ``{"Pod": {...}}`` alone to judge every node we know."""
        try:
            body = await read_body(request, max_body)
            try:
                args = decode_args(body)
            except BadRequest as exc:
                if "neither NodeNames nor Nodes" not in exc.message:
                    raise
                args = decode_args(orjson.dumps({**_whole(body), "NodeNames": known_nodes()}))
            decision = await extender.decide(args.pod, args.node_names)
        except BadRequest as exc:
            return Response(encode_error(exc.message), status_code=exc.status, media_type=JSON)
        except Exception as exc:  # answered here: Starlette's error middleware would re-raise into uvicorn
            log.exception("internal error answering POST /explain")
            return Response(encode_error(f"internal error: {type(exc).__name__}: {exc}"), status_code=500,
                            media_type=JSON)
        return Response(orjson.dumps({"pod": decision.pod, "neutral": decision.neutral_reason,
                                      "nodes": verdict_rows(decision),
                                      "reservations": reservation_rows(extender, args.node_names)}),
                        media_type=JSON)

    def reservation_rows(extender: Extender, names: list[str]) -> list[dict[str, Any]]:
        """The holds on the judged nodes: what their free space in the verdicts already lacks."""
        return [] if extender.ledger is None else hold_rows(extender.ledger, names, extender.clock())

    def known_nodes() -> list[str]:
        return all_node_names(holder.state)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> Response:
        # A bug of ours must not leak a traceback to kube-scheduler; the log keeps it.
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return Response(encode_error(f"internal error: {type(exc).__name__}: {exc}"), status_code=500,
                        media_type=JSON)

    async def healthz(_: Request) -> Response:
        """Liveness: the process serves HTTP and (live) its loops turn; 503 with the reason if not."""
        ok, text = alive() if alive is not None else (True, "ok")
        return PlainTextResponse(text, status_code=200 if ok else 503)

    async def readyz(_: Request) -> Response:
        """200 while the extender judges: after the first full sync of LINSTOR and Kubernetes state,
        and while neither is older than ``max_staleness``; otherwise 503 with ``detail`` saying why
        (stale, it still answers, neutrally). The body's fields are the same either way."""
        state = holder.state
        fresh = extender.freshness(state)
        ages = fresh.ages
        body = {
            "ready": fresh.ready,
            "state_age_seconds": None if fresh.age is None else round(fresh.age, 3),
            "linstor_age_seconds": None if ages is None else round(ages[0], 3),
            "kubernetes_age_seconds": None if ages is None else round(ages[1], 3),
            "max_staleness_seconds": fresh.limit,
            "stale": bool(fresh.stale),
            "neutral": fresh.neutral_reason is not None,
            "generation": state.generation,
            "nodes": len(state.nodes),
            "resources": len(state.resources),
            "last_error": holder.last_error,
            "mode": "snapshot" if holder.static else "live",
            **holder.details,
            **(kube_details() if kube_details is not None else {}),
        }
        if not fresh.ready:
            waiting = [f"LINSTOR: {holder.last_error}"] if holder.last_error else []
            if extender.kube is not None:
                waiting.append(f"Kubernetes: {extender.kube.kube_detail()}")
            body["detail"] = ("first full sync of LINSTOR and Kubernetes not finished"
                              + (f" ({'; '.join(waiting)})" if waiting else ""))
        elif fresh.stale:
            body["detail"] = f"{fresh.reason}: the extender passes every node with score 0 until it recovers"
        return JSONResponse(body, status_code=200 if fresh.neutral_reason is None else 503)

    async def metrics_endpoint(_: Request) -> Response:
        metrics.ready.set(1 if holder.ready else 0)
        if holder.ready:  # before the first sync the state is the empty placeholder, not a measured 0
            state = holder.state
            metrics.index_size.publish({("nodes",): len(state.nodes), ("resources",): len(state.resources)})
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    ops = Starlette(routes=[Route(path, endpoint, methods=["GET"]) for path, endpoint in (
        ("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics_endpoint))])

    app.state.extender = extender
    app.state.metrics = metrics
    app.state.answers = extender.answers

    async def fast_filter(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await raw_verb("filter", scope, receive, send)

    async def fast_prioritize(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await raw_verb("prioritize", scope, receive, send)

    return ExtenderApp(app, {"/filter": fast_filter, "/prioritize": fast_prioritize}, ops)


OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
METHOD_NOT_ALLOWED = orjson.dumps({"detail": "Method Not Allowed"})
ALLOW_POST = ((b"allow", b"POST"),)


def _start(status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> dict[str, Any]:
    """The ASGI response start of a JSON body (a plain function: a coroutine per request costs more)."""
    return {"type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *headers]}


def _whole(body: bytes) -> dict[str, Any]:
    """The body as a dict, for explain's "Pod alone" form (decode_args has checked it is an object)."""
    try:
        return orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


class ExtenderApp:
    """Two ASGI apps, served on two listeners by the CLI (wiring.serve_extender):

    - ``verbs``: ``/filter`` and ``/prioritize`` straight to their raw handlers, the only ones they
      have (measured: Starlette's router, Request and middleware cost more than a cached answer),
      then the FastAPI app (``/explain``, ``/docs``). Only kube-scheduler, in the same pod, needs them: loopback.
    - ``ops``: ``/healthz``, ``/readyz``, ``/metrics`` for kubelet and Prometheus; nothing else
      (a verb there is a 404).

    Calling the object itself serves both on one listener: for the tests and ``make demo`` only.
    Attributes pass through to the FastAPI app (``app.state``).
    """

    def __init__(self, api: FastAPI, fast: dict[str, Callable[..., Awaitable[None]]], ops: Starlette) -> None:
        self.api = api
        self.fast = fast
        self.ops = ops

    async def verbs(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            handler = self.fast.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in OPS_PATHS:
            await self.ops(scope, receive, send)
            return
        await self.verbs(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)


async def read_raw_body(scope: dict[str, Any], receive: Any, limit: int) -> bytes:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            check_length_header(value, limit)
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = ["DEFAULT_MAX_BODY", "ExtenderApp", "create_app"]
