"""The fencing loop: read -> judge -> plan -> execute, then report. One pass at a time (``run_once``).

Each pass starts from scratch: a complete LINSTOR read and a complete view of the Kubernetes
objects (read), the pure verdicts (``verdict.judge``: judge), the guards (``guards.py``, in their
order: stale data, storm, budget, rate limit, dry run) on each decision, and the writes as intents
(``intents.py``: plan; a pod's removal is planned from a live read of it, the caches may lag), which
every guard sees, then the one writer (``executor.py``: execute); what is said about it all is
``notices.py``'s. Nothing is remembered that a restart would need: what is left to do (taint the
node, delete the pod, then its VolumeAttachments) is re-derived each pass, memory only ever makes
the controller *more* careful (the fail-over budget, the eviction rate limit), and the grace timers
are handed to the next leader with the Lease (``handover.py``), where its own first observation
agrees.

What the pass checked once is checked again before *each* write, at the moment it is made: the
Lease is still ours (monotonic clock, with margin), the evidence is younger than the bound, the
node's storage is still lost (a small LINSTOR read) and the pod (its UID) is still on the lost
node. Every Kubernetes call runs in a worker thread with a timeout (the kubernetes client is
synchronous), reads and writes in pools of their own (``kube.calls.KubeCalls``): a hung call ends
the call, never the loop, and never starves the other kind. A write whose answer was lost (no HTTP
status) is checked by a live read, and while its effect is not seen it is in doubt, never sent twice
(executor.py).

The LINSTOR read of a pass ends within ``--max-staleness`` (evidence that took longer would be
stale anyway), so a pass always ends: ``liveness`` says when the loop made no progress for longer
than a pass can take, ``linstor_readiness`` when the Lease holder's LINSTOR view is older than the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from linstor_scheduler.aio import within
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.gcpolicy import LEAVE, GcPolicy
from linstor_scheduler.health import loop_liveness
from linstor_scheduler.kube import objects
from linstor_scheduler.kube.calls import KubeCalls, is_transport_error
from linstor_scheduler.linstor.errors import EventsNotSupported
from linstor_scheduler.measured import age_since
from linstor_scheduler.volumes import pod_claims

from . import handover
from . import intents as plan
from .actions import TAINT_KEY, KubeActions, Outcome, WriteAnswer, has_taint, index_attachments
from .executor import IN_DOUBT, STORAGE_RECOVERED, Executor, Recorder
from .grace import GraceTimers
from .guards import (
    BUDGET_SPENT,
    RATE_LIMITED,
    STALE_DATA,
    STORM,
    BudgetGuard,
    DryRunGuard,
    GuardContext,
    NoControllerGuard,
    RateLimitGuard,
    Refusal,
    StaleDataGuard,
    StormGuard,
    UnfencedStorageGuard,
    apply,
    hold,
    lost_storage_nodes,
    storm_sentence,
)
from .intents import Intent
from .kubeview import FencingKubeView
from .metrics import FencingMetrics
from .notices import Notices, as_pod
from .observe import (
    LABEL,
    LABELLED,
    KubeObjects,
    LinstorReader,
    LinstorView,
    build_observed,
    faults,
    linstor_nodes,
    no_longer_lost,
    pod_state,
    read_linstor,
    read_node_storage,
    resource_states,
    storage_nodes,
)
from .records import node_object
from .verdict import (
    FENCE,
    HEALTHY,
    NODE_UNKNOWN_TO_LINSTOR,
    NOT_OPTED_IN,
    OPTED_OUT,
    REFUSE,
    WAITING,
    Observed,
    PodDecision,
    grace_due,
    judge,
)

log = logging.getLogger("linstor_scheduler.fencing")

__all__ = ["BUDGET_SPENT", "RATE_LIMITED", "STALE_DATA", "STORM", "FencingController", "PassReport", "Settings"]

NOT_LEADER = "NotLeader"
EVICTION_BLOCKED = "EvictionBlocked"
EVICTION_CONFLICT = "EvictionConflict"
ACTION_FAILED = "FencingActionFailed"
VOLUME_STILL_IN_USE = "VolumeStillInUse"
TAINT_FAILED = "TaintFailed"
PASS_SLACK = 30.0  # seconds of margin on the longest a pass may go without progress (as the informers')
T = TypeVar("T")


class Leader(Protocol):
    @property
    def is_leader(self) -> bool: ...
    leader_since: float | None


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
    taint_stable_seconds: float = 60.0
    select: str = LABELLED  # --select: labelled pods only, or every pod but those labelled keep
    fail_over_unsafe_pods: bool = False
    taint_max_seconds: float = 300.0  # our taint with no fail-over under way on its node: removed after this
    api_timeout: float = 10.0  # one Kubernetes call (connect + read), seconds


@dataclass
class PassReport:
    """What one pass saw and did: the verdict table of ``--once`` and the tests' evidence."""

    at: float
    decisions: list[PodDecision] = field(default_factory=list)
    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, object, outcome)
    guard: str | None = None  # a guard that held every action (NotLeader, StaleData, StormBreaker)
    note: str = ""


class FencingController:
    def __init__(self, linstor: LinstorReader, kube: FencingKubeView, actions: KubeActions, recorder: Recorder, *,
                 leader: Leader, settings: Settings | None = None, metrics: FencingMetrics | None = None,
                 clock: Callable[[], float] = boottime, calls: KubeCalls | None = None,
                 wall_clock: Callable[[], float] = time.time, gc_policy: GcPolicy = LEAVE) -> None:
        """``gc_policy``: what the process's collector is told around each LINSTOR read and after each
        pass (``linstor_scheduler.gcpolicy``; the service's wiring gives ``SERVICE``, anything else
        leaves the collector alone)."""
        self.linstor = linstor
        self.kube = kube
        self.actions = actions
        self.recorder = recorder
        self.leader = leader
        self.settings = settings or Settings()
        self.metrics = metrics or FencingMetrics()
        self.clock = clock
        self.wall_clock = wall_clock  # only to hand the grace timers over with the Lease (handover.py)
        self.calls = calls or KubeCalls(self.settings.api_timeout)
        self.gc_policy = gc_policy
        self.beat = clock()  # the pass loop's last progress (liveness)
        self.metrics.bind_view_age(self.view_age)
        self.timers = GraceTimers()
        self.view: LinstorView | None = None
        self.read_error: str | None = None
        self._term: float | None = None  # leader_since of the term we act in
        self._late = False  # the Lease renewal of this term is late: said once
        s = self.settings
        self.budget = BudgetGuard(s.failover_budget, s.budget_window)
        self.rate = RateLimitGuard(s.evictions_per_minute, clock())
        # the pod's own rules: on its decision, and again on the live pod right before its removal
        self.pod_rules = (NoControllerGuard(), UnfencedStorageGuard(s.fail_over_unsafe_pods))
        self.guards = (StaleDataGuard(), StormGuard(), *self.pod_rules, self.budget, self.rate,
                       DryRunGuard(s.dry_run))
        self.executor = Executor(actions, self, recorder, self.metrics, clock=clock,
                                 preconditions=self._write_refused, storage=self._storage_back, done=self._done)
        self.notices = Notices(self.executor.say, self.metrics, s.grace_period)
        self.metrics.in_doubt.set_function(lambda: len(self.executor.in_doubt))
        self._raw: dict[Any, dict[str, Any]] = {}  # this pass's labelled pods by UID
        self._ctx = GuardContext(clock(), None, None)  # this pass's, for the guards on each intent
        self._handover: str | None = None  # the predecessor's grace timers, until this term's first observation
        self._seen_linstor: float | None = None  # clock() of the last pass with a fresh LINSTOR read
        self._seen_kube: float | None = None  # ... and with fresh Kubernetes objects
        self._evicting: dict[str, float] = {}  # pod uid -> first eviction sent (whatever its answer)
        self._eviction_answer: dict[str, str] = {}  # pod uid -> the last eviction's answer
        self._taint_wanted: dict[str, tuple[str, ...]] = {}  # node -> the lost resources a removal was for
        self._unanswered: str | None = None  # this pass: a live read the API server did not answer
        # Pods whose removal was sent in this fault, whatever the answer (429, 5xx, no answer): asking
        # again is not a new fail-over, so the rate limit does not count it again.
        self._attempted: set[str] = set()
        self._not_before: dict[tuple[str, str], float] = {}  # (pod uid, kind) -> no new attempt before (429)
        self._stable_since: dict[str, float] = {}  # tainted node -> storage stable since
        self._replica_counts: tuple[Any, dict[str, int]] | None = None  # (view, node -> replicas there)
        # tainted node -> the last pass that wanted a fail-over there (a pod removal or a detach), or
        # when this instance first saw the taint: a taint with nothing behind it for --taint-max-seconds
        # is removed (the storage's own DaemonSet pods may not tolerate it: piraeus-operator #561, #825)
        self._taint_backed: dict[str, float] = {}
        self._storm = False
        self._wake = asyncio.Event()
        self._promoted: set[str] = set()  # resources with a DRBD promotion change since the last read
        self._passes = 0
        self._grace_due: float | None = None  # when the first pod waiting out its grace turns (clock())
        self._loop: asyncio.AbstractEventLoop | None = None  # run_forever's, for wakes from other threads
        self.promotion_events = 0

    # --- every Kubernetes call: in a thread of its pool, with a deadline -----------------------
    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """A live read (retried once after a transport error, within its deadline); every call that
        ends, well or not, is progress of the pass."""
        try:
            return await self.calls.read(fn, *args)
        finally:
            self.beat = self.clock()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._read(fn, *args)

    async def send(self, fn: Callable[..., T], *args: Any) -> T:
        """A write, sent once (the executor's)."""
        try:
            return await self.calls.write(fn, *args)
        finally:
            self.beat = self.clock()

    # --- one pass --------------------------------------------------------------------------------
    async def run_once(self) -> PassReport:
        started = self.beat = self.clock()
        self._unanswered = None
        self._grace_due = None  # set again only by a pass that judged pods
        leading = self.leader.is_leader
        self.metrics.leader.set(1 if leading else 0)
        if not leading and self._term is not None and self.leader.leader_since == self._term:
            # A renewal is late (slow answers), and the elector still holds this term: were it lost, its
            # step would have said so (leader_since None), and no one can have led meanwhile. Nothing
            # is done until the renewal lands; the term and its timers stay (a lapse longer than the
            # bound restarts the timers all the same: blind past the bound, _observe).
            if not self._late:
                log.warning("the Lease renewal is late: every action held until it is renewed")
            self._late = True
            return PassReport(started, guard=NOT_LEADER, note="the Lease renewal is late: acting never until then")
        self._late = False
        if not leading:
            if self._term is not None:
                log.warning("lost the Lease: no more actions; grace timers forgotten")
            self._term = None
            self.timers.reset()
            self.metrics.withdraw()
            report = PassReport(started, guard=NOT_LEADER, note="not the Lease holder: observing nothing, acting never")
            if self.executor.in_doubt:
                # Writes this instance sent as leader whose answers were lost (the stall that lost an
                # answer often loses the renewal too): reading what they did is no action, and no other
                # instance can account them. Nothing is sent again.
                await self.executor.settle(report)
            return report
        if self._term != self.leader.leader_since:
            self._handover = (getattr(self.leader, "inherited", None) or {}).get(handover.ANNOTATION)
            wall, skew, max_skew = self._predecessor_clock()
            if skew is not None and skew > max_skew:
                wall -= skew  # the predecessor's clock was behind: its fail-overs look younger, never older
            self.budget.merge(handover.inherit_budget(self._handover, started, wall))
            log.info("leading since %.1f: grace timers start fresh (or continue the predecessor's where this "
                     "term's first read agrees: %s), nothing is done before a complete new read",
                     self.leader.leader_since or 0.0, "a record was handed over" if self._handover else "none")
            self._term = self.leader.leader_since
            self.timers.reset()
            self.view = None
            self.metrics.withdraw()
            self._seen_linstor = self._seen_kube = started

        await self._read_linstor(started)
        try:
            await self._read(self.kube.refresh)
        except Exception as exc:  # a view that cannot refresh is simply not there this pass
            log.warning("Kubernetes view refresh failed: %s", exc)
        kube = self.kube.objects()
        now = self.clock()
        stale = self._staleness(now, kube)
        storm = self._observe(now, kube)
        if self.view is None or kube is None:
            log.warning("no action: %s", stale)
            self.metrics.decisions.labels(REFUSE, STALE_DATA).inc()
            return PassReport(now, guard=STALE_DATA, note=stale or "")

        observed = build_observed(self.view, kube, self.timers.since, self.settings.select)
        report = PassReport(now, guard=STALE_DATA if stale else (STORM if storm else None), note=stale or storm or "")
        self.executor.begin_pass()
        await self.executor.settle(report)  # writes of earlier passes whose answers were lost
        pods_by_uid = self._raw = {objects.uid(p): p for p in kube.pods}
        ctx = self._ctx = GuardContext(now, stale, storm, frozenset(self._evicting) | frozenset(self._attempted))
        final: list[PodDecision] = []
        decisions = judge(observed, now, self.settings.grace_period)
        self.metrics.unknown_nodes.set(len({d.node for d in decisions if d.reason == NODE_UNKNOWN_TO_LINSTOR}))
        for decision in decisions:
            raw = pods_by_uid.get(decision.pod.uid) or {}
            if decision.verdict in (HEALTHY, WAITING):
                # The storage is back, or a fault is timed afresh: an eviction tried in an earlier fault
                # is over. A new fault starts again with the Eviction API (and its PDB), not grace 0.
                self._evicting.pop(decision.pod.uid, None)
                self._eviction_answer.pop(decision.pod.uid, None)
                self._attempted.discard(decision.pod.uid)
                for kind in plan.REMOVALS:
                    self._not_before.pop((decision.pod.uid, kind), None)
            refusal = apply(self.guards, decision, ctx)
            if refusal is None and decision.verdict == FENCE:
                self._taint_backed[decision.node] = now  # a fail-over under way on this node
            if refusal is not None and not refusal.holds_verdict:
                decision = dataclasses.replace(decision, verdict=REFUSE, reason=refusal.reason, detail=refusal.detail)
            elif refusal is not None:  # dry run: what would happen, said as a Normal Event, nothing written
                self.notices.warn(raw, decision.pod, refusal.reason, refusal.detail, now, event=refusal.event_type)
                kind = "pod_delete" if decision.force else "pod_evict"
                report.actions.append((f"dry_run_{kind}", decision.pod.key, "skipped"))
                self.metrics.actions.labels(f"dry_run_{kind}", "skipped").inc()
            else:
                took_token = decision.verdict == FENCE and decision.pod.uid not in ctx.retrying
                decision = await self._act_on_pod(decision, raw, kube, report)
                if took_token and decision.pod.uid not in self._attempted:
                    self.rate.refund()  # nothing sent for it: the rate limit counts fail-overs made
            final.append(decision)
            self.notices.decision(decision, raw, now, self._term)
        report.decisions = final
        self._grace_due = grace_due(final, self.settings.grace_period)
        self._attempted &= {d.pod.uid for d in final}  # gone pods are forgotten
        await self._vanished({d.pod.uid for d in final}, now)
        if not stale and not storm:
            await self._retaint(kube, report)
            await self._detach(observed, kube, final, now, ctx, report)
            await self._untaint(observed, kube, now, ctx, report)
        return report

    def view_age(self) -> float | None:
        """Seconds since this term's last complete LINSTOR read; None on a standby or before that read."""
        if self._term is None or self.view is None:
            return None
        return age_since(self.clock, self.view.read_at)

    def linstor_readiness(self) -> tuple[bool, str]:
        """For ``/readyz``: the Lease holder's LINSTOR view is younger than ``--max-staleness``. Until
        the first complete read of a term, the term's own age counts (a leader that never read is
        blind from the moment it won). A standby reads no LINSTOR: nothing to be stale."""
        if self._term is None:
            return True, "standby: LINSTOR is read by the Lease holder"
        bound = self.settings.max_staleness
        read_at = self.view.read_at if self.view is not None else None
        age = max(0.0, self.clock() - (read_at if read_at is not None else self._term))
        if age <= bound:
            return True, f"LINSTOR view {age:.0f}s old"
        why = self.read_error or ("no complete LINSTOR read in this leadership term" if read_at is None
                                  else "no LINSTOR read since")
        return False, f"LINSTOR view {age:.0f}s old (bound {bound:.0f}s): {why}"

    def liveness_bound(self) -> float:
        """The longest a working pass loop goes without progress: the wait between passes, the LINSTOR
        read (ended at ``--max-staleness``) or one Kubernetes call, with a margin."""
        s = self.settings
        return s.poll_interval + max(s.max_staleness, s.api_timeout + 1.0) + PASS_SLACK

    def liveness(self) -> tuple[bool, str]:
        """For ``/healthz``: the pass loop made progress within its bound (a pass began or ended, a
        LINSTOR read or a Kubernetes call ended). Failing or refusing is progress; hanging is not."""
        return loop_liveness("fencing pass loop", self.beat, self.clock(), self.liveness_bound(),
                             ok="fencing pass loop running")

    async def _read_linstor(self, started: float) -> None:
        """One complete LINSTOR read, as one ``gc_policy.big_read()`` (the service: no cyclic
        collection meanwhile, as the extender's poll; ``linstor_scheduler.gcpolicy``): the read
        makes ~100,000 replica records and their containers, none forming a cycle; the pass ends
        with ``gc_policy.pass_ended``."""
        bound = self.settings.max_staleness
        with self.gc_policy.big_read():
            try:
                # A read that takes longer than the bound could only be stale: it is abandoned at the
                # bound, so a pass never waits for a LINSTOR that accepts and does not answer.
                self.view = await within(read_linstor(self.linstor, started), bound)
                self.metrics.read_seconds.set(max(0.0, self.clock() - started))
                self.read_error = None
                self.metrics.reads.labels("linstor", "ok").inc()
            except TimeoutError:
                self.read_error = f"LINSTOR read did not finish within {bound:g}s (--max-staleness)"
                self.metrics.reads.labels("linstor", "error").inc()
                log.warning("%s", self.read_error)
            except Exception as exc:  # LinstorError, garbage, anything: no new view, no action on a guess
                self.read_error = f"LINSTOR read failed: {exc}"
                self.metrics.reads.labels("linstor", "error").inc()
                log.warning("%s", self.read_error)
            finally:
                self.beat = self.clock()

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
            return "Kubernetes caches not synced or the last list failed"
        age = self.kube.age()
        if age is None or age > s.max_staleness:
            return f"Kubernetes caches are stale ({'unknown age' if age is None else f'{age:.0f}s'})"
        return None

    def _observe(self, now: float, kube: KubeObjects | None) -> str | None:
        """The grace timers and the storm breaker; returns the storm sentence while it holds.

        Timers are observed on every fresh LINSTOR read, whatever Kubernetes says (a recovery seen is a
        recovery). Blind past the bound on either side (LINSTOR or Kubernetes): every timer restarts,
        since nobody can say the fault held meanwhile. While the storm breaker holds, timers do not run:
        after it, every fault starts a fresh full grace period.
        """
        s = self.settings
        linstor_fresh = self.read_error is None and self.view is not None and now - self.view.read_at <= s.max_staleness
        age = self.kube.age() if kube is not None else None
        # Blindness is judged on the sightings *before* this pass: a pass that comes late (a frozen
        # process, a clock jump) saw nothing in between, even when its own reads are fresh.
        seen = [t for t in (self._seen_linstor, self._seen_kube) if t is not None]
        if self.timers.since and (len(seen) < 2 or now - min(seen) > s.max_staleness):
            log.warning("blind for more than %.0fs (%s): grace timers restart", s.max_staleness,
                        "LINSTOR" if self._seen_linstor is None or now - self._seen_linstor > s.max_staleness
                        else "Kubernetes")
            self.timers.reset()
        if linstor_fresh:
            self._seen_linstor = now
        if age is not None and age <= s.max_staleness:
            self._seen_kube = now
        if not linstor_fresh or self.view is None:
            return None
        nodes = linstor_nodes(self.view)
        resources = resource_states(self.view)
        found = faults(resources, nodes)  # once per read: the storm breaker and the timers share it
        storm = self._storm_sentence(nodes, found)
        if storm:
            if not self._storm:
                log.warning("%s: every action held, grace timers stopped", storm)
            self._storm = True
            self.timers.reset()
            self._handover = None  # after a storm every fault starts a fresh full grace period, a handed one too
            self._publish_grace()  # ... for the next leader as well: the record says no timers now
            return storm
        if self._storm:
            log.info("storm over: every fault starts a fresh grace period")
        self._storm = False
        if self._seen_kube is None or now - self._seen_kube > s.max_staleness:
            return None  # blind on the Kubernetes side: timers stay reset
        changed, self._promoted = self._promoted, set()
        for res, node in sorted(self.timers.restart(changed)):
            log.info("resource %s changed in DRBD between two reads (promotion event): the grace timer of node %s "
                     "starts again", res, node)
        first = not self.timers.since and self._handover is not None
        new, recovered = self.timers.observe(found, self.view.read_at)
        if first:
            self._continue_grace(found)
        self._publish_grace()
        for res, node in sorted(new):
            log.info("storage fault observed: resource %s on node %s; grace period %.0fs starts", res, node,
                     s.grace_period)
        for res, node in sorted(recovered):
            log.info("storage fault cleared: resource %s on node %s; its grace timer is reset", res, node)
        return None

    def _continue_grace(self, found: set[tuple[str, str]]) -> None:
        """This term's first observation: where it agrees with the predecessor's record (handover.py),
        its grace timers continue; a fault it does not see, or sees otherwise, starts afresh."""
        assert self.view is not None
        text, self._handover = self._handover, None
        gap = self.settings.max_staleness + float(getattr(self.leader, "lease_seconds", 0.0) or 0.0)
        wall, skew, max_skew = self._predecessor_clock()
        if skew is None:
            log.warning("the previous Lease holder's last renewal carries no renewTime: its clock cannot be "
                        "checked against ours, its grace timers are not continued")
        elif skew > max_skew:
            log.warning("the previous Lease holder's clock was %.1fs behind ours at its last renewal (more than a "
                        "renewal interval, %.0fs): its record is read on its own clock", skew, max_skew)
        inherited = handover.inherit(text, found, self.view.read_at, wall, gap, bridge=self.settings.poll_interval,
                                     skew=skew, max_skew=max_skew)
        if text and len(inherited) < len(found):
            log.warning("%d storage fault(s) seen in this term's first read are not in the previous Lease holder's "
                        "record as they are now (other faults on the node, a record older than %.0fs, or a "
                        "clock that cannot be checked): their grace periods start afresh",
                        len(found) - len(inherited), gap)
        for (res, node), since in sorted(inherited.items()):
            self.timers.since[(res, node)] = min(self.timers.since.get((res, node), since), since)
            log.info("storage fault of resource %s on node %s: the previous leader had timed it for %.0fs; its "
                     "grace period continues", res, node, self.view.read_at - since)

    def _predecessor_clock(self) -> tuple[float, float | None, float]:
        """Our wall clock now; how far the previous Lease holder's clock looked behind ours at its last
        renewal (``LeaderElector.inherited_skew``: 0 for a leader that measures nothing); and the most
        that is taken as clocks agreeing, a renewal interval (handover.py)."""
        skew = getattr(self.leader, "inherited_skew", 0.0)
        renew = getattr(self.leader, "renew_seconds", None)
        return self.wall_clock(), skew, float(renew) if renew else float("inf")

    def _publish_grace(self) -> None:
        """The grace timers, for the Lease's next renewal (the elector writes its annotations)."""
        annotations = getattr(self.leader, "annotations", None)
        if annotations is not None and self.view is not None:
            annotations[handover.ANNOTATION] = handover.record(self.timers.since, self.view.read_at,
                                                               self.wall_clock() - (self.clock() - self.view.read_at),
                                                               self.budget.entries(self.view.read_at),
                                                               replicas=self._replicas_on_lost_nodes())

    def _replicas_on_lost_nodes(self) -> dict[str, int]:
        """How many replicas that could be lost each node with a fault holds (handover.record: a node
        lost whole or in part), counted once per LINSTOR read; nothing to count while nothing is lost."""
        view = self.view
        nodes = {node for _, node in self.timers.since}
        if view is None or not nodes:
            return {}
        cached = self._replica_counts
        if cached is None or cached[0] is not view or not nodes <= cached[1].keys():
            # Only replicas a fault can be seen on: not ignored, and with a peer to witness (a
            # single-replica volume on a node cut from every peer is never a fault, and must not
            # make that node look lost in part only)
            counts = dict.fromkeys(nodes, 0)
            for res in view.resources.values():
                if len(res.replicas) < 2:
                    continue
                for node, replica in res.replicas.items():
                    if node in counts and not replica.ignored:
                        counts[node] += 1
            self._replica_counts = cached = (view, counts)
        return cached[1]

    def _storm_sentence(self, nodes: dict[str, Any], found: set[tuple[str, str]]) -> str | None:
        """More than ``storm_share`` of the storage nodes (and at least two) lost by either witness."""
        assert self.view is not None
        population, diskless = storage_nodes(self.view)
        lost = lost_storage_nodes(population, nodes, found=found)
        self.metrics.lost_nodes.set(len(lost))
        storm = storm_sentence(population, diskless, lost, self.settings.storm_share)
        self.metrics.storm_active.set(1 if storm else 0)
        return storm

    # --- right before each write (the executor asks) ---------------------------------------------
    def _write_refused(self) -> str | None:
        """Checked at the moment of each write: the Lease still ours, the evidence younger than the bound."""
        if not self.leader.is_leader or self.leader.leader_since != self._term:
            return "the Lease is no longer held"
        now, bound = self.clock(), self.settings.max_staleness
        if self.view is None or now - self.view.read_at > bound:
            age = now - self.view.read_at if self.view else float("inf")
            return f"the LINSTOR evidence is {age:.0f}s old (limit {bound:.0f}s)"
        age = self.kube.age()
        if age is None or age > bound:
            return f"the Kubernetes evidence is {'of unknown age' if age is None else f'{age:.0f}s old'}"
        return None

    async def _storage_back(self, node: str, resources: tuple[str, ...]) -> str | None:
        """The node's storage as LINSTOR reports it now (two small reads, bounded by --api-timeout):
        why it is no longer lost, or None while it still is."""
        assert self.view is not None
        try:
            nodes, states = await within(read_node_storage(self.linstor, node, resources, self.view),
                                         self.settings.api_timeout)
        finally:
            self.beat = self.clock()
        return no_longer_lost(node, states, nodes)

    async def _done(self, intent: Intent, now: float) -> None:
        """A write carried out (its answer seen, or its effect seen later): accounted once."""
        pod = intent.pod
        if intent.kind == plan.TAINT:
            self._stable_since.pop(intent.target, None)
            self._taint_wanted.pop(intent.target, None)
        elif intent.kind == plan.UNTAINT:
            self._stable_since.pop(intent.target, None)
        elif intent.removal and pod is not None:
            decision = intent.decision
            fault_since = decision.fault_since if decision is not None else None
            if self.budget.record(pod.key, pod.uid, now) and fault_since is not None:
                self.metrics.fault_to_deletion.observe(max(0.0, now - fault_since))
            how = "deleted (grace 0)" if intent.kind == plan.DELETE else "evicted"
            self.notices.record(as_pod(intent.obj), "Normal", "FencedPod" if intent.kind == plan.DELETE
                               else "EvictedPod", f"{how} from node {intent.node}: {intent.why}"
                               + (f"; {intent.overrides}" if intent.overrides else ""))
        elif intent.kind == plan.DETACH and pod is not None and self._raw.get(pod.uid):
            self.notices.record(as_pod(self._raw[pod.uid]), "Normal", "DetachedVolume", intent.why)

    def _refuse(self, decision: PodDecision, reason: str, detail: str) -> PodDecision:
        return dataclasses.replace(decision, verdict=REFUSE, reason=reason, detail=detail)

    async def _execute(self, intent: Intent, ctx: GuardContext, report: PassReport) -> WriteAnswer | None:
        """An intent other than a pod removal: every guard sees it first; None when one held it."""
        refusal: Refusal | None = hold(self.guards, intent, ctx)
        if refusal is not None:
            if refusal.holds_verdict:  # dry run: what would be written, counted, nothing sent
                report.actions.append((f"dry_run_{intent.kind}", intent.target, "skipped"))
                self.metrics.actions.labels(f"dry_run_{intent.kind}", "skipped").inc()
            return None
        return await self.executor.execute(intent, report)

    # --- the pod ---------------------------------------------------------------------------------
    async def _act_on_pod(self, decision: PodDecision, raw: dict[str, Any], kube: KubeObjects,
                          report: PassReport) -> PodDecision:
        if decision.verdict != FENCE:
            return decision
        pod = decision.pod
        # Before the live read: a write that would be refused needs no read, and once the API server
        # left a read of this pass unanswered, the next pods' reads would each wait a full
        # --api-timeout for the same silence (50 pods x 10 s: a pass of minutes, held long after the
        # server is back). They are held at once instead; the next pass tries again.
        held = self._write_refused() or self._unanswered
        if held:
            report.actions.append(("pod_read", pod.key, "held"))
            return self._refuse(decision, STALE_DATA, f"no action: {held}")
        try:  # the caches may lag: act only on what the API server says now
            live = await self._read(self.actions.get_pod, pod.namespace, pod.name)
        except Exception as exc:
            report.actions.append(("pod_read", pod.key, "error"))
            if is_transport_error(exc):
                self._unanswered = f"the API server left a read of this pass unanswered (pod {pod.key}: {exc!r})"
            return self._refuse(decision, STALE_DATA, f"no action: cannot read pod {pod.key} now: {exc!r}")
        if live is None or objects.uid(live) != pod.uid:
            log.info("pod %s (uid %s) is gone or replaced: nothing to do for it", pod.key, pod.uid)
            return dataclasses.replace(decision, verdict=HEALTHY, reason="PodGone", detail="gone or replaced")
        current = pod_state(live, kube, self.settings.select)
        if current.node != pod.node:
            return dataclasses.replace(decision, verdict=HEALTHY, reason="PodMoved", detail="no longer on the node")
        if current.opted_out or not current.opted_in:
            reason = OPTED_OUT if current.opted_out else NOT_OPTED_IN
            return self._refuse(decision, reason, f"node {decision.node} lost storage, but the pod's label or "
                                "annotation now says not to fail it over")
        # The pod as the API server has it now: orphaned (its StatefulSet deleted with --cascade=orphan)
        # or given a volume we cannot fence since the caches saw it.
        refusal = apply(self.pod_rules, dataclasses.replace(decision, pod=current), self._ctx)
        if refusal is not None:
            return self._refuse(decision, refusal.reason, refusal.detail)
        now = self.clock()
        if not decision.force and current.terminating:
            self._evicting.setdefault(pod.uid, now)  # evicted earlier (maybe by a previous leader)
        step = plan.removal(decision, {**raw, **live}, current.terminating, self._evicting.get(pod.uid),
                            self._eviction_answer.get(pod.uid), now, self.settings.eviction_timeout)
        if isinstance(step, plan.Wait):
            if not step.reason:
                report.actions.append(("pod_terminating", pod.key, "waiting"))
                return decision
            return self._refuse(decision, step.reason, step.detail)
        if now < self._not_before.get((pod.uid, step.kind), 0.0):
            # Retry-After paces *this* request: an eviction's does not hold the grace-0 delete that
            # replaces it (node NotReady, or --eviction-timeout over).
            return self._refuse(decision, EVICTION_BLOCKED, "the API server asked to retry later (429 Retry-After)")
        refusal = hold(self.guards, step, self._ctx)  # judged on its decision already; the guards see it all the same
        if refusal is not None and not refusal.holds_verdict:
            return self._refuse(decision, refusal.reason, refusal.detail)
        if self.settings.taint:
            self._taint_wanted.setdefault(decision.node, step.resources)
            await self._taint(decision.node, kube, step.resources, decision.detail, report)
        answer = await self.executor.execute(step, report)
        if step.kind == plan.EVICT and answer.held_by in (None, IN_DOUBT):
            self._evicting.setdefault(pod.uid, self.clock())  # sent: the bound runs from the first, whatever came back
            self._eviction_answer[pod.uid] = "none (in doubt)" if answer.held_by else \
                f"{answer.status or ''} {answer.value}".strip()
        if answer.held_by == IN_DOUBT:
            self._attempted.add(pod.uid)
            return decision  # sent; its answer was lost and its effect is not seen yet: under way
        if answer.held_by == STORAGE_RECOVERED:
            return dataclasses.replace(decision, verdict=HEALTHY, reason=STORAGE_RECOVERED, detail=answer.held or "")
        if answer.held:
            return self._refuse(decision, STALE_DATA, f"{step.kind} not sent: {answer.held}")
        self._attempted.add(pod.uid)
        now = self.clock()
        if answer.outcome is Outcome.DONE:
            if step.kind == plan.DELETE:
                self._evicting.pop(pod.uid, None)
            return decision
        if answer.outcome is Outcome.THROTTLED:
            if answer.retry_after:
                self._not_before[(pod.uid, step.kind)] = now + answer.retry_after
            return self._refuse(decision, EVICTION_BLOCKED,
                                f"{step.kind} refused for now (429: PodDisruptionBudget or API throttling"
                                f"{f', retry after {answer.retry_after:g}s' if answer.retry_after else ''}); "
                                "a Ready node's pod is deleted with grace 0 after "
                                f"{self.settings.eviction_timeout:.0f}s")
        if answer.outcome is Outcome.CONFLICT:
            return self._refuse(decision, EVICTION_CONFLICT,
                                f"{step.kind} answered 409: the pod changed since it was judged (UID precondition); "
                                "re-judged next pass")
        if answer.outcome is Outcome.GONE:
            return dataclasses.replace(decision, verdict=HEALTHY, reason="PodGone", detail=f"{step.kind}: gone")
        after = (f"; a Ready node's pod is deleted with grace 0 after {self.settings.eviction_timeout:.0f}s"
                 if step.kind == plan.EVICT else "")
        return self._refuse(decision, ACTION_FAILED,
                            f"{step.kind} failed ({answer.status or answer.value}); retried next pass{after}")

    async def _vanished(self, seen: set[str], now: float) -> None:
        """A pod whose fault we were timing left our label-selected view: say why, never skip silently."""
        for uid, namespace, name, node in self.notices.left_view(seen):
            try:
                live = await self._read(self.actions.get_pod, namespace, name)
            except Exception as exc:
                log.info("pod %s/%s left the view during its grace period; cannot read it: %r", namespace, name, exc)
                continue
            if live is None or objects.uid(live) != uid:
                log.info("pod %s/%s left node %s during its grace period (deleted or replaced): nothing to do",
                         namespace, name, node)
                continue
            state = pod_state(live, KubeObjects(), self.settings.select)
            reason = OPTED_OUT if state.opted_out else NOT_OPTED_IN
            label = objects.labels(live).get(LABEL)
            change = "was removed" if label is None else f"now says {label!r}"
            self.notices.warn(live, state, reason, f"the {LABEL} label {change} while node {node} was in its "
                             "grace period: the pod is not failed over", now)


    # --- the VolumeAttachments -------------------------------------------------------------------
    async def _detach(self, observed: Observed, kube: KubeObjects, decisions: list[PodDecision], now: float,
                      ctx: GuardContext, report: PassReport) -> None:
        """Delete our VolumeAttachments on a lost node once no pod there uses the volume any more
        (planned by ``intents.detachments``; indexed by PV and node once per pass)."""
        index = index_attachments(kube.attachments)
        if not index:
            return
        for step in plan.detachments(observed, index, decisions, now, self.settings.grace_period):
            if isinstance(step, plan.Kept):
                self.notices.warn(self._raw.get(step.pod.uid) or {}, step.pod, step.reason, step.detail, now)
            else:
                self._taint_backed[step.node] = now
                await self._delete_attachment(step, now, ctx, report)

    async def _delete_attachment(self, intent: Intent, now: float, ctx: GuardContext, report: PassReport) -> None:
        name, node, pod, claim = intent.target, intent.node, intent.pod, intent.claim
        assert pod is not None
        try:  # a pod still terminating there keeps its attachment, whatever kind of claim it uses
            on_node = await self._read(self.actions.pods_on_node, node)
        except Exception as exc:
            log.warning("VolumeAttachment %s kept: cannot list the pods on node %s: %r", name, node, exc)
            report.actions.append(("attachment_delete", name, "error"))
            return
        users = [p for p in on_node if not _finished(p) and any(ref.key == claim for ref in pod_claims(p))]
        if users:
            names = ", ".join(sorted(objects.key(p) for p in users))
            report.actions.append(("attachment_delete", name, VOLUME_STILL_IN_USE))
            self.notices.warn(self._raw.get(pod.uid) or {}, pod, VOLUME_STILL_IN_USE,
                             f"VolumeAttachment {name} on lost node {node} kept: pod(s) {names} there still use "
                             f"claim {claim}; a pod that needs the volume elsewhere waits (Multi-Attach) until "
                             "they are gone", now)
            return
        await self._execute(intent, ctx, report)

    # --- taints ----------------------------------------------------------------------------------
    async def _taint(self, node: str, kube: KubeObjects, resources: tuple[str, ...], why: str,
                     report: PassReport) -> None:
        """Keep the scheduler off the node while we act on it (never in a storm: no write gets here then)."""
        record = kube.nodes.get(node)
        if record is None or has_taint(record) or any(kind == "taint" and what == node
                                                      for kind, what, _ in report.actions):
            return  # once per node per pass, whatever the answer
        obj = node_object(record)
        answer = await self._execute(plan.taint(node, obj, resources, why), self._ctx, report)
        if answer is None:
            return  # a guard holds it (the pass's own guards: dry run, stale data, storm)
        if answer.held_by == STORAGE_RECOVERED:
            self._taint_wanted.pop(node, None)
            return
        if answer.outcome is Outcome.CONFLICT and not answer.held:
            # The Node changed since it was listed (the node lifecycle controller taints a NotReady node
            # at about this moment): read it live and patch once more, keeping whatever was added.
            try:
                obj = await self._read(self.actions.get_node, node)
            except Exception as exc:
                log.warning("taint %s: cannot read the node again after a conflict: %r", node, exc)
                obj = None
            if obj is not None and not has_taint(obj):
                answer = await self.executor.execute(plan.taint(node, obj, resources, why), report)  # seen above
        if not answer.reached and not answer.held:
            node_obj = node_object(kube.nodes.get(node))
            self.notices.warn_node(node_obj, node, TAINT_FAILED,
                                  f"taint {TAINT_KEY} of node {node} not set (answer {answer.status or ''} "
                                  f"{answer.value}): the scheduler may place pods on the lost node; retried every pass "
                                  "while its storage stays lost", self.clock())

    async def _retaint(self, kube: KubeObjects, report: PassReport) -> None:
        """A taint that could not be set when the pod was removed (403, 503, no answer) is tried
        again every pass while the node's storage stays lost (the executor re-checks that)."""
        for node, resources in sorted(self._taint_wanted.items()):
            obj = kube.nodes.get(node)
            if obj is None or has_taint(obj) or not self.settings.taint:
                self._taint_wanted.pop(node, None)
                continue
            await self._taint(node, kube, resources, "a fail-over on this node", report)

    async def _untaint(self, observed: Observed, kube: KubeObjects, now: float, ctx: GuardContext,
                       report: PassReport) -> None:
        """Every taint of ours comes off once the node's storage is back and stable, whoever set it
        (an earlier leader, an instance before a restart), also with ``--no-taint``."""
        tainted = {name: node_object(record) for name, record in kube.nodes.items() if has_taint(record)}
        steps, self._stable_since = plan.untaints(observed, tainted, self._stable_since, now,
                                                  self.settings.taint_stable_seconds)
        for name in self._stable_since:
            self._taint_wanted.pop(name, None)  # back: no taint to retry
        for step in [*steps, *self._expired_taints(tainted, {s.target for s in steps}, now)]:
            answer = await self._execute(step, ctx, report)
            if answer is not None and answer.reached and not answer.held:
                self._stable_since.pop(step.target, None)
                self._taint_backed.pop(step.target, None)
                if step.reason == plan.TAINT_EXPIRED:
                    node_obj = {"apiVersion": "v1", "kind": "Node", **step.obj}
                    self.notices.warn_node(node_obj, step.target, plan.TAINT_EXPIRED, step.why, now)

    def _expired_taints(self, tainted: dict[str, dict[str, Any]], leaving: set[str], now: float) -> list[Intent]:
        """Our taints with nothing behind them for ``--taint-max-seconds`` (``intents.expired_taints``).
        The bound counts from this instance's first sight of the taint at the latest (a restart
        counts afresh)."""
        for name in set(self._taint_backed) - set(tainted):
            del self._taint_backed[name]
        for name in tainted:
            self._taint_backed.setdefault(name, now)
        return plan.expired_taints(tainted, self._taint_backed, leaving, now, self.settings.taint_max_seconds)

    # --- reporting -------------------------------------------------------------------------------
    # --- the service loop ------------------------------------------------------------------------
    def next_pass_in(self) -> float:
        """The wait before the next pass: a poll interval, or less when a pod's grace period ends
        sooner (that pass reads LINSTOR again and acts on what it sees then). Measured at 5,000 nodes,
        waiting out the poll put the last of 24 deletions past grace + 10 s."""
        wait = self.settings.poll_interval
        if self._grace_due is not None:
            wait = min(wait, max(0.0, self._grace_due - self.clock()))
        return wait

    def wake(self) -> None:
        self._wake.set()

    def leadership_changed(self, _leading: bool) -> None:
        """The elector's callback (its thread): a pass now, so a new leader's first read is not a poll
        away, and a lost Lease is told to the metrics and the record at once."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def follow_promotions(self, client: Any) -> None:
        """Poll early when DRBD promotion changes (a replica lost its peer); polling never stops.

        A change also tells that the resource's connections moved between two reads: a flap shorter
        than a poll interval restarts its grace timers instead of going unseen."""
        delay = 1.0
        while True:
            try:
                async for _event, data in client.events("/v1/events/drbd/promotion"):
                    delay = 1.0
                    self.promotion_events += 1
                    if isinstance(data, dict) and data.get("resource_name"):
                        self._promoted.add(str(data["resource_name"]))
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
        """Passes until ``stop``; a stop in the middle of a pass cancels it at its next await (a LINSTOR
        batch, a Kubernetes call): SIGTERM never waits for a pass to finish. A write already sent is
        not undone, and the next leader re-derives what is left."""
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            current = asyncio.ensure_future(self.run_once())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([current, stopping], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the loop itself is cancelled: so is its pass
                current.cancel()
                raise
            finally:
                stopping.cancel()
            if not current.done():
                current.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await current
                log.info("stopped in the middle of a pass: the pass was cancelled")
                return
            if current.cancelled():
                log.warning("a fencing pass was cancelled; the next pass starts from scratch")
            elif current.exception() is not None:  # one bad pass must not end the controller
                log.error("fencing pass failed", exc_info=current.exception())
            self._passes += 1
            self.gc_policy.pass_ended(self._passes)  # the service: what is alive is frozen
            self.beat = self.clock()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waits, timeout=self.next_pass_in(), return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()


def _finished(pod: dict[str, Any]) -> bool:
    """A pod that ended holds no volume (its containers are gone)."""
    return objects.status(pod).get("phase") in ("Succeeded", "Failed")


def render_pass_table(report: PassReport) -> str:
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
