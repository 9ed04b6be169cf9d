"""Small hand-built clusters for the pure-logic tests: LINSTOR items in their REST shapes."""

from __future__ import annotations

from typing import Any

from devkit import kube_objects as k
from linstor_scheduler.linstor.models import Node, Resource, StoragePool
from scheduler_extender.state import ClusterState, ExtenderKubeView

GIB_KIB = 1024 * 1024


def lnode(name: str, status: str = "ONLINE", type: str = "SATELLITE", flags: list[str] | None = None) -> Node:
    return Node.parse({"name": name, "type": type, "connection_status": status, "flags": flags or []})


def lpool(node: str, name: str = "thindata", free_gib: float | None = 100, kind: str = "LVM_THIN",
          ratio: str | None = "1") -> StoragePool:
    """A pool judged by its free space alone: ``MaxOversubscriptionRatio`` 1 (no over-commit), and a
    total capacity no smaller than the free one, so LINSTOR's rule (``linstor.capacity``) admits exactly
    ``free_gib``. ``ratio=None``: LINSTOR's default ratio for the kind (20 for thin pools)."""
    free = None if free_gib is None else int(free_gib * GIB_KIB)
    total = max(200 * GIB_KIB, free or 0)
    props = {} if ratio is None else {"MaxOversubscriptionRatio": ratio}
    return StoragePool.parse({"storage_pool_name": name, "node_name": node, "provider_kind": kind,
                                       "free_capacity": free, "total_capacity": total, "props": props})


def lres(name: str, node: str, *, diskless: bool = False, disk_state: str | None = None,
         flags: list[str] | None = None, done: float | None = None) -> Resource:
    state = disk_state or ("Diskless" if diskless else "UpToDate")
    vol: dict[str, Any] = {"volume_number": 0, "storage_pool_name": "DfltDisklessStorPool" if diskless else "thindata",
                           "state": {"disk_state": state}}
    if done is not None:
        vol["state"]["replication_states"] = {"peer": {"replication_state": "SyncTarget", "done_percentage": done}}
    all_flags = (["DISKLESS", "DRBD_DISKLESS"] if diskless else []) + (flags or [])
    return Resource.parse({"name": name, "node_name": node, "flags": all_flags, "volumes": [vol],
                                    "state": {"in_use": False}})


def build(nodes: list[Node], pools: list[StoragePool], resources: list[Resource],
          kube: list[dict[str, Any]], generation: int = 1) -> ClusterState:
    return ClusterState.build(generation=generation, nodes=nodes, pools=pools, resources=resources,
                              kube=ExtenderKubeView.from_objects(kube), linstor_synced_at=0.0, kube_synced_at=0.0)


def standard() -> ClusterState:
    """w1,w2 zone a; w3,w4 zone b (region eu); w5 zone c (us); w6 OFFLINE; w7 zone d (eu); nosat: no satellite."""
    zones = {"w1": ("a", "eu"), "w2": ("a", "eu"), "w3": ("b", "eu"), "w4": ("b", "eu"), "w5": ("c", "us"),
             "w6": ("c", "us"), "w7": ("d", "eu")}
    nodes = [lnode(n) for n in zones if n != "w6"] + [lnode("w6", "OFFLINE")]
    pools = [lpool("w1", free_gib=50), lpool("w2", free_gib=100), lpool("w3", free_gib=5), lpool("w5", free_gib=None)]
    resources = [
        lres("pvc-a", "w1"), lres("pvc-a", "w3", disk_state="Inconsistent", done=42.0),
        lres("pvc-a", "w2", diskless=True, flags=["TIE_BREAKER"]),
        lres("pvc-local", "w2"),
        lres("pvc-zonal", "w3"),
        lres("pvc-failed", "w1", disk_state="Failed"), lres("pvc-failed", "w4"),
        lres("pvc-gone", "w4", flags=["DELETE"]),
    ]
    kube = [k.node(n, zone=z, region=r) for n, (z, r) in zones.items()] + [k.node("nosat")]
    kube += [
        k.storage_class("r2", remote=True),
        k.storage_class("local", remote=False),
        k.storage_class("zonal", remote=[{"fromSame": ["topology.kubernetes.io/zone"]}]),
        k.storage_class("imm", remote=True, wffc=False),
        k.storage_class("nopool", pool=None, remote=False),
    ]
    kube += k.bound_volume("c-a", "pvc-a", storage_class="r2", size="10Gi")
    kube += k.bound_volume("c-local", "pvc-local", storage_class="local", size="1Gi")
    kube += k.bound_volume("c-zonal", "pvc-zonal", storage_class="zonal", size="1Gi")
    kube += k.bound_volume("c-failed", "pvc-failed", storage_class="r2", size="1Gi")
    kube += k.bound_volume("c-gone", "pvc-gone", storage_class="r2", size="1Gi")
    kube += [k.pvc("c-aff", storage_class="r2", volume="pv-aff"),
             k.pv("pv-aff", handle="pvc-a", claim=("default", "c-aff"), storage_class="r2",
                  affinity_nodes=["w1", "w3"])]
    kube += [k.pvc("c-new", storage_class="local", size="20Gi"), k.pvc("c-new-remote", storage_class="r2", size="20Gi"),
             k.pvc("c-imm", storage_class="imm"), k.pvc("c-any", storage_class="nopool", size="1Gi"),
             k.pvc("c-other", storage_class=None)]
    return build(nodes, pools, resources, kube)
