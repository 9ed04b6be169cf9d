"""HTTP surface of the webhook: ``POST /mutate`` (AdmissionReview v1), ``/healthz``, ``/readyz``, ``/metrics``.

A bad body answers 400 with a message, one over the limit 413 (the API server logs it; with
``failurePolicy: Ignore`` the pod is admitted unchanged), never a 500. Before the caches are
synced every review is answered "allowed, unchanged" (outcome ``not_ready``): a guess would send
pods to the wrong scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from linstor_scheduler.httpserver import BodyTooLarge, check_declared_length, lifespan_of, read_limited

from .metrics import WebhookMetrics
from .review import BadReview, SchedulerNameMutator, Verdict, encode_response, parse_review

log = logging.getLogger(__name__)
JSON = "application/json"
MAX_BODY = 8 * 1024 * 1024  # the API server's own request limit is 3 MiB per object


def create_app(
    mutator: SchedulerNameMutator,
    *,
    is_ready: Callable[[], bool],
    details: Callable[[], dict[str, Any]] = dict,
    metrics: WebhookMetrics | None = None,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    metrics = metrics or WebhookMetrics()

    def answer(uid: str, verdict: Verdict, started: float) -> Response:
        metrics.reviews.labels(verdict.outcome).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return Response(encode_response(uid, verdict), media_type=JSON)

    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        try:
            try:
                check_declared_length(request.headers.get("content-length"), MAX_BODY)
                body = await read_limited(request.stream(), MAX_BODY)
            except BodyTooLarge as exc:
                metrics.reviews.labels("bad_request").inc()
                return Response(orjson.dumps({"error": str(exc)}), status_code=exc.status, media_type=JSON)
            except ValueError as exc:  # a Content-Length that is not a number
                raise BadReview(str(exc)) from None
            review = parse_review(body)
            req = review.request
            if not is_ready():
                return answer(req.uid, Verdict("not_ready", "caches not synced yet"), started)
            # Off the event loop: a cache miss may cost one bounded direct read of a PVC.
            try:
                verdict = await asyncio.to_thread(mutator.review, req)
            except BadReview:
                raise
            except Exception as exc:  # a pod shape we did not foresee: admit it unchanged, never a 500
                log.exception("could not judge a pod; admitting it unchanged")
                verdict = Verdict("error", f"{type(exc).__name__}: {exc}")
        except BadReview as exc:
            metrics.reviews.labels("bad_request").inc()
            log.info("bad AdmissionReview: %s", exc)
            return Response(orjson.dumps({"error": str(exc)}), status_code=400, media_type=JSON)
        pod = req.object or {}
        meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
        log.log(logging.INFO if verdict.patch else logging.DEBUG, "pod %s/%s: %s (%s)", req.namespace,
                meta.get("name") or meta.get("generateName") or "?", verdict.outcome, verdict.reason)
        return answer(req.uid, verdict, started)

    async def healthz(_: Request) -> Response:
        """Liveness: the process serves HTTPS."""
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        ready = is_ready()
        return JSONResponse({"ready": ready, **details()}, status_code=200 if ready else 503)

    async def metrics_endpoint(_: Request) -> Response:
        metrics.ready.set(1 if is_ready() else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/mutate", mutate, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan_of(startup, shutdown),
    )
