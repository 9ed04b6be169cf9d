"""Fencing's storm breaker: more than a third of the storage nodes lost at once holds every fail-over.
Who counts: a satellite LINSTOR has EVICTED is out of service, not part of the population. Real HTTP
(LINSTOR emulator + Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, ``rig`` in
tests/conftest.py).

Here: a rack of 2 of 7 is not a storm (diskless-only satellites counted apart); 2 of 6 is not more
than a third, 3 of 6 is, and its end starts every grace period afresh; every satellite cut from the
controller is a storm. The breaker's other cases: tests/test_fencing_witnesses.py (two faults are not
four lost nodes), tests/test_fencing_handover.py (a storm seen by the old leader),
tests/test_fencing_taint.py (no taint while it holds).
"""

from __future__ import annotations

from .fencing_rig import Rig


# --- nodes LINSTOR evicted long ago are not part of a storm --------------------------------------
def test_nodes_linstor_evicted_long_ago_do_not_make_one_failure_a_storm(rig):
    """n5 and n6 died hours ago; LINSTOR auto-evicted them (EVICTED, their replicas re-placed) and
    nobody has removed them yet. Then n1 loses power: one node lost "at once". The breaker counted
    the two evicted nodes too, 3 of 6 > 1/3, and held every fail-over for as long as they stayed in
    the list. An EVICTED satellite is out of service: not part of the population."""
    for node in ("n5", "n6"):
        rig.power_off(node)
        rig.emu.auto_evict(node)
    rig.pod("db-0", "n1", [rig.volume("pvc-a", ["n1", "n2"], diskless=["n3"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.run(40)
    assert rig.events("StormBreaker") == []
    assert rig.evicted() == ["db-0"]


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
