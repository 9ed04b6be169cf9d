"""Fencing's grace period: a fault is timed only while it is observed. A stretch nobody observed
(a pass that comes late: a clock jump, a frozen process) restarts every grace timer, as being blind
past --max-staleness does. Real HTTP (LINSTOR emulator + Kubernetes API stand-in), a fake clock
(tests/fencing_rig.py, the ``rig`` fixture in tests/conftest.py).
"""

from __future__ import annotations


# --- a pass that comes late (clock jump, frozen process) is a blind stretch too -------------------
def test_a_gap_between_passes_longer_than_the_bound_restarts_the_grace_timers(rig):
    """The controller times n1's fault for 20 s, then makes no pass for 55 s (the process was frozen:
    a VM pause, SIGSTOP, CPU starvation; to the monotonic clock it is a jump). Meanwhile n1 came back
    and lost power again 5 s before the late pass. Nobody observed the fault holding through the
    gap: the docs promise that blind past --max-staleness every grace timer restarts. Before the fix
    the late pass saw fresh reads on both sides, kept the old timer and deleted the pod 5 s into the
    new fault."""
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.run(20)
    assert rig.pod_deletes() == []
    rig.clock.now += 10
    rig.recover("n1")  # back, unseen
    rig.clock.now += 40
    rig.power_off("n1")  # a new fault, 5 s before the late pass
    new_fault = rig.clock.now
    rig.step(5)
    rig.run(20)
    assert rig.pod_deletes() == [], "the old timer must not carry over a gap nobody observed"
    rig.run(15)
    assert rig.evicted() == ["db-0"]
    deleted_at = rig.deleted_at("default/db-0")
    assert deleted_at - new_fault >= 30
