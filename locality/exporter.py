"""The locality exporter's loop: the extender's state (its own Syncer) plus pod records in, metrics out.

Runs in every replica; only the Lease holder computes and exports. The LINSTOR/Kubernetes index is
the extender's ``ClusterState`` built by the extender's ``Syncer``, so "local" here is what the
extender scores as local. Pods are kept as ``PodRecord`` (pods.py), claims and volumes slimmed.

Figures come only from a view younger than ``max_staleness``: the LINSTOR read the state was built
from, and the Kubernetes view as the API server last confirmed it (``KubeCaches.age``, pods
included). While either is older, nothing new is computed: the figures already exported stay, their
age (``..._state_age_seconds``) grows, and ``/readyz`` fails naming the stale part and why
(``view_verdict``). ``/healthz`` fails only when a loop stopped turning: an informer, the LINSTOR
poll, or the computation loop (``liveness``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from linstor_scheduler.aio import wait_set
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.health import loop_liveness
from linstor_scheduler.measured import age_since
from scheduler_extender import StateHolder

from .affinity import stale_counts
from .classify import Summary, summarize
from .metrics import LocalityMetrics
from .pods import locate_all

log = logging.getLogger("linstor_scheduler.locality")


def view_verdict(linstor_age: float | None, kube_age: float | None, bound: float, linstor_error: str | None,
                 kube_stalest: str) -> tuple[bool, str]:
    """Whether figures may be computed from this view (both parts younger than ``bound``), and the
    words for ``/readyz``: which part is stale, how old, and why."""
    if linstor_age is None:
        return False, "no LINSTOR read yet" + (f": {linstor_error}" if linstor_error else "")
    if kube_age is None:
        return False, f"Kubernetes view not listed yet: {kube_stalest}"
    if linstor_age > bound:
        return False, (f"LINSTOR view {linstor_age:.0f}s old (bound {bound:g}s)"
                       + (f": {linstor_error}" if linstor_error else ""))
    if kube_age > bound:
        return False, f"Kubernetes view {kube_age:.0f}s old (bound {bound:g}s): {kube_stalest}"
    return True, f"view {max(linstor_age, kube_age):.0f}s old"


class LocalityExporter:
    def __init__(self, holder: StateHolder, pods: Any, metrics: LocalityMetrics, leader: Any, *,
                 interval: float = 30.0, clock: Callable[[], float] = boottime, caches: Any = None,
                 max_staleness: float = float("inf")) -> None:
        """``caches``: the ``KubeCaches`` the state and ``pods`` come from (None: a test's fixed view,
        always fresh); ``max_staleness``: the oldest view figures may come from."""
        self.holder, self.pods, self.metrics, self.leader = holder, pods, metrics, leader
        self.interval, self.clock = interval, clock
        self.caches, self.max_staleness = caches, max_staleness
        self.last: Summary | None = None
        self.last_at: float | None = None
        self.figures_from: float | None = None  # clock() of the LINSTOR read the exported figures come from
        self.beat = clock()  # the computation loop's last turn (liveness)
        self._stale_said: str | None = None
        metrics.bind_age(self.figures_age)

    def view(self) -> tuple[bool, str, float | None]:
        """(fresh enough to compute from, why not / how old, the view's age)."""
        now = self.clock()
        linstor_age = max(0.0, now - self.holder.state.linstor_synced_at) if self.holder.ready else None
        kube_age = self.caches.age() if self.caches is not None else 0.0
        stalest = self.caches.stalest() if self.caches is not None else ""
        fresh, text = view_verdict(linstor_age, kube_age, self.max_staleness, self.holder.last_error, stalest)
        age = None if linstor_age is None or kube_age is None else max(linstor_age, kube_age)
        return fresh, text, age

    def figures_age(self) -> float | None:
        """Seconds since the read the exported figures come from; None while none are exported."""
        return age_since(self.clock, self.figures_from)

    def run_once(self) -> Summary | None:
        """One computation if we lead and have state; withdraws the figures if we do not lead."""
        leading = bool(self.leader.is_leader)
        self.metrics.leader.set(1 if leading else 0)
        if not leading:
            self.figures_from = None
            self.metrics.withdraw()
            return None
        if not self.holder.ready or not self.pods.synced.is_set():
            return None
        fresh, why, _ = self.view()
        if not fresh:
            if why != self._stale_said:
                log.warning("locality: no new figures: %s", why)
            self._stale_said = why
            return None
        if self._stale_said is not None:
            log.info("locality: the view is fresh again (%s)", why)
            self._stale_said = None
        state = self.holder.state
        summary = summarize(locate_all(self.pods.items(), state))
        self.metrics.publish(summary)
        self.metrics.publish_affinity(stale_counts(state))
        # The LINSTOR read's time: the Kubernetes view was within the bound too (checked above), and its
        # confirmations come and go with each watch, which would make the age jump back and forth.
        self.figures_from = state.linstor_synced_at
        if self.last is None or (summary.pods, summary.local) != (self.last.pods, self.last.local):
            if summary.pods:
                log.info("locality: %d of %d pods local (%.0f%%)", summary.local, summary.pods, summary.share * 100)
            else:
                log.info("locality: no running pods with LINSTOR volumes")
        self.last, self.last_at = summary, self.clock()
        return summary

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.beat = self.clock()
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # a bad object must not end the exporter: log it and try again next round
                log.exception("locality computation failed")
            await wait_set(stop, self.interval)

    def ready(self) -> tuple[bool, str]:
        """A standby and the leader alike: ready while their view is younger than the bound (a standby
        may take over at any time); the leader once it has computed."""
        if not self.holder.ready:
            return False, "no LINSTOR/Kubernetes state yet" + (
                f": {self.holder.last_error}" if self.holder.last_error else "")
        fresh, why, _ = self.view()
        if not fresh:
            return False, why
        if not self.leader.is_leader:
            return True, f"standby: the Lease holder exports; {why}"
        if self.last_at is None:
            return False, "leading; first computation pending"
        return True, f"leading; last computed {self.clock() - self.last_at:.0f}s ago; {why}"

    def turning(self, bound: float) -> tuple[bool, str]:
        """``/healthz`` of the computation loop: it turned within ``bound`` seconds."""
        return loop_liveness("the computation loop", self.beat, self.clock(), bound, ok="computing")
