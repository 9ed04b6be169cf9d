"""Fencing's rules on when a node's storage counts as lost and whether a pod may move: two witnesses
(LINSTOR and the node's DRBD peers), where a peer that reaches no other replica itself, while LINSTOR
still reaches the node, is no witness; and every volume of the pod needs somewhere to go (one whose
only replica is on the lost node keeps the pod: NowhereToGo). Real HTTP (LINSTOR emulator +
Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, ``rig`` in tests/conftest.py).

Also here: DRBD's quorum as the voters count it (quorum=1 is no quorum policy; a diskless client
breaks the tie; quorum-minimum-redundancy counts UpToDate replicas only), the controller cut from one
node (no loss), a node cut from its peers (loss), two of three replicas lost (nowhere to go). The pure
rules are tested in tests/test_fencing_verdict.py.
"""

from __future__ import annotations

import pytest

from fencing.actions import TAINT_KEY

from .fencing_rig import Rig, taint_keys


# --- every volume of the pod needs somewhere to go ------------------------------------------------
def test_a_pod_with_a_single_replica_volume_on_the_lost_node_is_not_evicted(rig):
    """db-0 on n1 has its data on an r2 volume and a cache on an r1 volume (storage_sync makes
    linstor-<pool>-r1 classes) whose only replica is on n1. n1 loses power. The r1 volume has no
    peer to testify (NoPeerWitness, judged healthy), so the pod was failed over on the r2 volume
    alone: recreated where its r1 volume can never be attached, and kept off n1 by our taint; the
    evict/recreate trap the docs' rule 3 exists for ("for every volume that lost its storage ...
    somewhere to go"). Now: NowhereToGo, nothing deleted, no taint."""
    data = rig.volume("pvc-data", ["n1", "n2"], in_use="n1")
    cache = rig.volume("pvc-cache", ["n1"], in_use="n1")
    rig.pod("db-0", "n1", [data, cache])
    rig.run(10)
    rig.power_off("n1")
    rig.run(90)
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert TAINT_KEY not in taint_keys(rig, "n1")
    (event,) = rig.events("NowhereToGo", "db-0")
    assert event["type"] == "Warning" and "pvc-cache" in event["message"]


# --- a witness that is itself cut off proves nothing about its peers ------------------------------
def test_two_faults_are_not_counted_as_four_lost_nodes(rig):
    """n1 loses power and n3 is cut from its peers: two faults in six storage nodes, not a storm.
    But n2 (pvc-a: n1, n2, tie-breaker n3) and n4 (pvc-b: n3, n4, tie-breaker n1) then report every
    DRBD peer down (their peers are the lost ones), and n3, ONLINE in LINSTOR, reports them down
    too: both witnesses seemed to agree, the breaker counted 4 of 6 and held everything, so c-0 on
    n3 (pvc-c: n3, n6, tie-breaker n5, with quorum on n6) was never failed over. A peer that reaches
    no other replica itself (n3) cannot tell its own isolation from the other node's; when LINSTOR
    still reaches the node, its testimony is not counted."""
    rig.pod("a-0", "n1", [rig.volume("pvc-a", ["n1", "n2"], diskless=["n3"], in_use="n1")])
    rig.volume("pvc-b", ["n3", "n4"], diskless=["n1"])
    rig.pod("c-0", "n3", [rig.volume("pvc-c", ["n3", "n6"], diskless=["n5"], in_use="n3")])
    rig.run(10)
    rig.power_off("n1")
    rig.partition("n3")
    rig.run(45)
    assert rig.ctrl.metrics.lost_nodes.value() == 2
    assert rig.ctrl.metrics.storm_active.value() == 0
    assert rig.events("StormBreaker") == []
    # a-0 moves too: n2 kept quorum through the tie-breaker n3 when n1 went, and keeps it when n3 goes
    # (n1 left n2's quorate partition: "quorumless", drbd9-tests tests/quorum-check-quorumless)
    assert sorted(rig.evicted()) == ["a-0", "c-0"], "c-0 moves to n6, a-0 to n2"


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
