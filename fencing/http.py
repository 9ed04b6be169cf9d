"""Routes of the fencing controller: /metrics, /healthz and /readyz (the shared health app).

``/readyz`` fails, with the reason, while the view fencing would act on is older than
``--max-staleness``: the Kubernetes caches (on every instance: a standby may take over) or the
Lease holder's LINSTOR view. ``/healthz`` fails when a loop made no progress for its bound: an
informer, the pass loop, the Lease. Failing calls are progress (the API server is down: that is
readiness); only a loop that stopped turning asks the kubelet for a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.health import Check, health_app, loop_liveness

LEASE_SLACK = 30.0  # seconds of margin on the Lease loop's bound (as the informers')


def _all(checks: Iterable[Check]) -> tuple[bool, str]:
    """Every check's text, the failing ones first: the probe's answer names what is wrong."""
    results = [check() for check in checks]
    failing = [text for ok, text in results if not ok]
    return (False, "; ".join(failing)) if failing else (True, "; ".join(text for _, text in results))


def ready_check(kube: Any, controller: Any = None) -> Check:
    def ready() -> tuple[bool, str]:
        """A synced, fresh Kubernetes view; and on the Lease holder a fresh LINSTOR view."""
        if kube.objects() is None:
            return False, "Kubernetes caches not synced"
        checks: list[Check] = [kube.readiness] if hasattr(kube, "readiness") else []
        if controller is not None and hasattr(controller, "linstor_readiness"):
            checks.append(controller.linstor_readiness)
        return _all(checks) if checks else (True, "ok")

    return ready


def lease_liveness(elector: Any, call_timeout: float, clock: Callable[[], float] = boottime) -> Check:
    """The Lease loop's last step is younger than its bound: the wait between two steps (at most the
    lease duration), four calls (read, replace, and a release's read and replace), a margin. An
    instance without a Lease loop (``--no-leader-elect``) has nothing to check."""
    def alive() -> tuple[bool, str]:
        beat = getattr(elector, "beat", None)
        if beat is None:
            return True, "no Lease loop"
        return loop_liveness("Lease loop", beat, clock(), float(elector.lease_seconds) + 4 * call_timeout + LEASE_SLACK,
                             ok="Lease loop running")

    return alive


def alive_check(kube: Any, controller: Any, elector: Any, call_timeout: float,
                clock: Callable[[], float] = boottime) -> Check:
    """Every loop turns: the informers, the pass loop, the Lease."""
    checks = (kube.liveness, controller.liveness, lease_liveness(elector, call_timeout, clock))
    return lambda: _all(checks)


def create_app(controller: Any, kube: Any) -> Starlette:
    """What the service serves on ``--port`` (``runtime.run_service`` builds the same from
    ``ready_check`` and ``alive_check``); the deploy tests read its routes."""
    return health_app(controller.metrics.registry, ready=ready_check(kube, controller))
