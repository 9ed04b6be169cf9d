"""Building the observed state from one LINSTOR read and one look at the Kubernetes objects.

The LINSTOR read is all-or-nothing: a failed or garbled answer to any of the five reads raises, and
the controller then acts on nothing (never on half a view). Kubernetes objects come as raw dicts
(informer caches or a one-off list); the pod -> PVC -> PV -> volumeHandle mapping is the one the
extender uses (``linstor_scheduler.volumes``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from linstor_scheduler.linstor.models import Node, Resource, ResourceDefinition, ResourceGroup, StoragePool
from linstor_scheduler.volumes import resolve_pod_claims

from .verdict import NodeState, Observed, PodState, PodVolume, ReplicaState, ResourceState, storage_proof

LABEL = "linstor.csi.linbit.com/on-storage-lost"
LABEL_VALUE = "remove"
LABEL_SELECTOR = LABEL  # server-side: every pod that carries the label, whatever its value
OPT_OUT_ANNOTATION = "drbd.linbit.com/ignore-fail-over"

Obj = Mapping[str, Any]


class LinstorReader(Protocol):
    async def get_nodes(self) -> list[Node]: ...
    async def get_resources(self) -> list[Resource]: ...
    async def get_resource_definitions(self) -> list[ResourceDefinition]: ...
    async def get_resource_groups(self) -> list[ResourceGroup]: ...
    async def get_controller_properties(self) -> dict[str, str]: ...
    async def get_storage_pools(self) -> list[StoragePool]: ...


@dataclass(frozen=True)
class LinstorView:
    """One complete read of LINSTOR, stamped with the (controller clock) time the read started."""

    nodes: list[Node]
    resources: list[Resource]
    definitions: list[ResourceDefinition]
    groups: list[ResourceGroup]
    controller_props: dict[str, str]
    read_at: float
    pools: list[StoragePool] = field(default_factory=list)


async def read_linstor(client: LinstorReader, read_at: float) -> LinstorView:
    """All six reads concurrently; any failure raises (LinstorError): no partial view."""
    nodes, resources, definitions, groups, props, pools = await asyncio.gather(
        client.get_nodes(), client.get_resources(), client.get_resource_definitions(), client.get_resource_groups(),
        client.get_controller_properties(), client.get_storage_pools())
    return LinstorView(nodes, resources, definitions, groups, props, read_at, pools)


@dataclass(frozen=True)
class KubeObjects:
    pods: list[dict[str, Any]] = field(default_factory=list)  # only the pods that carry the label
    pvcs: dict[str, dict[str, Any]] = field(default_factory=dict)  # namespace/name
    pvs: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)


def resource_states(view: LinstorView) -> dict[str, ResourceState]:
    groups = {g.name: g.props for g in view.groups}
    props_of: dict[str, dict[str, str]] = {}
    for rd in view.definitions:
        props_of[rd.name] = {**view.controller_props, **groups.get(rd.resource_group_name or "", {}), **rd.props}
    replicas: dict[str, dict[str, ReplicaState]] = {}
    for item in view.resources:
        drbd = item.layer_object.find_drbd() if item.layer_object else None
        states = [(v.state.disk_state or "") if v.state else "" for v in item.volumes]
        replicas.setdefault(item.name, {})[item.node_name] = ReplicaState(
            node=item.node_name, diskful=item.diskful,
            up_to_date=bool(states) and all(s.lower() == "uptodate" for s in states),
            in_use=item.in_use, may_promote=drbd.may_promote if drbd else None,
            peers={peer: conn.connected for peer, conn in (drbd.connections.items() if drbd else ())},
            ignored=item.ignored, tie_breaker=any(f.upper() == "TIE_BREAKER" for f in item.flags),
            reported=drbd is not None and (drbd.may_promote is not None or bool(drbd.connections)))
    return {name: ResourceState(name, reps, props_of.get(name, dict(view.controller_props)))
            for name, reps in replicas.items()}


def kube_ready(node: Obj | None) -> bool | None:
    if node is None:
        return None
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False  # a Node without a Ready condition is not known to be ready


def node_states(view: LinstorView, kube: KubeObjects) -> dict[str, NodeState]:
    states = {n.name: NodeState(n.name, n.connection_status or "UNKNOWN", kube_ready(kube.nodes.get(n.name)))
              for n in view.nodes}
    for name, node in kube.nodes.items():
        states.setdefault(name, NodeState(name, None, kube_ready(node)))
    return states


def pod_state(pod: Obj, kube: KubeObjects) -> PodState:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    claims = resolve_pod_claims(pod, kube.pvcs.get, kube.pvs.get, lambda _name: None)
    volumes = tuple(
        PodVolume(c.ref.key, ((kube.pvcs.get(c.ref.key) or {}).get("spec") or {}).get("volumeName"), c.resource,
                  c.pending)
        for c in claims)
    host_paths = tuple(str(v.get("name")) for v in spec.get("volumes") or []
                       if isinstance(v, dict) and v.get("hostPath"))
    return PodState(
        namespace=meta.get("namespace") or "default", name=meta.get("name") or "", uid=meta.get("uid") or "",
        node=spec.get("nodeName"), volumes=volumes,
        opted_in=(meta.get("labels") or {}).get(LABEL) == LABEL_VALUE,
        opted_out=OPT_OUT_ANNOTATION in (meta.get("annotations") or {}),
        host_paths=host_paths, terminating=bool(meta.get("deletionTimestamp")))


def running_pods(pods: Iterable[Obj]) -> list[Obj]:
    """Pods that may hold their volumes: not finished."""
    return [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def build_observed(view: LinstorView, kube: KubeObjects, fault_since: Mapping[tuple[str, str], float]) -> Observed:
    pods = tuple(pod_state(p, kube) for p in running_pods(kube.pods))
    return Observed(node_states(view, kube), resource_states(view), pods, dict(fault_since))


def faults(resources: Mapping[str, ResourceState], nodes: Mapping[str, NodeState]) -> set[tuple[str, str]]:
    """Every (resource, node) whose replica has lost its storage right now."""
    found = set()
    for res in resources.values():
        for node in res.replicas:
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
