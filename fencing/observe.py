"""Building the observed state from one LINSTOR read and one look at the Kubernetes objects.

The LINSTOR read is all-or-nothing: a failed or garbled answer to any of the five reads raises, and
the controller then acts on nothing (never on half a view). Pods come as raw dicts (informer
caches or a one-off list), claims and volumes as their records (``linstor_scheduler.claims``),
Nodes and our VolumeAttachments as theirs (``records.py``); the pod -> PVC -> PV -> volumeHandle
mapping is the one the extender uses (``linstor_scheduler.volumes``).

What a read keeps until the next one is small on purpose (two views live while the next read is
folded, so each byte counts twice at the peak): a replica's peers as one flat tuple (``Peers``),
the satellites' repeating strings shared (``shared_nodes``), of the storage pools only which
nodes have a diskful one (``pool_kinds``), of the definitions' properties only the quorum options
(``compact.QuorumPropsItem``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from linstor_scheduler.aio import all_of
from linstor_scheduler.claims import ClaimRecord, VolumeRecord, as_claim
from linstor_scheduler.kube import objects
from linstor_scheduler.linstor.compact import (
    FencingResourceItem,
    NodeItem,
    ResourceDefinitionItem,
    StoragePoolItem,
)
from linstor_scheduler.linstor.models import Node, ResourceGroup, StoragePool
from linstor_scheduler.volumes import resolve_pod_claims

from .records import AttachmentRecord, NodeRecord, as_node
from .safety import missing_controller, unfenced_volumes
from .verdict import (
    NO_PEERS,
    POLICY_KEYS,
    NodeState,
    Observed,
    Peers,
    PodState,
    PodVolume,
    ReplicaState,
    ResourceState,
    storage_proof,
)

LABEL = "linstor.csi.linbit.com/on-storage-lost"
LABEL_VALUE = "remove"
KEEP_VALUE = "keep"  # the opt-out of --select all
LABELLED, ALL = "labelled", "all"  # --select
LABEL_SELECTOR = LABEL  # server-side (--select labelled): every pod that carries the label, whatever its value


def label_selector(select: str = LABELLED) -> str:
    """The pod informer's server-side selector: with ``labelled`` the pods that carry the label (any
    value: a value other than ``remove`` is judged and refused, said in an Event), with ``all`` every
    pod but those labelled ``keep`` (piraeus-ha-controller covers every pod; its users asked for an
    opt-out instead of an opt-in: its issues #3 and #12)."""
    return LABEL_SELECTOR if select == LABELLED else f"{LABEL}!={KEEP_VALUE}"


def opted_in(labels: Mapping[str, str], select: str = LABELLED) -> bool:
    """``labelled``: the label says ``remove``; ``all``: no label, or ``remove`` (``keep``, or a value
    we do not know, is not taken for a yes)."""
    value = labels.get(LABEL)
    return value == LABEL_VALUE or (select == ALL and value is None)
OPT_OUT_ANNOTATION = "drbd.linbit.com/ignore-fail-over"

Obj = Mapping[str, Any]

# Fencing reads the whole of /v1/view/resources once per pass: throughput, not latency. Its figures
# (docs/performance.md, "Fencing at scale") were measured with these batch sizes; the client's
# defaults are smaller, chosen for the extender's request latency.
FENCING_BATCH_BYTES = 256 * 1024
FENCING_WINDOW = 64 * 1024


class LinstorReader(Protocol):
    async def get_nodes_compact(self) -> list[NodeItem]: ...
    async def get_nodes(self, nodes: Iterable[str] | None = ...) -> list[Node]: ...
    def iter_resource_batches(self, item_type: Any = ..., *, resources: Iterable[str] | None = ...,
                              batch_bytes: int | None = ..., window: int | None = ...) -> AsyncIterator[list[Any]]: ...
    async def get_resource_definitions_compact(self) -> list[ResourceDefinitionItem]: ...
    async def get_resource_groups(self) -> list[ResourceGroup]: ...
    async def get_controller_properties(self) -> dict[str, str]: ...
    async def get_storage_pools_compact(self) -> list[StoragePoolItem]: ...


@dataclass(frozen=True)
class LinstorView:
    """One complete read of LINSTOR, stamped with the (controller clock) time the read started.

    ``resources`` is already the verdict's index (resource -> replicas), built batch by batch while
    ``/v1/view/resources`` streams in: no list of 100,000 items is ever held, only one small record
    per replica (see docs/performance.md)."""

    nodes: list[NodeItem] | list[Node]
    resources: dict[str, ResourceState]
    controller_props: dict[str, str]
    read_at: float
    pools: list[PoolKind] | list[StoragePoolItem] | list[StoragePool] = field(default_factory=list)


async def read_linstor(client: LinstorReader, read_at: float) -> LinstorView:
    """All six reads concurrently; any failure raises (LinstorError): no partial view.

    The resource items are decoded as compact records (``compact.FencingResourceItem``) and folded
    into ``ReplicaState`` per batch; the loop yields to the event loop between batches, so a stop
    request (SIGTERM) is seen within a batch's decode."""
    replicas: dict[str, dict[str, ReplicaState]] = {}

    async def stream() -> None:
        async for batch in client.iter_resource_batches(FencingResourceItem, batch_bytes=FENCING_BATCH_BYTES,
                                                        window=FENCING_WINDOW):
            add_replicas(replicas, batch)
            await asyncio.sleep(0)

    nodes, _, definitions, groups, props, pools = await all_of(
        client.get_nodes_compact(), stream(), client.get_resource_definitions_compact(),
        client.get_resource_groups(), client.get_controller_properties(), client.get_storage_pools_compact())
    return LinstorView(shared_nodes(nodes), with_policies(replicas, definitions, groups, props), props, read_at,
                       pool_kinds(pools))


@dataclass(frozen=True, slots=True)
class PoolKind:
    """What fencing reads of a storage pool (``storage_nodes``): its node, and whether it is diskless."""

    node_name: str
    diskless: bool


def pool_kinds(pools: Iterable[Any]) -> list[PoolKind]:
    """One record per (node, diskful or diskless) of the pools listed: the storm breaker's population
    is all a pass reads of the 10,000 pools of 5,000 nodes (each decoded record ~0.7 KB, kept with the
    view until the next read)."""
    kinds: dict[tuple[str, bool], PoolKind] = {}
    for p in pools:
        key = (p.node_name, p.diskless)
        if key not in kinds:
            kinds[key] = PoolKind(sys.intern(p.node_name), p.diskless)
    return list(kinds.values())


def shared_nodes(nodes: list[Any]) -> list[Any]:
    """The satellites with their repeating strings as one each (names as the replicas have them,
    kinds, states, flags): decoded, each is a string of its own per node."""
    intern = sys.intern

    def shared(n: Any) -> Any:
        if not isinstance(n, msgspec.Struct):
            return n  # not a record (a test's stand-in): as it is
        return msgspec.structs.replace(
            n, name=intern(n.name), type=intern(n.type), flags=[intern(f) for f in n.flags] if n.flags else _NO_FLAGS,
            connection_status=intern(n.connection_status) if n.connection_status else n.connection_status)

    return [shared(n) for n in nodes]


_NO_FLAGS: list[str] = []  # shared by every node without flags (never mutated: the records are frozen)


def replica_state(item: Any, node: str | None = None) -> ReplicaState:
    """One replica as the verdict sees it, from a compact record or a ``models.Resource`` alike.
    Node names are interned: each appears in thousands of replicas and peer maps (``node``: the
    item's, interned already). (The hot path of a 100,000-item read: flags are looked at only when
    there are any; the record is built with positional arguments.)"""
    layer = item.layer_object
    drbd = layer.find_drbd() if layer is not None else None
    volumes = item.volumes
    up_to_date = bool(volumes) and all(
        v.state is not None and (v.state.disk_state or "").lower() == "uptodate" for v in volumes)
    flags = item.flags
    if drbd is not None:
        connections = drbd.connections
        flat: list[Any] = []
        for peer, conn in connections.items():
            flat += (sys.intern(peer), conn.connected)
        peers = Peers.from_flat(flat)
        may_promote = drbd.may_promote
        reported = may_promote is not None or bool(connections)
    else:
        peers, may_promote, reported = NO_PEERS, None, False
    state = item.state
    # ReplicaState(node, diskful, up_to_date, in_use, may_promote, peers, ignored, reported)
    return ReplicaState(node or sys.intern(item.node_name), not flags or item.diskful, up_to_date,
                        bool(state is not None and state.in_use), may_promote, peers, bool(flags) and item.ignored,
                        reported)


def add_replicas(replicas: dict[str, dict[str, ReplicaState]], items: Iterable[Any]) -> None:
    intern = sys.intern
    for item in items:
        node = intern(item.node_name)
        replicas.setdefault(intern(item.name), {})[node] = replica_state(item, node)


def with_policies(replicas: Mapping[str, Mapping[str, ReplicaState]], definitions: Iterable[Any],
                  groups: Iterable[Any], controller_props: Mapping[str, str]) -> dict[str, ResourceState]:
    """Resource states with their effective quorum policy (controller < resource group < definition).

    Only the properties the verdict reads are kept (three look-ups per level, whatever else a
    definition carries), and equal policies share one dict: 33,000 definitions with the same two
    options cost one dict, not 33,000."""
    keys = sorted(POLICY_KEYS)

    def pick(props: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple((k, props[k]) for k in keys if k in props)

    shared: dict[tuple[Any, ...], dict[str, str]] = {}

    def policy(*levels: tuple[tuple[str, str], ...]) -> dict[str, str]:
        found = shared.get(levels)
        if found is None:
            found = shared[levels] = {k: v for level in levels for k, v in level}
        return found

    base = pick(controller_props)
    group_policy = {g.name: pick(g.props) for g in groups}
    props_of = {rd.name: policy(base, group_policy.get(rd.resource_group_name or "", ()), pick(rd.props))
                for rd in definitions}
    default = policy(base, (), ())
    return {name: ResourceState(name, reps, props_of.get(name, default)) for name, reps in replicas.items()}


def resource_states(view: LinstorView) -> dict[str, ResourceState]:
    return view.resources


@dataclass(frozen=True)
class KubeObjects:
    pods: list[dict[str, Any]] = field(default_factory=list)  # only the pods that carry the label
    # namespace/name -> the claim's record (linstor_scheduler.claims; an object is read into one)
    pvcs: Mapping[str, ClaimRecord | dict[str, Any]] = field(default_factory=dict)
    pvs: Mapping[str, VolumeRecord | dict[str, Any]] = field(default_factory=dict)
    # name -> the Node's record, VolumeAttachments ours only, as records (records.py; an object is read into one)
    nodes: Mapping[str, NodeRecord | dict[str, Any]] = field(default_factory=dict)
    attachments: list[AttachmentRecord] | list[dict[str, Any]] = field(default_factory=list)


def kube_ready(node: NodeRecord | Obj | None) -> bool | None:
    """The Node's Ready condition; None for no Node. A Node without a Ready condition is not known
    to be ready (``records.node_record``)."""
    record = as_node(node)
    return None if record is None else record.ready


def node_states(view: LinstorView, kube: KubeObjects) -> dict[str, NodeState]:
    states = {n.name: NodeState(n.name, n.connection_status or "UNKNOWN", kube_ready(kube.nodes.get(n.name)))
              for n in view.nodes}
    for name, node in kube.nodes.items():
        states.setdefault(name, NodeState(name, None, kube_ready(node)))
    return states


def pod_state(pod: Obj, kube: KubeObjects, select: str = LABELLED) -> PodState:
    claims = resolve_pod_claims(pod, kube.pvcs.get, kube.pvs.get, lambda _name: None)
    volumes = tuple(
        PodVolume(c.ref.key, getattr(as_claim(kube.pvcs.get(c.ref.key)), "volume", None), c.resource, c.pending)
        for c in claims)
    return PodState(
        namespace=objects.namespace(pod, objects.DEFAULT_NAMESPACE), name=objects.name(pod, ""),
        uid=objects.uid(pod, ""), node=objects.spec(pod).get("nodeName"), volumes=volumes,
        opted_in=opted_in(objects.labels(pod), select),
        opted_out=OPT_OUT_ANNOTATION in objects.annotations(pod),
        terminating=bool(objects.deletion_timestamp(pod)), no_controller=missing_controller(pod),
        unfenced=unfenced_volumes(pod, kube.pvcs.get, kube.pvs.get) if volumes else ())


def running_pods(pods: Iterable[Obj]) -> list[Obj]:
    """Pods that may hold their volumes: not finished."""
    return [p for p in pods if objects.status(p).get("phase") not in ("Succeeded", "Failed")]


def build_observed(view: LinstorView, kube: KubeObjects, fault_since: Mapping[tuple[str, str], float],
                   select: str = LABELLED) -> Observed:
    pods = tuple(pod_state(p, kube, select) for p in running_pods(kube.pods))
    return Observed(node_states(view, kube), resource_states(view), pods, dict(fault_since))


def faults(resources: Mapping[str, ResourceState], nodes: Mapping[str, NodeState]) -> set[tuple[str, str]]:
    """Every (resource, node) whose replica has lost its storage right now."""
    found = set()
    for res in resources.values():
        for node, replica in res.replicas.items():
            state = nodes.get(node)
            if (state is None or state.linstor_status is None or state.online) and not (
                    replica.reported and replica.peers and all(up is False for up in replica.peers.values())):
                continue  # neither witness can speak against a replica LINSTOR reaches with a peer up
            if storage_proof(res, node, nodes):
                found.add((res.name, node))
    return found


def storage_nodes(view: LinstorView) -> tuple[set[str], set[str]]:
    """The storm breaker's population: satellites with a diskful storage pool (any provider but
    DISKLESS), whether or not they hold a replica now, except those LINSTOR has EVICTED; and, apart,
    the diskless-only satellites."""
    # A satellite LINSTOR has EVICTED (offline past DrbdOptions/AutoEvictAfterTime, its replicas placed
    # elsewhere) is out of service, not lost "at once": counting it would make one failure a storm.
    satellites = {n.name for n in view.nodes if n.is_satellite and "EVICTED" not in {f.upper() for f in n.flags}}
    diskful = {p.node_name for p in view.pools if not p.diskless and p.node_name in satellites}
    return diskful, satellites - diskful


def linstor_nodes(view: LinstorView) -> dict[str, NodeState]:
    """Node states from LINSTOR alone (the grace timers need no Kubernetes object)."""
    return node_states(view, KubeObjects())


async def read_node_storage(client: LinstorReader, node: str, resources: Iterable[str],
                            view: LinstorView) -> tuple[dict[str, NodeState], dict[str, ResourceState]]:
    """The storage of ``resources`` as LINSTOR reports it now: their replicas (``GET
    /v1/view/resources?resources=``) and the satellites of ``node`` and of their peers (``GET
    /v1/nodes?nodes=``), read concurrently. Two small reads whatever the cluster's size: the check
    right before a write (executor.py). Not ``/v1/view/resources?nodes=<node>``: the node's own
    replicas are one witness only, the peers' testimony is on their replicas of the same resources.
    The quorum policy is the pass's (properties do not make a node lost or not)."""
    names = sorted(set(resources))
    replicas: dict[str, dict[str, ReplicaState]] = {}
    peers = {node} | {n for r in names if r in view.resources for n in view.resources[r].replicas}

    async def stream() -> None:
        async for batch in client.iter_resource_batches(FencingResourceItem, resources=names):
            add_replicas(replicas, batch)

    listed, _ = await all_of(client.get_nodes(nodes=sorted(peers)), stream())
    nodes = {n.name: NodeState(n.name, n.connection_status or "UNKNOWN", None) for n in listed}
    states = {r: ResourceState(r, replicas.get(r, {}), view.resources[r].props if r in view.resources else {})
              for r in names}
    return nodes, states


def no_longer_lost(node: str, resources: Mapping[str, ResourceState], nodes: Mapping[str, NodeState]) -> str | None:
    """Why ``node`` has not lost the storage of ``resources`` any more (the first one back), or None
    while both witnesses still say it has, for every one of them."""
    for name, res in sorted(resources.items()):
        if storage_proof(res, node, nodes) is None:
            state = nodes.get(node)
            status = state.linstor_status if state is not None else "unknown to LINSTOR"
            return (f"the storage of {name} on node {node} is no longer lost (satellite {status}; its DRBD peers "
                    "no longer all report it down)")
    return None
