"""Wiring of the live extender: LINSTOR client + Kubernetes caches -> Syncer -> app. Used by the
CLI and by the end-to-end tests, so both run the same assembly."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from linstor_scheduler.kube.informer import KubeCaches
from linstor_scheduler.linstor.client import LinstorClient

from .app import DEFAULT_MAX_BODY, create_app
from .metrics import ExtenderMetrics
from .scoring import Weights
from .service import Extender, FallbackReader, StateHolder
from .sync import EXTENDER_KINDS, Syncer


def build_live_app(
    client: LinstorClient,
    api_client: Any,
    *,
    poll_interval: float = 10.0,
    max_staleness: float = 120.0,
    fallback_timeout: float = 1.0,
    weights: Weights | None = None,
    use_events: bool = True,
    max_body: int = DEFAULT_MAX_BODY,
    metrics: ExtenderMetrics | None = None,
) -> FastAPI:
    metrics = metrics or ExtenderMetrics()
    holder = StateHolder()
    client.on_request = lambda method, _path, status, _secs: metrics.linstor_requests.labels(
        method, str(status) if status is not None else "error").inc()
    fallback = FallbackReader(client, timeout=fallback_timeout,
                              on_read=lambda outcome: metrics.fallback_reads.labels(outcome).inc())
    extender = Extender(holder, weights=weights, max_staleness=max_staleness, fallback=fallback)
    syncer = Syncer(holder, client, None, poll_interval=poll_interval, use_events=use_events, metrics=metrics,
                    fallback=fallback)
    caches = KubeCaches(api_client, list(EXTENDER_KINDS), on_change=syncer.kube_changed)
    syncer.caches = caches

    async def startup() -> None:
        caches.start()
        await syncer.start()

    async def shutdown() -> None:
        await syncer.stop()
        caches.stop()
        await client.aclose()

    app = create_app(extender, metrics=metrics, max_body=max_body, startup=startup, shutdown=shutdown)
    app.state.syncer = syncer
    app.state.caches = caches
    app.state.client = client
    return app
