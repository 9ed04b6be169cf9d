"""Fencing against network events on the emulator's reachability matrix, over real HTTP (LINSTOR
emulator + Kubernetes API stand-in, fake clock).

The first scenarios are the seven found in issue 9 ("Fencing you can trust"): each failed before
the fix and passes after it. Then the two-witness rule, the taint, and the rest of the issue's
matrix. Most of them are cases where nothing may be deleted.
"""

from __future__ import annotations

import pytest

from fencing.controller import Settings

from .fencing_rig import Rig
from .probing import scrape


# --- 1. a rack failure is not a storm; a storm's end starts every grace period afresh ------------
def test_rack_of_two_of_seven_storage_nodes_lost_evicts():
    """7 storage nodes, 4 hold diskful replicas: losing 2 is 2 of 7 (not 2 of 4): both pods move."""
    with Rig(nodes=("n1", "n2", "n3", "n4", "n5", "n6", "n7")) as rig:
        rig.emu.add_node("d1", providers=("DISKLESS",))  # a diskless-only satellite: counted apart
        rig.pod("a-0", "n1", [rig.volume("pvc-a", ["n1", "n3"], diskless=["n5"], in_use="n1")])
        rig.pod("b-0", "n2", [rig.volume("pvc-b", ["n2", "n4"], diskless=["n5"], in_use="n2")])
        rig.run(10)
        rig.power_off("n1")
        rig.power_off("n2")
        rig.run(40)
        assert sorted(rig.evicted()) == ["a-0", "b-0"]
        assert rig.ctrl.metrics.storm_active.value() == 0
        assert rig.ctrl.metrics.lost_nodes.value() == 2


def test_two_of_six_is_not_more_than_a_third_three_of_six_is_a_storm(rig):
    rig.pod("a-0", "n1", [rig.volume("pvc-a", ["n1", "n4"], diskless=["n5"], in_use="n1")])
    rig.volume("pvc-b", ["n2", "n3"], diskless=["n6"])
    rig.run(10)
    for node in ("n1", "n2", "n3"):
        rig.power_off(node)
    rig.run(90)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    (event,) = rig.events("StormBreaker", "a-0")
    assert "3 of 6 storage nodes" in event["message"]
    assert rig.ctrl.metrics.storm_active.value() == 1
    rig.recover("n2")
    rig.recover("n3")  # 1 of 6 lost: calm again; n1's fault has been there for 90 s
    calm = rig.clock.now
    rig.run(25)
    assert rig.pod_deletes() == [], "timers did not run through the storm: a fresh grace period"
    rig.run(15)
    assert rig.evicted() == ["a-0"]
    deleted_at = rig.deleted_at("default/a-0")
    assert deleted_at - calm >= 30


# --- 2. blind to Kubernetes: the timers restart ------------------------------------------------
def test_kubernetes_blind_across_a_recovery_and_a_new_fault_restarts_the_timer(rig):
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.run(20)  # timing the first fault
    rig.ks.inject(fail=10_000, status=503, path_prefix="/api/v1/pods", method="GET")  # pod lists fail: blind
    rig.run(5)
    rig.recover("n1")
    rig.run(20)
    rig.power_off("n1")  # a new fault, while still blind
    rig.run(10)  # blind for 35 s in all
    rig.ks.reset_faults()
    back = rig.clock.now
    rig.run(25)
    assert rig.pod_deletes() == [], "the old timer is gone: blind past the bound restarts every timer"
    rig.run(15)
    assert rig.evicted() == ["db-0"]
    deleted_at = rig.deleted_at("default/db-0")
    assert deleted_at - back >= 30


# --- 3. each write checked at the moment it is made ----------------------------------------------
class LapsingLeader:
    """A Lease holder whose renewals stop at ``until`` (the API server went away)."""

    def __init__(self, rig: Rig, until: float) -> None:
        self.rig, self.until = rig, until
        self.leader_since: float | None = rig.clock.now

    @property
    def is_leader(self) -> bool:
        return self.rig.clock.now < self.until


def slow_live_reads(rig: Rig, seconds: float) -> None:
    """The API server answers the live read of the pod ``seconds`` late (fake clock)."""
    get_pod = rig.ctrl.actions.get_pod

    def slow(namespace: str, name: str):
        rig.clock.now += seconds
        return get_pod(namespace, name)

    rig.ctrl.actions.get_pod = slow


@pytest.mark.parametrize("what", ["lease", "evidence"])
def test_a_write_is_not_sent_when_the_lease_or_the_evidence_lapsed_meanwhile(what):
    with Rig() as rig:
        leader = LapsingLeader(rig, until=float("inf"))
        if what == "lease":
            rig.ctrl = rig.controller(leader=leader)
        rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
        rig.run(5)
        rig.power_off("n1")
        rig.run(30)
        leader.until = rig.clock.now + rig.settings.poll_interval + 2  # held when the next pass starts
        slow_live_reads(rig, 3 if what == "lease" else 25)  # the lease lapses / the reads get older than 20 s
        report = rig.step()
        assert rig.pod_deletes() == [] and rig.writes("PATCH", "/nodes/") == [], "no write, not even the taint"
        assert any(outcome == "held" for _, _, outcome in report.actions)
        if what == "evidence":
            (event,) = rig.events("StaleData", "db-0")
            assert "evidence is" in event["message"]


# --- 4. quorum=1 is no quorum policy -------------------------------------------------------------
@pytest.mark.parametrize(("quorum", "refusal"), [("1", "NoQuorumPolicy"), ("2", "NoPromotableReplica"),
                                                 ("majority", None)])
def test_quorum_must_be_more_than_half_of_the_voters(rig, quorum, refusal):
    """2 diskful + tie-breaker: DRBD's voters are the 2 diskful replicas (drbd_state.c). ``quorum=1``
    lets the cut-off node write; ``quorum=2`` stops it, but n2 keeps quorum only through the
    tie-breaker until its partition's membership commit leaves n1 "quorumless": 1 voter left, still
    2 needed (calc_quorum): nowhere may promote; ``majority`` needs 1 of that 1."""
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.emu.set_rd_props("pvc-r2", {"DrbdOptions/Resource/quorum": quorum})
    rig.run(10)
    rig.partition("n1")
    assert rig.emu.io_suspended("pvc-r2", "n1") is (quorum != "1"), "DRBD itself: quorum=1 lets the cut-off node write"
    assert rig.emu.has_quorum("pvc-r2", "n2") is (quorum != "2")
    rig.run(40)
    assert len(rig.pod_deletes()) == (0 if refusal else 1)
    if refusal:
        (event,) = rig.events(refusal, "db-0")
        if refusal == "NoQuorumPolicy":
            assert "not more than half of the 2 voters" in event["message"]


# --- 5. generic ephemeral volumes of a pod still terminating ---------------------------------------
def test_ephemeral_and_pvc_volumes_of_a_terminating_pod_keep_their_attachments(rig):
    rig.volume("pvc-eph", ["n1", "n2"], in_use="n1", claim="db-0-scratch")  # the ephemeral volume's PVC
    claim = rig.volume("pvc-data", ["n1", "n2"], in_use="n1")
    pod = rig.pod("db-0", "n1", [claim], ephemeral=("scratch",))
    rig.run(10)
    rig.partition("n1")
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # evicted earlier; kubelet is stuck on the
    rig.ks.update(pod)  # suspended I/O and cannot finish: the pod stays on n1, terminating
    rig.run(85)  # the grace period, then the eviction timeout (60 s) runs from the first attempt
    assert rig.pod_deletes() == [], "terminating: waited for, within the eviction timeout"
    assert rig.attachment_deletes() == [], "both attachments stay while the pod is on the node"
    assert rig.ks.get("VolumeAttachment", "csi-pvc-eph-n1-linstor") is not None
    rig.run(15)
    (method, _path, body) = rig.pod_deletes()[0]
    assert (method, body["gracePeriodSeconds"]) == ("DELETE", 0), "grace 0 after the eviction timeout"
    rig.run(5)
    assert sorted(p.rsplit("/", 1)[1] for _, p, _ in rig.attachment_deletes()) == [
        "csi-pvc-data-n1-linstor", "csi-pvc-eph-n1-linstor"]


# --- 6. 409 on eviction is not silent; 429 honours Retry-After ------------------------------------
def test_eviction_conflict_is_an_event_and_a_metric_and_429_waits_for_retry_after(rig):
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.partition("n1")
    rig.ks.inject(fail=1, status=409, path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.run(35)
    (event,) = rig.events("EvictionConflict", "db-0")
    assert event["type"] == "Warning" and "409" in event["message"]
    assert rig.ctrl.metrics.actions.labels("pod_evict", "conflict")._value.get() == 1
    rig.ks.inject(fail=1, status=429, path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.step()
    posts = len(rig.writes("POST", "/eviction"))
    assert rig.events("EvictionBlocked", "db-0")
    rig.step(0.5)  # within the server's Retry-After (1 s): no new attempt
    assert len(rig.writes("POST", "/eviction")) == posts
    rig.step()
    assert rig.ks.get("Pod", "db-0") is None


# --- 7. the docs' claims, each made true -----------------------------------------------------------
def test_a_flap_between_two_polls_is_seen_through_the_promotion_stream():
    """20 s down, 2 s up (between polls), 20 s down: no eviction."""
    with Rig(linstor_events=True) as rig:
        rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
        rig.follow_promotions()
        rig.run(10)
        rig.power_off("n1")
        rig.wait_promotions()  # n2 (and the tie-breaker) may promote now
        rig.run(20)
        rig.clock.now += 1
        rig.recover("n1")
        rig.wait_promotions()  # n1's Primary is back: n2 may not
        rig.clock.now += 2
        rig.power_off("n1")
        rig.wait_promotions()
        rig.run(20)
        rig.recover("n1")
        rig.run(60)
        assert rig.pod_deletes() == [] and rig.attachment_deletes() == []


def test_every_satellite_cut_from_the_controller_is_a_storm_and_no_eviction(rig):
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    for node in rig.nodes:
        rig.cut_controller(node)
    rig.run(90)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert rig.ctrl.metrics.storm_active.value() == 1
    (event,) = rig.events("NoPeerWitness", "db-0")
    assert event["type"] == "Normal" and "no surviving DRBD peer of pvc-r2 can be heard" in event["message"]


# --- two witnesses ---------------------------------------------------------------------------------
def test_controller_cut_from_one_node_is_no_storage_loss(rig):
    rig.pod("db-0", "n3", [rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use="n3")])
    rig.run(10)
    rig.cut_controller("n3")
    assert rig.emu.snapshot()["nodes"][2]["connection_status"] == "OFFLINE"
    rig.run(120)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == [] and rig.writes("PATCH", "/nodes/") == []
    (event,) = rig.events("ControllerPartition", "db-0")
    assert event["type"] == "Normal" and "DRBD peers on n1, n2 still reach it" in event["message"]
    assert rig.events("StorageFaultObserved", "db-0") == []


def test_a_node_cut_from_its_peers_is_storage_loss_evicted_through_the_eviction_api(rig):
    pod = rig.pod("db-0", "n1", [rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use="n1")])
    rig.run(10)
    rig.partition("n1")
    assert rig.emu.io_suspended("pvc-r3", "n1"), "DRBD: the cut-off Primary lost quorum, its I/O is frozen"
    rig.run(25)
    assert rig.pod_deletes() == []
    rig.run(10)
    ((method, path, body),) = rig.pod_deletes()
    assert (method, path) == ("POST", "/api/v1/namespaces/default/pods/db-0/eviction")
    assert body["deleteOptions"]["preconditions"] == {"uid": pod["metadata"]["uid"]}


def test_two_of_three_replicas_lost_nowhere_to_go(rig):
    rig.pod("db-0", "n1", [rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.power_off("n2")
    assert not rig.emu.has_quorum("pvc-r3", "n3"), "1 of 3 voters: n3 lost quorum and may not promote"
    rig.run(120)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert rig.events("NoPromotableReplica", "db-0")


def test_a_diskless_client_breaks_the_tie_and_the_pod_fails_over(rig):
    """Diskful replicas on n1 (Primary) and n2, a diskless client replica on n3 (no TIE_BREAKER flag),
    no tie-breaker besides. n1 loses power: n2 is 1 of 2 voters and the connected diskless n3 breaks
    the tie (drbd9-tests tests/quorum-tiebreaker case 3), so n2 may promote and the pod moves. (The
    emulator counted only TIE_BREAKER-flagged diskless replicas and held it: NoPromotableReplica.)"""
    claim = rig.volume("pvc-r2", ["n1", "n2"], in_use="n1", tie_breaker=False)
    rig.emu.add_resource("pvc-r2", "n3", diskful=False)
    rig.pod("db-0", "n1", [claim])
    rig.run(10)
    moved_to_n2_after_n1_loses_power(rig, "pvc-r2")


def moved_to_n2_after_n1_loses_power(rig: Rig, resource: str) -> None:
    rig.power_off("n1")
    assert rig.emu.has_quorum(resource, "n2"), "DRBD: n2 keeps quorum"
    rig.run(45)
    assert rig.evicted() == ["db-0"]


def test_quorum_minimum_redundancy_holds_when_the_survivors_are_not_uptodate(rig):
    """quorum-minimum-redundancy 2 on three diskful replicas; n3 is resyncing (Inconsistent) when n1,
    the Primary's node, loses power. n2 sees 2 of 3 voters but only 1 UpToDate replica: DRBD gives it
    no quorum (drbd_state.c calc_quorum, min_redundancy_at), so it may not promote and fencing holds.
    With the resync done, the same power loss fails the pod over to n2."""
    rig.pod("db-0", "n1", [rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use="n1")])
    rig.emu.set_rd_props("pvc-r3", {"DrbdOptions/Resource/quorum-minimum-redundancy": "2"})
    rig.emu.set_disk_state("pvc-r3", "n3", "Inconsistent", sync_peer="n1", done_percentage=40.0)
    rig.run(10)
    rig.power_off("n1")
    assert not rig.emu.has_quorum("pvc-r3", "n2"), "1 UpToDate of the 2 quorum-minimum-redundancy needs"
    rig.run(60)
    assert rig.pod_deletes() == []
    assert rig.events("NoPromotableReplica", "db-0")
    rig.recover("n1")
    rig.emu.set_disk_state("pvc-r3", "n3", "UpToDate")
    rig.run(10)
    moved_to_n2_after_n1_loses_power(rig, "pvc-r3")


def test_node_crash_with_r2_and_r3_volumes(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")
    c3 = rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2, c3])
    rig.run(10)
    rig.power_off("n1")
    rig.run(40)
    ((method, _, body),) = rig.pod_deletes()
    assert method == "DELETE" and body["gracePeriodSeconds"] == 0, "NotReady node: grace 0"
    assert len(rig.attachment_deletes()) == 2


# --- the taint (--taint) ---------------------------------------------------------------------------------
def test_the_lost_node_is_tainted_while_fencing_acts_and_untainted_by_a_new_instance(rig):
    rig.settings.taint = True  # --taint
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.run(40)
    assert rig.ks.get("Node", "n1")["spec"]["taints"] == [
        {"key": "linstor.csi.linbit.com/storage-lost", "effect": "NoSchedule"}]
    patch_at = next(i for i, w in enumerate(rig.ks.writes) if w[0] == "PATCH" and "/nodes/n1" in w[1])
    delete_at = next(i for i, w in enumerate(rig.ks.writes) if w[0] == "DELETE" and "/pods/db-0" in w[1])
    assert patch_at < delete_at, "tainted before the pod goes: the new pod does not come back to n1"
    rig.ctrl = rig.controller(settings=Settings(taint=False, taint_stable_seconds=60))  # restart, --no-taint
    rig.recover("n1")
    rig.run(55)
    assert rig.ks.get("Node", "n1")["spec"]["taints"], "back for less than 60 s"
    rig.run(10)
    assert rig.ks.get("Node", "n1")["spec"]["taints"] == [], "ours, removed by the new instance"


def test_no_taint_while_the_storm_breaker_holds(rig):
    rig.settings.taint = True  # --taint
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n4"], diskless=["n5"], in_use="n1")])
    rig.run(10)
    for node in ("n1", "n2", "n3"):
        rig.power_off(node)
    rig.run(90)
    assert rig.writes("PATCH", "/nodes/") == []


def test_twenty_pods_on_one_lost_node_are_rate_limited_one_warning_each(rig):
    for i in range(20):
        rig.pod(f"db-{i}", "n1", [rig.volume(f"pvc-{i}", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.run(35)
    assert len(rig.pod_deletes()) == 10, "10 per minute (burst 10)"
    limited = rig.events("RateLimited")
    assert len(limited) == 10 and len({e["involvedObject"]["name"] for e in limited}) == 10
    rig.run(65)
    assert len(rig.pod_deletes()) == 20
    assert len(rig.events("RateLimited")) == 10, "one Warning per held pod, not one per pass"
    order = [w[1] for w in rig.ks.writes if w[0] == "DELETE"]
    for i in range(20):
        pod_at = order.index(f"/api/v1/namespaces/default/pods/db-{i}")
        va_at = order.index(f"/apis/storage.k8s.io/v1/volumeattachments/csi-pvc-{i}-n1-linstor")
        assert pod_at < va_at, "the VolumeAttachment after its pod"


# --- issue 18: no figure before a read, none on a standby, the view's age from the last good read ---
LOST, STORM = "linstor_scheduler_fencing_lost_storage_nodes", "linstor_scheduler_fencing_storm_active"
VIEW_AGE, LEADER = "linstor_scheduler_fencing_linstor_view_age_seconds", "linstor_scheduler_fencing_leader"


def test_lost_nodes_and_storm_are_absent_until_a_read_and_the_view_ages_while_linstor_fails(rig):
    """The controller's /metrics over HTTP (its registry on the side-port app): leading but LINSTOR
    down, nothing of LINSTOR is claimed (0 lost nodes would be a guess); a good read brings the
    figures; failed reads keep them and the view's age grows; a standby withdraws them."""
    from linstor_scheduler.health import health_app
    from linstor_scheduler.httpserver import ServerThread

    rig.pod("a-0", "n1", [rig.volume("pvc-a", ["n1", "n4"], diskless=["n5"], in_use="n1")])
    with ServerThread(health_app(rig.ctrl.metrics.registry, ready=lambda: (True, ""))) as srv:
        rig.emu.inject(fail=10**9, status=500, path_prefix="/v1/")
        rig.step()
        blind = scrape(srv.url)
        assert blind[LEADER] == 1
        assert not {LOST, STORM, VIEW_AGE, "linstor_scheduler_fencing_linstor_read_seconds"} & set(blind), blind
        rig.emu.reset_faults()
        rig.step()
        seen = scrape(srv.url)
        assert seen[LOST] == 0 and seen[STORM] == 0 and seen[VIEW_AGE] == 0
        rig.emu.inject(fail=10**9, status=500, path_prefix="/v1/")
        ages = []
        for _ in range(3):
            rig.step()
            ages.append(scrape(srv.url)[VIEW_AGE])
        step = rig.settings.poll_interval
        assert ages == [step, 2 * step, 3 * step], "from the last good read: failed reads never reset it"
        assert scrape(srv.url)[LOST] == 0  # kept, with its age beside it
        rig.ctrl.leader.is_leader, rig.ctrl.leader.leader_since = False, None  # as the elector says it
        rig.step()
        standby = scrape(srv.url)
        assert standby[LEADER] == 0 and not {LOST, STORM, VIEW_AGE} & set(standby), standby
