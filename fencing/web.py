"""/metrics, /healthz and /readyz of the fencing controller."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


def create_app(controller: Any, kube: Any) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(controller.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        """Ready once the Kubernetes caches synced: a follower is ready too (it may take over)."""
        if kube.objects() is None:
            return PlainTextResponse("Kubernetes caches not synced", status_code=503)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)])
