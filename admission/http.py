"""HTTP surface of the webhook: ``POST /mutate`` (AdmissionReview v1) on its HTTPS port; ``/healthz``,
``/readyz``, ``/metrics`` on a separate plain-HTTP port (see ``WebhookApp``).

A bad body answers 400 with a message, one over the limit 413 (the API server logs it; with
``failurePolicy: Ignore`` the pod is admitted unchanged), never a 500.

Each review has a deadline (``review_deadline``, ``--review-deadline``) below the configuration's
``timeoutSeconds`` (``timeout_seconds``, ``--timeout-seconds``): the API server gives up after the
latter and admits the pod unchanged, for its whole life. A review is judged on the event loop from
the caches; the direct reads it needs are made in parallel on the webhook's own executor and
waited for until the deadline (lookups.py). A pod whose claims could not be looked at in time
(verdict ``unknown``) is sent to the ``linstor`` profile (the unknown-claims rule, review.py and
docs/install.md), counted, logged, and given a Warning Event ``LinstorClaimsUnknown``
(``on_unknown``). An answer that took longer than ``timeout_seconds`` was not heard by the API
server: it is counted ``late`` (not as its verdict) and logged. The latency histogram goes to 30 s.
``/readyz`` says whether the view is fresh, the certificate verified and the process not draining;
reviews are judged either way.
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

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.httpserver import BodyTooLarge, check_declared_length, lifespan_of, read_limited
from linstor_scheduler.kube import objects

from .metrics import WebhookMetrics
from .review import (
    UNKNOWN,
    AdmissionRequest,
    BadReview,
    SchedulerNameMutator,
    Verdict,
    encode_response,
    parse_review,
)

log = logging.getLogger(__name__)
JSON = "application/json"
MAX_BODY = 8 * 1024 * 1024  # the API server's own request limit is 3 MiB per object
DEFAULT_TIMEOUT_SECONDS = 5.0  # deploy/'s MutatingWebhookConfiguration timeoutSeconds
DEFAULT_REVIEW_DEADLINE = 3.5  # 1.5 s below it: TLS, the body, the answer and the API server's own work
LATE = "late"


def create_app(
    mutator: SchedulerNameMutator,
    *,
    is_ready: Callable[[], bool],
    details: Callable[[], dict[str, Any]] = dict,
    metrics: WebhookMetrics | None = None,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
    alive: Callable[[], tuple[bool, str]] | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    review_deadline: float = DEFAULT_REVIEW_DEADLINE,
    on_unknown: Callable[[dict[str, Any], str | None, str], None] | None = None,
) -> WebhookApp:
    """``is_ready`` and ``details``: ``/readyz`` (the view fresh, the CA published; ``details``
    says why not); ``alive``: ``/healthz`` (the informers' and the CA publisher's loops turn);
    ``on_unknown(pod, namespace, reason)``: a pod sent to the profile with its claims unknown."""
    metrics = metrics or WebhookMetrics()

    def answer(uid: str, verdict: Verdict, started: float) -> Response:
        took = time.perf_counter() - started
        metrics.latency.observe(took)
        outcome = verdict.outcome
        if took > timeout_seconds:  # the API server gave up on it and admitted the pod unchanged
            outcome = LATE
            log.warning("answered after %.2fs, past the webhook's timeoutSeconds (%gs): the API server admitted "
                        "the pod unchanged (the verdict was %s: %s)", took, timeout_seconds, verdict.outcome,
                        verdict.reason)
        metrics.reviews.labels(outcome).inc()
        return Response(encode_response(uid, verdict), media_type=JSON)

    async def judge(req: AdmissionRequest, started: float) -> Verdict:
        """The mutator's verdict; with live look-ups (``begin``), on the event loop from the caches,
        then again after each round of the direct reads it asked for, until the deadline."""
        source = mutator.lookups
        if not hasattr(source, "begin"):  # fixed look-ups (tests, snapshots): they may block
            return await asyncio.to_thread(mutator.review, req)
        reads = source.begin(boottime() + review_deadline - (time.perf_counter() - started))
        while True:
            verdict = mutator.review(req, reads.lookups())
            if verdict.outcome != UNKNOWN or not reads.wanted:
                return verdict
            await reads.fetch()

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
            try:
                verdict = await judge(req, started)
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
        level = logging.WARNING if verdict.outcome == UNKNOWN else logging.INFO if verdict.patch else logging.DEBUG
        log.log(level, "pod %s/%s: %s (%s)", req.namespace,
                objects.name(pod) or objects.generate_name(pod, "?"), verdict.outcome, verdict.reason)
        if verdict.outcome == UNKNOWN and on_unknown is not None:
            try:
                on_unknown(pod, req.namespace, verdict.reason)
            except Exception:  # an Event is best effort: never the answer's failure
                log.exception("recording the LinstorClaimsUnknown Event")
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
