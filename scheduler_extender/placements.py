"""Bound pods judged against their last ``/filter``: the ``NotPlacedLocally`` Event and the
placements metric (the judgement itself is placement.py, pure).

On each ``/filter`` of a pod with replicas, ``heard_filter`` keeps a ``FilterRecord`` (the replica
nodes, whether kube-scheduler offered each, our verdict on each); a neutral answer drops it (that
cycle was not ours to judge). A Pod informer, selected server-side to the ``linstor`` profile's
pods and keeping nothing of them (``keep``), hands each binding it sees to ``bound``, which judges
the pod once and drops its record. So:

- once per pod: the record goes with the first judgement; later updates of the pod find none;
- no re-announcing after a restart: records live in this process only, so pods filtered before
  it are never judged (a pod in flight at the restart is missed: the price of not writing an
  annotation on every pod, which would need write access to pods and a write per placement);
- bounded memory: at most ``max_records`` records (oldest out first), each a few hundred bytes
  whatever the cluster's size; a record goes when its pod is judged or deleted.

Thread safety: ``heard_filter`` runs on the serving loop, ``keep``/``changed`` on the informer's
thread; the records are behind one lock, held for a dict operation. Events are queued
(``EventRecorder`` never blocks), so a hung API server costs neither side anything.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from linstor_scheduler.kube import objects

from .codec import ExtenderArgs
from .judge import Decision, Extender
from .placement import EVENT_TYPE, OUTCOMES, REASON, FilterRecord, ReplicaNode, judge_placement

log = logging.getLogger(__name__)
MAX_RECORDS = 10_000  # pods between their /filter and their binding; ~400 B each
PROFILE = "linstor"  # deploy/base/scheduler-config.yaml: the one profile that asks this extender


class Recorder(Protocol):
    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None: ...


class OutcomeCounter(Protocol):
    def labels(self, *values: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class PodBinding:
    """All the informer keeps of a pod, and only while it waits to be judged."""

    key: str  # namespace/name
    uid: str
    node: str

    def involved(self) -> dict[str, Any]:
        namespace, name = self.key.split("/", 1)
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": namespace, "name": name, "uid": self.uid}}


def binding_of(obj: Any) -> PodBinding | None:
    """A pod object (or what ``keep`` kept of it) -> its binding; None while it is not bound."""
    if isinstance(obj, PodBinding):
        return obj
    return PodBinding(objects.key(obj), str(objects.uid(obj, "")), objects.spec(obj).get("nodeName") or "")


class CandidateSets:
    """The candidate lists of recent /filter calls as sets, by their raw NodeNames bytes.

    Whether a replica node was offered is a membership test in the candidate list. A scan of the
    raw bytes costs 50-170 us per name at 5,000 nodes (measured: 160 KB of names), a set of the
    decoded names ~300 us; kube-scheduler sends the same list for pod after pod of a wave (every
    feasible node, with ``percentageOfNodesToScore: 100``), so the set is built once per list and a
    repeat costs one look-up: the bytes' hash is already computed (the answer cache hashed the same
    object) and the comparison is one memcmp."""

    def __init__(self, max_entries: int = 4) -> None:
        self.max_entries = max_entries
        self._sets: OrderedDict[bytes, frozenset[str]] = OrderedDict()

    def of(self, args: ExtenderArgs) -> frozenset[str]:
        raw = args.raw_names
        if raw is None:  # full Node objects (nodeCacheCapable: false): names decoded per request anyway
            return frozenset(args.node_names)
        found = self._sets.get(raw)
        if found is None:
            found = self._sets[raw] = frozenset(args.node_names)
            while len(self._sets) > self.max_entries:
                self._sets.popitem(last=False)
        return found


class PlacementReporter:
    def __init__(self, extender: Extender, recorder: Recorder | None, outcomes: OutcomeCounter, *,
                 max_records: int = MAX_RECORDS) -> None:
        self.extender = extender
        self.recorder = recorder
        self.outcomes = {outcome: outcomes.labels(outcome) for outcome in OUTCOMES}
        self.max_records = max_records
        self._records: OrderedDict[str, FilterRecord] = OrderedDict()
        self._lock = threading.Lock()
        self.candidates = CandidateSets()

    def __len__(self) -> int:
        return len(self._records)

    # --- the serving loop: what /filter saw -------------------------------------------------------
    def heard_filter(self, decision: Decision, args: ExtenderArgs) -> None:
        """Remember the replica nodes of the pod's cycle; a neutral cycle forgets the pod."""
        if not decision.claims:  # not ours to judge (no LINSTOR volumes, another profile's pod)
            return
        if decision.neutral_reason is not None:
            self._drop(decision.pod)
            return
        held: dict[str, int] = {}
        volumes = 0
        for resource in decision.resources:
            nodes = resource.diskful_nodes if resource is not None else ()
            volumes += bool(nodes)
            for node in nodes:
                held[node] = held.get(node, 0) + 1
        if not held:  # new volumes only: they are made where the pod goes
            self._drop(decision.pod)
            return
        names = list(held)
        verdicts = decision.verdicts_on(names)  # the pod's table: look-ups, or a few nodes judged
        offered = self.candidates.of(args)
        replicas = tuple(
            ReplicaNode(node, held[node], node in offered, verdict.fits, verdict.score,
                        "" if verdict.fits else verdict.failure(node))
            for node, verdict in zip(names, verdicts, strict=True))
        record = FilterRecord(decision.pod, volumes, len(offered), replicas)
        with self._lock:
            self._records[decision.pod] = record
            self._records.move_to_end(decision.pod)
            while len(self._records) > self.max_records:
                self._records.popitem(last=False)

    # --- the informer's thread: bindings ------------------------------------------------------------
    def keep(self, obj: dict[str, Any]) -> PodBinding | None:
        """The informer's ``transform``: nothing of a pod, unless it is bound and waits to be judged
        (then a relist after a watch gap still delivers its binding)."""
        binding = binding_of(obj)
        if binding is None or not binding.node or binding.key not in self._records:
            return None
        return binding

    def changed(self, kind: str, obj: Any) -> None:
        """The informer's ``on_change``: a deleted pod's record goes; a bound one is judged."""
        binding = binding_of(obj)
        if binding is None:
            return
        if kind == "DELETED":
            self._drop(binding.key)
        elif binding.node:
            self.bound(binding)

    def bound(self, binding: PodBinding) -> str | None:
        """Judge the pod once (its record goes with it); the outcome, None if it had no record."""
        with self._lock:
            record = self._records.pop(binding.key, None)
        if record is None:
            return None
        placement = judge_placement(record, binding.node)
        if placement.announced and self.recorder is not None:
            self.recorder.record(binding.involved(), EVENT_TYPE, REASON, placement.message)
        self.outcomes[placement.outcome].inc()  # after the Event is queued: a count seen means it is on its way
        return placement.outcome

    def _drop(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)
