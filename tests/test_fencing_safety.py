"""Fencing's safety rules from the field, as real-world events: nothing removed that nothing would
recreate, no pod that also writes to storage we cannot fence unless told to, the taint off by default.

piraeus-ha-controller v1 (``pkg/agent/reconcile_failover.go``: ``evictPods``, ``IsSafeVolume``; its
CHANGELOG 1.1.0, 1.3.0; piraeus-operator #561, #825) never removes a pod nothing would recreate,
refuses a pod that also writes to storage it cannot fence unless told to, and lets its taint be
turned off. Most cases here are ones where the right answer is to do nothing.

LINSTOR emulator + Kubernetes API stand-in over real HTTP, a fake clock, ``run_once`` every 5 fake
seconds (tests/fencing_rig.py). The controls, marked so, show a rule does not refuse too much.
"""

from __future__ import annotations

from typing import Any

import pytest

from devkit import kube_objects as k
from fencing.actions import TAINT_KEY
from fencing.controller import Settings

from .fencing_rig import Rig


def database(rig: Rig, **pod: Any) -> str:
    """db-0 on n1 with an r2 volume (replicas on n1 and n2, a tie-breaker on n3), in use on n1."""
    claim = rig.volume("pvc-db-0", ["n1", "n2"], in_use="n1")
    rig.pod("db-0", "n1", [claim], **pod)
    return claim


def lose_n1(rig: Rig) -> None:
    """A healthy minute first, then n1 loses power, then three poll intervals past the grace period."""
    rig.run(10)
    rig.power_off("n1")
    rig.run(rig.settings.grace_period + 30)


def nothing_removed(rig: Rig) -> bool:
    return rig.pod_deletes() == [] and rig.attachment_deletes() == [] and rig.ks.get("Pod", "db-0") is not None


def other_driver_claim(rig: Rig, name: str, driver: str = "ebs.csi.aws.com", modes: tuple[str, ...] = ()) -> str:
    """A claim bound to a PV of another CSI driver (say, a cloud disk, ReadWriteOnce)."""
    pvc = k.pvc(name, storage_class="gp3", volume=f"pv-{name}")
    if modes:
        pvc["spec"]["accessModes"] = list(modes)
    rig.ks.add(pvc)
    rig.ks.add(k.pv(f"pv-{name}", claim=("default", name), storage_class="gp3", driver=driver))
    return name


def read_only_mounts(rig: Rig, pod: str, volume: str) -> None:
    """Every container mounts ``volume`` read-only (as the pod's spec says from its creation)."""
    obj = rig.ks.get("Pod", pod)
    for container in obj["spec"]["containers"]:
        for mount in container.get("volumeMounts") or []:
            if mount["name"] == volume:
                mount["readOnly"] = True
    rig.ks.update(obj)


# --- no controller: nothing would recreate the pod elsewhere -----------------------------------------
@pytest.mark.parametrize("owner, why", [
    (None, "no controller (no ownerReferences)"),
    ("DaemonSet", "recreates it on the same node"),
    ("Node", "recreates it on the same node"),
])
def test_a_pod_nothing_would_recreate_elsewhere_is_left_on_the_lost_node(rig, owner, why):
    """n1 loses power. db-0 was created by hand (a bare pod), by a DaemonSet, or is a static pod's
    mirror (owned by its Node): deleting it would lose it, or bring it back on n1. Before, it was
    deleted with grace 0 and its VolumeAttachment removed. Now: nothing, and a Warning says why."""
    database(rig, owner=owner)
    lose_n1(rig)
    assert nothing_removed(rig)
    (event,) = rig.events("NoController", "db-0")
    assert event["type"] == "Warning" and why in event["message"], event["message"]


def test_a_static_pods_mirror_is_left_alone(rig):
    """A static pod (kubelet runs it from a file on n1; the API holds its mirror, annotated
    ``kubernetes.io/config.mirror``) on n1, which loses power: deleting the mirror moves nothing."""
    database(rig, owner="Node", annotations={"kubernetes.io/config.mirror": "0123abcd"})
    lose_n1(rig)
    assert nothing_removed(rig)
    (event,) = rig.events("NoController", "db-0")
    assert "mirror of a static pod" in event["message"]


def test_an_owner_that_is_not_the_controller_does_not_count(rig):
    """db-0 carries an ownerReference for garbage collection only (``controller`` unset): Kubernetes'
    controllers follow the one owner marked ``controller: true`` (metav1.GetControllerOf); nothing
    would recreate this pod."""
    database(rig, owner=None)
    pod = rig.ks.get("Pod", "db-0")
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "db-config",
                                           "uid": "uid-cm"}]
    rig.ks.update(pod)
    lose_n1(rig)
    assert nothing_removed(rig)
    (event,) = rig.events("NoController", "db-0")
    assert "ConfigMap/db-config" in event["message"]


def test_a_pod_orphaned_during_its_grace_period_is_left_alone(rig):
    """n1 loses power; while the grace period runs an operator deletes the StatefulSet with
    ``--cascade=orphan`` (Kubernetes removes the pod's ownerReferences). Before, the orphan was
    deleted, and nothing recreated it."""
    database(rig)
    rig.run(10)
    rig.power_off("n1")
    rig.run(15)
    pod = rig.ks.get("Pod", "db-0")
    pod["metadata"]["ownerReferences"] = []
    rig.ks.update(pod)
    rig.run(45)
    assert nothing_removed(rig)
    assert rig.events("NoController", "db-0")


def test_a_pod_orphaned_between_the_read_and_the_removal_is_left_alone(rig):
    """The caches still show db-0 owned by its StatefulSet when the grace period ends, but the live
    read right before the removal shows it orphaned: the pod's rules are judged again on it."""
    database(rig)
    get_pod = rig.ctrl.actions.get_pod

    def orphaned_meanwhile(namespace: str, name: str) -> Any:
        pod = rig.ks.get("Pod", name, namespace)
        if pod is not None and pod["metadata"].get("ownerReferences"):
            pod["metadata"]["ownerReferences"] = []
            rig.ks.update(pod)
        return get_pod(namespace, name)

    rig.ctrl.actions.get_pod = orphaned_meanwhile
    lose_n1(rig)
    assert nothing_removed(rig)
    assert rig.events("NoController", "db-0")


@pytest.mark.parametrize("owner", ["StatefulSet", "ReplicaSet", "Job", "Cluster"])
def test_control_a_pod_whose_controller_recreates_it_elsewhere_is_failed_over(rig, owner):
    """Control (passes before and after): a StatefulSet's, a ReplicaSet's, a Job's or an operator's
    pod (CloudNativePG's ``Cluster`` owns its pods directly) is failed over."""
    database(rig, owner=owner)
    lose_n1(rig)
    assert rig.evicted() == ["db-0"] and rig.events("NoController") == []


# --- storage we cannot fence -----------------------------------------------------------------------
UNFENCED = {
    "nfs": {"name": "shared", "nfs": {"server": "nas.example", "path": "/export/db"}},
    "iscsi": {"name": "lun", "iscsi": {"targetPortal": "10.0.0.9:3260", "iqn": "iqn.2001-04.com.example:db",
                                       "lun": 0}},
    "hostPath": {"name": "local", "hostPath": {"path": "/srv/db"}},
    "rbd": {"name": "ceph", "rbd": {"monitors": ["10.0.0.7:6789"], "image": "db"}},
}


@pytest.mark.parametrize("kind", sorted(UNFENCED))
def test_a_pod_that_also_writes_to_storage_we_cannot_fence_is_left_on_the_lost_node(rig, kind):
    """db-0 also mounts an NFS export, an iSCSI LUN, a writable hostPath or a Ceph RBD image. n1
    loses power, but nothing stops n1's copy of db-0 writing there (DRBD's quorum stops only the
    LINSTOR volume): a replacement would write beside it. Before, db-0 was removed (an NFS, iSCSI or
    RBD volume was not even looked at). Now: nothing, and a Warning names the volume."""
    database(rig, extra_volumes=[UNFENCED[kind]])
    lose_n1(rig)
    assert nothing_removed(rig)
    (event,) = rig.events("UnfencedStorage", "db-0")
    assert UNFENCED[kind]["name"] in event["message"] and "--fail-over-unsafe-pods" in event["message"]


def test_a_pod_with_another_drivers_writable_claim_is_left_on_the_lost_node(rig):
    """db-0's second claim is a cloud disk (another CSI driver, ReadWriteOnce). Before, claims of
    other drivers were ignored and db-0 was removed."""
    other = other_driver_claim(rig, "wal-db-0")
    database(rig, extra_volumes=[{"name": "wal", "persistentVolumeClaim": {"claimName": other}}])
    lose_n1(rig)
    assert nothing_removed(rig)
    (event,) = rig.events("UnfencedStorage", "db-0")
    assert "default/wal-db-0 on ebs.csi.aws.com" in event["message"], event["message"]


def test_fail_over_unsafe_pods_fails_them_over_all_the_same(rig):
    """``--fail-over-unsafe-pods``: the operator knows the NFS export is safe to share; db-0 moves."""
    rig.settings.fail_over_unsafe_pods = True
    rig.ctrl = rig.controller()
    database(rig, extra_volumes=[UNFENCED["nfs"]])
    lose_n1(rig)
    assert rig.evicted() == ["db-0"] and rig.events("UnfencedStorage") == []


def test_a_hostpath_mounted_read_only_is_no_reason_to_stay(rig):
    """db-0 reads a host file (say /etc/localtime) read-only: the replacement reads the same file
    on its own node. Before, any hostPath refused the fail-over (HostPathVolume)."""
    database(rig, extra_volumes=[{"name": "tz", "hostPath": {"path": "/etc/localtime"}}])
    read_only_mounts(rig, "db-0", "tz")
    lose_n1(rig)
    assert rig.evicted() == ["db-0"]


@pytest.mark.parametrize("volume", [
    {"name": "cfg", "configMap": {"name": "db"}},
    {"name": "tls", "secret": {"secretName": "db-tls"}},
    {"name": "scratch", "emptyDir": {}},
    {"name": "token", "projected": {"sources": []}},
    {"name": "wal", "persistentVolumeClaim": {"claimName": "wal-db-0", "readOnly": True}},
], ids=lambda v: next(key for key in v if key != "name"))
def test_control_volumes_that_hold_nothing_to_fence_do_not_stop_the_fail_over(rig, volume):
    """Control (passes before and after): configMap, secret, emptyDir, projected volumes and
    another driver's claim mounted read-only are safe to leave behind (piraeus-ha-controller's list)."""
    other_driver_claim(rig, "wal-db-0")
    database(rig, extra_volumes=[volume])
    lose_n1(rig)
    assert rig.evicted() == ["db-0"] and rig.events("UnfencedStorage") == []


def test_a_read_only_many_claim_of_another_driver_does_not_stop_the_fail_over(rig):
    """Another driver's claim that is ReadOnlyMany cannot be written: db-0 moves."""
    other = other_driver_claim(rig, "ref-db-0", modes=("ReadOnlyMany",))
    database(rig, extra_volumes=[{"name": "ref", "persistentVolumeClaim": {"claimName": other}}])
    lose_n1(rig)
    assert rig.evicted() == ["db-0"]


# --- which pods: --select labelled | all ---------------------------------------------------------------
def test_select_all_fails_over_an_unlabelled_pod_with_linstor_volumes():
    """``--select all``: db-0 carries no label; n1 loses power; it moves like a labelled one."""
    with Rig(settings=Settings(select="all")) as rig:
        database(rig, labelled=False)
        lose_n1(rig)
        assert rig.evicted() == ["db-0"] and len(rig.attachment_deletes()) == 1


def test_select_all_leaves_a_pod_labelled_keep_alone_unread():
    """``--select all``: db-0 is labelled ``on-storage-lost: keep``; it is not even read (the
    selector leaves it out), nothing is written, nothing is said."""
    with Rig(settings=Settings(select="all")) as rig:
        database(rig, labelled="keep")
        lose_n1(rig)
        assert nothing_removed(rig) and rig.events(pod="db-0") == []
        assert all("db-0" not in d.pod.key for r in rig.reports for d in r.decisions)


def test_select_all_a_pod_relabelled_keep_during_the_grace_period_stays_and_says_why():
    """``--select all``: n1 loses power; during the grace period the owner labels db-0 ``keep``. It
    leaves the selection; the controller reads it and says so."""
    with Rig(settings=Settings(select="all")) as rig:
        database(rig, labelled=False)
        rig.run(10)
        rig.power_off("n1")
        rig.run(15)
        pod = rig.ks.get("Pod", "db-0")
        pod["metadata"]["labels"]["linstor.csi.linbit.com/on-storage-lost"] = "keep"
        rig.ks.update(pod)
        rig.run(45)
        assert nothing_removed(rig)
        (event,) = rig.events("NotOptedIn", "db-0")
        assert "now says 'keep'" in event["message"], event["message"]


def test_select_all_a_label_value_we_do_not_know_is_no_yes():
    """``--select all``: db-0 is labelled ``on-storage-lost: Keep`` (a typo of the opt-out). Only
    no label or ``remove`` opt in: nothing is written, a Warning says why."""
    with Rig(settings=Settings(select="all")) as rig:
        database(rig, labelled="Keep")
        lose_n1(rig)
        assert nothing_removed(rig)
        assert rig.events("NotOptedIn", "db-0")


def test_select_all_pods_without_linstor_volumes_are_not_judged():
    """``--select all``: a web pod with only an emptyDir and another driver's disk runs on n1,
    which loses power: not ours to move; no decision, no Event."""
    with Rig(settings=Settings(select="all")) as rig:
        other = other_driver_claim(rig, "cache-web-0")
        rig.pod("web-0", "n1", [], labelled=False, extra_volumes=[
            {"name": "tmp", "emptyDir": {}}, {"name": "cache", "persistentVolumeClaim": {"claimName": other}}])
        database(rig, labelled=False)
        lose_n1(rig)
        assert rig.evicted() == ["db-0"]
        assert rig.events(pod="web-0") == []
        assert all(d.pod.name != "web-0" for r in rig.reports for d in r.decisions)


def test_select_labelled_by_default_an_unlabelled_pod_stays(rig):
    """The default, ``--select labelled``: an unlabelled db-0 is not read, not moved."""
    assert rig.settings.select == "labelled"
    database(rig, labelled=False)
    lose_n1(rig)
    assert nothing_removed(rig) and rig.events(pod="db-0") == []


# --- the taint: off by default; with --taint, bounded -------------------------------------------------
def test_no_taint_by_default(rig):
    """n1 loses power and db-0 fails over: no Node is patched (before, n1 was tainted NoSchedule,
    and a LINSTOR satellite or CSI node pod recreated there would not have started)."""
    database(rig)
    lose_n1(rig)
    assert rig.evicted() == ["db-0"]
    assert rig.writes("PATCH", "/nodes/") == []


def taints(rig: Rig, node: str = "n1") -> list[str]:
    return [t["key"] for t in (rig.ks.get("Node", node).get("spec") or {}).get("taints") or []]


def test_a_taint_with_no_fail_over_behind_it_is_removed_after_the_bound_and_said():
    """``--taint --taint-max-seconds 120``: n1 loses power, db-0 fails over and n1 is tainted. n1
    reboots: its kubelet is back (Ready), but the LINSTOR satellite pod recreated there does not
    tolerate our taint and never starts, so LINSTOR still shows n1 OFFLINE (piraeus-operator #561).
    Before, the taint stayed for ever: a deadlock. Now it comes off 120 s after the last fail-over
    there, and a Warning on the Node says why."""
    with Rig(settings=Settings(taint=True, taint_max_seconds=120)) as rig:
        database(rig)
        lose_n1(rig)
        assert rig.evicted() == ["db-0"] and taints(rig) == [TAINT_KEY]
        rig.set_ready("n1", True)  # the kubelet is back; the satellite is not
        rig.run(60)
        assert taints(rig) == [TAINT_KEY], "within the bound"
        rig.run(90)
        assert taints(rig) == []
        (event,) = rig.events("TaintExpired")
        assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Node"
        assert "--taint-max-seconds 120" in event["message"]


def test_a_taint_stays_while_a_fail_over_is_under_way_on_the_node():
    """``--taint --taint-max-seconds 30``: n1 loses power; db-0 is held there by a finalizer (a
    backup hook), so its removal stays under way for minutes: the taint that keeps its replacement
    off n1 stays too (a control for the bound: it passes before and after)."""
    with Rig(settings=Settings(taint=True, taint_max_seconds=30)) as rig:
        database(rig)
        pod = rig.ks.get("Pod", "db-0")
        pod["metadata"]["finalizers"] = ["example.com/backup-in-progress"]
        rig.ks.update(pod)
        lose_n1(rig)
        rig.run(120)
        assert taints(rig) == [TAINT_KEY]
        assert rig.events("TaintExpired") == []


def test_a_taint_is_not_removed_on_stale_data():
    """``--taint --taint-max-seconds 30``: after the fail-over LINSTOR stops answering. Nothing
    is written on a view older than the bound, the taint's removal neither."""
    with Rig(settings=Settings(taint=True, taint_max_seconds=30)) as rig:
        database(rig)
        lose_n1(rig)
        assert taints(rig) == [TAINT_KEY]
        rig.linstor_down()
        rig.run(120)
        assert taints(rig) == [TAINT_KEY]
        assert rig.events("TaintExpired") == []


# --- the pure rules (fencing/safety.py), for what the scenarios do not reach --------------------------
def _pod_with(volume: dict[str, Any], mounts: list[dict[str, Any]], devices: list[dict[str, Any]] = ()) -> dict:
    return {"metadata": {"name": "db-0", "namespace": "default"},
            "spec": {"volumes": [volume], "containers": [
                {"name": "app", "volumeMounts": mounts}, {"name": "sidecar", "volumeDevices": list(devices)}]}}


def test_one_writable_mount_among_read_only_ones_makes_the_volume_unfenced():
    from fencing.safety import unfenced_volumes

    nfs = {"name": "shared", "nfs": {"server": "nas", "path": "/db"}}
    read_only = [{"name": "shared", "mountPath": "/a", "readOnly": True}]
    assert unfenced_volumes(_pod_with(nfs, read_only), {}.get, {}.get) == ()
    writable = [*read_only, {"name": "shared", "mountPath": "/b"}]
    (found,) = unfenced_volumes(_pod_with(nfs, writable), {}.get, {}.get)
    assert found.startswith("shared (nfs")


def test_a_raw_block_device_of_another_driver_is_unfenced_however_it_is_mounted():
    from fencing.safety import unfenced_volumes

    pvc = {"spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-disk"}}
    pv = {"spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}}}
    claim = {"name": "disk", "persistentVolumeClaim": {"claimName": "disk"}}
    pod = _pod_with(claim, [{"name": "disk", "mountPath": "/x", "readOnly": True}],
                    devices=[{"name": "disk", "devicePath": "/dev/xvdb"}])
    assert unfenced_volumes(pod, {"default/disk": pvc}.get, {"pv-disk": pv}.get) == (
        "disk (claim default/disk on ebs.csi.aws.com, not LINSTOR)",)


def test_an_image_volume_is_read_only_by_design():
    from fencing.safety import unfenced_volumes

    image = {"name": "model", "image": {"reference": "registry.example/model:1"}}
    assert unfenced_volumes(_pod_with(image, [{"name": "model", "mountPath": "/m"}]), {}.get, {}.get) == ()


def test_select_all_the_service_caches_only_pods_that_use_claims(rig):
    """``--select all`` as deployed (informers, not one list per pass): the pod cache keeps db-0 (a
    LINSTOR claim), not web-0 (an emptyDir only: it can have no LINSTOR volume) nor cache-0
    (labelled keep: the server-side selector leaves it out)."""
    from fencing.kubeview import CachedKube

    from .waiting import wait_for

    database(rig, labelled=False)
    rig.pod("web-0", "n2", [], labelled=False, extra_volumes=[{"name": "tmp", "emptyDir": {}}])
    rig.pod("cache-0", "n3", [rig.volume("pvc-cache-0", ["n3", "n4"])], labelled="keep")
    kube = CachedKube(rig.ks.api_client(rig.ks_url), bound=3.0, api_timeout=1.0, select="all")
    kube.start()
    try:
        wait_for(lambda: kube.objects() is not None, timeout=10, what="the caches synced")
        objects = kube.objects()
        assert objects is not None
        assert [p["metadata"]["name"] for p in objects.pods] == ["db-0"]
    finally:
        kube.stop()


def test_a_claim_whose_volume_is_not_seen_is_not_taken_for_safe():
    """Bound to a PersistentVolume the cache does not have (yet): its driver is unknown, so the pod
    is not failed over on a guess."""
    from fencing.safety import unfenced_volumes

    pvc = {"spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-gone"}}
    claim = {"name": "wal", "persistentVolumeClaim": {"claimName": "wal"}}
    pod = _pod_with(claim, [{"name": "wal", "mountPath": "/wal"}])
    (found,) = unfenced_volumes(pod, {"default/wal": pvc}.get, {}.get)
    assert "pv-gone is not seen" in found
