"""HTTP surface of the webhook: ``POST /mutate`` (AdmissionReview v1) on its HTTPS port; ``/healthz``,
``/readyz``, ``/metrics`` on a separate plain-HTTP port (see ``WebhookApp``).

A bad body answers 400 with a message, one over the limit 413 (the API server logs it; with
``failurePolicy: Ignore`` the pod is admitted unchanged), never a 500. A pod whose claims could
not be looked at (verdict ``unknown``: the view was stale or lacked them and the direct reads
failed) is answered 503 with a ``Status`` saying why: the API server then applies the webhook's
failurePolicy (``Ignore``: created unchanged, logged as "Failed calling webhook, failing open" and
counted in ``apiserver_admission_webhook_fail_open_count``; ``Fail``: refused, and the controller
retries). It never answers "not ours" for a pod it could not judge, and never refuses one itself.
``/readyz`` says whether the view is fresh; reviews are judged either way (lookups.py).
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
from .review import UNKNOWN, BadReview, SchedulerNameMutator, Verdict, encode_response, parse_review

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
    alive: Callable[[], tuple[bool, str]] | None = None,
) -> WebhookApp:
    """``is_ready`` and ``details``: ``/readyz`` (the view fresh, the CA published; ``details``
    says why not); ``alive``: ``/healthz`` (the informers' and the CA publisher's loops turn)."""
    metrics = metrics or WebhookMetrics()

    def answer(uid: str, verdict: Verdict, started: float) -> Response:
        metrics.reviews.labels(verdict.outcome).inc()
        metrics.latency.observe(time.perf_counter() - started)
        if verdict.outcome == UNKNOWN:
            return Response(cannot_judge(verdict.reason), status_code=503, media_type=JSON)
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
            # Off the event loop: a cache miss or a stale cache costs direct reads (one deadline).
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
        level = logging.WARNING if verdict.outcome == UNKNOWN else logging.INFO if verdict.patch else logging.DEBUG
        log.log(level, "pod %s/%s: %s (%s)", req.namespace,
                meta.get("name") or meta.get("generateName") or "?", verdict.outcome, verdict.reason)
        return answer(req.uid, verdict, started)

    async def healthz(_: Request) -> Response:
        """Liveness: the process serves, and (live) its loops turn; 503 with the reason if not."""
        ok, text = alive() if alive is not None else (True, "ok")
        return PlainTextResponse(text, status_code=200 if ok else 503)

    async def readyz(_: Request) -> Response:
        ready = is_ready()
        return JSONResponse({"ready": ready, **details()}, status_code=200 if ready else 503)

    async def metrics_endpoint(_: Request) -> Response:
        metrics.ready.set(1 if is_ready() else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return WebhookApp(
        Starlette(routes=[Route("/mutate", mutate, methods=["POST"])], lifespan=lifespan_of(startup, shutdown)),
        Starlette(routes=[Route(path, endpoint, methods=["GET"]) for path, endpoint in (
            ("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics_endpoint))]),
    )


OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def cannot_judge(reason: str) -> bytes:
    """A ``Status`` (as the API server's own errors): its client reads the message into the error it
    logs ("failed calling webhook ...: <message>") or, with ``failurePolicy: Fail``, returns. No
    ``Retry-After``: the API server's client would retry within the same admission deadline."""
    return orjson.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 503,
                         "reason": "ServiceUnavailable",
                         "message": f"linstor-scheduler webhook cannot judge this pod: {reason}"})


class WebhookApp:
    """Two ASGI apps, served on two listeners by the CLI (wiring.serve_webhook), as the extender's:

    - ``mutate``: ``POST /mutate`` over HTTPS (TLS 1.2 or newer) for the API server, and nothing
      else: every other path is a 404;
    - ``ops``: ``/healthz``, ``/readyz``, ``/metrics`` over plain HTTP for kubelet and Prometheus
      (the API server has no business there, Prometheus none on ``/mutate``).

    Calling the object itself serves both on one listener: for the tests only.
    """

    def __init__(self, mutate: Starlette, ops: Starlette) -> None:
        self.mutate = mutate
        self.ops = ops
        self.state = mutate.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in OPS_PATHS:
            await self.ops(scope, receive, send)
            return
        await self.mutate(scope, receive, send)
