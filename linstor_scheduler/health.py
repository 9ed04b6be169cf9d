"""/healthz, /readyz and /metrics for the workers (sync-node, sync-classes, ...), served on a side port.

``/healthz`` answers while the process runs its loop; ``/readyz`` says whether the last pass worked
recently, with the reason as text, so a probe failure in ``kubectl describe pod`` explains itself.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

Check = Callable[[], tuple[bool, str]]


def loop_liveness(name: str, beat: float, now: float, bound: float, ok: str | None = None) -> tuple[bool, str]:
    """A loop that did nothing for longer than ``bound`` (seconds on the component's clock, since its
    last ``beat``) is stuck: ``/healthz`` fails, naming it, so the kubelet restarts the container.
    ``ok``: the words while it turns (default ``<name> turning``)."""
    idle = now - beat
    if idle > bound:
        return False, f"{name} made no progress for {idle:.0f}s (bound {bound:.0f}s)"
    return True, ok or f"{name} turning"


def health_app(registry: CollectorRegistry, *, ready: Check, alive: Check | None = None) -> Starlette:
    def answer(check: Check) -> Response:
        ok, text = check()
        return PlainTextResponse(text + "\n", status_code=200 if ok else 503)

    async def healthz(_: Request) -> Response:
        return answer(alive or (lambda: (True, "ok")))

    async def readyz(_: Request) -> Response:
        return answer(ready)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)])
