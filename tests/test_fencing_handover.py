"""Fencing's leadership handover: the grace timers handed over with the Lease are continued by the
next leader only where its own first read agrees and the record is recent (a blip inside the gap
gets no grace), are read on the predecessor's clock, and a storm the old leader saw restarts the
grace for the new one. Real HTTP (LINSTOR emulator + Kubernetes API stand-in), a fake clock
(tests/fencing_rig.py, ``rig`` in tests/conftest.py).

The handover's other cases: tests/test_fencing_executor.py ("the grace survives a leader change");
the budget across a handover: tests/test_fencing_budget.py.
"""

from __future__ import annotations

from .fencing_rig import database, lease_leader, skewed_leader_and_standby


# --- the grace handed over with the Lease ------------------------------------------------------------
def test_a_blip_inside_the_handover_gap_gets_no_grace_from_the_new_leader(rig):
    """Leader A sees n1 lose power and times it for one pass (5 s), then crashes. n1's power comes
    back a second later (DRBD reconnects, the satellite is ONLINE): the fault is over, but nobody
    leads to see it. 29 s later n1's switch port flaps: n1 is cut off for a few seconds, exactly
    when B, which took the expired Lease, makes its first read. B sees "the same fault" (the same
    resources on n1) within the record's bound (--max-staleness 20 + Lease 15 = 35 s) and continues
    A's timer from the first sighting: the 1-second-old blip is 30 s old to B and db-0 is removed
    on B's very first pass. A single leader would have seen the recovery and given the new fault a
    whole grace period; the gap between two terms is longer than the grace itself, so the timing
    carried over can be entirely unobserved time."""
    database(rig)
    rig.clock.now = round(rig.clock.now)
    elector_a = lease_leader(rig, "fencing-a")
    ctrl_a = rig.controller(leader=elector_a)
    assert elector_a.step()
    rig.power_off("n1")
    rig.clock.now += 5
    elector_a.step()
    rig.loop.run_until_complete(ctrl_a.run_once())  # A's only sighting; its record goes on the Lease
    elector_a.step()  # the renewal that writes the record
    last_record = rig.clock.now
    # A crashes here. n1 recovers one second later; nobody observes it.
    rig.clock.now += 1
    rig.recover("n1")
    elector_b = lease_leader(rig, "fencing-b")
    ctrl_b = rig.controller(leader=elector_b)
    assert not elector_b.step(), "a standby while A's Lease runs"
    rig.clock.now = last_record + 30
    rig.partition("n1")  # a fresh fault: n1's links flap
    blip_at = rig.clock.now
    rig.clock.now += 1
    assert elector_b.step(), "B takes the expired Lease"
    rig.reports.append(rig.loop.run_until_complete(ctrl_b.run_once()))
    assert rig.clock.now - blip_at < 30
    assert rig.ks.get("Pod", "db-0") is not None and rig.pod_deletes() == [] and rig.evicted() == [], \
        "a fault 1 s old was treated as 30 s old: the timer was carried over a recovery nobody saw"


def test_a_predecessor_whose_clock_is_behind_does_not_shorten_the_grace(rig):
    """Leader A's node has lost NTP and its clock runs 18 s behind. A sees n1 lose power, times it for
    one pass, and crashes. B takes the expired Lease and reads the same fault: A's record says it was
    first seen 18 s before it really was, so B deletes db-0 about 20 s into a 30 s grace period."""
    elector_a, ctrl_a, elector_b, ctrl_b = skewed_leader_and_standby(rig, skew=18.0)
    rig.power_off("n1")
    fault_at = rig.clock.now
    rig.clock.now += 5
    elector_a.step()
    rig.loop.run_until_complete(ctrl_a.run_once())  # A's only sighting
    elector_a.step()
    # A crashes; B campaigns every second and makes a pass each second once it leads.
    while rig.ks.get("Pod", "db-0") is not None and rig.clock.now - fault_at < 60:
        rig.clock.now += 1
        if elector_b.step():
            rig.reports.append(rig.loop.run_until_complete(ctrl_b.run_once()))
    assert rig.ks.get("Pod", "db-0") is None, "B fails the pod over"
    assert rig.clock.now - (fault_at + 5) >= 30, \
        f"db-0 removed {rig.clock.now - fault_at - 5:.0f}s after the fault was first seen (grace 30 s)"


def test_a_storm_seen_by_the_old_leader_restarts_the_grace_for_the_new_one(rig):
    """n1 loses power and leader A times it. Seven seconds later a top-of-rack switch reboots: n2 and
    n3 drop too, half the storage nodes look lost, and A's storm breaker holds everything and drops
    every grace timer ("after a storm every fault starts a fresh full grace period"). A is OOM-killed
    in the storm; the switch is back at once; B takes the Lease and sees n1 alone lost. Before, B
    continued the record A had published before the storm (passes in a storm publish nothing), so
    db-0 was deleted 18 s after the storm, not after a fresh grace period."""
    database(rig, peers=("n4",))  # its peer is in another rack
    rig.clock.now = round(rig.clock.now)
    start = rig.clock.now
    elector_a = lease_leader(rig, "fencing-a")
    a = rig.controller(leader=elector_a)
    assert elector_a.step()
    elector_b = lease_leader(rig, "fencing-b")
    b = rig.controller(leader=elector_b)
    rig.clock.now += 1
    assert not elector_b.step()
    rig.power_off("n1")
    for _ in range(2):  # A's passes at +5 and +10 time n1's fault and publish it
        rig.clock.now = start + 5 * (_ + 1)
        elector_a.step()
        rig.loop.run_until_complete(a.run_once())
    rig.clock.now = start + 12
    rig.power_off("n2")
    rig.power_off("n3")
    rig.clock.now = start + 15
    elector_a.step()
    report = rig.loop.run_until_complete(a.run_once())
    assert report.guard == "StormBreaker", report
    elector_a.step()  # its last renewal; then it is killed
    rig.clock.now = start + 18
    rig.recover("n2")
    rig.recover("n3")
    storm_over = rig.clock.now
    while rig.ks.get("Pod", "db-0") is not None and rig.clock.now - storm_over < 90:
        rig.clock.now += 1
        if elector_b.step() and int(rig.clock.now - start) % 5 == 1:
            rig.reports.append(rig.loop.run_until_complete(b.run_once()))
    assert rig.ks.get("Pod", "db-0") is None, "B fails db-0 over"
    assert rig.clock.now - storm_over >= 30, \
        f"db-0 deleted {rig.clock.now - storm_over:.0f}s after the storm: the pre-storm timer was continued"
