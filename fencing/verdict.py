"""The fencing verdict: a pure function of (observed state, clock), so every rule is unit-testable.

A pod is removed from its node only when, for every LINSTOR volume of the pod that lost its storage
on that node, all of these hold (docs/fencing.md explains why each one is needed):

1. storage proof from two witnesses: LINSTOR (the node's satellite is not ONLINE, or the node's
   own replica reports every DRBD peer connection down) *and* the surviving peers (every replica on
   an ONLINE node that has a connection to the node reports it down); and a surviving replica may
   promote and no replica other than the node's is in use. One witness alone is no proof: a
   satellite LINSTOR cannot reach while its peers still talk to it is a controller partition;
2. the node cannot keep writing: the resource has a quorum policy (``quorum`` = majority, all or a
   number above half the voters (the diskful replicas: DRBD's rules in
   ``linstor_scheduler.drbd_quorum``), plus ``on-no-quorum`` suspend-io or io-error, inherited
   controller < resource group < definition);
3. somewhere to go: an UpToDate diskful replica on another ONLINE node;
4. the storage proof held for the whole grace period (timed by ``grace.GraceTimers``).

Nothing here does I/O or reads a clock: the observed state and ``now`` come in, verdicts go out.
Guards that depend on the whole cluster or on history (storm, staleness, budget, rate) are applied
by the controller on top of these verdicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

from linstor_scheduler.drbd_quorum import (
    AUTO_QUORUM_KEY,
    MINIMUM_REDUNDANCY_KEY,
    ON_NO_QUORUM_KEY,
    QUORUM_KEY,
    Options,
    policy_problem,
)
from linstor_scheduler.kube import objects

# All the verdict (and the drill's DRBD model) read of a resource's properties
POLICY_KEYS = frozenset({QUORUM_KEY, ON_NO_QUORUM_KEY, AUTO_QUORUM_KEY, MINIMUM_REDUNDANCY_KEY})

# Verdicts
HEALTHY = "healthy"  # no storage fault for this pod
WAITING = "waiting"  # a fault is being timed through the grace period
FENCE = "fence"  # remove the pod (or the VolumeAttachment)
REFUSE = "refuse"  # a fault held, but a rule forbids acting: always reported with a reason

# Reasons of refusals (also the metric label and the Event reason, hence CamelCase)
NO_QUORUM_POLICY = "NoQuorumPolicy"
NOWHERE_TO_GO = "NowhereToGo"
IN_USE_ELSEWHERE = "InUseElsewhere"
NO_PROMOTABLE_REPLICA = "NoPromotableReplica"
CONTROLLER_PARTITION = "ControllerPartition"  # LINSTOR says lost, a peer still reaches it: Normal notice
NO_PEER_WITNESS = "NoPeerWitness"  # LINSTOR says lost, no surviving peer can be heard at all: Normal notice
NOTICES = frozenset({CONTROLLER_PARTITION, NO_PEER_WITNESS})
# The pod's Kubernetes Node has no LINSTOR node of that name (a name mismatch: LINSTOR registered the
# host by another name). Its storage cannot be judged at all: a Warning, never "healthy" in silence.
NODE_UNKNOWN_TO_LINSTOR = "NodeUnknownToLinstor"
NOT_OPTED_IN = "NotOptedIn"
OPTED_OUT = "OptedOut"
NO_CONTROLLER = "NoController"  # guards.NoControllerGuard: nothing would recreate the pod elsewhere
UNFENCED_STORAGE = "UnfencedStorage"  # guards.UnfencedStorageGuard: storage DRBD's quorum does not stop
UNRESOLVED_VOLUME = "UnresolvedVolume"


class Peers(tuple):  # type: ignore[type-arg]
    """A replica's DRBD peers, peer node -> connection up (True, False, None: unknown), read as a
    mapping; held as one flat tuple ``(peer, up, peer, up, ...)``. 100,000 replicas each have one:
    as a dict of two peers that was 184 bytes, a third of a replica's record; this is 72.

    Read-only: ``in``, ``[peer]``, ``get``, ``keys``, ``values``, ``items``, ``len``, iteration over
    the peer names, equality with another ``Peers`` or any mapping."""

    __slots__ = ()

    def __new__(cls, peers: Mapping[str, bool | None] | Iterable[tuple[str, bool | None]] = ()) -> Peers:
        pairs = peers.items() if hasattr(peers, "items") else peers
        return super().__new__(cls, chain.from_iterable(pairs))

    @classmethod
    def from_flat(cls, flat: Iterable[Any]) -> Peers:
        """From ``[peer, up, peer, up, ...]`` as is (the read's hot path: 100,000 a pass)."""
        return tuple.__new__(cls, flat)

    def keys(self) -> tuple[str, ...]:
        return tuple.__getitem__(self, slice(0, None, 2))

    def values(self) -> tuple[bool | None, ...]:
        return tuple.__getitem__(self, slice(1, None, 2))

    def items(self) -> zip[tuple[str, bool | None]]:
        return zip(self.keys(), self.values(), strict=True)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self.keys())

    def __len__(self) -> int:
        return tuple.__len__(self) // 2

    def __contains__(self, peer: object) -> bool:
        return peer in self.keys()

    def __getitem__(self, peer: str) -> bool | None:  # type: ignore[override]
        keys = self.keys()
        if peer not in keys:
            raise KeyError(peer)
        return tuple.__getitem__(self, 2 * keys.index(peer) + 1)

    def get(self, peer: str, default: bool | None = None) -> bool | None:
        keys = self.keys()
        return tuple.__getitem__(self, 2 * keys.index(peer) + 1) if peer in keys else default

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Peers):
            return tuple.__eq__(self, other)
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"Peers({dict(self.items())!r})"


Mapping.register(Peers)
NO_PEERS = Peers()


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica of a resource on one node, as LINSTOR last reported it."""

    node: str
    diskful: bool
    up_to_date: bool  # every volume UpToDate
    in_use: bool
    may_promote: bool | None
    peers: Mapping[str, bool | None] = NO_PEERS  # peer node -> DRBD connection up? (``Peers`` as read)
    ignored: bool = False  # DELETE / INACTIVE
    reported: bool = True  # LINSTOR has the satellite's state for it (False: unknown, satellite unreachable)


@dataclass(frozen=True, slots=True)
class ResourceState:
    name: str
    replicas: Mapping[str, ReplicaState]
    props: Mapping[str, str]  # effective properties after inheritance

    @property
    def voters(self) -> int:
        """DRBD's quorum voters: the diskful replicas (a diskless one, client or TIE_BREAKER, only breaks
        ties: ``linstor_scheduler.drbd_quorum``)."""
        return sum(1 for r in self.replicas.values() if r.diskful and not r.ignored)

    @property
    def quorum_policy(self) -> str | None:
        """The policy as text, or None when the node could keep writing without quorum."""
        return None if self.quorum_problem() else self._policy_text()

    def _policy_text(self) -> str:
        quorum = (self.props.get(QUORUM_KEY) or "").strip().lower()
        return f"quorum={quorum}, on-no-quorum={Options.from_props(self.props).on_no_quorum}"

    def quorum_problem(self) -> str | None:
        """Why a cut-off node could keep writing, or None when the policy stops it
        (``drbd_quorum.policy_problem``: DRBD's rules, DRBD's voters)."""
        return policy_problem(self.props, self.voters)


@dataclass(frozen=True, slots=True)
class NodeState:
    name: str
    linstor_status: str | None  # LINSTOR connection_status; None: not a LINSTOR node
    kube_ready: bool | None  # the Node's Ready condition; None: no such Node

    @property
    def online(self) -> bool:
        return (self.linstor_status or "").upper() == "ONLINE"


@dataclass(frozen=True, slots=True)
class PodVolume:
    claim: str  # namespace/name of the PVC
    pv: str | None
    resource: str | None  # LINSTOR resource definition (PV volumeHandle); None if unresolved
    pending: str | None = None  # why it is unresolved


@dataclass(frozen=True, slots=True)
class PodState:
    namespace: str
    name: str
    uid: str
    node: str | None
    volumes: tuple[PodVolume, ...]
    opted_in: bool  # label value is "remove"
    opted_out: bool  # opt-out annotation present
    terminating: bool = False
    no_controller: str | None = None  # why nothing would recreate it elsewhere (safety.missing_controller)
    unfenced: tuple[str, ...] = ()  # volumes we cannot fence, "name (what)" (safety.unfenced_volumes)

    @property
    def key(self) -> str:
        return objects.key_of(self.namespace, self.name)

    @property
    def resources(self) -> tuple[str, ...]:
        return tuple(v.resource for v in self.volumes if v.resource)


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything a verdict depends on, taken at one time."""

    nodes: Mapping[str, NodeState]
    resources: Mapping[str, ResourceState]
    pods: tuple[PodState, ...]
    fault_since: Mapping[tuple[str, str], float]  # (resource, node) -> when we first saw the fault


@dataclass(frozen=True, slots=True)
class VolumeFencingVerdict:
    resource: str
    node: str
    verdict: str
    reason: str  # a named reason (CamelCase) or "" for healthy
    detail: str  # one human sentence
    healthy_replica: str | None = None
    fault_since: float | None = None


@dataclass(frozen=True, slots=True)
class PodDecision:
    pod: PodState
    node: str
    verdict: str
    reason: str
    detail: str
    volumes: tuple[VolumeFencingVerdict, ...] = ()
    force: bool = False  # node NotReady: delete with grace 0 rather than evict

    @property
    def lost(self) -> tuple[VolumeFencingVerdict, ...]:
        return tuple(v for v in self.volumes if v.verdict != HEALTHY)

    @property
    def fault_since(self) -> float | None:
        times = [v.fault_since for v in self.volumes if v.fault_since is not None]
        return min(times) if times else None


def grace_due(decisions: Iterable[PodDecision], grace: float) -> float | None:
    """When the first pod waiting out its grace period stops waiting: the moment its last timed
    volume's grace ends (then it is judged on the other rules). The next pass is due then, not a
    whole poll later: otherwise a fault seen just before a pass waits grace + a poll + a read."""
    due = [max(v.fault_since for v in timed) + grace for d in decisions if d.verdict == WAITING
           for timed in [[v for v in d.volumes if v.verdict == WAITING and v.fault_since is not None]] if timed]
    return min(due, default=None)


@dataclass(frozen=True, slots=True)
class Witnesses:
    """What each side says about a replica: a sentence when it says "lost", None when it does not."""

    linstor: str | None
    peers: str | None
    reachable_from: tuple[str, ...] = ()  # surviving peers that report their connection to the node up

    @property
    def proof(self) -> str | None:
        return f"{self.linstor}; {self.peers}" if self.linstor and self.peers else None


def witnesses(resource: ResourceState, node: str, nodes: Mapping[str, NodeState]) -> Witnesses:
    """LINSTOR's and the surviving peers' testimony on the replica of ``resource`` on ``node``."""
    replica = resource.replicas.get(node)
    if replica is None or replica.ignored:
        return Witnesses(None, None)
    linstor = None
    offline = False
    state = nodes.get(node)
    if state is not None and state.linstor_status is not None and not state.online:
        linstor = f"satellite of node {node} is {state.linstor_status}"
        offline = True
    elif replica.reported and replica.peers and all(up is False for up in replica.peers.values()):
        linstor = f"the replica on {node} reports every DRBD peer connection down"
    reports: list[tuple[str, bool | None]] = []
    for other in resource.replicas.values():
        other_node = nodes.get(other.node)
        if other.node == node or other.ignored or not other.reported or other_node is None or not other_node.online:
            continue
        if node not in other.peers:
            continue
        isolated = all(up is False for peer, up in other.peers.items() if peer != node) and not other.may_promote
        if other.peers[node] is False and not offline and isolated:
            # The node is ONLINE and only its own replica says "every peer down"; a peer that reaches
            # no other replica either and has no quorum (may not promote) cannot tell its own isolation
            # from the node's (two faults would otherwise make their healthy common peer look lost):
            # its "down" is no testimony.
            continue
        reports.append((other.node, other.peers[node]))
    peers = None
    if reports and all(connected is False for _, connected in reports):
        peers = f"replicas on {', '.join(sorted(n for n, _ in reports))} report their DRBD connection to {node} down"
    return Witnesses(linstor, peers, tuple(sorted(n for n, connected in reports if connected)))


def storage_proof(resource: ResourceState, node: str, nodes: Mapping[str, NodeState]) -> str | None:
    """Why the replica of ``resource`` on ``node`` has lost its storage (both witnesses), or None."""
    return witnesses(resource, node, nodes).proof


def _healthy_replica(resource: ResourceState, node: str, nodes: Mapping[str, NodeState]) -> str | None:
    """An UpToDate diskful replica on another ONLINE node whose Kubernetes Node is not NotReady."""
    candidates = []
    for other in resource.replicas.values():
        state = nodes.get(other.node)
        if other.node == node or other.ignored or not other.diskful or not other.up_to_date:
            continue
        if state is None or not state.online or state.kube_ready is False:
            continue
        candidates.append(other.node)
    return min(candidates) if candidates else None


def judge_volume(resource: ResourceState | None, resource_name: str, node: str, observed: Observed, now: float,
                 grace: float) -> VolumeFencingVerdict:
    """The verdict for one (volume, node): the pod-independent part of the rules."""
    if resource is None:
        return VolumeFencingVerdict(resource_name, node, HEALTHY, "", "LINSTOR does not know the resource")
    said = witnesses(resource, node, observed.nodes)
    proof = said.proof
    if proof is None and said.linstor and said.reachable_from:
        return VolumeFencingVerdict(resource_name, node, HEALTHY, CONTROLLER_PARTITION,
                             f"{said.linstor}, but its DRBD peers on {', '.join(said.reachable_from)} still reach it: "
                             "LINSTOR's controller is cut off from the node, its storage is not lost")
    if proof is None and said.linstor:
        return VolumeFencingVerdict(resource_name, node, HEALTHY, NO_PEER_WITNESS,
                             f"{said.linstor}, but no surviving DRBD peer of {resource_name} can be heard (their "
                             "satellites are unreachable too, or each is cut off itself): nothing proves the "
                             "storage lost")
    if proof is None:
        return VolumeFencingVerdict(resource_name, node, HEALTHY, "", "storage connected")
    since = observed.fault_since.get((resource_name, node), now)
    if now - since < grace:
        return VolumeFencingVerdict(resource_name, node, WAITING, "GracePeriod",
                             f"{proof}; waiting for the grace period to pass", fault_since=since)
    problem = resource.quorum_problem()
    if problem:
        return VolumeFencingVerdict(
            resource_name, node, REFUSE, NO_QUORUM_POLICY,
            f"{proof}, but resource {resource_name} has no quorum policy that stops the node ({problem}; set "
            f"{QUORUM_KEY}=majority and {ON_NO_QUORUM_KEY}=suspend-io): the node could keep writing",
            fault_since=since)
    elsewhere = sorted(r.node for r in resource.replicas.values() if r.node != node and r.in_use and not r.ignored)
    if elsewhere:
        return VolumeFencingVerdict(resource_name, node, REFUSE, IN_USE_ELSEWHERE,
                             f"{proof}, but resource {resource_name} is in use on {', '.join(elsewhere)}",
                             fault_since=since)
    healthy = _healthy_replica(resource, node, observed.nodes)
    if healthy is None:
        return VolumeFencingVerdict(resource_name, node, REFUSE, NOWHERE_TO_GO,
                             f"{proof}, but no other ONLINE node has an UpToDate diskful replica of {resource_name}",
                             fault_since=since)
    promotable = [r.node for r in resource.replicas.values()
                  if r.node != node and r.may_promote and not r.ignored
                  and (observed.nodes.get(r.node) is not None and observed.nodes[r.node].online)]
    if not promotable:
        return VolumeFencingVerdict(resource_name, node, REFUSE, NO_PROMOTABLE_REPLICA,
                             f"{proof}, but no surviving replica of {resource_name} may promote",
                             fault_since=since)
    return VolumeFencingVerdict(resource_name, node, FENCE, "StorageLost", f"{proof}; UpToDate replica on {healthy}",
                         healthy_replica=healthy, fault_since=since)


def judge_pod(pod: PodState, observed: Observed, now: float, grace: float) -> PodDecision | None:
    """The decision for a pod on its node; None for pods that are not scheduled or have no LINSTOR volume."""
    node = pod.node
    if not node or not pod.volumes:
        return None
    state = observed.nodes.get(node)
    if pod.resources and (state is None or state.linstor_status is None):
        return PodDecision(pod, node, HEALTHY, NODE_UNKNOWN_TO_LINSTOR,
                           f"LINSTOR has no node named {node}, where the pod runs with LINSTOR volume(s) "
                           f"{', '.join(pod.resources)}: the Kubernetes Node and the LINSTOR node are named "
                           "differently, and fencing cannot judge this node's storage")
    verdicts = tuple(judge_volume(observed.resources.get(r), r, node, observed, now, grace) for r in pod.resources)
    lost = [v for v in verdicts if v.verdict != HEALTHY]
    if not lost:
        notice = next((v for v in verdicts if v.reason in NOTICES), None)
        if notice is not None:
            return PodDecision(pod, node, HEALTHY, notice.reason, notice.detail, verdicts)
        return PodDecision(pod, node, HEALTHY, "", "storage connected", verdicts)
    if any(v.verdict == WAITING for v in lost):
        first = next(v for v in lost if v.verdict == WAITING)
        return PodDecision(pod, node, WAITING, first.reason, first.detail, verdicts)
    refusals = [v for v in lost if v.verdict == REFUSE]
    # A volume that only LINSTOR says is lost (no peer exists to testify, e.g. a single replica on this
    # node) proves nothing on its own, but it must not be left behind either: moving the pod for its
    # other volumes would recreate it where this one can never be attached (rule 3, for every volume).
    stranded = [v for v in verdicts if v.reason == NO_PEER_WITNESS
                and _healthy_replica(observed.resources[v.resource], node, observed.nodes) is None]
    refusals += [dataclasses.replace(v, verdict=REFUSE, reason=NOWHERE_TO_GO,
                                     detail=f"{v.detail}; no other ONLINE node has an UpToDate diskful replica of "
                                     f"{v.resource}: the pod would be moved away from it")
                 for v in stranded]
    if refusals:
        detail = "; ".join(v.detail for v in refusals)
        return PodDecision(pod, node, REFUSE, refusals[0].reason, detail, verdicts)
    # every lost volume may fail over: now the pod's own rules
    resources = ", ".join(v.resource for v in lost)
    if pod.opted_out:
        return PodDecision(pod, node, REFUSE, OPTED_OUT,
                           f"node {node} lost storage of {resources}, but the pod opts out of fail-over", verdicts)
    if not pod.opted_in:
        return PodDecision(pod, node, REFUSE, NOT_OPTED_IN,
                           f"node {node} lost storage of {resources}, but the pod's on-storage-lost label "
                           "is not 'remove'", verdicts)
    unresolved = [v for v in pod.volumes if v.resource is None]
    if unresolved:
        return PodDecision(pod, node, REFUSE, UNRESOLVED_VOLUME,
                           f"node {node} lost storage of {resources}, but claim(s) "
                           f"{', '.join(f'{v.claim} ({v.pending})' for v in unresolved)} cannot be judged",
                           verdicts)
    kube_ready = observed.nodes[node].kube_ready if node in observed.nodes else None
    healthy = ", ".join(sorted({f"{v.resource} on {v.healthy_replica}" for v in lost}))
    how = "node NotReady: delete with grace 0" if kube_ready is not True else "node Ready: evict"
    return PodDecision(pod, node, FENCE, "StorageLost",
                       f"node {node} lost storage ({lost[0].detail.split(';')[0]}); healthy replica(s): {healthy}; "
                       f"{how}", verdicts, force=kube_ready is not True)


def judge(observed: Observed, now: float, grace: float) -> list[PodDecision]:
    """Decisions for every observed pod, sorted for stable output."""
    decisions = [d for pod in observed.pods if (d := judge_pod(pod, observed, now, grace)) is not None]
    return sorted(decisions, key=lambda d: (d.pod.key, d.node))

