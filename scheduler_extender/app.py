"""The extender's HTTP surface: ``/filter``, ``/prioritize`` (extender v1), ``/explain``, health, metrics.

The two verbs kube-scheduler calls are plain async Starlette endpoints on the raw body (no
FastAPI parameter machinery on the hot path); everything a person calls goes through FastAPI so it
is documented at ``/docs``. A request never makes a LINSTOR or API-server call in steady state:
it reads the in-memory index (service.py). Bad input answers 4xx with a message, never a 500.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .metrics import ExtenderMetrics
from .scoring import NodeVerdict, all_node_names
from .service import Decision, Extender
from .wire import BadRequest, ExtenderArgs, PriorityEncoder, decode_args, encode_error, encode_filter

log = logging.getLogger(__name__)
JSON = "application/json"
SCORE = operator.attrgetter("score")
DEFAULT_MAX_BODY = 64 * 1024 * 1024  # full Node objects of 5,000 nodes fit well below this


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
        if declared > limit:
            raise BadRequest(f"request body of {declared} bytes exceeds the limit of {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def verdict_rows(decision: Decision) -> list[dict[str, Any]]:
    """The per-node table for ``explain``: verdict, score, and one reason per volume."""
    if decision.verdicts is None:
        return [{"node": n, "verdict": "pass", "score": 0, "reasons": [f"neutral: {decision.neutral_reason}"]}
                for n in decision.names]
    return [{"node": n, "verdict": "pass" if v.fits else "fail", "score": v.score, "reasons": v.reasons(n)}
            for n, v in zip(decision.names, decision.verdicts, strict=True)]


def create_app(
    extender: Extender,
    *,
    metrics: ExtenderMetrics | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    metrics = metrics or ExtenderMetrics()
    holder = extender.holder
    metrics.bind_state_age(
        extender.staleness,
        lambda: (a := extender.staleness()) is not None and a > extender.max_staleness,
    )
    priorities = PriorityEncoder()

    def observe(verb: str, outcome: str, started: float) -> None:
        metrics.requests.labels(verb, outcome).inc()
        metrics.latency.labels(verb).observe(time.perf_counter() - started)

    async def parse(request: Request) -> ExtenderArgs:
        return decode_args(await read_body(request, max_body))

    def bad(verb: str, exc: BadRequest, started: float) -> Response:
        observe(verb, "bad_request", started)
        log.info("%s: bad request: %s", verb, exc.message)
        return Response(encode_error(exc.message), status_code=exc.status, media_type=JSON)

    async def filter_endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            args = await parse(request)
            decision = await extender.decide(args.pod, args.node_names)
        except BadRequest as exc:
            return bad("filter", exc, started)
        if decision.verdicts is None:
            observe("filter", "neutral", started)
            return Response(encode_filter(args, args.node_names, {}, {}), media_type=JSON)
        pairs = list(zip(decision.names, decision.verdicts, strict=True))
        passing = [n for n, v in pairs if v.fits]
        failed = {n: v.failure(n) for n, v in pairs if not v.fits}
        metrics.filtered_nodes.labels("pass").inc(len(passing))
        metrics.filtered_nodes.labels("fail").inc(len(failed))
        if log.isEnabledFor(logging.INFO):
            sample = "; ".join(list(failed.values())[:3])
            log.info("filter %s: %d of %d nodes pass%s", decision.pod, len(passing), len(decision.names),
                     f" (e.g. {sample})" if sample else "")
        observe("filter", "ok", started)
        # Every reason we give is about storage: preempting other pods cannot fix it.
        return Response(encode_filter(args, passing, {}, failed), media_type=JSON)

    async def prioritize_endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            args = await parse(request)
            decision = await extender.decide(args.pod, args.node_names)
        except BadRequest as exc:
            return bad("prioritize", exc, started)
        if decision.verdicts is None:
            observe("prioritize", "neutral", started)
            return Response(priorities.encode(args.node_names, [0] * len(args.node_names)), media_type=JSON)
        observe("prioritize", "ok", started)
        return Response(priorities.encode(decision.names, list(map(SCORE, decision.verdicts))), media_type=JSON)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if startup:
            await startup()
        try:
            yield
        finally:
            if shutdown:
                await shutdown()

    app = FastAPI(
        title="linstor-scheduler extender",
        description="kube-scheduler extender v1 (filter, prioritize) placing pods next to their LINSTOR replicas",
        lifespan=lifespan,
        routes=[
            Route("/filter", filter_endpoint, methods=["POST"]),
            Route("/prioritize", prioritize_endpoint, methods=["POST"]),
        ],
    )

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        """Liveness: the process serves HTTP."""
        return "ok"

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready after the first full sync of LINSTOR and Kubernetes state; detail says how fresh it is."""
        state = holder.state
        age = extender.staleness(state)
        stale = age is not None and age > extender.max_staleness
        body = {
            "ready": holder.ready,
            "state_age_seconds": None if age is None else round(age, 3),
            "max_staleness_seconds": extender.max_staleness,
            "stale": stale,
            "neutral": (not holder.ready) or stale,
            "generation": state.generation,
            "nodes": len(state.nodes),
            "resources": len(state.resources),
            "last_error": holder.last_error,
            "mode": "snapshot" if holder.static else "live",
            **holder.details,
        }
        if stale:
            body["detail"] = f"state is {age:.0f}s old: the extender passes every node with score 0 until it recovers"
        # Stale still serves (neutrally): only "never synced" is not ready.
        return JSONResponse(body, status_code=200 if holder.ready else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        metrics.ready.set(1 if holder.ready else 0)
        metrics.index_size.labels("nodes").set(len(holder.state.nodes))
        metrics.index_size.labels("resources").set(len(holder.state.resources))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

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
                args = decode_args(orjson.dumps({**orjson.loads(body), "NodeNames": known_nodes()}))
            decision = await extender.decide(args.pod, args.node_names)
        except BadRequest as exc:
            return Response(encode_error(exc.message), status_code=exc.status, media_type=JSON)
        return Response(orjson.dumps({"pod": decision.pod, "neutral": decision.neutral_reason,
                                      "nodes": verdict_rows(decision)}), media_type=JSON)

    def known_nodes() -> list[str]:
        return all_node_names(holder.state)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> Response:
        # A bug of ours must not leak a traceback to kube-scheduler; the log keeps it.
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return Response(encode_error(f"internal error: {type(exc).__name__}: {exc}"), status_code=500,
                        media_type=JSON)

    app.state.extender = extender
    app.state.metrics = metrics
    return app


__all__ = ["NodeVerdict", "create_app", "verdict_rows"]
