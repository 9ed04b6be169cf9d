"""The fencing fault matrix over real HTTP (LINSTOR emulator + Kubernetes API stand-in, fake clock).

Each scenario says what was and was not deleted, and with which preconditions. Passes run every
poll interval (5 s) of fake time; the grace period is the default 30 s.
"""

from __future__ import annotations

import httpx
import pytest

from .fencing_rig import Rig


def two_volume_pod(rig: Rig, node: str = "n1") -> dict:
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use=node)
    c3 = rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use=node)
    return rig.pod("db-0", node, [c2, c3])


def test_node_crash_removes_pod_then_attachments_after_grace_once(rig):
    pod = two_volume_pod(rig)
    rig.attach("pvc-r2", "n2", attacher="other.csi.example.com")  # another driver: never touched
    rig.run(10)
    assert rig.pod_deletes() == []
    rig.crash("n1")
    rig.run(25)
    assert rig.pod_deletes() == [], "still within the grace period"
    rig.run(20)
    deletes = rig.pod_deletes()
    assert len(deletes) == 1
    method, path, body = deletes[0]
    assert method == "DELETE"
    assert path == "/api/v1/namespaces/default/pods/db-0"
    assert body["preconditions"] == {"uid": pod["metadata"]["uid"]} and body["gracePeriodSeconds"] == 0
    vas = rig.attachment_deletes()
    assert sorted(p.rsplit("/", 1)[1] for _, p, _ in vas) == ["csi-pvc-r2-n1-linstor", "csi-pvc-r3-n1-linstor"]
    assert all(b["preconditions"]["uid"] for _, _, b in vas)
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n2-other") is not None
    assert rig.events("FencedPod", "db-0") and len(rig.events("DetachedVolume", "db-0")) == 2
    assert 30 <= rig.deletion_times()[0] <= 35
    rig.run(120)
    assert len(rig.pod_deletes()) == 1 and len(rig.attachment_deletes()) == 2, "once"


def test_storage_network_partition_with_node_ready_uses_the_eviction_api(rig):
    pod = two_volume_pod(rig)
    rig.run(10)
    rig.partition("n1")  # satellite ONLINE, Node Ready: only DRBD's network is cut
    rig.run(25)
    assert rig.pod_deletes() == []
    rig.run(10)
    deletes = rig.pod_deletes()
    assert len(deletes) == 1
    method, path, body = deletes[0]
    assert (method, path) == ("POST", "/api/v1/namespaces/default/pods/db-0/eviction")
    assert body["deleteOptions"]["preconditions"] == {"uid": pod["metadata"]["uid"]}
    assert "gracePeriodSeconds" not in body["deleteOptions"], "eviction: the pod's own grace period"
    assert rig.events("EvictedPod", "db-0")
    assert len(rig.attachment_deletes()) == 2
    assert rig.writes("DELETE", "/pods/") == [], "never a grace-0 delete on a Ready node within the bound"


def test_eviction_blocked_by_pdb_falls_back_to_grace_zero_after_the_bound(rig):
    two_volume_pod(rig)
    rig.run(10)
    rig.partition("n1")
    rig.ks.inject(fail=1000, status=429, path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.run(60)
    assert rig.ks.get("Pod", "db-0") is not None
    assert rig.events("EvictionBlocked", "db-0")
    rig.run(40)
    assert rig.ks.get("Pod", "db-0") is None
    assert len(rig.writes("DELETE", "/pods/db-0")) == 1
    assert rig.writes("DELETE", "/pods/db-0")[0][2]["gracePeriodSeconds"] == 0


def test_kubelet_down_but_drbd_connected_does_nothing(rig):
    two_volume_pod(rig)
    rig.run(10)
    rig.set_ready("n1", False)  # kubelet stopped; satellite and DRBD fine
    rig.run(180)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert rig.events(pod="db-0") == []


def test_blip_shorter_than_grace_does_nothing(rig):
    two_volume_pod(rig)
    rig.run(10)
    rig.crash("n1")
    rig.run(20)
    rig.recover("n1")
    rig.run(120)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert rig.events("StorageFaultObserved", "db-0"), "the fault being timed is visible"


def test_flapping_node_fails_over_at_most_once(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2])
    rig.run(10)
    for _ in range(4):  # 25 s down, 10 s up: never a whole grace period
        rig.crash("n1")
        rig.run(25)
        rig.recover("n1")
        rig.run(10)
    assert rig.pod_deletes() == []
    for _ in range(4):  # now 40 s down, 10 s up: one fail-over, then the pod runs on n2
        rig.crash("n1")
        rig.run(40)
        if rig.ks.get("Pod", "db-0") is None:
            rig.recreate("db-0", "n2", [c2])
        rig.recover("n1")
        rig.run(10)
    assert len(rig.pod_deletes()) == 1


@pytest.mark.parametrize("props", [
    {"DrbdOptions/Resource/quorum": None},  # no quorum at all
    {"DrbdOptions/Resource/quorum": "off"},
    {"DrbdOptions/Resource/on-no-quorum": "io-error-typo"},
])
def test_no_quorum_policy_is_refused(rig, props):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.emu.set_rd_props("pvc-r2", props)
    rig.pod("db-0", "n1", [c2])
    rig.run(10)
    rig.crash("n1")
    rig.run(90)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    (event,) = rig.events("NoQuorumPolicy", "db-0")
    assert event["type"] == "Warning" and "pvc-r2" in event["message"]


def test_quorum_policy_inherited_from_the_resource_group(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.emu.set_controller_props({"DrbdOptions/Resource/on-no-quorum": None})
    rig.emu.set_resource_group("ha", {"DrbdOptions/Resource/on-no-quorum": "io-error"})
    rig.emu.set_rd_props("pvc-r2", {}, resource_group="ha")
    rig.pod("db-0", "n1", [c2])
    rig.crash("n1")
    rig.run(40)
    assert len(rig.pod_deletes()) == 1


def test_only_up_to_date_replica_on_the_lost_node_is_refused_without_a_loop(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.emu.set_disk_state("pvc-r2", "n2", "Inconsistent", sync_peer="n1", done_percentage=40.0)
    rig.pod("db-0", "n1", [c2])
    rig.run(10)
    rig.crash("n1")
    rig.run(360)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    events = rig.events("NowhereToGo", "db-0")
    assert len(events) == 1 and events[0]["count"] == 2, "one Warning, repeated every 5 minutes (not every pass)"


def test_linstor_unreachable_or_slow_acts_on_nothing_past_the_staleness_bound(rig):
    two_volume_pod(rig)
    rig.run(10)
    rig.crash("n1")
    rig.run(15)
    rig.emu.inject(fail=10_000, status=500)
    rig.run(60)
    assert rig.pod_deletes() == []
    assert rig.events("StaleData", "db-0")
    rig.emu.inject(latency=0.5)  # slow: beyond the client's timeout (0.3 s here)
    rig.ctrl.linstor._http.timeout = httpx.Timeout(0.3)
    slow = rig.run(15)
    assert all(r.guard == "StaleData" for r in slow)
    assert rig.ctrl.metrics.reads.labels("linstor", "error")._value.get() >= 15
    assert rig.pod_deletes() == []
    rig.emu.reset_faults()
    rig.step()
    recovered_at = rig.clock.now
    rig.run(25)
    assert rig.pod_deletes() == [], "blind for longer than the bound: the grace period starts again"
    rig.run(10)
    assert len(rig.pod_deletes()) == 1
    deleted_at = rig.deleted_at("default/db-0")
    assert deleted_at - recovered_at >= 30


def test_garbage_linstor_json_does_nothing(rig):
    two_volume_pod(rig)
    rig.run(10)
    rig.crash("n1")
    rig.emu.inject(garbage=10_000)
    rig.run(90)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert any(r.guard == "StaleData" for r in rig.reports)


def test_restart_between_the_two_deletes_finishes_without_touching_the_new_pod(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2])
    rig.run(10)
    rig.crash("n1")
    rig.ks.inject(fail=1, status=500, path_prefix="/apis/storage.k8s.io/v1/volumeattachments", method="DELETE")
    rig.run(35)
    assert len(rig.pod_deletes()) == 1
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n1-linstor") is not None, "the controller died here"
    new = rig.recreate("db-0", None, [c2])  # the StatefulSet's new pod, not scheduled yet
    rig.ctrl = rig.controller()  # a restart: nothing remembered
    rig.run(25)
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n1-linstor") is not None, "fresh grace timers"
    rig.run(15)
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n1-linstor") is None
    assert rig.ks.get("Pod", "db-0")["metadata"]["uid"] == new["metadata"]["uid"]
    assert len(rig.pod_deletes()) == 1


def test_statefulset_pod_recreated_during_grace_and_foreign_attachments_are_untouched(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2])
    rig.attach("pvc-r2", "n1", attacher="rbd.csi.ceph.com")  # another driver on the same node and PV
    rig.run(10)
    rig.crash("n1")
    rig.run(10)
    new = rig.recreate("db-0", "n2", [c2])  # someone force-deleted it; the new one went to n2
    rig.attach("pvc-r2", "n2")  # the new pod's attachment (waits for n1's to go)
    rig.run(40)
    assert rig.pod_deletes() == []
    assert rig.ks.get("Pod", "db-0")["metadata"]["uid"] == new["metadata"]["uid"]
    assert [p.rsplit("/", 1)[1] for _, p, _ in rig.attachment_deletes()] == ["csi-pvc-r2-n1-linstor"]
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n2-linstor") is not None
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n1-rbd") is not None


def test_unlabelled_pod_is_never_touched(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("web-0", "n1", [c2], labelled=False)
    rig.crash("n1")
    rig.run(90)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert rig.events(pod="web-0") == [], "not ours: not even watched (server-side label selector)"


def test_label_with_another_value_is_refused_with_a_reason(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("web-0", "n1", [c2], labelled="keep")
    rig.crash("n1")
    rig.run(45)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert rig.events("NotOptedIn", "web-0")


def test_label_removed_mid_grace_is_refused_with_a_reason(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2])
    rig.crash("n1")
    rig.run(15)
    pod = rig.ks.get("Pod", "db-0")
    del pod["metadata"]["labels"]["linstor.csi.linbit.com/on-storage-lost"]
    rig.ks.update(pod)
    rig.run(60)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    (event,) = rig.events("NotOptedIn", "db-0")
    assert "removed" in event["message"]


def test_opt_out_annotation_and_host_path_are_refused_with_a_reason(rig):
    c_a = rig.volume("pvc-a", ["n1", "n2"], in_use="n1")
    c_b = rig.volume("pvc-b", ["n1", "n2"], in_use="n1")
    rig.pod("a-0", "n1", [c_a], annotations={"drbd.linbit.com/ignore-fail-over": ""})
    rig.pod("b-0", "n1", [c_b], extra_volumes=[{"name": "local", "hostPath": {"path": "/srv/b"}}])
    rig.crash("n1")
    rig.run(60)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert rig.events("OptedOut", "a-0") and rig.events("UnfencedStorage", "b-0")


def test_two_instances_only_the_lease_holder_acts_and_a_new_leader_finishes(rig):
    from .fencing_rig import lease_leader

    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2])
    a_lease, b_lease = lease_leader(rig, "a"), lease_leader(rig, "b")
    a, b = rig.controller(leader=a_lease), rig.controller(leader=b_lease)
    assert a_lease.step() and not b_lease.step()
    rig.crash("n1")
    rig.ks.inject(fail=1, status=500, path_prefix="/apis/storage.k8s.io/v1/volumeattachments", method="DELETE")
    for _ in range(8):
        a_lease.step()
        b_lease.step()
        rig.step(ctrl=a)
        assert rig.step(ctrl=b, seconds=0).guard == "NotLeader"
    assert len(rig.pod_deletes()) == 1
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n1-linstor") is not None
    rig.recreate("db-0", None, [c2])
    # a is cut off from here on (no renewals): b takes over after the lease expires, then waits a full grace
    for _ in range(12):
        b_lease.step()
        rig.step(ctrl=b)
    assert b_lease.is_leader and not a_lease.is_leader
    late = rig.step(ctrl=a, seconds=0)  # a comes back: its lease lapsed, it does nothing at all
    assert late.guard == "NotLeader" and late.actions == []
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n1-linstor") is None
    assert len(rig.pod_deletes()) == 1


def test_a_late_renewal_holds_every_action_but_keeps_the_term(rig):
    """Slow API answers make a renewal land after ``is_leader`` lapsed, while the elector still holds
    its term (``leader_since`` unchanged: nobody else can have led). Nothing is done meanwhile; the
    grace timer keeps running, so the pod goes as soon as the renewal lands, not a grace period later.
    A term the elector lost (``leader_since`` None) forgets the timers."""
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")])
    rig.step()
    rig.crash("n1")
    rig.run(25)
    rig.ctrl.leader.is_leader = False  # the renewal is late: leader_since stays
    late = rig.run(10)
    assert {r.guard for r in late} == {"NotLeader"} and rig.pod_deletes() == []
    rig.ctrl.leader.is_leader = True
    assert ("pod_delete", "default/db-0", "done") in rig.step().actions, "timed from before the late renewal"

    rig.pod("db-1", "n4", [rig.volume("pvc-s2", ["n4", "n5"], diskless=["n6"], in_use="n4")])
    rig.crash("n4")
    rig.run(25)
    rig.ctrl.leader.is_leader, rig.ctrl.leader.leader_since = False, None  # the term is lost
    rig.step()
    rig.ctrl.leader.is_leader, rig.ctrl.leader.leader_since = True, rig.clock.now  # and won again
    rig.run(25)
    assert rig.evicted() == ["db-0"], "a new term times every fault afresh"
    rig.run(10)
    assert rig.evicted() == ["db-0", "db-1"]


@pytest.mark.parametrize("status", [404, 409, 410, 429, 500])
def test_api_errors_are_retried_without_a_crash(rig, status):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2])
    rig.crash("n1")
    rig.run(25)
    # the kubernetes client itself retries 429 after Retry-After (1 s, real time): keep those few
    rig.ks.inject(fail=1 if status == 429 else 3, status=status, method="DELETE")
    rig.run(10)
    if status != 429:
        rig.ks.inject(fail=2, status=status, method="GET")
    rig.run(40)
    # 404 reads as "already gone": re-judged next pass, where the pod is still there and is deleted then
    assert rig.ks.get("Pod", "db-0") is None
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n1-linstor") is None
    assert len(rig.writes("DELETE", "/pods/db-0")) >= 2, "the injected failure was met and retried"


def test_taint_is_set_on_fail_over_and_removed_once_storage_is_stable():
    from fencing.controller import Settings

    with Rig(settings=Settings(taint=True, taint_stable_seconds=60)) as rig:
        c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
        rig.pod("db-0", "n1", [c2])
        rig.crash("n1")
        rig.run(40)
        assert rig.ks.get("Pod", "db-0") is None
        taints = rig.ks.get("Node", "n1")["spec"]["taints"]
        assert taints == [{"key": "linstor.csi.linbit.com/storage-lost", "effect": "NoSchedule"}]
        rig.run(60)
        assert rig.ks.get("Node", "n1")["spec"]["taints"], "still lost: the taint stays"
        rig.recover("n1")
        rig.run(55)
        assert rig.ks.get("Node", "n1")["spec"]["taints"], "stable for less than 60 s"
        rig.run(15)
        assert rig.ks.get("Node", "n1")["spec"]["taints"] == []


def test_dry_run_records_but_deletes_nothing():
    from fencing.controller import Settings

    with Rig(settings=Settings(dry_run=True)) as rig:
        two_volume_pod(rig)
        rig.crash("n1")
        rig.run(60)
        assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
        (event,) = rig.events("DryRun", "db-0")
        assert event["type"] == "Normal" and "would fail over" in event["message"]
        assert any(("dry_run_pod_delete", "default/db-0", "skipped") in r.actions for r in rig.reports)


def test_fail_over_budget_stops_a_loop():
    with Rig() as rig:
        c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
        rig.pod("db-0", "n1", [c2])
        for _ in range(5):  # a pod that keeps coming back to a node that keeps losing its storage
            rig.crash("n1")
            rig.run(40)
            if rig.ks.get("Pod", "db-0") is None:
                rig.recreate("db-0", "n1", [c2])
            rig.recover("n1")
            rig.run(10)
        assert len(rig.pod_deletes()) == 3, "the default budget: 3 per hour"
        assert rig.events("BudgetSpent", "db-0")


def test_eviction_rate_limit_spreads_fail_overs():
    from fencing.controller import Settings

    with Rig(settings=Settings(evictions_per_minute=1)) as rig:
        for i in range(3):
            rig.pod(f"db-{i}", "n1", [rig.volume(f"pvc-{i}", ["n1", "n2"], in_use="n1")])
        rig.crash("n1")
        rig.run(35)
        assert len(rig.pod_deletes()) == 1
        assert len(rig.events("RateLimited")) == 2
        rig.run(60)
        assert len(rig.pod_deletes()) == 2
        rig.run(60)
        assert len(rig.pod_deletes()) == 3
