"""The node agent's pass: scan LVM, read LINSTOR, plan, apply, report. All I/O of ``sync-node``.

A pass reads before it writes and writes only what its plan says; any read that fails ends the
pass without a write (``PassResult.error``). At steady state a pass makes two LINSTOR reads
(the node, its storage pools) and no writes; the node's resources are read only when a pool we
created lost its tag. Problems are reported when they appear or change (log line, Warning Event on
the Node, metric), and again every ``repeat_seconds`` while they last, not on every pass.

A write LINSTOR refuses (or whose answer never came) is that pool's problem, not the agent's: the
pool waits out its own doubling delay (``PoolBackoff``, capped at ``max_backoff``) while the other
pools and the passes go on at ``interval``, and ``/readyz`` stays ready, naming the pool LINSTOR
refuses and why. A create whose answer was lost is settled by reading the node's pools back: the
pool there as we meant it is done, not an error and not a second POST.

Kubernetes is only where the Events go: ``EventRecorder.record`` queues and returns, so an API server
that hangs or refuses costs Events (queued, then dropped and counted), never a pass. LINSTOR or LVM
failing ends the pass without a write; the loop retries with a doubling wait (capped at
``max_backoff``). The probes are two different questions (``readiness``, ``liveness``): is the last
good read recent enough (and if not, why and since when), and does the loop still turn (a pass that
never returns, a hung ``vgs`` in uninterruptible sleep, is what a restart can cure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from linstor_scheduler.aio import wait_set
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.linstor.client import LinstorClient
from linstor_scheduler.linstor.errors import LinstorError, LinstorUnavailable
from linstor_scheduler.measured import age_since

from .lvm import LvmError, LvmSource
from .metrics import SyncMetrics
from .plan import CREATE, PRUNE, STATES, NodePlan, PlanItem, orphan_candidates, plan_node
from .tags import desired_pools

log = logging.getLogger("linstor_scheduler.sync_node")


@dataclass
class PoolBackoff:
    """A pool whose last write LINSTOR refused: retried no sooner than ``retry_at`` (clock())."""

    failures: int
    retry_at: float
    why: str


@dataclass
class PassResult:
    plan: NodePlan | None = None
    applied: list[PlanItem] = field(default_factory=list)
    failed: list[tuple[PlanItem, str]] = field(default_factory=list)  # refused now (the pool backs off)
    deferred: list[tuple[PlanItem, str]] = field(default_factory=list)  # still backing off: not sent
    error: str | None = None  # the pass could not read what it needs: nothing was written
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """The reads worked: a refused write is its pool's problem (``failed``), not the agent's."""
        return self.error is None

    @property
    def in_sync(self) -> bool:
        """After the pass: no problem left and every write done (a dry run: nothing to write either)."""
        if not self.ok or self.plan is None or self.plan.problems:
            return False
        return not self.plan.writes if self.dry_run else len(self.applied) == len(self.plan.writes)


class NodeAgent:
    def __init__(self, node_name: str, lvm: LvmSource, linstor: LinstorClient, *, prune: bool = False,
                 dry_run: bool = False, events: Any = None, metrics: SyncMetrics | None = None,
                 repeat_seconds: float = 600.0, clock: Callable[[], float] = boottime,
                 kube_node_name: str | None = None, pass_bound: float = 300.0) -> None:
        self.node_name = node_name  # in LINSTOR
        self.kube_node_name = kube_node_name or node_name  # the Node our Events go to
        self.lvm = lvm
        self.linstor = linstor
        self.prune, self.dry_run = prune, dry_run
        self.events = events  # an EventRecorder, or None (no Kubernetes: --once from a shell)
        self.metrics = metrics or SyncMetrics()
        self.repeat_seconds = repeat_seconds
        self.clock = clock
        self._reported: dict[tuple[str, str | None, str], float] = {}
        self.last_result: PassResult | None = None
        self.last_success: float | None = None
        self.read_at: float | None = None  # clock() at the start of the last pass whose reads all worked
        self.failing_since: float | None = None  # clock() at the start of the first failed pass in a row
        self.pass_bound = pass_bound  # the longest a pass may run (its reads' and writes' own deadlines)
        self.pass_started: float | None = None  # clock() when the running pass began; None between passes
        self.next_pass_at: float | None = None  # clock() when the loop's next pass is due
        self.interval, self.max_backoff = 30.0, 300.0  # set by run(); the per-pool backoff uses them too
        self.refused: dict[str, PoolBackoff] = {}  # pools whose last write LINSTOR refused
        self.metrics.bind_age(lambda: age_since(self.clock, self.read_at))

    async def run_pass(self) -> PassResult:
        started = time.perf_counter()
        self.pass_started = self.clock()
        try:
            result = await self._pass()
        finally:
            began, self.pass_started = self.pass_started, None
        self.last_result = result
        outcome = "error" if result.error else ("failed" if result.failed or result.deferred else "ok")
        self.metrics.passes.labels(outcome).inc()
        self.metrics.pass_seconds.observe(time.perf_counter() - started)
        if result.ok:
            self.last_success = self.clock()
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = began
        return result

    def readiness(self, bound: float) -> tuple[bool, str]:
        """For ``/readyz``: see ``pass_readiness``."""
        last = self.last_result
        error = None if last is None or last.ok else last.error
        ready, text = pass_readiness(self.clock(), self.last_success, self.failing_since, error, bound)
        if self.refused:
            text += "; LINSTOR refuses " + "; ".join(f"pool {pool} ({b.failures} time(s)): {b.why}"
                                                       for pool, b in sorted(self.refused.items()))
        return ready, text

    def liveness(self) -> tuple[bool, str]:
        """For ``/healthz``: see ``loop_liveness``."""
        return loop_liveness(self.clock(), self.pass_started, self.next_pass_at, self.pass_bound)

    async def _pass(self) -> PassResult:
        started = self.clock()
        try:
            inventory = await asyncio.to_thread(self.lvm.scan)
        except LvmError as exc:
            log.warning("LVM scan failed, nothing done this pass: %s", exc)
            return PassResult(error=f"LVM: {exc}")
        tags = desired_pools(inventory)
        try:
            nodes = await self.linstor.get_nodes([self.node_name])
            # LINSTOR compares node names case-insensitively (and filters so): take its spelling
            node = next((n for n in nodes if n.name.upper() == self.node_name.upper()), None)
            if node is not None and node.name != self.node_name:
                log.info("LINSTOR spells node %s as %s: using its spelling", self.node_name, node.name)
                self.node_name = node.name
            pools = await self.linstor.get_storage_pools([self.node_name])
            orphans = orphan_candidates(tags, pools)
            users = await self._pool_users(orphans) if orphans else None
        except LinstorError as exc:
            log.warning("LINSTOR read failed, nothing done this pass: %s", exc)
            return PassResult(error=f"LINSTOR: {exc}")
        plan = plan_node(self.node_name, tags, node, pools, pool_users=users, prune=self.prune)
        self.read_at = started
        self._report(plan)
        result = PassResult(plan=plan, dry_run=self.dry_run)
        if self.dry_run:
            return result
        for item in plan.writes:
            pool = item.pool or ""
            waiting = self.refused.get(pool)
            if waiting is not None and self.clock() < waiting.retry_at:
                result.deferred.append((item, f"LINSTOR refused it {waiting.failures} time(s), next try in "
                                              f"{waiting.retry_at - self.clock():.0f}s: {waiting.why}"))
                continue
            try:
                await self._write(item)
            except LinstorError as exc:
                why = str(exc)
                failures = (waiting.failures if waiting else 0) + 1
                delay = retry_delay(failures, self.interval, self.max_backoff)
                self.refused[pool] = PoolBackoff(failures, self.clock() + delay, why)
                log.warning("%s of pool %s on %s refused (try %d, next in %.0fs): %s", item.action, pool,
                            self.node_name, failures, delay, why)
                self.metrics.writes.labels(item.action, "error").inc()
                result.failed.append((item, why))
                self._event("Warning", "PoolSyncFailed", f"{item.message}: LINSTOR refused it: {why}; this pool is "
                            f"tried again in {delay:.0f}s, the others go on")
                continue
            self.refused.pop(pool, None)
            self.metrics.writes.labels(item.action, "ok").inc()
            result.applied.append(item)
            log.info("%s", item.message)
            self._event("Normal", item.reason, f"{item.message} (LINSTOR node {self.node_name})")
        for pool in [p for p in self.refused if p not in {i.pool for i in plan.writes}]:
            del self.refused[pool]  # nothing to write for it any more (the tag went, or it is there now)
        return result

    async def _write(self, item: PlanItem) -> None:
        """One create or prune. A create sent whose answer never came is settled by reading the node's
        pools: the pool there with our marker and its backing means it was done."""
        if item.action == PRUNE:
            await self.linstor.delete_storage_pool(self.node_name, item.pool or "")
            return
        assert item.action == CREATE
        try:
            await self.linstor.create_storage_pool(self.node_name, item.pool or "", item.provider_kind,
                                                   dict(item.props))
        except LinstorUnavailable:
            pools = await self.linstor.get_storage_pools([self.node_name])
            there = next((p for p in pools if p.storage_pool_name == item.pool), None)
            if there is None or any(there.props.get(k) != v for k, v in item.props.items()):
                raise
            log.info("create of pool %s: the answer was lost, but LINSTOR has it as meant: done", item.pool)

    async def _pool_users(self, pools: list[str]) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {p: [] for p in pools}
        async for res in self.linstor.iter_resources(nodes=[self.node_name]):
            for vol in res.volumes:
                if vol.storage_pool_name in users and res.name not in users[vol.storage_pool_name]:
                    users[vol.storage_pool_name].append(res.name)
        return users

    def _report(self, plan: NodePlan) -> None:
        counts: dict[str, int] = {}
        for item in plan.items:
            counts[item.action] = counts.get(item.action, 0) + 1
        self.metrics.pools.publish({(action,): counts.get(action, 0) for action in STATES})
        now = self.clock()
        current = set()
        for item in plan.reported:
            key = (item.reason, item.pool, item.message)
            current.add(key)
            last = self._reported.get(key)
            if last is not None and now - last < self.repeat_seconds:
                continue
            self._reported[key] = now
            self.metrics.problems.labels(item.reason).inc()
            log.warning("%s: %s", item.reason, item.message)
            self._event("Warning", item.reason, item.message)
        for key in [k for k in self._reported if k not in current]:
            log.info("resolved: %s: %s", key[0], key[2])
            del self._reported[key]

    def _event(self, event_type: str, reason: str, message: str) -> None:
        if self.events is None or self.dry_run:
            return
        # kubelet's convention for Node events (uid = node name): `kubectl describe node` shows them
        name = self.kube_node_name
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": name}}
        self.events.record(node, event_type, reason, message[:1000])

    async def run(self, stop: asyncio.Event, *, interval: float = 30.0, max_backoff: float = 300.0) -> None:
        """Pass after pass until ``stop``: ``interval`` apart, with capped backoff after failures."""
        failures = 0
        self.interval, self.max_backoff = interval, max_backoff
        while not stop.is_set():
            try:
                result = await self.run_pass()
            except Exception:  # a bug must not kill the agent: log it and try again later
                log.exception("sync pass crashed")
                result = PassResult(error="crashed")
                self.last_result = result
            failures = 0 if result.ok else failures + 1
            delay = retry_delay(failures, interval, max_backoff)
            self.next_pass_at = self.clock() + delay
            self.metrics.consecutive_failures.set(failures)
            await wait_set(stop, delay)


# --- the decisions behind the loop and its probes (pure: tests call them with any clock) -----------
def retry_delay(failures: int, interval: float, max_backoff: float) -> float:
    """``interval`` after a good pass; after ``failures`` in a row, doubled per failure, capped."""
    return interval if failures == 0 else min(max_backoff, interval * 2 ** min(failures - 1, 10))


def readiness_bound(interval: float, max_backoff: float) -> float:
    """How old the last good pass may be while ``/readyz`` still answers 200: three passes, and never
    less than the longest back-off plus one pass (a failing LINSTOR waits that long between tries)."""
    return max(3 * interval, max_backoff + interval)


def pass_readiness(now: float, last_success: float | None, failing_since: float | None, error: str | None,
                   bound: float) -> tuple[bool, str]:
    """Ready while the last good pass is younger than ``bound``; the text always says why passes fail
    and since when, so ``kubectl describe pod`` explains itself before the probe fails."""
    failing = f"; failing for {now - failing_since:.0f}s: {error}" if failing_since is not None and error else ""
    if last_success is None:
        return False, "no successful pass yet" + failing
    age = now - last_success
    if age > bound:
        return False, f"last successful pass {age:.0f}s ago (bound {bound:.0f}s){failing}"
    return True, f"last successful pass {age:.0f}s ago{failing}"


def loop_liveness(now: float, pass_started: float | None, next_pass_at: float | None,
                  pass_bound: float) -> tuple[bool, str]:
    """The loop turns while a running pass is younger than ``pass_bound`` and, between passes, the
    next one is no later than ``pass_bound`` past its due time. Failing passes are readiness."""
    if pass_started is not None:
        running = now - pass_started
        if running > pass_bound:
            return False, f"a pass has been running for {running:.0f}s (bound {pass_bound:.0f}s): stuck"
        return True, f"pass running for {running:.0f}s"
    if next_pass_at is not None and now > next_pass_at + pass_bound:
        return False, f"the next pass is {now - next_pass_at:.0f}s overdue (bound {pass_bound:.0f}s): the loop stopped"
    return True, "passes turning"
