"""The locality exporter's loop: the extender's state (its own Syncer) plus pod records in, metrics out.

Runs in every replica; only the Lease holder computes and exports. The LINSTOR/Kubernetes index is
the extender's ``ClusterState`` built by the extender's ``Syncer``, so "local" here is what the
extender scores as local. Pods are kept as ``PodRecord`` (pods.py), claims and volumes slimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.measured import age_since
from scheduler_extender.judge import StateHolder

from .classify import Summary, summarize
from .metrics import LocalityMetrics
from .pods import locate_all

log = logging.getLogger("linstor_scheduler.locality")


class LocalityExporter:
    def __init__(self, holder: StateHolder, pods: Any, metrics: LocalityMetrics, leader: Any, *,
                 interval: float = 30.0, clock: Callable[[], float] = boottime) -> None:
        self.holder, self.pods, self.metrics, self.leader = holder, pods, metrics, leader
        self.interval, self.clock = interval, clock
        self.last: Summary | None = None
        self.last_at: float | None = None
        self.figures_from: float | None = None  # synced_at of the state the exported figures come from
        metrics.bind_age(self.figures_age)

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
        state = self.holder.state
        summary = summarize(locate_all(self.pods.items(), state))
        self.metrics.publish(summary)
        self.figures_from = state.synced_at
        if self.last is None or (summary.pods, summary.local) != (self.last.pods, self.last.local):
            log.info("locality: %d of %d pods local (%.0f%%)", summary.local, summary.pods, summary.share * 100)
        self.last, self.last_at = summary, self.clock()
        return summary

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # a bad object must not end the exporter: log it and try again next round
                log.exception("locality computation failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    def ready(self) -> tuple[bool, str]:
        if not self.holder.ready:
            return False, "no LINSTOR/Kubernetes state yet"
        if not self.leader.is_leader:
            return True, "standby: the Lease holder exports"
        if self.last_at is None:
            return False, "leading; first computation pending"
        return True, f"leading; last computed {self.clock() - self.last_at:.0f}s ago"
