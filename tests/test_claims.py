"""One small record per claim and per volume (linstor_scheduler/claims.py): what it keeps of the
objects the API server sends, what that costs, and how the informers keep it."""

from __future__ import annotations

import tracemalloc

import orjson

from devkit import kube_objects as k
from devkit.kube_standin import managed_fields
from linstor_scheduler.claims import (
    SELECTED_NODE,
    TRANSFORMS,
    ClaimRecord,
    VolumeRecord,
    claim_record,
    volume_record,
)
from linstor_scheduler.kube import Informer
from linstor_scheduler.volumes import ClaimRef, StorageClassInfo, node_selector_matches, resolve_claim

from .waiting import wait_for

CLASS = StorageClassInfo.from_object(k.storage_class("linstor-r3", replicas=3))


def served(obj: dict, when: str = "2026-12-01T00:00:00Z") -> dict:
    """``obj`` as the API server returns it: uid, resourceVersion and managedFields."""
    obj["metadata"].update({"uid": "u-" + obj["metadata"]["name"], "resourceVersion": "7", "creationTimestamp": when})
    obj["metadata"]["managedFields"] = managed_fields(obj, when)
    return obj


def a_pair(c: int, affinity: list[str] | None = None) -> tuple[dict, dict]:
    pvc, pv = k.bound_volume(f"data-web-{c}", f"pvc-{c:08d}-5f3c-4e51-a2b1-0c7d9e6f4a21", namespace="shop",
                             storage_class="linstor-r3", affinity_nodes=affinity,
                             labels={"app.kubernetes.io/name": "web"})
    pvc["metadata"]["annotations"][SELECTED_NODE] = "node-00042"
    pvc["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                           "uid": "sts", "controller": True}]
    return served(pvc), served(pv)


def test_a_bound_claim_and_its_volume_keep_what_the_decisions_read():
    pvc, pv = a_pair(1, affinity=["node-00001", "node-00002"])
    claim, volume = claim_record(pvc), volume_record(pv)
    assert claim == ClaimRecord("shop", "data-web-1", "linstor-r3", pv["metadata"]["name"], "10Gi",
                                ("ReadWriteOnce",), "Bound", "StatefulSet/web", "node-00042")
    assert claim.key == "shop/data-web-1" and claim.size_bytes == 10 * 2**30
    assert (volume.driver, volume.storage_class, volume.size_bytes, volume.phase) == (
        "linstor.csi.linbit.com", "linstor-r3", 10 * 2**30, "Bound")
    assert volume.handle is volume.name, "linstor-csi's handle is the PV's name: one string, not two"
    # The compact affinity selects exactly the nodes the object's selects.
    required = pv["spec"]["nodeAffinity"]["required"]
    for node in ("node-00001", "node-00002", "node-00003"):
        labels = {"linbit.com/hostname": node}
        assert node_selector_matches(volume.node_affinity, node, labels) == node_selector_matches(
            required, node, labels)


def test_the_claim_resolves_the_same_from_records_as_from_the_objects():
    pvc, pv = a_pair(2, affinity=["node-00007"])
    ref = ClaimRef("shop", "data-web-2", "data")
    from_objects = resolve_claim(ref, {ref.key: pvc}.get, {pv["metadata"]["name"]: pv}.get, {"linstor-r3": CLASS}.get)
    from_records = resolve_claim(ref, {ref.key: claim_record(pvc)}.get, {pv["metadata"]["name"]: volume_record(pv)}.get,
                                 {"linstor-r3": CLASS}.get)
    assert from_objects == from_records
    assert from_records.resource == pv["metadata"]["name"] and from_records.size_bytes == 10 * 2**30


def test_a_claim_with_its_volume_costs_under_1_kb():
    """Issue 21's target, in-process (tracemalloc): the bytes a component holds per bound claim
    (PVC + PV records and the keys of the two maps that hold them), the objects as the API server
    sends them (managedFields, annotations, finalizers, status) against what they would cost whole."""
    count = 3000
    wire = [[orjson.dumps(o) for o in a_pair(c)] for c in range(count)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept: dict[str, object] = {}
        for pvc_bytes, pv_bytes in wire:
            claim, volume = claim_record(orjson.loads(pvc_bytes)), volume_record(orjson.loads(pv_bytes))
            kept[claim.key], kept[volume.name] = claim, volume
        per_claim = (tracemalloc.get_traced_memory()[0] - base) / count
        del kept
        base = tracemalloc.get_traced_memory()[0]
        whole = [(orjson.loads(a), orjson.loads(b)) for a, b in wire]
        per_object_pair = (tracemalloc.get_traced_memory()[0] - base) / count
        del whole
    finally:
        tracemalloc.stop()
    assert per_claim <= 1024, f"{per_claim:.0f} B per claim with its volume"
    assert per_object_pair > 8 * per_claim, (per_object_pair, per_claim)


def test_the_informer_keeps_records_and_hears_only_changes_to_them(ks):
    """A backup tool annotates a claim: nothing we keep changed, so the stored record stays the same
    object and no one is told; then the claim is resized: the record changes and the change is heard."""
    pvc, pv = k.bound_volume("data-0", "pvc-0", storage_class="linstor-r3")
    ks.add(pvc)
    ks.add(pv)
    heard: list[tuple[str, str]] = []

    def changed(kind: str, obj: dict | ClaimRecord) -> None:  # a list tells the record, a watch the object
        heard.append((kind, obj.name if isinstance(obj, ClaimRecord) else obj["metadata"]["name"]))

    informer = Informer(ks.api, "PersistentVolumeClaim", transform=TRANSFORMS["PersistentVolumeClaim"],
                        on_change=changed)
    informer.start()
    try:
        assert informer.wait_synced(5)
        first = informer.get("data-0", "default")
        assert isinstance(first, ClaimRecord) and first.volume == "pvc-0"
        assert informer.snapshot() == {"default/data-0": first}
        ks.patch("PersistentVolumeClaim", "data-0", {"metadata": {"annotations": {"backup.example.com/last": "1"}}},
                 "default")
        ks.patch("PersistentVolumeClaim", "data-0", {"spec": {"resources": {"requests": {"storage": "20Gi"}}}},
                 "default")
        wait_for(lambda: informer.get("data-0", "default").size == "20Gi", what="the resize seen")
        assert heard == [("ADDED", "data-0"), ("MODIFIED", "data-0")], "the annotation alone was not a change for us"
    finally:
        informer.stop()


def test_volume_records_of_other_drivers_are_not_ours():
    nfs = volume_record(k.pv("nfs-1", driver="nfs.csi.k8s.io"))
    assert isinstance(nfs, VolumeRecord) and nfs.driver == "nfs.csi.k8s.io"
    ref = ClaimRef("default", "c", "v")
    claim = resolve_claim(ref, {ref.key: k.pvc("c", volume="nfs-1")}.get, {"nfs-1": nfs}.get, lambda _: None)
    assert not claim.is_linstor
