"""Routes of the fencing controller: /metrics, /healthz and /readyz (the shared health app)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from linstor_scheduler.health import Check, health_app


def ready_check(kube: Any) -> Check:
    def ready() -> tuple[bool, str]:
        """Ready once the Kubernetes caches synced: a follower is ready too (it may take over)."""
        if kube.objects() is None:
            return False, "Kubernetes caches not synced"
        return True, "ok"

    return ready


def create_app(controller: Any, kube: Any) -> Starlette:
    """What the service serves on ``--port`` (``runtime.run_service`` builds the same from
    ``ready_check``); the deploy tests read its routes."""
    return health_app(controller.metrics.registry, ready=ready_check(kube))
