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

    def run_once(self) -> Summary | None:
        """One computation if we lead and have state; withdraws the figures if we do not lead."""
        leading = bool(self.leader.is_leader)
        self.metrics.leader.set(1 if leading else 0)
        if not leading:
            self.metrics.withdraw()
            return None
        if not self.holder.ready or not self.pods.synced.is_set():
            return None
        state = self.holder.state
        summary = summarize(locate_all(self.pods.items(), state))
        age = None if state.synced_at == float("-inf") else max(0.0, self.clock() - state.synced_at)
        self.metrics.publish(summary, age)
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
