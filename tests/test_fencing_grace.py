"""Fencing's grace period: a fault is timed only while it is observed. A stretch nobody observed
(a pass that comes late: a clock jump, a frozen process) restarts every grace timer, as being blind
past --max-staleness does (blind to Kubernetes across a recovery and a new fault); a flap between
two polls, seen through DRBD's promotion stream, restarts it too. Real HTTP (LINSTOR emulator +
Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, the ``rig`` fixture in
tests/conftest.py).
"""

from __future__ import annotations

from .fencing_rig import Rig


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


# --- the pass that is due when a grace period ends (FencingController.next_pass_in) -------------
def test_the_pass_due_at_the_end_of_grace_finds_the_storage_back_and_does_nothing(rig):
    """n1 loses power just before a pass; the next pass is due the moment its grace period ends,
    off the poll's rhythm. n1 came back meanwhile: that early pass is an ordinary pass, its own read
    decides, and nothing is removed."""
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.step(2)  # seen: its grace of 30 s starts now
    rig.run(25)
    rig.step(3)  # 30 - 2 s from due, off the 5 s rhythm
    due = rig.ctrl.next_pass_in()
    assert due == 2.0, "seen at +2 s, the grace ends at +32 s: due in 2 s, not a poll of 5 s"
    rig.recover("n1")
    rig.step(due)
    rig.run(40)
    assert rig.pod_deletes() == [] and rig.evicted() == []


def test_a_pass_that_cannot_judge_leaves_no_early_pass_due(rig):
    """A fault is being timed when LINSTOR stops answering: the pass that cannot read judges
    nothing, so no pass is due before the poll (a failing LINSTOR is not read in a loop), and
    nothing is removed on the stale view."""
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.run(25)
    rig.linstor_down()
    rig.step()
    assert rig.ctrl.next_pass_in() == rig.settings.poll_interval
    assert rig.pod_deletes() == [] and rig.evicted() == []


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
