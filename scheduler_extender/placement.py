"""Was a bound pod placed next to its data, and if not, could it have been? Pure; no I/O.

The extender sees a pod's scheduling cycle through ``/filter``: the candidate nodes kube-scheduler
sent and our verdict on each. It remembers, per pod, only what concerns the nodes that hold a
diskful replica of the pod's volumes (``FilterRecord``: a few nodes, whatever the cluster size), and
when the pod is bound, ``judge_placement`` compares the chosen node with them:

- ``local``: the chosen node holds diskful replicas of as many of the pod's volumes as any replica
  node our filter passed. No Event.
- ``no_local_choice``: no node with more of the pod's replicas than the chosen one passed our
  filter. No Event.
- ``not_chosen``: such a node was among kube-scheduler's candidates and passed our filter;
  kube-scheduler's own scores chose another. Event ``NotPlacedLocally``.
- ``not_offered``: such a node passes our filter but kube-scheduler never sent it to us: its own
  filters (resources, taints, affinity) or ``percentageOfNodesToScore`` left it out. Event
  ``NotPlacedLocally``.

"Feasible" is our verdict, the part we know: kube-scheduler's own filters run before ours
(kubernetes v1.35 pkg/scheduler/schedule_one.go ``findNodesThatFitPod``: ``findNodesThatPassFilters``, then
``findNodesThatPassExtenders`` on what passed), so a node it did not offer may have failed them, or
may never have been looked at (``numFeasibleNodesToFind``); the Event says which we cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL = "local"
NO_LOCAL_CHOICE = "no_local_choice"
NOT_CHOSEN = "not_chosen"
NOT_OFFERED = "not_offered"
OUTCOMES = (LOCAL, NO_LOCAL_CHOICE, NOT_CHOSEN, NOT_OFFERED)
NOT_LOCAL = frozenset({NOT_CHOSEN, NOT_OFFERED})  # the outcomes that are announced
REASON = "NotPlacedLocally"
# Normal, not Warning: the pod runs, its I/O crosses the network. kube-scheduler's own outcome of a
# placement is Normal ("Scheduled"); Warning is what it uses for a pod it could not place
# ("FailedScheduling"). A replica node full of CPU makes this outcome expected and repeated; a
# Warning per such pod would teach people to ignore Warnings. The rate belongs on the metric.
EVENT_TYPE = "Normal"


@dataclass(frozen=True, slots=True)
class ReplicaNode:
    """A node holding a diskful replica of at least one of the pod's volumes, as the cycle saw it."""

    node: str
    volumes: int  # how many of the pod's volumes have a diskful replica here
    offered: bool  # among the candidates kube-scheduler sent to /filter
    fits: bool  # our filter passes it (for a node not offered: would pass it)
    score: int  # our score for it (0..10)
    reason: str  # our filter's reason when it fails ("" when it passes)


@dataclass(frozen=True, slots=True)
class FilterRecord:
    """What the last ``/filter`` of a pod leaves behind for judging its binding: a few hundred bytes."""

    pod: str  # namespace/name
    volumes: int  # the pod's volumes that have diskful replicas somewhere
    candidates: int  # how many nodes kube-scheduler sent
    replicas: tuple[ReplicaNode, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    outcome: str
    message: str = ""  # the Event's text, for a not-local outcome

    @property
    def announced(self) -> bool:
        return self.outcome in NOT_LOCAL


def held_on(record: FilterRecord, node: str) -> int:
    for replica in record.replicas:
        if replica.node == node:
            return replica.volumes
    return 0


def judge_placement(record: FilterRecord, bound: str) -> Placement:
    """The outcome of binding the recorded pod to ``bound``, with the Event's text when it was not
    placed locally although a node with more of its replicas passed our filter."""
    here = held_on(record, bound)
    better = [r for r in record.replicas if r.volumes > here and r.fits]
    if not better:
        return Placement(LOCAL if here else NO_LOCAL_CHOICE)
    outcome = NOT_CHOSEN if any(r.offered for r in better) else NOT_OFFERED
    return Placement(outcome, event_message(record, bound, here, outcome))


def event_message(record: FilterRecord, bound: str, here: int, outcome: str) -> str:
    """One paragraph for ``kubectl describe pod``: where it went, then each replica node and why
    it was not chosen, as far as the extender knows."""
    held = (f"holds a diskful replica of {here} of its {record.volumes} volumes" if here
            else "holds no diskful replica of its volumes")
    lead = (f"bound to node {bound}, which {held}, although a node with more passed the extender's filter "
            f"({record.candidates} candidates sent by kube-scheduler)")
    parts = [f"{r.node} ({r.volumes} of {record.volumes} volumes): {why_not(r)}"
             for r in sorted(record.replicas, key=lambda r: (-r.volumes, r.node)) if r.node != bound]
    tail = (" kube-scheduler's own filters and scores are not visible to the extender."
            if outcome == NOT_CHOSEN else
            " Set percentageOfNodesToScore: 100 (docs/install.md) if the replica nodes were left unexamined.")
    return f"{lead}. Replica nodes: " + "; ".join(parts) + "." + tail


def why_not(replica: ReplicaNode) -> str:
    """Why one replica node was not chosen: our verdict, and whether kube-scheduler offered it."""
    if not replica.offered:
        verdict = "our filter would pass it" if replica.fits else f"our filter would fail it: {replica.reason}"
        return ("kube-scheduler did not offer it (its own filters: resources, taints, affinity; or "
                f"percentageOfNodesToScore?); {verdict}")
    if not replica.fits:
        return f"failed our filter: {replica.reason}"
    return (f"offered, passed our filter, our score {replica.score} of 10; kube-scheduler's own scores "
            "(resources, spreading) outweighed ours")
