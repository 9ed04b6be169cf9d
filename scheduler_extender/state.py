"""The extender's in-memory index of the cluster: what the request path reads, nothing else.

A ``ClusterState`` is built whole from one LINSTOR read and the Kubernetes caches, then swapped in
with a single reference assignment, so a request never sees half an update. It keeps only what
scoring needs, in compact frozen dataclasses, so 100k resources fit in a few tens of MB.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from linstor_scheduler.claims import TRANSFORMS as CLAIM_TRANSFORMS
from linstor_scheduler.claims import ClaimRecord, VolumeRecord, claim_record, volume_record
from linstor_scheduler.kube import objects
from linstor_scheduler.linstor import capacity
from linstor_scheduler.linstor.compact import NodeItem, ResourceItem, StoragePoolItem
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
    """A storage pool on a node. ``free_kib`` is the largest volume LINSTOR would admit there now
    (``linstor.capacity``: min(free x free ratio, total x total ratio - reserved)), not the REST
    ``free_capacity``: the two differ for a thin pool, whose free capacity a new volume does not lower
    and which LINSTOR over-commits 20 times by default. None: LINSTOR does not know (it then admits)."""

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


# The shortcut for plain items (no flags, one volume UpToDate, not resyncing: most items at scale): the
# replica such an item makes (``replica_from``) has each of its fields either the same for all of them
# (``PLAIN_SAME``) or read from the item (``PLAIN_FROM_ITEM``: the replica's field -> the item's
# attribute). The fields read from the item are the key that finds the one replica of those values
# (``ResourceIndexer``), so every field of ``Replica`` must be named once here: ``check_plain`` refuses
# (at import) a field added to ``Replica`` and left out, which would make replicas that differ in it
# one; tests/test_shared_replicas.py checks each field's side against ``replica_from``.
PLAIN_SAME: Mapping[str, Any] = MappingProxyType(
    {"diskful": True, "disk_state": "UpToDate", "usable": True, "syncing": False, "done_percentage": None})
PLAIN_FROM_ITEM: Mapping[str, str] = MappingProxyType({"node": "node_name", "in_use": "in_use"})


def check_plain(fields: Iterable[str], same: Iterable[str] = PLAIN_SAME,
                from_item: Iterable[str] = PLAIN_FROM_ITEM) -> None:
    """TypeError unless ``fields`` (a replica's) are each named once, as ``same`` or ``from_item``."""
    fields, same, from_item = list(fields), set(same), set(from_item)
    left_out = [f for f in fields if f not in same and f not in from_item]
    twice, stray = same & from_item, (same | from_item) - set(fields)
    if left_out or twice or stray:
        raise TypeError(f"the plain-replica shortcut (state.PLAIN_SAME, PLAIN_FROM_ITEM) does not match Replica: "
                        f"left out {left_out}, named twice {sorted(twice)}, not a field {sorted(stray)}")


check_plain(f.name for f in dataclasses.fields(Replica))
# A plain item -> its replica's key: the replica's fields read from the item, in PLAIN_FROM_ITEM's order.
plain_key: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*PLAIN_FROM_ITEM.values())


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


def replica_from(resource: Resource | ResourceItem) -> Replica:
    """One item (a full model or a compact record: the same attribute names) -> its replica."""
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


class ResourceIndexer:
    """Builds the resource index batch by batch, as the LINSTOR body streams in.

    Equal replicas are one object: at 100,000 items most replicas are "diskful, UpToDate, not in
    use" on one of a few thousand nodes, so the index holds a few thousand ``Replica`` objects and
    one small dict per resource definition, and each node name once (a replica's node string is
    the key of its resource's dict).
    """

    MAX_SHARED = 100_000  # distinct replicas remembered across reads (resync percentages add new ones)

    def __init__(self, previous: ResourceIndexer | None = None) -> None:
        self.index: dict[str, ResourceInfo] = {}
        keep = previous is not None and len(previous._replicas) < self.MAX_SHARED
        self._replicas: dict[Replica, Replica] = previous._replicas if keep else {}  # type: ignore[union-attr]
        # plain_key (node, in use) -> the replica of every plain item with that key (PLAIN_SAME)
        self._plain: dict[tuple[Any, ...], Replica] = previous._plain if keep else {}  # type: ignore[union-attr]
        self._previous: dict[str, ResourceInfo] = previous.index if previous is not None else {}
        self._kept = 0  # resources that kept the previous read's object
        self.items = 0
        # (node, pool) -> KiB LINSTOR reserves there for the volumes it lists (``capacity``): every
        # item counts, DELETE/INACTIVE ones too (their volumes hold their space until they are gone)
        self.reserved: dict[tuple[str, str], int] = {}

    def add(self, items: Iterable[Resource | ResourceItem]) -> None:
        index, shared, plain, reserved, key_of = self.index, self._replicas, self._plain, self.reserved, plain_key
        for item in items:
            self.items += 1
            for vol in item.volumes:
                pool = vol.storage_pool_name
                if pool is not None:
                    key = (item.node_name, pool)
                    reserved[key] = reserved.get(key, 0) + vol.reserved_kib
            # Fast path, most items at scale: no flags, one volume UpToDate, not resyncing.
            vols = item.volumes
            st = vols[0].state if len(vols) == 1 and not item.flags else None
            if st is not None and st.disk_state == "UpToDate" and not st.replication_states:
                key = key_of(item)
                replica = plain.get(key)
                if replica is None:
                    replica = plain[key] = shared.setdefault(fresh := replica_from(item), fresh)
            else:
                if item.ignored:
                    continue
                replica = replica_from(item)
                replica = shared.setdefault(replica, replica)
            info = index.get(item.name)
            if info is None:
                info = index[item.name] = ResourceInfo(item.name, {})
            info.replicas[replica.node] = replica  # type: ignore[index]


    def keep_unchanged(self, names: Iterable[str]) -> None:
        """Where a resource's replicas are what the previous read found, keep the previous object:
        the two indexes then share nearly everything, so the old one is freed in a moment (it took
        ~30 ms at 100,000 items, during which no request was answered) and the memory of two full
        indexes is never held at once for long. The comparison is cheap: equal replicas are one object."""
        index, previous = self.index, self._previous
        kept = 0
        for name in names:
            old = previous.get(name)
            if old is not None and index[name] is not old and old.replicas == index[name].replicas:
                index[name] = old
                kept += 1
        self._kept += kept

    def forget_previous(self) -> None:
        """After ``keep_unchanged`` saw every name: when every resource kept its object and none
        went away, the index *is* the previous one (the same dict), so the publish tells an
        unchanged read by identity instead of comparing 30,000 entries on the serving loop."""
        if self._previous and self._kept == len(self.index) == len(self._previous):
            self.index = self._previous
        self._previous = {}


def index_resources(items: Iterable[Resource | ResourceItem]) -> dict[str, ResourceInfo]:
    """Group ``/v1/view/resources`` items by resource definition, dropping DELETE/INACTIVE ones."""
    indexer = ResourceIndexer()
    indexer.add(items)
    return indexer.index


def reserved_by_pool(items: Iterable[Resource | ResourceItem]) -> dict[tuple[str, str], int]:
    """(node, pool) -> KiB LINSTOR reserves there for the listed volumes (``ResourceIndexer.reserved``)."""
    reserved: dict[tuple[str, str], int] = {}
    for item in items:
        for vol in item.volumes:
            if vol.storage_pool_name is not None:
                key = (item.node_name, vol.storage_pool_name)
                reserved[key] = reserved.get(key, 0) + vol.reserved_kib
    return reserved


class PoolBasis(NamedTuple):
    """What a pool's room is computed from, its ratios resolved (``resolve_pools``): the live read
    keeps these small tuples, not the decoded pool records, while the resources stream in."""

    node_name: str
    storage_pool_name: str
    provider_kind: str
    free_capacity: int | None
    total_capacity: int | None
    free_ratio: float
    total_ratio: float


def resolve_pools(pools: Iterable[StoragePool | StoragePoolItem | PoolBasis],
                  definitions: Mapping[str, capacity.Props] | None = None,
                  controller_props: Mapping[str, str] | None = None) -> list[PoolBasis]:
    """The diskful pools with their over-subscription ratios looked up as LINSTOR looks them up: the
    pool's props, then its definition's (``definitions``: pool name -> props), then the controller's."""
    definitions = definitions or {}
    controller_props = controller_props or capacity.NO_PROPS
    out: list[PoolBasis] = []
    for pool in pools:
        if isinstance(pool, PoolBasis):
            out.append(pool)
            continue
        if pool.diskless:
            continue
        name = pool.storage_pool_name
        free_ratio, total_ratio = capacity.ratios(pool.provider_kind, pool.props,
                                                  definitions.get(name, capacity.NO_PROPS), controller_props)
        out.append(PoolBasis(pool.node_name, name, pool.provider_kind, pool.free_capacity, pool.total_capacity,
                             free_ratio, total_ratio))
    return out


def index_nodes(nodes: Iterable[Node | NodeItem],
                pools: Iterable[StoragePool | StoragePoolItem | PoolBasis],
                reserved: Mapping[tuple[str, str], int] | None = None,
                definitions: Mapping[str, capacity.Props] | None = None,
                controller_props: Mapping[str, str] | None = None) -> dict[str, NodeInfo]:
    """LINSTOR nodes with their pools, each pool with the room LINSTOR would admit a volume in
    (``linstor.capacity``, never below 0): ``reserved`` ((node, pool) -> KiB of the volumes LINSTOR
    lists there), and the ratios from the pools' props, ``definitions`` (pool name -> its storage pool
    definition's props) and ``controller_props`` (``resolve_pools``; pools may come resolved)."""
    by_node = pools_by_node(resolve_pools(pools, definitions, controller_props), reserved or {})
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


def pools_by_node(pools: Iterable[PoolBasis],
                  reserved: Mapping[tuple[str, str], int]) -> dict[str, dict[str, PoolInfo]]:
    """node -> pool name -> the pool with its room (``linstor.capacity``, never below 0)."""
    by_node: dict[str, dict[str, PoolInfo]] = {}
    for pool in pools:
        name = pool.storage_pool_name
        room = capacity.admissible_kib(pool.free_capacity, pool.total_capacity,
                                       reserved.get((pool.node_name, name), 0), pool.free_ratio, pool.total_ratio)
        by_node.setdefault(pool.node_name, {})[name] = PoolInfo(
            name, pool.provider_kind, None if room is None else max(0, room))
    return by_node


def with_pools(nodes: dict[str, NodeInfo], pools: Iterable[PoolBasis],
               reserved: Mapping[tuple[str, str], int]) -> dict[str, NodeInfo]:
    """``nodes`` (indexed without pools) with their pools and each pool's room (``index_nodes``)."""
    pooled = pools_by_node(pools, reserved)  # pools of nodes LINSTOR does not list are dropped, as there
    for name, info in nodes.items():
        found = pooled.get(name)
        if found is not None:
            nodes[name] = dataclasses.replace(info, pools=found)
    return nodes


def keep_unchanged_nodes(nodes: dict[str, NodeInfo],
                         previous: Mapping[str, NodeInfo] | None) -> Mapping[str, NodeInfo]:
    """The previous read's ``NodeInfo`` wherever a node is unchanged, and the previous mapping
    itself when every node is. The publish's unchanged-poll check (``ClusterState.same_content``)
    is then an identity check on the serving loop; the comparisons (~5,000 at scale) are made here,
    in the read thread."""
    if not previous:
        return nodes
    same = len(nodes) == len(previous)
    for name, info in nodes.items():
        old = previous.get(name)
        if old is not None and old == info:
            nodes[name] = old  # an existing key: the dict is not resized while iterated
        else:
            same = False
    return previous if same else nodes


def max_free_by_pool(nodes: Mapping[str, NodeInfo]) -> dict[str, int]:
    """Pool name -> the largest free KiB any node has in it (scales WFFC scores)."""
    max_free: dict[str, int] = {}
    for info in nodes.values():
        for pool in info.pools.values():
            if pool.free_kib is not None and pool.free_kib > max_free.get(pool.name, -1):
                max_free[pool.name] = pool.free_kib
    return max_free


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
    labels = objects.labels(node_obj)
    return Topology(tuple(first_label(labels, level.labels) for level in LEVELS), labels)


# What the extender's informers keep of each kind (``KubeCaches(transforms=...)``): records only. Of
# a Node, its topology (a Node with its status, images and managedFields is several KB as a dict);
# of a StorageClass, what the verdicts read (parsed once, not at every rebuild of the view).
EXTENDER_TRANSFORMS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "Node": topology_of, "StorageClass": StorageClassInfo.from_object, **CLAIM_TRANSFORMS}


@dataclass(frozen=True, slots=True)
class ExtenderKubeView:
    """The Kubernetes objects the extender reads, keyed as the lookups want them: records, never the
    objects (``linstor_scheduler.claims``)."""

    topology: Mapping[str, Topology] = field(default_factory=dict)  # node name ->
    pvcs: Mapping[str, ClaimRecord] = field(default_factory=dict)  # "ns/name" ->
    pvs: Mapping[str, VolumeRecord] = field(default_factory=dict)  # name ->
    storage_classes: Mapping[str, StorageClassInfo] = field(default_factory=dict)
    # Nodes whose storage fencing's leader judges lost, from its recent Lease record
    # (``linstor_scheduler.lost_storage``): LINSTOR pods are kept off them (``scoring.node_problem``).
    lost: frozenset[str] = frozenset()
    # (resource, node) replicas fencing judges lost on nodes not lost whole: only the pods using those
    # resources are kept off those nodes (``scoring.ClaimContext.lost_on``).
    lost_replicas: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_objects(cls, items: Iterable[Mapping[str, Any] | ClaimRecord | VolumeRecord]) -> ExtenderKubeView:
        """From objects (a snapshot's items, a test's) and records (a snapshot's claims)."""
        topology: dict[str, Topology] = {}
        pvcs: dict[str, ClaimRecord] = {}
        pvs: dict[str, VolumeRecord] = {}
        classes: dict[str, StorageClassInfo] = {}
        for obj in items:
            if isinstance(obj, ClaimRecord):
                pvcs[obj.key] = obj
                continue
            if isinstance(obj, VolumeRecord):
                pvs[obj.name] = obj
                continue
            kind = obj.get("kind")
            name = objects.name(obj)
            if not name:
                continue
            if kind == "Node":
                topology[name] = topology_of(obj)
            elif kind == "PersistentVolumeClaim":
                record = claim_record(obj)
                pvcs[record.key] = record
            elif kind == "PersistentVolume":
                pvs[name] = volume_record(obj)
            elif kind == "StorageClass":
                classes[name] = StorageClassInfo.from_object(obj)
        return cls(topology, pvcs, pvs, classes)

    @classmethod
    def from_stores(cls, stores: Mapping[str, Mapping[str, Any]]) -> ExtenderKubeView:
        """From copies of the informers' stores of records (``Informer.snapshot``;
        ``EXTENDER_TRANSFORMS``; kind -> key -> record), keyed as the view keys them: four dicts
        copied in C, no loop over 66,000 claims and volumes on the serving loop at each change."""
        return cls(stores["Node"], stores["PersistentVolumeClaim"], stores["PersistentVolume"],
                   stores["StorageClass"])


NOTHING_HELD: Mapping[str, Mapping[str, int]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ClusterState:
    """One consistent view; replaced whole on every sync (never mutated)."""

    generation: int
    nodes: Mapping[str, NodeInfo]
    resources: Mapping[str, ResourceInfo]
    kube: ExtenderKubeView
    linstor_synced_at: float  # clock() of the LINSTOR read this state came from
    kube_synced_at: float
    pool_max_free: Mapping[str, int]  # pool name -> largest free KiB over nodes (WFFC scaling)
    # The generation that first had this Kubernetes view: caches of what depends on Kubernetes alone
    # (node sets of affinity rules) live across LINSTOR-only changes.
    kube_since: int = 0
    node_classes: Mapping[str, int] | None = None  # node -> class id (grouping.node_class); None: not yet
    # Capacity promised to unbound WaitForFirstConsumer claims that LINSTOR's free space does not
    # show yet (reservations.py): pool -> node -> bytes. Empty but in the live extender's judging
    # (``reservations.promised_state``); scoring subtracts it from each pool's free space.
    held: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: NOTHING_HELD)

    @classmethod
    def build(
        cls,
        *,
        generation: int,
        nodes: Iterable[Node | NodeItem] | Mapping[str, NodeInfo],
        pools: Iterable[StoragePool | StoragePoolItem],
        resources: Iterable[Resource] | Mapping[str, ResourceInfo],
        kube: ExtenderKubeView,
        linstor_synced_at: float,
        kube_synced_at: float,
        kube_since: int | None = None,
        pool_max_free: Mapping[str, int] | None = None,
        node_classes: Mapping[str, int] | None = None,
        reserved: Mapping[tuple[str, str], int] | None = None,
        definitions: Mapping[str, capacity.Props] | None = None,
        controller_props: Mapping[str, str] | None = None,
    ) -> ClusterState:
        """``pool_max_free`` and ``node_classes`` may come computed (the live sync does it once per
        read, in slices between requests); otherwise they are computed here / on first use. Pools are
        judged by LINSTOR's rule (``index_nodes``): ``reserved`` per (node, pool) comes from the
        resource items when they are given as items, else from the argument (none: 0); the ratios
        from the pools' props, ``definitions`` (pool name -> props) and ``controller_props``."""
        if not isinstance(resources, Mapping):
            resources = list(resources)
            if reserved is None:
                reserved = reserved_by_pool(resources)
        node_index = nodes if isinstance(nodes, Mapping) else index_nodes(
            nodes, pools, reserved, definitions, controller_props)
        res_index = resources if isinstance(resources, Mapping) else index_resources(resources)
        max_free = pool_max_free if pool_max_free is not None else max_free_by_pool(node_index)
        return cls(generation, node_index, res_index, kube, linstor_synced_at, kube_synced_at, max_free,
                   generation if kube_since is None else kube_since, node_classes)

    def same_content(self, other: ClusterState) -> bool:
        """Would every verdict be the same? (Everything but the read times; pool maxima and node
        classes follow from the nodes and the Kubernetes view.) Identical objects are compared by
        identity first: an unchanged Kubernetes view is the very same object, and the live sync's
        resource index keeps the previous read's objects where nothing changed
        (``ResourceIndexer.keep_unchanged``), so equal indexes compare entry by identity."""
        return (self.kube is other.kube or self.kube == other.kube) \
            and (self.nodes is other.nodes or self.nodes == other.nodes) \
            and (self.resources is other.resources or self.resources == other.resources)

    @property
    def synced_at(self) -> float:
        """The older of the two sources: the state is as stale as its stalest part."""
        return min(self.linstor_synced_at, self.kube_synced_at)

    def get_pvc(self, key: str) -> ClaimRecord | None:
        return self.kube.pvcs.get(key)

    def get_pv(self, name: str) -> VolumeRecord | None:
        return self.kube.pvs.get(name)

    def get_sc(self, name: str) -> StorageClassInfo | None:
        return self.kube.storage_classes.get(name)


EMPTY_STATE = ClusterState(0, {}, {}, ExtenderKubeView(), float("-inf"), float("-inf"), {})
