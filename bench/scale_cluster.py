"""A big cluster in the LINSTOR emulator and the Kubernetes API stand-in, fast, through their APIs.

``LinstorEmulator.add_resource`` keeps every replica's DRBD connections in step by scanning all
resources, so 100,000 calls would take hours. Here one resource definition per replica count is
made with ``add_resource`` on a throw-away emulator (so the item shape is exactly the emulator's,
which a test validates against LINSTOR's OpenAPI document), and each of the 100,000 items is a copy
of it with its own names, peers, uuids and minor, handed to the emulator with ``load``.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator

POOL = "thindata"
STORAGE_CLASS = "linstor-thindata-r3"
QUORUM = {"DrbdOptions/Resource/quorum": "majority", "DrbdOptions/Resource/on-no-quorum": "io-error"}


def node_names(nodes: int) -> list[str]:
    return [f"node-{i:05d}" for i in range(nodes)]


def _templates(replicas: int) -> list[bytes]:
    """One item per replica position of a resource made by the emulator itself."""
    emu = LinstorEmulator()
    names = [f"t{i}" for i in range(replicas)]
    for n in names:
        emu.add_node(n)
        emu.add_storage_pool(n, POOL, "LVM_THIN")
    for n in names:
        emu.add_resource("template", n, storage_pool=POOL)
    by_node = {r["node_name"]: r for r in emu.snapshot()["resources"]}
    return [orjson.dumps(by_node[n]) for n in names]


def placements(nodes: int, resources: int, replicas: int = 3, seed: int = 7) -> list[tuple[str, list[str]]]:
    """(resource definition, its replica nodes), the same for every process given the same seed."""
    rnd = random.Random(seed)
    names = node_names(nodes)
    return [(f"pvc-{r:06d}", rnd.sample(names, replicas)) for r in range(resources)]


def populate_linstor(emu: LinstorEmulator, nodes: int, resources: int, *, replicas: int = 3,
                     seed: int = 7) -> None:
    """``nodes`` satellites with a thin pool each (plus the diskless pool LINSTOR adds: 2 pools a
    node), ``resources`` definitions with ``replicas`` diskful UpToDate replicas each."""
    rnd = random.Random(seed + 1)
    for name in node_names(nodes):
        emu.add_node(name)
        emu.add_storage_pool(name, POOL, "LVM_THIN", free_kib=rnd.randint(10, 400) * 1024**2,
                             total_kib=500 * 1024**2)
    templates = _templates(replicas)
    items: list[dict[str, Any]] = []
    for r, (rd, where) in enumerate(placements(nodes, resources, replicas, seed)):
        minor = 1000 + r
        for pos, node in enumerate(where):
            item = orjson.loads(templates[pos])
            item["name"], item["node_name"], item["uuid"] = rd, node, str(uuid.uuid4())
            item["layer_object"]["drbd"]["connections"] = {
                peer: {"connected": True, "message": "Connected"} for peer in where if peer != node}
            for vol in item["volumes"]:
                vol["uuid"] = str(uuid.uuid4())
                vol["device_path"] = f"/dev/drbd{minor}"
                drbd = vol["layer_data_list"][0]["data"]
                drbd["device_path"] = f"/dev/drbd{minor}"
                drbd["drbd_volume_definition"]["minor_number"] = minor
            items.append(item)
    emu.load(resources=items)
    for rd in {i["name"] for i in items}:
        emu.set_rd_props(rd, dict(QUORUM))


FENCING_LABEL = {"linstor.csi.linbit.com/on-storage-lost": "remove"}


def populate_kube(ks: KubeStandin, nodes: int, claims: int, resources: int, *, pods: int = 0,
                  replicas: int = 3, seed: int = 7) -> None:
    """``nodes`` Nodes in 3 zones, as the kubelet reports them (``kube_objects.full_node``), ``claims``
    PVCs bound to PVs of the first resources (every volume a claim when ``claims`` >= ``resources``, as
    CSI makes them), and ``pods`` running pods labelled on-storage-lost=remove, each a StatefulSet's,
    on its claim's first replica node and attached there (a VolumeAttachment), as the fencing
    controller sees a hyper-converged cluster. Objects in the shapes the API server returns
    (kube_objects: annotations, finalizers, status; the stand-in adds managedFields), claims labelled
    as a StatefulSet's volumeClaimTemplates label them."""
    for i, name in enumerate(node_names(nodes)):
        ks.add(k.full_node(name, zone=f"zone-{i % 3}", region="eu-1"))
    ks.add(k.storage_class(STORAGE_CLASS, replicas=3))
    for c in range(min(claims, resources)):
        for obj in k.bound_volume(f"claim-{c}", f"pvc-{c:06d}", storage_class=STORAGE_CLASS,
                                  labels={"app.kubernetes.io/name": f"app-{c % 500}"}):
            ks.add(obj)
    for c, node in fenced_pod_nodes(nodes, resources, min(pods, claims, resources), replicas, seed).items():
        pod = k.pod(fenced_pod_name(c), claims=[f"claim-{c}"], labels=dict(FENCING_LABEL), node_name=node)
        pod["status"]["phase"] = "Running"
        # a StatefulSet's pod, as fencing's NoController rule asks (a pod nothing recreates is refused)
        pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                               "name": fenced_pod_name(c), "uid": str(uuid.UUID(int=c)),
                                               "controller": True, "blockOwnerDeletion": True}]
        ks.add(pod)
        ks.add(k.volume_attachment(f"pvc-{c:06d}", node))


def fenced_pod_name(claim: int) -> str:
    """The labelled pod of claim number ``claim`` (namespace ``default``)."""
    return f"app-{claim}"


def fenced_pod_nodes(nodes: int, resources: int, pods: int, replicas: int = 3, seed: int = 7) -> dict[int, str]:
    """Claim number -> the node its labelled pod runs on (the first of its replicas)."""
    return {c: where[0] for c, (_rd, where) in enumerate(placements(nodes, resources, replicas, seed)[:pods])}
