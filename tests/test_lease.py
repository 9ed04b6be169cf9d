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
