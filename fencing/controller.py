"""The fencing loop: read, judge, guard, act, report. One pass at a time (``run_once``).

Each pass starts from scratch: a complete LINSTOR read and a complete view of the Kubernetes
objects, the pure verdicts (``verdict.judge``), then the guards that need the whole picture or
history, then the writes. Nothing is remembered that a restart would need: what is left to do
(delete the pod, then its VolumeAttachments) is re-derived each pass, and memory only ever makes
the controller *more* careful (grace timers, the fail-over budget, the eviction rate limit).

Guards, in order: not the Lease holder -> nothing at all; stale or unsynced data -> every pending
fail-over refused as StaleData; storm (too many storage nodes lost at once) -> StormBreaker; the
pod's fail-over budget spent -> BudgetSpent; eviction rate limit -> RateLimited; ``--dry-run`` ->
Events and logs only. Every refusal is a Warning Event on the pod, a log line and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from linstor_scheduler.linstor.errors import EventsNotSupported

from .actions import KubeActions, Outcome, attachment_matches, has_taint
from .grace import GraceTimers
from .kubeview import KubeView
from .metrics import FencingMetrics
from .observe import (
    LABEL,
    KubeObjects,
    LinstorReader,
    LinstorView,
    build_observed,
    faults,
    pod_state,
    read_linstor,
    storage_nodes,
)
from .verdict import (
    FENCE,
    HEALTHY,
    NOT_OPTED_IN,
    OPTED_OUT,
    REFUSE,
    WAITING,
    NodeState,
    Observed,
    PodDecision,
    PodState,
    judge,
    judge_volume,
)

log = logging.getLogger("linstor_scheduler.fencing")

STALE_DATA = "StaleData"
STORM = "StormBreaker"
BUDGET_SPENT = "BudgetSpent"
RATE_LIMITED = "RateLimited"
EVICTION_BLOCKED = "EvictionBlocked"
ACTION_FAILED = "FencingActionFailed"
VOLUME_STILL_IN_USE = "VolumeStillInUse"
WARN_REPEAT_SECONDS = 300.0  # the same warning on the same pod at most this often (the metric counts every pass)


class Leader(Protocol):
    @property
    def is_leader(self) -> bool: ...
    leader_since: float | None


class Recorder(Protocol):
    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None: ...


@dataclass
class Settings:
    grace_period: float = 30.0
    poll_interval: float = 5.0
    max_staleness: float = 20.0
    storm_share: float = 1 / 3
    evictions_per_minute: float = 10.0
    failover_budget: int = 3
    budget_window: float = 3600.0
    eviction_timeout: float = 60.0
    dry_run: bool = False
    taint: bool = False
    taint_stable_seconds: float = 300.0


@dataclass
class PassReport:
    """What one pass saw and did: the verdict table of ``--once`` and the tests' evidence."""

    at: float
    decisions: list[PodDecision] = field(default_factory=list)
    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, object, outcome)
    guard: str | None = None  # a guard that held every action (NotLeader, StaleData, StormBreaker)
    note: str = ""


class TokenBucket:
    """The eviction rate limit: ``per_minute`` tokens, refilled continuously, burst of the same size."""

    def __init__(self, per_minute: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute)
        self.tokens = self.capacity
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _as_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """List items carry no kind/apiVersion; Events need them in involvedObject."""
    return {"apiVersion": "v1", "kind": "Pod", **obj}


class FencingController:
    def __init__(self, linstor: LinstorReader, kube: KubeView, actions: KubeActions, recorder: Recorder, *,
                 leader: Leader, settings: Settings | None = None, metrics: FencingMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.linstor = linstor
        self.kube = kube
        self.actions = actions
        self.recorder = recorder
        self.leader = leader
        self.settings = settings or Settings()
        self.metrics = metrics or FencingMetrics()
        self.clock = clock
        self.timers = GraceTimers()
        self.view: LinstorView | None = None
        self.read_error: str | None = None
        self._term: float | None = None  # leader_since of the term we act in
        self._bucket = TokenBucket(self.settings.evictions_per_minute, clock())
        self._failovers: dict[str, list[tuple[float, str]]] = {}  # pod key -> [(when, uid)]
        self._evicting: dict[str, float] = {}  # pod uid -> first eviction attempt
        self._warned: dict[tuple[str, str, str], float] = {}
        self._announced: dict[str, tuple[str, str, str]] = {}  # pod uid -> (namespace, name, node): fault timed
        self._stable_since: dict[str, float] = {}  # tainted node -> storage stable since
        self._wake = asyncio.Event()

    # --- one pass --------------------------------------------------------------------------------
    async def run_once(self) -> PassReport:
        started = self.clock()
        leading = self.leader.is_leader
        self.metrics.leader.set(1 if leading else 0)
        if not leading:
            if self._term is not None:
                log.warning("lost the Lease: no more actions; grace timers forgotten")
            self._term = None
            self.timers.reset()
            return PassReport(started, guard="NotLeader", note="not the Lease holder: observing nothing, acting never")
        if self._term != self.leader.leader_since:
            log.info("leading since %.1f: grace timers start fresh, nothing is done before a complete new read",
                     self.leader.leader_since or 0.0)
            self._term = self.leader.leader_since
            self.timers.reset()
            self.view = None

        await self._read_linstor(started)
        try:
            await asyncio.to_thread(self.kube.refresh)
        except Exception as exc:  # a view that cannot refresh is simply not there this pass
            log.warning("Kubernetes view refresh failed: %s", exc)
        kube = self.kube.objects()
        now = self.clock()
        stale = self._staleness(now, kube)
        self.metrics.view_age.set(now - self.view.read_at if self.view else 0.0)
        if self.view is None or kube is None:
            log.warning("no action: %s", stale)
            self.metrics.decisions.labels(REFUSE, STALE_DATA).inc()
            return PassReport(now, guard=STALE_DATA, note=stale or "")

        observed = build_observed(self.view, kube, self.timers.since)
        if stale is None:
            current = faults(observed.resources, observed.nodes)
            new, recovered = self.timers.observe(current, self.view.read_at)
            for res, node in sorted(new):
                log.info("storage fault observed: resource %s on node %s; grace period %.0fs starts", res, node,
                         self.settings.grace_period)
            for res, node in sorted(recovered):
                log.info("storage fault cleared: resource %s on node %s; its grace timer is reset", res, node)
            observed = dataclasses.replace(observed, fault_since=dict(self.timers.since))
        elif self.view is not None and now - self.view.read_at > self.settings.max_staleness and self.timers.since:
            log.warning("blind for more than %.0fs: grace timers reset", self.settings.max_staleness)
            self.timers.reset()

        report = PassReport(now)
        decisions = judge(observed, now, self.settings.grace_period)
        storm = self._storm(observed)
        report.guard = STALE_DATA if stale else (STORM if storm else None)
        report.note = stale or storm or ""
        pods_by_uid = {(p.get("metadata") or {}).get("uid"): p for p in kube.pods}
        final: list[PodDecision] = []
        for decision in decisions:
            decision = self._guard(decision, now, stale, storm)
            raw = pods_by_uid.get(decision.pod.uid) or {}
            decision = self._act_on_pod(decision, raw, kube, now, report)
            final.append(decision)
            self._report(decision, raw, now)
        report.decisions = final
        self._vanished({d.pod.uid for d in final}, now)
        self._detach(observed, kube, final, now, stale, storm, report)
        if self.settings.taint and not stale:
            self._untaint(observed, kube, now, report)
        return report

    async def _read_linstor(self, started: float) -> None:
        try:
            self.view = await read_linstor(self.linstor, started)
            self.read_error = None
            self.metrics.reads.labels("linstor", "ok").inc()
        except Exception as exc:  # LinstorError, garbage, anything: no new view, no action on a guess
            self.read_error = f"LINSTOR read failed: {exc}"
            self.metrics.reads.labels("linstor", "error").inc()
            log.warning("%s", self.read_error)

    def _staleness(self, now: float, kube: KubeObjects | None) -> str | None:
        """Why the data must not be acted on, or None. Also right after winning the Lease."""
        s = self.settings
        if self.read_error:
            return self.read_error
        if self.view is None:
            return "no complete LINSTOR read yet"
        if now - self.view.read_at > s.max_staleness:
            return f"the LINSTOR read took {now - self.view.read_at:.0f}s (limit {s.max_staleness:.0f}s)"
        if self._term is not None and self.view.read_at < self._term:
            return "LINSTOR view predates this leadership term"
        if kube is None:
            return "Kubernetes caches not synced"
        age = self.kube.age()
        if age is None or age > s.max_staleness:
            return f"Kubernetes caches are stale ({'unknown age' if age is None else f'{age:.0f}s'})"
        return None

    def _storm(self, observed: Observed) -> str | None:
        assert self.view is not None
        population = storage_nodes(self.view)
        lost = {node for _, node in faults(observed.resources, observed.nodes)} & population
        lost |= {n for n in population if n in observed.nodes and not observed.nodes[n].online}
        self.metrics.lost_nodes.set(len(lost))
        storm = len(lost) >= 2 and len(lost) >= self.settings.storm_share * max(1, len(population))
        self.metrics.storm_active.set(1 if storm else 0)
        if not storm:
            return None
        return (f"storm breaker: {len(lost)} of {len(population)} storage nodes look lost at once "
                f"({', '.join(sorted(lost))}); the limit is {self.settings.storm_share:.0%}")

    # --- guards --------------------------------------------------------------------------------
    def _refuse(self, decision: PodDecision, reason: str, detail: str) -> PodDecision:
        return dataclasses.replace(decision, verdict=REFUSE, reason=reason, detail=detail)

    def _guard(self, decision: PodDecision, now: float, stale: str | None, storm: str | None) -> PodDecision:
        if decision.verdict == HEALTHY:
            return decision
        if stale:
            return self._refuse(decision, STALE_DATA, f"no action on stale data: {stale}")
        if decision.verdict != FENCE:
            return decision
        if storm:
            return self._refuse(decision, STORM, f"{decision.detail}; held: {storm}")
        s = self.settings
        history = [(t, uid) for t, uid in self._failovers.get(decision.pod.key, []) if now - t < s.budget_window]
        self._failovers[decision.pod.key] = history
        if len(history) >= s.failover_budget and all(uid != decision.pod.uid for _, uid in history):
            return self._refuse(decision, BUDGET_SPENT,
                                f"{decision.detail}; held: pod {decision.pod.key} already failed over {len(history)} "
                                f"times in {s.budget_window / 60:.0f} min (budget {s.failover_budget})")
        return decision

    # --- the pod ---------------------------------------------------------------------------------
    def _act_on_pod(self, decision: PodDecision, raw: dict[str, Any], kube: KubeObjects, now: float,
                    report: PassReport) -> PodDecision:
        if decision.verdict != FENCE:
            return decision
        pod = decision.pod
        try:  # the caches may lag: act only on what the API server says now
            live = self.actions.get_pod(pod.namespace, pod.name)
        except Exception as exc:
            report.actions.append(("pod_read", pod.key, "error"))
            return self._refuse(decision, STALE_DATA, f"no action: cannot read pod {pod.key} now: {exc}")
        if live is None or (live.get("metadata") or {}).get("uid") != pod.uid:
            log.info("pod %s (uid %s) is gone or replaced: nothing to do for it", pod.key, pod.uid)
            return dataclasses.replace(decision, verdict=HEALTHY, reason="PodGone", detail="gone or replaced")
        current = pod_state(live, kube)
        if current.node != pod.node:
            return dataclasses.replace(decision, verdict=HEALTHY, reason="PodMoved", detail="no longer on the node")
        if current.opted_out or not current.opted_in:
            reason = OPTED_OUT if current.opted_out else NOT_OPTED_IN
            return self._refuse(decision, reason, f"node {decision.node} lost storage, but the pod's label or "
                                "annotation now says not to fail it over")
        force = decision.force
        first = self._evicting.get(pod.uid)
        if not force and current.terminating:
            first = self._evicting.setdefault(pod.uid, now)  # evicted earlier (maybe by a previous leader)
        if not force and first is not None:
            if now - first >= self.settings.eviction_timeout:
                force = True  # the bound after which an eviction that does not finish becomes a grace-0 delete
            elif current.terminating:
                report.actions.append(("pod_terminating", pod.key, "waiting"))
                return decision
        if first is None and not self._bucket.take(now):
            return self._refuse(decision, RATE_LIMITED,
                                f"{decision.detail}; held: more than {self.settings.evictions_per_minute:g} "
                                "fail-overs per minute")
        kind = "pod_delete" if force else "pod_evict"
        if self.settings.dry_run:
            report.actions.append((f"dry_run_{kind}", pod.key, "skipped"))
            self.metrics.actions.labels(f"dry_run_{kind}", "skipped").inc()
            return decision
        outcome = (self.actions.delete_pod if force else self.actions.evict_pod)(pod.namespace, pod.name, pod.uid)
        report.actions.append((kind, pod.key, outcome.value))
        self.metrics.actions.labels(kind, outcome.value).inc()
        if outcome is Outcome.DONE:
            if not any(uid == pod.uid for _, uid in self._failovers.get(pod.key, [])):
                self._failovers.setdefault(pod.key, []).append((now, pod.uid))
                if decision.fault_since is not None:
                    self.metrics.fault_to_deletion.observe(max(0.0, now - decision.fault_since))
            if not force:
                self._evicting.setdefault(pod.uid, now)
            else:
                self._evicting.pop(pod.uid, None)
            self.recorder.record(_as_pod(raw or live), "Normal", "FencedPod" if force else "EvictedPod",
                                 f"{'deleted (grace 0)' if force else 'evicted'} from node {decision.node}: "
                                 f"{decision.detail}")
            if self.settings.taint:
                self._taint(decision.node, kube, report)
            return decision
        if outcome is Outcome.THROTTLED and not force:
            self._evicting.setdefault(pod.uid, now)
            return self._refuse(decision, EVICTION_BLOCKED,
                                f"eviction refused (PodDisruptionBudget or API throttling); the pod is deleted with "
                                f"grace 0 after {self.settings.eviction_timeout:.0f}s")
        if outcome in (Outcome.GONE, Outcome.CONFLICT):
            return dataclasses.replace(decision, verdict=HEALTHY, reason="PodGone", detail=f"{kind}: {outcome.value}")
        return self._refuse(decision, ACTION_FAILED, f"{kind} failed ({outcome.value}); retried next pass")

    def _vanished(self, seen: set[str], now: float) -> None:
        """A pod whose fault we were timing left our label-selected view: say why, never skip silently."""
        for uid, (namespace, name, node) in list(self._announced.items()):
            if uid in seen:
                continue
            del self._announced[uid]
            try:
                live = self.actions.get_pod(namespace, name)
            except Exception as exc:
                log.info("pod %s/%s left the view during its grace period; cannot read it: %s", namespace, name, exc)
                continue
            if live is None or (live.get("metadata") or {}).get("uid") != uid:
                log.info("pod %s/%s left node %s during its grace period (deleted or replaced): nothing to do",
                         namespace, name, node)
                continue
            state = pod_state(live, KubeObjects())
            reason = OPTED_OUT if state.opted_out else NOT_OPTED_IN
            self._warn(live, state, reason, f"the {LABEL} label was removed while node {node} was in its grace "
                       "period: the pod is not failed over", now)

    # --- the VolumeAttachments -------------------------------------------------------------------
    def _detach(self, observed: Observed, kube: KubeObjects, decisions: list[PodDecision], now: float,
                stale: str | None, storm: str | None, report: PassReport) -> None:
        """Delete our VolumeAttachments on a lost node once no pod there uses the volume any more.

        Only for volumes of pods that ask for fencing (in whatever state: the StatefulSet's new pod
        is pending, the old one was just removed), only attacher linstor.csi.linbit.com, only that
        node, only that PV, and with the attachment's UID as precondition.
        """
        if stale or storm or not kube.attachments:
            return
        removed = {d.pod.uid: d.node for d in decisions if d.verdict == FENCE}
        raw_by_uid = {(p.get("metadata") or {}).get("uid"): p for p in kube.pods}
        done: set[str] = set()
        for pod in observed.pods:
            if not pod.opted_in or pod.opted_out:
                continue
            for vol in pod.volumes:
                if not vol.resource or not vol.pv:
                    continue
                for va in kube.attachments:
                    name = (va.get("metadata") or {}).get("name") or ""
                    node = (va.get("spec") or {}).get("nodeName") or ""
                    if name in done or not attachment_matches(va, vol.pv, node):
                        continue
                    if node == pod.node and removed.get(pod.uid) != node:
                        continue  # the pod itself still runs there: the pod goes first
                    verdict = judge_volume(observed.resources.get(vol.resource), vol.resource, node, observed, now,
                                           self.settings.grace_period)
                    if verdict.verdict == REFUSE:
                        self._warn(raw_by_uid.get(pod.uid) or {}, pod, verdict.reason,
                                   f"VolumeAttachment {name} of {vol.pv} on node {node} kept: {verdict.detail}", now)
                    if verdict.verdict != FENCE:
                        continue
                    done.add(name)
                    self._delete_attachment(va, pod, vol.claim, vol.pv, node, verdict.detail, raw_by_uid, report)

    def _delete_attachment(self, va: dict[str, Any], pod: PodState, claim: str, pv: str, node: str, why: str,
                           raw_by_uid: dict[Any, dict[str, Any]], report: PassReport) -> None:
        name = (va.get("metadata") or {}).get("name") or ""
        namespace, _, claim_name = claim.partition("/")
        try:
            users = [p for p in self.actions.pods_on_node(node)
                     if (p.get("metadata") or {}).get("namespace") == namespace and not _finished(p)
                     and any((v.get("persistentVolumeClaim") or {}).get("claimName") == claim_name
                             for v in (p.get("spec") or {}).get("volumes") or [])]
        except Exception as exc:
            log.warning("VolumeAttachment %s kept: cannot list the pods on node %s: %s", name, node, exc)
            report.actions.append(("attachment_delete", name, "error"))
            return
        if users:
            names = ", ".join(sorted(f"{(p.get('metadata') or {}).get('name')}" for p in users))
            log.info("VolumeAttachment %s kept: pod(s) %s on node %s still use claim %s", name, names, node, claim)
            report.actions.append(("attachment_delete", name, VOLUME_STILL_IN_USE))
            return
        if self.settings.dry_run:
            report.actions.append(("dry_run_attachment_delete", name, "skipped"))
            self.metrics.actions.labels("dry_run_attachment_delete", "skipped").inc()
            return
        outcome = self.actions.delete_attachment(va)
        report.actions.append(("attachment_delete", name, outcome.value))
        self.metrics.actions.labels("attachment_delete", outcome.value).inc()
        if outcome is Outcome.DONE:
            raw = raw_by_uid.get(pod.uid)
            if raw:
                self.recorder.record(_as_pod(raw), "Normal", "DetachedVolume",
                                     f"VolumeAttachment {name} of {pv} on lost node {node} deleted: {why}")

    # --- taints ----------------------------------------------------------------------------------
    def _taint(self, node: str, kube: KubeObjects, report: PassReport) -> None:
        obj = kube.nodes.get(node)
        if obj is None or has_taint(obj):
            return
        outcome = self.actions.set_taint(obj, True)
        report.actions.append(("taint", node, outcome.value))
        self.metrics.actions.labels("taint", outcome.value).inc()
        self._stable_since.pop(node, None)

    def _untaint(self, observed: Observed, kube: KubeObjects, now: float, report: PassReport) -> None:
        lost = {node for _, node in observed.fault_since}
        for name, obj in kube.nodes.items():
            if not has_taint(obj):
                self._stable_since.pop(name, None)
                continue
            state: NodeState | None = observed.nodes.get(name)
            if name in lost or state is None or not state.online:
                self._stable_since.pop(name, None)
                continue
            since = self._stable_since.setdefault(name, now)
            if now - since < self.settings.taint_stable_seconds or self.settings.dry_run:
                continue
            outcome = self.actions.set_taint(obj, False)
            report.actions.append(("untaint", name, outcome.value))
            self.metrics.actions.labels("untaint", outcome.value).inc()
            if outcome.reached:
                self._stable_since.pop(name, None)

    # --- reporting -------------------------------------------------------------------------------
    def _report(self, decision: PodDecision, raw: dict[str, Any], now: float) -> None:
        self.metrics.decisions.labels(decision.verdict, decision.reason or "none").inc()
        pod = decision.pod
        if decision.verdict == HEALTHY:
            self._announced.pop(pod.uid, None)
            return
        if decision.verdict == WAITING:
            if pod.uid not in self._announced:
                self._announced[pod.uid] = (pod.namespace, pod.name, decision.node)
                self.recorder.record(_as_pod(raw), "Normal", "StorageFaultObserved",
                                     f"{decision.detail}; the pod fails over after {self.settings.grace_period:.0f}s "
                                     "unless the storage recovers")
            return
        if decision.verdict == REFUSE:
            self._warn(raw, pod, decision.reason, decision.detail, now)
        elif decision.verdict == FENCE and self.settings.dry_run:
            self._warn(raw, pod, "DryRun", f"would fail over (--dry-run): {decision.detail}", now, event="Normal")

    def _warn(self, raw: dict[str, Any], pod: PodState, reason: str, detail: str, now: float,
              event: str = "Warning") -> None:
        key = (pod.uid, reason, detail)
        last = self._warned.get(key)
        if last is not None and now - last < WARN_REPEAT_SECONDS:
            return
        self._warned[key] = now
        if len(self._warned) > 4096:
            for old in sorted(self._warned, key=self._warned.__getitem__)[:1024]:
                del self._warned[old]
        if raw:
            self.recorder.record(_as_pod(raw), event, reason, detail)
        else:
            log.warning("%s %s: %s", reason, pod.key, detail)

    # --- the service loop ------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    async def follow_promotions(self, client: Any) -> None:
        """Poll early when DRBD promotion changes (a replica lost its peer); polling never stops."""
        delay = 1.0
        while True:
            try:
                async for _event, _data in client.events("/v1/events/drbd/promotion"):
                    delay = 1.0
                    self.wake()
            except EventsNotSupported:
                log.info("LINSTOR offers no promotion event stream: polling only")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("promotion event stream ended (%s); reconnecting in %.0fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:  # one bad pass must not end the controller
                log.exception("fencing pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waits, timeout=self.settings.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()


def _finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def render_table(report: PassReport) -> str:
    """The verdict table of ``fencing --once``."""
    rows = [("POD", "NODE", "VERDICT", "REASON", "DETAIL")]
    for d in report.decisions:
        rows.append((d.pod.key, d.node, d.verdict, d.reason or "-", d.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    if report.guard:
        lines.append(f"guard: {report.guard}: {report.note}")
    for kind, obj, outcome in report.actions:
        lines.append(f"action: {kind} {obj}: {outcome}")
    if not report.decisions:
        lines.append("(no pod labelled linstor.csi.linbit.com/on-storage-lost is scheduled on a node)")
    return "\n".join(lines)
