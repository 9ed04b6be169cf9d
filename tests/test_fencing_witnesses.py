"""Fencing's rules on when a node's storage counts as lost and whether a pod may move: two witnesses
(LINSTOR and the node's DRBD peers), where a peer that reaches no other replica itself, while LINSTOR
still reaches the node, is no witness; and every volume of the pod needs somewhere to go (one whose
only replica is on the lost node keeps the pod: NowhereToGo). Real HTTP (LINSTOR emulator +
Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, ``rig`` in tests/conftest.py).

The pure rules are tested in tests/test_fencing_verdict.py; more network cases in
tests/test_fencing_network.py ("two witnesses").
"""

from __future__ import annotations

from fencing.actions import TAINT_KEY

from .fencing_rig import taint_keys


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
