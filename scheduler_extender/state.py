"""The extender's in-memory index of the cluster: what the request path reads, nothing else.

A ``ClusterState`` is built whole from one LINSTOR read and the Kubernetes caches, then swapped in
with a single reference assignment, so a request never sees half an update. It keeps only what
scoring needs, in compact frozen dataclasses, so 100k resources fit in a few tens of MB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from linstor_scheduler.linstor.models import Node, Resource, StoragePool
from linstor_scheduler.volumes import (
    REGION_LABELS,
    ZONE_LABELS,
    StorageClassInfo,
    first_label,
)

# Disk states of a diskful replica that still has (or is getting) the data: it becomes usable
# locally as soon as the resync finishes. Anything else (Failed, DUnknown, Diskless = detached)
# means the local disk cannot serve the pod now.
SYNCING_DISK_STATES = frozenset(
    {"inconsistent", "outdated", "consistent", "negotiating", "attaching", "synctarget", "created"}
)


@dataclass(frozen=True, slots=True)
class PoolInfo:
    name: str
    provider_kind: str
    free_kib: int | None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A LINSTOR node, joined with the topology labels of the Kubernetes node of the same name."""

    name: str
    satellite: bool
    online: bool
    connection_status: str
    evacuating: bool
    pools: Mapping[str, PoolInfo]


@dataclass(frozen=True, slots=True)
class Replica:
    node: str
    diskful: bool
    disk_state: str  # worst over the resource's volumes, as LINSTOR spells it
    usable: bool  # diskful and UpToDate
    syncing: bool  # diskful, not UpToDate, but getting there
    done_percentage: float | None
    in_use: bool


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    name: str
    replicas: Mapping[str, Replica]

    @property
    def diskful_nodes(self) -> tuple[str, ...]:
        return tuple(n for n, r in self.replicas.items() if r.diskful)


def _worst_disk_state(states: list[str]) -> str:
    """The volume state that limits the replica: any non-UpToDate volume makes it not UpToDate."""
    for state in states:
        if state.lower() != "uptodate":
            return state
    return states[0] if states else "Unknown"


def replica_from(resource: Resource) -> Replica:
    states: list[str] = []
    done: float | None = None
    for vol in resource.volumes:
        st = vol.state
        states.append(st.disk_state if st and st.disk_state else "Unknown")
        if st:
            for rep in st.replication_states.values():
                if rep.done_percentage is not None:
                    done = rep.done_percentage if done is None else min(done, rep.done_percentage)
    diskful = resource.diskful
    disk_state = _worst_disk_state(states) if diskful else "Diskless"
    lowered = disk_state.lower()
    usable = diskful and lowered == "uptodate"
    syncing = diskful and not usable and (lowered in SYNCING_DISK_STATES or done is not None)
    return Replica(resource.node_name, diskful, disk_state, usable, syncing, done,
                   resource.in_use)


def index_resources(items: Iterable[Resource]) -> dict[str, ResourceInfo]:
    """Group ``/v1/view/resources`` items by resource definition, dropping DELETE/INACTIVE ones."""
    return index_replicas((item.name, replica_from(item)) for item in items if not item.ignored)


def index_replicas(replicas: Iterable[tuple[str, Replica]]) -> dict[str, ResourceInfo]:
    """(resource definition, replica) pairs grouped: a stream of items can be reduced to replicas as
    it is read, so a whole list of REST items (~6 KB each) is never held (100,000 resources: ~1 GB)."""
    grouped: dict[str, dict[str, Replica]] = {}
    for name, replica in replicas:
        grouped.setdefault(name, {})[replica.node] = replica
    return {name: ResourceInfo(name, by_node) for name, by_node in grouped.items()}


def index_nodes(nodes: Iterable[Node], pools: Iterable[StoragePool]) -> dict[str, NodeInfo]:
    by_node: dict[str, dict[str, PoolInfo]] = {}
    for pool in pools:
        if pool.diskless:
            continue
        by_node.setdefault(pool.node_name, {})[pool.storage_pool_name] = PoolInfo(
            pool.storage_pool_name, pool.provider_kind, pool.free_capacity
        )
    return {
        n.name: NodeInfo(
            name=n.name,
            satellite=n.is_satellite,
            online=n.online,
            connection_status=(n.connection_status or "UNKNOWN").upper(),
            evacuating=n.evacuating,
            pools=by_node.get(n.name, {}),
        )
        for n in nodes
    }


@dataclass(frozen=True, slots=True)
class Level:
    """A topology level the extender scores: a node without a replica that shares this level's
    value with a diskful replica scores the level's weight (docs/extender.md, "Scores")."""

    name: str  # the word in reasons: "a diskful replica is in its zone a"
    weight: str  # its --score-weights name
    default: float  # its default score
    labels: tuple[str, ...]  # the node labels that carry it; the first one set wins


# Every topology level, nearest first (a node scores the nearest level it shares with a replica).
# Weights, reasons, node classes and the docs table follow this list: adding a level (say, rack)
# is one line here, one row in docs/extender.md (tests/test_scoring.py checks it) and its tests.
LEVELS: tuple[Level, ...] = (
    Level("zone", "same_zone", 2.0, ZONE_LABELS),
    Level("region", "same_region", 1.5, REGION_LABELS),
)


@dataclass(frozen=True, slots=True)
class Topology:
    values: tuple[str | None, ...]  # the node's value at each of LEVELS, in that order
    labels: Mapping[str, str]

    def value(self, level: str) -> str | None:
        return self.values[[lv.name for lv in LEVELS].index(level)]


def topology_of(node_obj: Mapping[str, Any]) -> Topology:
    labels = (node_obj.get("metadata") or {}).get("labels") or {}
    return Topology(tuple(first_label(labels, level.labels) for level in LEVELS), labels)


@dataclass(frozen=True, slots=True)
class KubeView:
    """The Kubernetes objects the extender reads, keyed as the lookups want them."""

    topology: Mapping[str, Topology] = field(default_factory=dict)  # node name ->
    pvcs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "ns/name" ->
    pvs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name ->
    storage_classes: Mapping[str, StorageClassInfo] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, items: Iterable[Mapping[str, Any]]) -> KubeView:
        topology: dict[str, Topology] = {}
        pvcs: dict[str, Mapping[str, Any]] = {}
        pvs: dict[str, Mapping[str, Any]] = {}
        classes: dict[str, StorageClassInfo] = {}
        for obj in items:
            kind = obj.get("kind")
            meta = obj.get("metadata") or {}
            name = meta.get("name")
            if not name:
                continue
            if kind == "Node":
                topology[name] = topology_of(obj)
            elif kind == "PersistentVolumeClaim":
                pvcs[f"{meta.get('namespace') or 'default'}/{name}"] = obj
            elif kind == "PersistentVolume":
                pvs[name] = obj
            elif kind == "StorageClass":
                classes[name] = StorageClassInfo.from_object(obj)
        return cls(topology, pvcs, pvs, classes)


@dataclass(frozen=True, slots=True)
class ClusterState:
    """One consistent view; replaced whole on every sync (never mutated)."""

    generation: int
    nodes: Mapping[str, NodeInfo]
    resources: Mapping[str, ResourceInfo]
    kube: KubeView
    linstor_synced_at: float  # clock() of the LINSTOR read this state came from
    kube_synced_at: float
    pool_max_free: Mapping[str, int]  # pool name -> largest free KiB over nodes (WFFC scaling)
    # The generation that first had this Kubernetes view: caches of what depends on Kubernetes alone
    # (node sets of affinity rules) live across LINSTOR-only changes.
    kube_since: int = 0

    @classmethod
    def build(
        cls,
        *,
        generation: int,
        nodes: Iterable[Node],
        pools: Iterable[StoragePool],
        resources: Iterable[Resource] | Mapping[str, ResourceInfo],
        kube: KubeView,
        linstor_synced_at: float,
        kube_synced_at: float,
        kube_since: int | None = None,
    ) -> ClusterState:
        node_index = index_nodes(nodes, pools)
        res_index = resources if isinstance(resources, Mapping) else index_resources(resources)
        max_free: dict[str, int] = {}
        for info in node_index.values():
            for pool in info.pools.values():
                if pool.free_kib is not None and pool.free_kib > max_free.get(pool.name, -1):
                    max_free[pool.name] = pool.free_kib
        return cls(generation, node_index, res_index, kube, linstor_synced_at, kube_synced_at, max_free,
                   generation if kube_since is None else kube_since)

    def same_content(self, other: ClusterState) -> bool:
        """Would every verdict be the same? (Everything but the read times.) Identical objects are
        compared by identity first: an unchanged Kubernetes view is the very same object."""
        return (self.kube is other.kube or self.kube == other.kube) and self.nodes == other.nodes \
            and (self.resources is other.resources or self.resources == other.resources)

    @property
    def synced_at(self) -> float:
        """The older of the two sources: the state is as stale as its stalest part."""
        return min(self.linstor_synced_at, self.kube_synced_at)

    def get_pvc(self, key: str) -> Mapping[str, Any] | None:
        return self.kube.pvcs.get(key)

    def get_pv(self, name: str) -> Mapping[str, Any] | None:
        return self.kube.pvs.get(name)

    def get_sc(self, name: str) -> StorageClassInfo | None:
        return self.kube.storage_classes.get(name)


EMPTY_STATE = ClusterState(0, {}, {}, KubeView(), float("-inf"), float("-inf"), {})
