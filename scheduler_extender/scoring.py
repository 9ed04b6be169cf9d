"""Pure placement logic: a verdict (fits?, score, reason) for every (pod, node). No I/O here.

Per volume, the best thing a node offers (weights configurable, defaults below):

| level | default | when |
|---|---|---|
| local_uptodate | 10 | a diskful replica on the node is UpToDate |
| local_syncing | 8 | a diskful replica on the node is resyncing (Inconsistent, Outdated, ...) |
| wffc_max..wffc_min | 7..3 | unbound WaitForFirstConsumer claim; the node's pool has room (as LINSTOR admits) |
| local_diskless | 4 | a diskless replica is already on the node |
| same_<level> | 2, 1.5 | no replica; a diskful replica shares the node's level (``state.LEVELS``) |
| remote | 1 | reachable only over the network |

One same_<level> row per entry of ``state.LEVELS``, nearest first: today zone (2), then region (1.5).

Per node, the volume scores are averaged weighted by each volume's size (a big database volume
matters more than a small config volume), rounded half up, and clamped to 0..10
(kube-scheduler's MaxExtenderPriority). A node fails the filter when any volume cannot be reached
from it; every failure is a storage reason, which preemption cannot fix.

Reasons are kept as templates and rendered only when needed (filter failures, ``explain``): the
prioritize path never formats a string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import orjson

from linstor_scheduler.volumes import Claim, RemoteAccess, human_bytes, node_selector_matches

from .state import LEVELS, ClusterState, NodeInfo, PoolInfo, ResourceInfo, Topology

MAX_SCORE = 10  # k8s.io/kube-scheduler/extender/v1 MaxExtenderPriority
NODE = "{node}"  # placeholder in reason templates
DEFAULT_VOLUME_WEIGHT = 1 << 30  # a claim of unknown size weighs as 1 GiB


@dataclass(frozen=True, slots=True)
class Weights:
    local_uptodate: float = 10
    local_syncing: float = 8
    wffc_max: float = 7
    wffc_min: float = 3
    local_diskless: float = 4
    remote: float = 1
    levels: tuple[float, ...] = tuple(level.default for level in LEVELS)  # same_<level>, in LEVELS' order

    @classmethod
    def defaults(cls) -> dict[str, float]:
        """Every weight by its --score-weights name, with its default."""
        plain = {f.name: f.default for f in fields(cls) if f.name != "levels"}
        return {**plain, **{level.weight: level.default for level in LEVELS}}  # type: ignore[dict-item]

    @classmethod
    def parse(cls, text: str | None) -> Weights:
        """``"local_syncing=7,remote=0"`` -> Weights; unknown names or bad values raise ValueError."""
        if not text:
            return cls()
        known = cls.defaults()
        values: dict[str, float] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            name, sep, raw = part.partition("=")
            name = name.strip()
            if not sep or name not in known:
                raise ValueError(f"unknown score weight {name!r}; known: {', '.join(sorted(known))}")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"score weight {name}={raw.strip()!r} is not a number") from None
            if not 0 <= value <= MAX_SCORE:
                raise ValueError(f"score weight {name}={value:g} is outside 0..{MAX_SCORE}")
            values[name] = value
        levels = tuple(values.pop(level.weight, level.default) for level in LEVELS)
        return cls(**values, levels=levels)


class VolumePlacementVerdict(NamedTuple):
    fits: bool
    score: float
    template: str | Callable[[], str]  # reason with {node}; a callable renders it only when read
    judged: bool = True  # False: not enough known to judge (counts neither way)

    def text(self, node: str) -> str:
        template = self.template if isinstance(self.template, str) else self.template()
        return template.replace(NODE, node)


class NodeVerdict(NamedTuple):
    """A node's verdict. It carries no node name, so nodes of the same class share one object;
    reasons are rendered with the name when a person (or FailedNodes) needs them."""

    fits: bool
    score: int
    volumes: tuple[VolumePlacementVerdict, ...]
    node_template: str | None = None  # a node-level reason (no satellite, OFFLINE, ...)

    def reasons(self, node: str) -> list[str]:
        out = [self.node_template.replace(NODE, node)] if self.node_template else []
        out += [v.text(node) for v in self.volumes]
        return out

    def failure(self, node: str) -> str:
        """What FailedNodes says: the node-level reason, or the failing volumes' reasons."""
        if self.node_template:
            return self.node_template.replace(NODE, node)
        return "; ".join(v.text(node) for v in self.volumes if not v.fits)


LOST_REPLICA = ("{label}: fencing judges the storage of its replica on node {node} lost (LINSTOR and its DRBD "
                "peers both say so; fencing's Lease record)")
LOST_STORAGE = ("fencing judges the storage of node {node} lost (LINSTOR and its DRBD peers both say so; "
                "fencing's Lease record)")


def node_problem(node: NodeInfo | None, lost: bool = False) -> str | None:
    """Why a node cannot attach any LINSTOR volume, as a template; None if it can. ``lost``: fencing's
    leader judges the node's storage lost (``linstor_scheduler.lost_storage``; ``ExtenderKubeView.lost``), which
    LINSTOR alone may not show (a satellite still ONLINE, cut from its DRBD peers)."""
    if node is None or not node.satellite:
        return "node {node} has no LINSTOR satellite"
    if not node.online:
        return f"LINSTOR satellite on node {{node}} is {node.connection_status}, not ONLINE"
    if lost:
        return LOST_STORAGE
    if node.evacuating:
        return "LINSTOR node {node} is being evacuated"
    return None


class NodeInputs(NamedTuple):
    """What judging reads of a node, apart from what the pod's own volumes say of it by name
    (``ClaimContext.node_sets`` and ``ClaimContext.own_nodes``) and, for an unbound claim, the free
    space of its pools (judged per node, never shared). ``judge_node`` reads the node through this
    record alone, and the grouped-node shortcut (grouping.py) uses the whole record as the nodes'
    class: a field added here is in the class key, so two nodes that differ in it never share a
    verdict (tests/test_scoring_property.py)."""

    problem: str | None  # ``node_problem``: why it can attach no LINSTOR volume (a template); None: it can
    levels: tuple[str | None, ...] | None  # its value at every ``state.LEVELS``; None: not a Kubernetes node


def node_inputs(name: str, state: ClusterState) -> NodeInputs:
    return inputs_of(state.nodes.get(name), state.kube.topology.get(name), name in state.kube.lost)


def inputs_of(node: NodeInfo | None, topo: Topology | None, lost: bool) -> NodeInputs:
    """``node_inputs`` from the node's parts (for a loop over many nodes). The level values come whole
    from ``Topology.values`` (one per ``state.LEVELS``), so a new level is read without a change here."""
    return NodeInputs(node_problem(node, lost), topo.values if topo else None)


@dataclass(frozen=True, slots=True)
class ClaimContext:
    """What judging one claim needs that is the same for every node: computed once per request."""

    claim: Claim
    resource: ResourceInfo | None
    access: RemoteAccess
    replica_topos: tuple[Topology, ...]  # topology of the nodes with a usable or syncing diskful replica
    shared: tuple[frozenset[str], ...]  # per LEVELS: the values those replicas are at
    has_diskful: bool
    unjudged: str | None  # why this claim cannot be judged (the same for every node), else None
    affinity_ok: frozenset[str] | None = None  # nodes the PV's node affinity admits (None: no affinity)
    access_ok: frozenset[str] | None = None  # nodes a fromSame rule admits (None: no such rule)
    lost_on: frozenset[str] = frozenset()  # nodes where fencing judges this volume's replica lost

    def node_sets(self) -> tuple[frozenset[str], ...]:
        """The sets ``judge_bound`` asks a node's membership of: nodes that share a class and differ
        here get verdicts of their own (grouping.py adds the membership to the class key)."""
        return tuple(s for s in (self.affinity_ok, self.access_ok) if s is not None)

    def own_nodes(self) -> frozenset[str]:
        """The nodes ``judge_bound`` judges by what the volume has there (a replica, one fencing
        judges lost, even where the index no longer lists it): each is judged alone, never by class."""
        replicas = self.resource.replicas.keys() if self.resource is not None else ()
        return self.lost_on.union(replicas)


NodeSets = Callable[[tuple[Any, ...], Callable[[], frozenset[str]]], frozenset[str]]


def _no_cache(_: tuple[Any, ...], compute: Callable[[], frozenset[str]]) -> frozenset[str]:
    return compute()


def prepare(
    claims: Sequence[Claim],
    resources: Sequence[ResourceInfo | None],
    state: ClusterState,
    node_sets: NodeSets = _no_cache,
) -> list[ClaimContext]:
    """Per-claim facts shared by all nodes. ``node_sets(key, compute)`` may cache the node sets
    (PV affinity, fromSame rules) across requests: they only change with the Kubernetes view."""
    names = all_node_names(state)
    contexts = []
    for claim, resource in zip(claims, resources, strict=True):
        unjudged = None
        if claim.pending:
            unjudged = f"{claim.label}: not judged, {claim.pending}"
        elif claim.bound and resource is None:
            unjudged = f"{claim.label}: not judged, resource not known to LINSTOR yet"
        diskful = [n for n, r in resource.replicas.items() if r.diskful and (r.usable or r.syncing)] if resource else []
        topos = tuple(t for t in (state.kube.topology.get(n) for n in diskful) if t is not None)
        access = claim.storage_class.remote_access if claim.storage_class else RemoteAccess(True)
        affinity_ok = access_ok = None
        if claim.bound and unjudged is None:
            if claim.pv_affinity:
                affinity = claim.pv_affinity
                affinity_ok = node_sets(
                    ("affinity", orjson.dumps(affinity, option=orjson.OPT_SORT_KEYS)),
                    lambda a=affinity: frozenset(n for n in names if node_selector_matches(a, n, _labels(state, n))),
                )
            if access.from_same:
                acc, tps = access, topos
                access_ok = node_sets(
                    ("from_same", access.from_same, tuple(sorted(diskful))),
                    lambda acc=acc, tps=tps: frozenset(
                        n for n in names if _access_rule_ok(acc, state.kube.topology.get(n), tps)),
                )
        lost_on = frozenset(n for r, n in state.kube.lost_replicas if r == resource.name) \
            if resource is not None and state.kube.lost_replicas else frozenset()
        contexts.append(ClaimContext(
            claim, resource, access, topos,
            tuple(frozenset(t.values[i] for t in topos if t.values[i]) for i in range(len(LEVELS))),
            bool(diskful), unjudged, affinity_ok, access_ok, lost_on,
        ))
    return contexts


def _labels(state: ClusterState, name: str) -> Mapping[str, str]:
    topo = state.kube.topology.get(name)
    return topo.labels if topo else {}


def _access_rule_ok(access: RemoteAccess, topo: Topology | None, replica_topos: Sequence[Topology]) -> bool:
    if not access.from_same:
        return access.allowed
    labels = topo.labels if topo else {}
    for keys in access.from_same:
        for other in replica_topos:
            if all(labels.get(k) is not None and labels.get(k) == other.labels.get(k) for k in keys):
                return True
    return False


def judge_bound(ctx: ClaimContext, name: str, inputs: NodeInputs, w: Weights) -> VolumePlacementVerdict:
    """A bound claim on node ``name``: by what the volume has there (``ClaimContext.own_nodes``), the
    sets it belongs to (``ClaimContext.node_sets``) and what judging reads of the node (``inputs``)."""
    claim = ctx.claim
    resource = ctx.resource
    assert resource is not None
    label = claim.label
    if name in ctx.lost_on:
        return VolumePlacementVerdict(False, 0, LOST_REPLICA.replace("{label}", label))
    if ctx.affinity_ok is not None and name not in ctx.affinity_ok:
        return VolumePlacementVerdict(
            False, 0, f"{label}: node {NODE} does not match the PersistentVolume's node affinity")
    replica = resource.replicas.get(name)
    if replica is not None and replica.usable:
        return VolumePlacementVerdict(True, w.local_uptodate, f"{label}: diskful replica on {NODE} is UpToDate")
    if replica is not None and replica.syncing:
        done = f", {replica.done_percentage:.0f}% done" if replica.done_percentage is not None else ""
        return VolumePlacementVerdict(
            True, w.local_syncing, f"{label}: diskful replica on {NODE} is {replica.disk_state} (syncing{done})"
        )
    prefix = ""
    if replica is not None and replica.diskful:
        prefix = f"diskful replica on {NODE} is {replica.disk_state}; "
    access = ctx.access
    if not (access.allowed if ctx.access_ok is None else name in ctx.access_ok):
        return VolumePlacementVerdict(
            False, 0, f"{label}: {prefix}no diskful replica on node {NODE} and its StorageClass {access.describe()}"
        )
    if replica is not None and not replica.diskful:
        return VolumePlacementVerdict(True, w.local_diskless, f"{label}: diskless replica already on {NODE}")
    where = prefix or f"no replica on {NODE}; "
    if inputs.levels is not None:
        for level, value, shared, score in zip(LEVELS, inputs.levels, ctx.shared, w.levels, strict=True):
            if value and value in shared:
                return VolumePlacementVerdict(
                    True, score, f"{label}: {where}a diskful replica is in its {level.name} {value}")
    if not ctx.has_diskful:
        why = f"{label}: {where}no UpToDate or syncing diskful replica anywhere; remote access only"
        return VolumePlacementVerdict(True, w.remote, why)
    return VolumePlacementVerdict(True, w.remote, f"{label}: {where}reachable over the network only")


def judge_unbound(claim: Claim, node: NodeInfo, state: ClusterState, w: Weights,
                  taken: dict[str, int] | None = None) -> VolumePlacementVerdict:
    """An unbound WaitForFirstConsumer claim: the volume will be created where the pod lands.

    ``taken``: KiB of this node's pools that the pod's earlier unbound claims take (VolumeBinding
    places every claim of the pod on the one node it chooses), taken off their free space; the
    claim adds its own size to the pool it would take. None: the claim is judged alone."""
    sc = claim.storage_class
    assert sc is not None
    label = claim.label
    wanted_kib = (claim.size_bytes or 0) // 1024
    if sc.storage_pool:
        pools = [node.pools[sc.storage_pool]] if sc.storage_pool in node.pools else []
        pool_desc = f"storage pool {sc.storage_pool}"
    else:
        pools = list(node.pools.values())
        pool_desc = "any storage pool"
    if state.held:  # capacity promised to other claims is not free (reservations.py)
        pools = [_after_holds(p, node.name, state.held) for p in pools]
    if taken:  # ... nor what the pod's own other claims take
        pools = [_after_own(p, taken) for p in pools]
    roomy = [p for p in pools if p.free_kib is None or p.free_kib >= wanted_kib]
    size = claim.size_bytes
    if roomy:
        best = max(roomy, key=lambda p: -1 if p.free_kib is None else p.free_kib)
        if taken is not None:
            taken[best.name] = taken.get(best.name, 0) + wanted_kib
        top = state.pool_max_free.get(best.name) or 0
        share = (best.free_kib / top) if (best.free_kib is not None and top > 0) else 0.0
        score = w.wffc_min + (w.wffc_max - w.wffc_min) * share

        def room(best: PoolInfo = best) -> str:  # rendered only when read: one per node is costly
            free = "unknown" if best.free_kib is None else human_bytes(best.free_kib * 1024)
            return (f"{label}: unbound, storage pool {best.name} on {NODE} has {free} free "
                    f"(claim requests {human_bytes(size)})")

        return VolumePlacementVerdict(True, score, room)
    if pools:
        p = max(pools, key=lambda p: p.free_kib or 0)

        promised = state.held.get(p.name, {}).get(node.name, 0)
        own = (taken or {}).get(p.name, 0) * 1024

        def problem(p: PoolInfo = p) -> str:
            counted = [f"{human_bytes(promised)} promised to other claims"] if promised else []
            counted += [f"{human_bytes(own)} for the pod's other claims"] if own else []
            held = f" once {' and '.join(counted)} is counted" if counted else ""
            return (f"storage pool {p.name} on node {NODE} has {human_bytes((p.free_kib or 0) * 1024)} free"
                    f"{held}, the claim requests {human_bytes(size)}")
    else:
        def problem(desc: str = pool_desc) -> str:
            return f"{desc} is missing on node {NODE}"
    if not sc.remote_access.allowed:
        return VolumePlacementVerdict(
            False, 0, lambda: f"{label}: {problem()} and its StorageClass forbids remote access")
    return VolumePlacementVerdict(
        True, w.remote, lambda: f"{label}: unbound; {problem()}; the volume would be reached over the network")


def _after_holds(pool: PoolInfo, node: str, held: Mapping[str, Mapping[str, int]]) -> PoolInfo:
    """``pool`` with the bytes promised on it (``ClusterState.held``) taken from its free space."""
    promised = held.get(pool.name, {}).get(node, 0)
    if not promised or pool.free_kib is None:
        return pool
    return replace(pool, free_kib=max(0, pool.free_kib - promised // 1024))


def _after_own(pool: PoolInfo, taken: Mapping[str, int]) -> PoolInfo:
    """``pool`` with what the pod's own earlier claims take on it (KiB) taken from its free space."""
    own = taken.get(pool.name, 0)
    if not own or pool.free_kib is None:
        return pool
    return replace(pool, free_kib=max(0, pool.free_kib - own))


def judge_node(name: str, contexts: Sequence[ClaimContext], state: ClusterState, w: Weights) -> NodeVerdict:
    """The verdict for one node, from the per-claim contexts of ``prepare``. The pod's unbound claims
    are judged in order, each after what the earlier ones take of the node's pools (``taken``):
    two 60 GiB claims do not both fit a pool with 100 GiB free."""
    node = state.nodes.get(name)  # its pools, for the unbound claims
    inputs = node_inputs(name, state)
    problem = inputs.problem
    verdicts: list[VolumePlacementVerdict] = []
    judged = False
    taken: dict[str, int] = {}
    for ctx in contexts:
        if ctx.unjudged is not None:
            verdicts.append(VolumePlacementVerdict(True, 0, ctx.unjudged, False))
            continue
        judged = True
        if problem is not None:
            continue  # the node-level reason says it all
        if ctx.claim.bound:
            verdicts.append(judge_bound(ctx, name, inputs, w))
        else:
            assert node is not None
            verdicts.append(judge_unbound(ctx.claim, node, state, w, taken))
    if judged and problem is not None:
        return NodeVerdict(False, 0, tuple(verdicts), problem)
    return combine([c.claim for c in contexts], verdicts)


def combine(claims: Sequence[Claim], verdicts: Sequence[VolumePlacementVerdict]) -> NodeVerdict:
    fits = all(v.fits for v in verdicts)
    total = weight_sum = 0.0
    for claim, verdict in zip(claims, verdicts, strict=True):
        if not verdict.judged:
            continue  # the same for every node: it would only compress the scale
        weight = claim.size_bytes or DEFAULT_VOLUME_WEIGHT
        total += verdict.score * weight
        weight_sum += weight
    score = int(total / weight_sum + 0.5) if (fits and weight_sum) else 0
    return NodeVerdict(fits, max(0, min(MAX_SCORE, score)), tuple(verdicts))


def all_node_names(state: ClusterState) -> list[str]:
    names: Mapping[str, object] = {**state.nodes, **state.kube.topology}
    return sorted(names)
