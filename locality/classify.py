"""Locality, decided: for a pod bound to a node, where each of its LINSTOR volumes is. Pure; no I/O.

Per volume, one of:

| locality | when |
|---|---|
| ``local`` | a diskful replica on the pod's node is UpToDate |
| ``local-syncing`` | a diskful replica on the pod's node is there but not UpToDate yet |
| ``diskless`` | only a diskless replica on the pod's node: every read and write crosses the network |
| ``none`` | no replica on the pod's node (DRBD attaches a diskless one when the pod starts) |
| ``unknown`` | the claim or the resource is not known (yet), or the node's satellite is not ONLINE |

A pod is local when all its volumes are ``local``. The replica facts are the extender's own
``ResourceInfo`` (scheduler_extender/state.py), so the report, the metrics and the scores agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler_extender import NodeInfo, ResourceInfo

LOCAL = "local"
LOCAL_SYNCING = "local-syncing"
DISKLESS = "diskless"
NONE = "none"
UNKNOWN = "unknown"
UNKNOWN_DISK_STATES = frozenset({"unknown", "dunknown"})  # no state reported (satellite unreachable)
LINSTOR_PROFILE = "linstor"  # the kube-scheduler profile that asks our extender


@dataclass(frozen=True, slots=True)
class VolumeLocality:
    claim: str  # the PVC's name (its namespace is the pod's)
    resource: str | None
    storage_class: str
    locality: str
    local_nodes: tuple[str, ...]  # nodes with an UpToDate diskful replica
    detail: str  # one sentence: what is on the pod's node


@dataclass(frozen=True, slots=True)
class PodLocality:
    pod: str  # namespace/name
    node: str
    scheduler: str
    volumes: tuple[VolumeLocality, ...]
    why: str | None = None  # for a non-local pod: the likeliest cause

    @property
    def local(self) -> bool:
        return all(v.locality == LOCAL for v in self.volumes)


def classify_volume(resource: ResourceInfo | None, node: str, node_info: NodeInfo | None = None) -> tuple[str, str]:
    """(locality, detail) of one volume for a pod on ``node``; ``node_info`` is LINSTOR's view of the node."""
    if resource is None:
        return UNKNOWN, "resource not known to LINSTOR"
    replica = resource.replicas.get(node)
    if replica is None:
        return NONE, f"no replica on {node}"
    if node_info is not None and not node_info.online:
        return UNKNOWN, f"satellite of {node} is {node_info.connection_status}: the replica's state is not known"
    if replica.usable:
        return LOCAL, f"diskful replica on {node} is UpToDate"
    if replica.syncing:
        done = f", {replica.done_percentage:.0f}% done" if replica.done_percentage is not None else ""
        return LOCAL_SYNCING, f"diskful replica on {node} is {replica.disk_state}{done}"
    if replica.diskful and replica.disk_state.lower() in UNKNOWN_DISK_STATES:
        return UNKNOWN, f"diskful replica on {node} reports {replica.disk_state}"
    if replica.diskful:  # Failed, detached: DRBD serves the pod from a peer
        return DISKLESS, f"diskful replica on {node} is {replica.disk_state}: I/O goes over the network"
    return DISKLESS, f"only a diskless replica on {node}"


def up_to_date_nodes(resource: ResourceInfo | None) -> tuple[str, ...]:
    if resource is None:
        return ()
    return tuple(sorted(n for n, r in resource.replicas.items() if r.usable))


def why_not_local(pod: PodLocality, nodes: Mapping[str, NodeInfo], *, pools: Mapping[str, str | None],
                  sizes: Mapping[str, int | None], wait_for_first_consumer: Mapping[str, bool]) -> str | None:
    """The likeliest cause of a pod not being local, in the order an operator would check.

    ``pools``/``sizes``/``wait_for_first_consumer`` are per claim: the StorageClass's storage pool,
    the volume's size in bytes and its binding mode. None for a local pod.
    """
    if pod.local:
        return None
    bad = [v for v in pod.volumes if v.locality != LOCAL]
    if all(v.locality == UNKNOWN for v in bad):
        return "state not known: " + "; ".join(f"{v.claim}: {v.detail}" for v in bad)
    if all(v.locality in (LOCAL_SYNCING, LOCAL) for v in pod.volumes):
        return "replica on the node is still syncing: it becomes local without moving"
    if pod.scheduler != LINSTOR_PROFILE:
        return f"not scheduled by the {LINSTOR_PROFILE} profile (schedulerName {pod.scheduler or 'default-scheduler'})"
    for v in bad:
        if v.locality == UNKNOWN or v.locality == LOCAL_SYNCING:
            continue
        gone = [n for n in v.local_nodes if n in nodes and not nodes[n].online]
        if not v.local_nodes or gone:
            return f"failed over: {v.claim} has no UpToDate replica on a node that is ONLINE"
        replica_down = [n for n in v.local_nodes if n not in nodes or not nodes[n].online or nodes[n].evacuating]
        if replica_down:
            return f"failed over: replica node(s) {', '.join(replica_down)} of {v.claim} are unavailable"
    node = nodes.get(pod.node)
    for v in bad:
        pool = pools.get(v.claim)
        size = sizes.get(v.claim)
        if node is None or not pool:
            continue
        info = node.pools.get(pool)
        if info is None:
            return f"node has no room: storage pool {pool} is missing on {pod.node}"
        if info.free_kib is not None and size is not None and info.free_kib * 1024 < size:
            return f"node has no room: storage pool {pool} on {pod.node} cannot hold {v.claim}"
    if any(not wait_for_first_consumer.get(v.claim, True) for v in bad):
        return "placed before its replica existed: the StorageClass binds Immediately, the volume was placed first"
    return "placed away from its replicas (the replicas were placed or moved after the pod, or no node with one fit)"


@dataclass(frozen=True, slots=True)
class Summary:
    pods: int
    local: int
    volumes: Mapping[tuple[str, str], int]  # (storage class, locality) -> volumes

    @property
    def share(self) -> float:
        """Share of pods that are local; 1.0 with no pods (nothing is misplaced)."""
        return self.local / self.pods if self.pods else 1.0


def summarize(pods: Iterable[PodLocality]) -> Summary:
    count = local = 0
    volumes: Counter[tuple[str, str]] = Counter()
    for pod in pods:
        count += 1
        local += pod.local
        for v in pod.volumes:
            volumes[(v.storage_class, v.locality)] += 1
    return Summary(count, local, dict(volumes))
