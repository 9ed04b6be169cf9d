"""The API stand-in's PV rules (devkit/pv_rules.py) through the official client, as the real API server
and kube-controller-manager behave: what a PV replacement meets."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from devkit.pv_rules import PV_PROTECTION, PvRules


@pytest.fixture
def api():
    ks = KubeStandin(pv_rules=PvRules())
    with ks.serve() as srv:
        ks.api = ks.api_client(srv.url)
        claim, pv = k.bound_volume("data", "pvc-1", affinity_nodes=["n1"])
        claim["metadata"]["uid"] = pv["spec"]["claimRef"]["uid"]
        ks.add(claim)
        ks.add(pv)
        yield ks, k8s.CoreV1Api(ks.api)


def test_node_affinity_is_immutable_before_1_35_and_mutable_with_the_gate(api):
    ks, core = api
    patch = {"spec": {"nodeAffinity": None}}
    with pytest.raises(ApiException) as exc:
        core.patch_persistent_volume("pvc-1", patch)
    assert exc.value.status == 422 and "spec.nodeAffinity" in exc.value.body and "immutable" in exc.value.body
    with pytest.raises(ApiException) as exc:
        core.patch_persistent_volume("pvc-1", {"spec": {"csi": {"volumeHandle": "other"}}})
    assert exc.value.status == 422 and "persistentvolumesource is immutable" in exc.value.body
    ks.pv_rules.mutable_node_affinity = True  # MutablePVNodeAffinity on (1.35+)
    core.patch_persistent_volume("pvc-1", patch)
    assert "nodeAffinity" not in ks.get("PersistentVolume", "pvc-1")["spec"]


def test_a_write_to_the_pv_cannot_change_its_status(api):
    ks, core = api
    core.patch_persistent_volume("pvc-1", {"status": {"phase": "Available"}, "metadata": {"labels": {"a": "b"}}})
    pv = ks.get("PersistentVolume", "pvc-1")
    assert pv["status"]["phase"] == "Bound" and pv["metadata"]["labels"] == {"a": "b"}


def test_a_bound_pv_deleted_stays_until_its_finalizers_go_and_the_claim_is_lost_then_bound_again(api):
    ks, core = api
    uid = ks.get("PersistentVolume", "pvc-1")["metadata"]["uid"]
    with pytest.raises(ApiException) as exc:  # the UID precondition
        core.delete_persistent_volume("pvc-1", body=k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid="x")))
    assert exc.value.status == 409
    core.delete_persistent_volume("pvc-1", body=k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid)))
    pv = ks.get("PersistentVolume", "pvc-1")
    assert pv["metadata"]["deletionTimestamp"] and PV_PROTECTION in pv["metadata"]["finalizers"], \
        "pv-protection holds a Bound PV"
    core.patch_persistent_volume("pvc-1", {"metadata": {"finalizers": None}})
    assert ks.get("PersistentVolume", "pvc-1") is None, "the last finalizer gone: deleted"
    assert ks.get("PersistentVolumeClaim", "data")["status"]["phase"] == "Lost"
    body = {k: v for k, v in pv.items() if k in ("apiVersion", "kind", "spec")}
    body["metadata"] = {"name": "pvc-1"}
    created = core.create_persistent_volume(body)
    assert PV_PROTECTION in created.metadata.finalizers, "the admission plugin adds it"
    assert created.status.phase == "Bound", "the PV controller bound it: its claimRef names the claim's UID"
    assert ks.get("PersistentVolumeClaim", "data")["status"]["phase"] == "Bound"
    assert ks.pv_rules.claims_lost == 1


def test_a_pv_whose_claim_is_gone_is_released_and_then_the_finalizer_no_longer_holds_it(api):
    ks, core = api
    ks.delete("PersistentVolumeClaim", "data")
    core.patch_persistent_volume("pvc-1", {"metadata": {"labels": {"x": "y"}}})  # the controller looks again
    assert ks.get("PersistentVolume", "pvc-1")["status"]["phase"] == "Released"
    core.delete_persistent_volume("pvc-1")
    pv = ks.get("PersistentVolume", "pvc-1")
    assert pv is not None and PV_PROTECTION not in pv["metadata"]["finalizers"], \
        "pv-protection lets go of a PV that is not Bound; the provisioner's own finalizer still holds it"
