"""Fencing's removal of a pod through the Eviction API: each new fault asks the PodDisruptionBudget
again first, whatever an earlier fault's eviction did; a refused eviction's Retry-After paces eviction
attempts only, never the grace-0 delete of a pod whose node is NotReady. Real HTTP (LINSTOR emulator +
Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, ``rig`` in tests/conftest.py).

The eviction's other cases: tests/test_fencing_matrix.py (a PDB blocking, grace 0 after the bound),
tests/test_fencing_network.py (409 and 429), tests/test_fencing_executor.py (an eviction answering 500).
"""

from __future__ import annotations


# --- a new fault starts with the Eviction API, whatever an old one did -----------------------------
def test_an_eviction_blocked_in_an_earlier_fault_does_not_skip_the_pdb_in_a_new_one(rig):
    """n1 (Ready) is cut from its peers; db-0's eviction is refused by its PodDisruptionBudget (429).
    The network heals before --eviction-timeout: nothing is deleted. Ten minutes later n1 is cut
    again. The first eviction attempt of the old fault was still remembered, so the new fault's
    first action, right after its grace period, was a grace-0 delete on a Ready node: the PDB
    skipped without ever being asked. Each fault starts with the Eviction API."""
    rig.pod("db-0", "n1", [rig.volume("pvc-a", ["n1", "n2"], diskless=["n3"], in_use="n1")])
    rig.ks.inject(fail=100_000, status=429, path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.run(10)
    rig.partition("n1")
    rig.run(50)
    assert rig.events("EvictionBlocked", "db-0") and rig.writes("DELETE", "/pods/") == []
    rig.partition("n1", cut=False)
    rig.run(600)
    rig.partition("n1")
    again = rig.clock.now
    rig.run(55)
    assert rig.writes("DELETE", "/pods/") == [], "a new fault: the PDB is asked again first"
    rig.run(40)
    (delete,) = rig.writes("DELETE", "/pods/db-0")
    assert delete[2]["gracePeriodSeconds"] == 0
    deleted_at = rig.deleted_at("default/db-0")
    assert deleted_at - again >= 30 + 60, "grace period, then the eviction timeout of this fault"


# --- the Retry-After of a refused eviction is about the eviction -----------------------------------
def test_a_long_retry_after_on_the_eviction_does_not_hold_the_grace_zero_delete(rig):
    """n1 loses power; as in a real cluster its Node stays Ready until the node-monitor grace period
    (40 s) runs out, so the fail-over at 30 s goes through the Eviction API, which answers 429 with
    Retry-After: 300. At 40 s the Node turns NotReady: kubelet's half of a deletion can never run,
    and the pod is deleted with grace 0 (no eviction any more, nothing to retry). The eviction's
    Retry-After held that delete for five minutes: the node-is-NotReady path and the
    --eviction-timeout bound were both ignored. Retry-After now paces eviction attempts only."""
    rig.pod("db-0", "n1", [rig.volume("pvc-a", ["n1", "n2"], diskless=["n3"], in_use="n1")])
    rig.run(10)
    rig.fault_at = rig.clock.now
    rig.emu.power_off("n1")  # the Node is still Ready for now
    rig.ks.inject(fail=100_000, status=429, retry_after=300,
                  path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.run(35)
    assert rig.events("EvictionBlocked", "db-0") and rig.writes("DELETE", "/pods/") == []
    rig.set_ready("n1", False)  # node-monitor grace period over
    rig.run(10)
    (delete,) = rig.writes("DELETE", "/pods/db-0")
    assert delete[2]["gracePeriodSeconds"] == 0
    assert max(rig.deletion_times()) <= 50
