"""Fencing's storm breaker: more than a third of the storage nodes lost at once holds every fail-over.
Who counts: a satellite LINSTOR has EVICTED is out of service, not part of the population. Real HTTP
(LINSTOR emulator + Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, ``rig`` in
tests/conftest.py).

The breaker's other cases: tests/test_fencing_network.py (a rack is not a storm; 2 of 6 / 3 of 6;
every satellite cut from the controller), tests/test_fencing_witnesses.py (two faults are not four
lost nodes), tests/test_fencing_handover.py (a storm seen by the old leader).
"""

from __future__ import annotations


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
