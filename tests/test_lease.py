"""Leader election over real HTTP against the API stand-in, with fake clocks."""

from __future__ import annotations

from devkit.clock import FakeClock
from linstor_scheduler.kube.lease import AlwaysLeader, LeaderElector


def elector(ks, clock, identity, **kw):
    return LeaderElector(ks.api, "fencing", "kube-system", identity=identity, lease_seconds=15,
                         renew_seconds=5, clock=clock, wall_clock=clock, **kw)


def test_one_leader_then_takeover_only_after_the_lease_expired(ks):
    clock = FakeClock(1000.0)
    changes = []
    a = elector(ks, clock, "a", on_change=lambda lead: changes.append(("a", lead)))
    b = elector(ks, clock, "b", on_change=lambda lead: changes.append(("b", lead)))
    assert a.step() is True
    assert b.step() is False
    lease = ks.get("Lease", "fencing", "kube-system")
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 15
    assert b.holder == "a"
    clock.now += 5
    assert a.step() is True  # renews
    clock.now += 10
    assert b.step() is False, "a renewed 10 s ago: its lease is alive"
    # a is cut off: no more renewals. It stops acting before b may take over.
    clock.now += 12
    assert a.is_leader is False
    assert b.step() is False, "b observed the last change only 12 s ago"
    clock.now += 4
    assert b.step() is True
    lease = ks.get("Lease", "fencing", "kube-system")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert a.step() is False, "a comes back and finds b holding a live lease"
    assert changes == [("a", True), ("b", True), ("a", False)]
    assert b.leader_since == clock.now


def test_release_hands_over_at_once(ks):
    clock = FakeClock(1000.0)
    a, b = elector(ks, clock, "a"), elector(ks, clock, "b")
    assert a.step()
    assert not b.step()
    a.release()
    assert not a.is_leader
    assert b.step(), "an empty holder is free to take at once"
    assert ks.get("Lease", "fencing", "kube-system")["spec"]["holderIdentity"] == "b"


def test_the_leases_annotations_are_handed_to_the_next_holder_whether_released_or_expired(ks):
    """What a leader keeps on its Lease (fencing's grace timers) reaches its successor: written with
    each renewal, kept on release, read by whoever takes the Lease over; a new holder starts with
    nothing of its own, so it never writes back an older record of a previous term."""
    clock = FakeClock(1000.0)
    a, b = elector(ks, clock, "a"), elector(ks, clock, "b")
    assert a.step()
    a.annotations["example/record"] = "first"
    clock.now += 5
    assert a.step()
    assert ks.get("Lease", "fencing", "kube-system")["metadata"]["annotations"] == {"example/record": "first"}
    a.release()
    assert b.step()
    assert b.inherited == {"example/record": "first"} and b.annotations == {}
    b.annotations["example/record"] = "second"
    assert not a.step(), "b holds a live lease"
    clock.now += 5
    assert b.step()
    clock.now += 16  # b is cut off: its Lease expires
    assert not a.step()
    clock.now += 16
    assert a.step()
    assert a.inherited == {"example/record": "second"} and a.annotations == {}, "not a's own record of its first term"
    assert ks.get("Lease", "fencing", "kube-system")["metadata"]["annotations"] == {"example/record": "second"}


def test_conflicting_write_loses_cleanly(ks):
    clock = FakeClock(1000.0)
    a, b = elector(ks, clock, "a"), elector(ks, clock, "b")
    assert a.step()
    clock.now += 100  # a is stale for b
    assert not b.step()  # first observation
    clock.now += 16
    ks.patch("Lease", "fencing", {"spec": {"holderIdentity": "c"}}, "kube-system")  # c renews meanwhile
    # b read the lease before c's write would be a race; here b sees c's new record and waits
    assert not b.step()
    assert ks.get("Lease", "fencing", "kube-system")["spec"]["holderIdentity"] == "c"


def test_api_down_means_not_leader_and_no_exception(ks):
    clock = FakeClock(1000.0)
    a = elector(ks, clock, "a")
    assert a.step()
    ks.inject(fail=100, status=500)
    clock.now += 5
    assert a.step() is True, "one failed renewal within the lease keeps the lead"
    clock.now += 8
    assert a.step() is False, "no renewal for 13 s of 15: stop acting before anyone can take over"


def test_always_leader():
    leader = AlwaysLeader()
    assert leader.is_leader and leader.step() and leader.leader_since is not None


def test_a_blind_instance_steps_aside_after_its_patience_and_stays_aside_for_the_hold():
    """``StepAside``: a blip of blindness does not hand the Lease around; blind past the patience it
    steps aside, stays aside for the hold and until it sees again."""
    from linstor_scheduler.kube.lease import StepAside

    now, sees = [0.0], [True]
    aside = StepAside(lambda: (sees[0], "view fresh" if sees[0] else "view 30s old"), patience=45, hold=15,
                      clock=lambda: now[0])
    assert aside() == (True, "view fresh")
    sees[0] = False
    now[0] = 10
    ok, why = aside()
    assert ok and "blind for 0s" in why, "blindness starts: within the patience"
    now[0] = 40
    sees[0] = True
    assert aside()[0], "a blip: it sees again"
    sees[0] = False
    now[0] = 50
    assert aside()[0], "blind afresh: the patience starts again"
    now[0] = 96
    ok, why = aside()
    assert not ok and why == "blind for 46s (more than 45s): view 30s old"
    sees[0] = True
    now[0] = 100
    assert aside() == (False, why), "aside for the hold, even seeing"
    now[0] = 112
    assert aside()[0], "the hold is over and it sees"


def test_an_ineligible_leader_releases_the_lease_and_a_standby_takes_it(ks):
    clock = FakeClock(0)
    blind = [False]
    a = elector(ks, clock, "a", eligible=lambda: (not blind[0], "blind" if blind[0] else "sees"))
    b = elector(ks, clock, "b")
    assert a.step() and not b.step()
    blind[0] = True
    assert not a.step() and a.released_for_blindness == 1 and a.ineligible == "blind"
    assert ks.get("Lease", "fencing", "kube-system")["spec"]["holderIdentity"] == ""
    assert b.step(), "the standby takes the released Lease at once"
    assert not a.step(), "a blind instance does not campaign"
