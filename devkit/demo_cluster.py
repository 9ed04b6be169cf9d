"""The built-in demo cluster: six nodes in three zones, replicas in every interesting state.

LINSTOR items come from the LINSTOR emulator (so they have exactly the REST shapes), Kubernetes
objects from the builders; ``demo_snapshot()`` returns a snapshot document (see linstor_scheduler/snapshot.py).
"""

from __future__ import annotations

from typing import Any

from devkit import kube_objects as k
from devkit.linstor_emulator import LinstorEmulator

GiB_KIB = 1024 * 1024

# (pod, what it shows) in the order the demo prints them
SAMPLE_PODS = [
    ("default/db-0", "a 2-replica volume: UpToDate on w1 and w3, a diskless tie-breaker on w2"),
    ("default/logger", "a strictly local volume (allowRemoteVolumeAccess: false) on w2 only"),
    ("default/analytics", "two volumes: 20Gi on w1+w3, 5Gi UpToDate on w3 and resyncing on w4"),
    ("default/fresh", "an unbound WaitForFirstConsumer claim and a generic ephemeral volume"),
    ("default/web", "no LINSTOR volumes: every node is fine, score 0"),
]


def demo_emulator() -> LinstorEmulator:
    emu = LinstorEmulator()
    free = {"w1": 80, "w2": 150, "w3": 40, "w4": 200, "w5": 100}
    for name, gib in free.items():
        emu.add_node(name)
        emu.add_storage_pool(name, "thindata", "LVM_THIN", free_kib=gib * GiB_KIB, total_kib=250 * GiB_KIB)
    emu.add_node("cp1", type="CONTROLLER")
    emu.set_node_status("w5", "OFFLINE")
    emu.add_resource("pvc-db", "w1", size_kib=20 * GiB_KIB)
    emu.add_resource("pvc-db", "w3", size_kib=20 * GiB_KIB)
    emu.add_resource("pvc-db", "w2", diskful=False, flags=["TIE_BREAKER"])
    emu.add_resource("pvc-logs", "w2", size_kib=2 * GiB_KIB)
    emu.add_resource("pvc-metrics", "w3", size_kib=5 * GiB_KIB)
    emu.add_resource("pvc-metrics", "w4", size_kib=5 * GiB_KIB)
    emu.set_disk_state("pvc-metrics", "w4", "Inconsistent", sync_peer="w3", done_percentage=42.0)
    return emu


def demo_kube_objects() -> list[dict[str, Any]]:
    zones = {"w1": "zone-a", "w2": "zone-a", "w3": "zone-b", "w4": "zone-b", "w5": "zone-c", "cp1": "zone-c"}
    objs: list[dict[str, Any]] = [k.node(n, zone=z, region="eu-1") for n, z in zones.items()]
    objs += [
        k.storage_class("linstor-thindata-r2", pool="thindata", replicas=2, remote=True),
        k.storage_class("linstor-local-r1", pool="thindata", replicas=1, remote=False),
        k.storage_class("other-storage", provisioner="ebs.csi.aws.com", pool=None),
    ]
    objs += k.bound_volume("data-db-0", "pvc-db", size="20Gi")
    objs += k.bound_volume("logs", "pvc-logs", storage_class="linstor-local-r1", size="2Gi")
    objs += k.bound_volume("metrics", "pvc-metrics", size="5Gi")
    objs.append(k.pvc("fresh-data", size="50Gi"))
    objs += [
        k.pod("db-0", claims=["data-db-0"], labels={"app": "db"}),
        k.pod("logger", claims=["logs"]),
        k.pod("analytics", claims=["data-db-0", "metrics"]),
        k.pod("fresh", claims=["fresh-data"],
              ephemeral={"scratch": k.claim_template("linstor-local-r1", "120Gi")}),
        k.pod("web", extra_volumes=[{"name": "cache", "emptyDir": {}}]),
    ]
    return objs


def demo_snapshot() -> dict[str, Any]:
    return {"linstor": demo_emulator().snapshot(), "kubernetes": {"items": demo_kube_objects()}}
