"""The guards: an ordered list of small checks applied to every verdict after the pure rules, and
to every intent of the plan (intents.py).

Each guard is a class with its own state, ``check(decision, context) -> Refusal | None`` for a pod's
decision and ``hold(intent, context) -> Refusal | None`` for every other write (a taint, a detach, an
untaint; a pod removal is judged once, on its decision); the first guard that refuses decides, so
the order is the one docs/fencing.md gives (and ``FencingController.guards`` in controller.py
lists): stale data, storm, no controller, unfenced storage, budget, rate limit, dry run (the pod's
own rules before the budget and the rate limit, so a pod refused for what it is spends neither,
and before the dry run, so a dry run says the refusal, not "would fail over"). The Lease is not a guard
on a decision: a follower does not even judge, and the Lease is re-checked before each write
(executor.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .intents import Intent
from .verdict import (
    FENCE,
    HEALTHY,
    NO_CONTROLLER,
    UNFENCED_STORAGE,
    WAITING,
    NodeState,
    PodDecision,
    ResourceState,
    storage_proof,
)

STALE_DATA = "StaleData"
STORM = "StormBreaker"
BUDGET_SPENT = "BudgetSpent"
RATE_LIMITED = "RateLimited"
DRY_RUN = "DryRun"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A guard's no: the reason (Event reason and metric label), one sentence, and the Event type."""

    reason: str
    detail: str
    event_type: str = "Warning"
    holds_verdict: bool = False  # DryRun: the decision stays "fence" (it is what would happen), nothing is written


@dataclass(frozen=True, slots=True)
class GuardContext:
    now: float
    stale: str | None  # why this pass's data must not be acted on, or None
    storm: str | None  # the storm breaker's sentence while it holds, or None
    retrying: frozenset[str] = frozenset()  # pod UIDs whose fail-over already started (not a new one)


class Guard(Protocol):
    name: str

    def check(self, decision: PodDecision, ctx: GuardContext) -> Refusal | None: ...
    def hold(self, intent: Intent, ctx: GuardContext) -> Refusal | None: ...


class _OnDecisions:
    """A guard of pod removals only: it judged the removal on its decision; other writes pass."""

    def hold(self, intent: Intent, ctx: GuardContext) -> Refusal | None:
        return None


class StaleDataGuard:
    """No action on data older than the bound, half a view or a view from before this term."""

    name = STALE_DATA

    def check(self, decision: PodDecision, ctx: GuardContext) -> Refusal | None:
        if ctx.stale and decision.verdict != HEALTHY:
            return Refusal(STALE_DATA, f"no action on stale data: {ctx.stale}")
        return None

    def hold(self, intent: Intent, ctx: GuardContext) -> Refusal | None:
        return Refusal(STALE_DATA, f"no {intent.kind} on stale data: {ctx.stale}") if ctx.stale else None


def lost_storage_nodes(population: set[str], nodes: Mapping[str, NodeState],
                       resources: Mapping[str, ResourceState] | None = None, *,
                       found: Iterable[tuple[str, str]] | None = None) -> set[str]:
    """The storage nodes lost by either witness: satellite not ONLINE, or a replica's storage proof.
    ``found`` is the pass's (resource, node) faults when already computed (``observe.faults``, once
    per read at scale); without it the proofs are taken from ``resources`` here (the drill)."""
    lost = {n for n in population if n in nodes and nodes[n].linstor_status is not None and not nodes[n].online}
    if found is not None:
        return lost | ({node for _, node in found} & population)
    for res in (resources or {}).values():
        lost |= {node for node in res.replicas if node in population and storage_proof(res, node, nodes)}
    return lost


def storm_sentence(population: set[str], diskless: set[str], lost: set[str], share: float) -> str | None:
    """The storm breaker's rule: more than ``share`` of the storage nodes (and at least two) lost at
    once; its sentence while it holds, else None. Pure: the controller and ``linstor-scheduler drill``
    both call it."""
    if not (len(lost) >= 2 and len(lost) > share * len(population)):
        return None
    return (f"storm breaker: {len(lost)} of {len(population)} storage nodes look lost at once "
            f"({', '.join(sorted(lost))}; {len(diskless)} diskless-only satellites not counted); "
            f"the limit is more than {share:.0%}")


class StormGuard:
    """Too many storage nodes look lost at once: a network or controller problem, not a node's."""

    name = STORM

    def check(self, decision: PodDecision, ctx: GuardContext) -> Refusal | None:
        if ctx.storm and decision.verdict in (FENCE, WAITING):
            return Refusal(STORM, f"{decision.detail}; held: {ctx.storm}")
        return None

    def hold(self, intent: Intent, ctx: GuardContext) -> Refusal | None:
        return Refusal(STORM, f"{intent.kind} {intent.target} held: {ctx.storm}") if ctx.storm else None


class NoControllerGuard(_OnDecisions):
    """A pod nothing would recreate elsewhere is never removed (``safety.missing_controller``): a
    bare pod would simply be gone, a DaemonSet's or a static pod's would come back on the lost node.
    piraeus-ha-controller v1 skips a pod without owners (``reconcile_failover.go``, ``evictPods``)."""

    name = NO_CONTROLLER

    def check(self, decision: PodDecision, ctx: GuardContext) -> Refusal | None:
        why = decision.pod.no_controller
        if decision.verdict == FENCE and why:
            return Refusal(NO_CONTROLLER, f"{decision.detail}; not failed over: {why}")
        return None


class UnfencedStorageGuard(_OnDecisions):
    """A pod that also uses storage DRBD's quorum does not stop (another driver's writable claim,
    iSCSI, NFS, a writable hostPath, ...) is not removed unless ``--fail-over-unsafe-pods``: its old
    copy on the lost node may still write there while the replacement does too.
    piraeus-ha-controller v1 refuses it the same way (``IsSafeVolume``; CHANGELOG 1.1.0)."""

    name = UNFENCED_STORAGE

    def __init__(self, allow: bool) -> None:
        self.allow = allow

    def check(self, decision: PodDecision, ctx: GuardContext) -> Refusal | None:
        unfenced = decision.pod.unfenced
        if decision.verdict == FENCE and unfenced and not self.allow:
            return Refusal(UNFENCED_STORAGE, f"{decision.detail}; not failed over: volume(s) {', '.join(unfenced)} "
                           "cannot be fenced, the pod on the lost node may still write to them "
                           "(--fail-over-unsafe-pods to fail it over all the same)")
        return None


class BudgetGuard(_OnDecisions):
    """At most ``budget`` fail-overs of one pod name per ``window`` seconds, against loops."""

    name = BUDGET_SPENT

    def __init__(self, budget: int, window: float) -> None:
        self.budget, self.window = budget, window
        self._history: dict[str, list[tuple[float, str]]] = {}  # pod key -> [(when, uid)]

    def check(self, decision: PodDecision, ctx: GuardContext) -> Refusal | None:
        if decision.verdict != FENCE:
            return None
        key = decision.pod.key
        history = [(t, uid) for t, uid in self._history.get(key, []) if ctx.now - t < self.window]
        self._history[key] = history
        if len(history) >= self.budget and all(uid != decision.pod.uid for _, uid in history):
            return Refusal(BUDGET_SPENT, f"{decision.detail}; held: pod {key} already failed over {len(history)} "
                           f"times in {self.window / 60:.0f} min (budget {self.budget})")
        return None

    def record(self, key: str, uid: str, now: float) -> bool:
        """One fail-over of this pod (UID) done; False if it was already counted."""
        history = self._history.setdefault(key, [])
        if any(u == uid for _, u in history):
            return False
        history.append((now, uid))
        return True

    def entries(self, now: float) -> dict[str, list[tuple[float, str]]]:
        """The fail-overs still inside the window, per pod name (handed to the next leader)."""
        return {key: kept for key, history in self._history.items()
                if (kept := [(t, uid) for t, uid in history if now - t < self.window])}

    def merge(self, handed: dict[str, list[tuple[float, str]]]) -> None:
        """A predecessor's fail-overs (handover.py): each pod's UID counted once."""
        for key, entries in handed.items():
            history = self._history.setdefault(key, [])
            for when, uid in entries:
                if all(u != uid for _, u in history):
                    history.append((when, uid))


class RateLimitGuard(_OnDecisions):
    """A cluster-wide token bucket: ``per_minute`` new fail-overs, refilled continuously."""

    name = RATE_LIMITED

    def __init__(self, per_minute: float, now: float) -> None:
        self.per_minute = per_minute
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

    def refund(self) -> None:
        """A token taken for a removal that was not sent after all (its pod read failed, a check at
        the write held it, the pod left): a token is a fail-over, and none was made."""
        self.tokens = min(self.capacity, self.tokens + 1.0)

    def check(self, decision: PodDecision, ctx: GuardContext) -> Refusal | None:
        if decision.verdict != FENCE or decision.pod.uid in ctx.retrying:
            return None
        if self.take(ctx.now):
            return None
        return Refusal(RATE_LIMITED, f"{decision.detail}; held: more than {self.per_minute:g} fail-overs per minute")


class DryRunGuard:
    """``--dry-run``: every decision, Event, log and metric, and no write."""

    name = DRY_RUN

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def check(self, decision: PodDecision, ctx: GuardContext) -> Refusal | None:
        if self.enabled and decision.verdict == FENCE:
            return Refusal(DRY_RUN, f"would fail over (--dry-run): {decision.detail}", "Normal", holds_verdict=True)
        return None

    def hold(self, intent: Intent, ctx: GuardContext) -> Refusal | None:
        if self.enabled:
            return Refusal(DRY_RUN, f"would {intent.kind} {intent.target} (--dry-run)", "Normal", holds_verdict=True)
        return None


def _first(refusals: Iterator[Refusal | None]) -> Refusal | None:
    """The first refusal, asking each guard only until one refuses (the rate limit takes a token
    only when it is asked)."""
    return next((r for r in refusals if r is not None), None)


def apply(guards: Sequence[Guard], decision: PodDecision, ctx: GuardContext) -> Refusal | None:
    """The first refusal in order, or None: the decision stands."""
    return _first(guard.check(decision, ctx) for guard in guards)


def hold(guards: Sequence[Guard], intent: Intent, ctx: GuardContext) -> Refusal | None:
    """The first guard that holds this write, or None: it goes to the executor."""
    return _first(guard.hold(intent, ctx) for guard in guards)
