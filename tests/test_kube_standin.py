"""The Kubernetes API stand-in, checked by the official client (whose models validate strictly)."""

from __future__ import annotations

import threading

import orjson
import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from devkit import kube_objects as k


def test_create_and_read_back_typed(ks):
    core = k8s.CoreV1Api(ks.api)
    created = core.create_namespaced_pod("apps", k.pod("db-0", namespace="apps", claims=["data"]))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    pod = core.read_namespaced_pod("db-0", "apps")
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "data"
    assert pod.spec.scheduler_name == "linstor"
    k8s.StorageV1Api(ks.api).create_storage_class(k.storage_class("r2"))
    sc = k8s.StorageV1Api(ks.api).read_storage_class("r2")
    assert sc.parameters["linstor.csi.linbit.com/storagePool"] == "thindata"
    core.create_persistent_volume(k.pv("pvc-1"))
    assert core.read_persistent_volume("pvc-1").spec.csi.volume_handle == "pvc-1"
    core.create_node(k.node("w1", zone="a"))
    node = core.read_node("w1")
    assert node.metadata.labels["topology.kubernetes.io/zone"] == "a" and node.status.conditions[0].type == "Ready"
    with pytest.raises(ApiException) as err:
        core.create_node(k.node("w1"))
    assert err.value.status == 409 and orjson.loads(err.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        core.read_node("nope")
    assert err.value.status == 404


def test_selectors(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.pod("a", labels={"app": "db", "fence": "remove"}, node_name="w1"))
    ks.add(k.pod("b", labels={"app": "web"}, node_name="w2"))
    ks.add(k.pod("c", labels={"app": "db"}, node_name="w2"))

    def names(**kw):
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kw).items)

    assert names(label_selector="app=db") == ["a", "c"]
    assert names(label_selector="app in (db,web),fence") == ["a"]
    assert names(label_selector="app notin (db),!fence") == ["b"]
    assert names(label_selector="app!=db") == ["b"]
    assert names(field_selector="spec.nodeName=w2") == ["b", "c"]
    assert names(field_selector="spec.nodeName=w2,metadata.name!=b", label_selector="app==db") == ["c"]


def test_delete_with_uid_precondition(ks):
    core = k8s.CoreV1Api(ks.api)
    uid = ks.add(k.pod("p"))["metadata"]["uid"]
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("p", "default", body=k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid="x")))
    assert err.value.status == 409 and ks.get("Pod", "p") is not None
    core.delete_namespaced_pod("p", "default", grace_period_seconds=0,
                               body=k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid)))
    assert ks.get("Pod", "p") is None


def test_patch_merge_and_json(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.node("w1"))
    core.patch_node("w1", {"metadata": {"labels": {"x": "1"}}})
    core.patch_node("w1", [{"op": "add", "path": "/spec/taints", "value": [{"key": "t", "effect": "NoSchedule"}]}])
    node = core.read_node("w1")
    assert node.metadata.labels["x"] == "1" and node.spec.taints[0].key == "t"


def test_raw_list_and_resource_version(ks):
    ks.add(k.node("w1"))
    raw = orjson.loads(k8s.CoreV1Api(ks.api).list_node(_preload_content=False).data)
    assert raw["kind"] == "NodeList" and raw["items"][0]["metadata"]["name"] == "w1"
    assert int(raw["metadata"]["resourceVersion"]) >= int(raw["items"][0]["metadata"]["resourceVersion"])


def test_watch_sees_changes_from_another_thread(ks):
    core = k8s.CoreV1Api(ks.api)
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    seen: list[tuple[str, str]] = []
    w = k8s_watch.Watch()

    def mutate():
        ks.add(k.pod("p1"))
        ks.patch("Pod", "p1", {"metadata": {"labels": {"x": "y"}}})
        ks.delete("Pod", "p1")

    threading.Thread(target=mutate).start()
    for event in w.stream(core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "p1"), ("MODIFIED", "p1"), ("DELETED", "p1")]


def test_watch_from_expired_version_is_410(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.pod("old"))
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    ks.add(k.pod("newer"))
    ks.compact()
    with pytest.raises(ApiException) as err:
        for _ in k8s_watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5):
            pass
    assert err.value.status == 410


def test_eviction_and_injected_faults(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.pod("p"))
    ks.inject(fail=1, status=429, path_prefix="/api/v1/namespaces/default/pods/p/eviction")
    body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name="p", namespace="default"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_eviction("p", "default", body)
    assert err.value.status == 429
    core.create_namespaced_pod_eviction("p", "default", body)
    assert ks.get("Pod", "p") is None


def test_lease_replace_conflict(ks):
    coord = k8s.CoordinationV1Api(ks.api)
    lease = coord.create_namespaced_lease("default", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                      "metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})
    lease.spec.holder_identity = "b"
    coord.replace_namespaced_lease("l", "default", lease)
    lease.spec.holder_identity = "c"  # still the old resourceVersion
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("l", "default", lease)
    assert err.value.status == 409
    assert coord.read_namespaced_lease("l", "default").spec.holder_identity == "b"
