"""Fencing's writer, as real-world events: the pass runs read -> judge -> plan -> execute, and its one
writer re-checks the Lease, the evidence's age and the node's storage at each write, knows each
write's outcome when its answer was lost, accounts every write once, makes every hold visible, and
hands the grace timers over with the Lease.

LINSTOR emulator + Kubernetes API stand-in over real HTTP, a fake clock, ``run_once`` every 5 fake
seconds (tests/fencing_rig.py).
"""

from __future__ import annotations

import pytest

from fencing.actions import TAINT_KEY
from fencing.controller import Settings
from fencing.handover import ANNOTATION

from .fencing_rig import Rig, database, lease_leader, skewed_leader_and_standby
from .waiting import wait_for

POD = "/api/v1/namespaces/default/pods/db-0"


def count(rig: Rig, kind: str, outcome: str) -> float:
    return rig.ctrl.metrics.actions.labels(kind, outcome)._value.get()


def in_doubt(rig: Rig) -> float:
    return rig.ctrl.metrics.in_doubt.collect()[0].samples[0].value


def histogram_count(rig: Rig) -> float:
    (sample,) = [s for m in rig.ctrl.metrics.fault_to_deletion.collect() for s in m.samples
                 if s.name.endswith("_count")]
    return sample.value


# --- finding 2: a node that healed during the pass is not fenced -------------------------------------
def test_a_node_whose_power_and_kubelet_come_back_while_the_pod_is_read_is_left_alone(rig):
    """n1 loses power; its grace period runs out; while fencing reads db-0 live, n1's power and
    kubelet come back (DRBD reconnects, the satellite is ONLINE). Before, the node was tainted, the
    pod deleted with grace 0 on a live kubelet and its VolumeAttachment removed. Now the storage is
    re-read right before each write: nothing is written."""
    database(rig)
    rig.run(10)
    rig.power_off("n1")
    get_pod = rig.ctrl.actions.get_pod
    healed = []

    def power_back_meanwhile(namespace: str, name: str):
        if not healed:
            healed.append(rig.clock.now)
            rig.recover("n1")
        return get_pod(namespace, name)

    rig.ctrl.actions.get_pod = power_back_meanwhile
    rig.run(60)
    assert healed, "the grace period ran out and the pod was read"
    assert rig.pod_deletes() == [] and rig.attachment_deletes() == []
    assert rig.writes("PATCH", "/nodes/") == [], "no taint on a node whose storage is back"
    (decision,) = [d for r in rig.reports for d in r.decisions if r.at == healed[0]]
    assert decision.reason == "StorageRecovered", decision


# --- finding 4: writes whose answers went missing --------------------------------------------------
@pytest.mark.parametrize("status", [500, 429])
def test_an_eviction_answering_500_every_time_becomes_a_grace_0_delete_after_the_eviction_timeout(rig, status):
    """n1 is cut from its peers (its kubelet is fine: the Eviction API), and a broken eviction
    webhook makes every eviction answer 500 (or a PodDisruptionBudget 429). Before, a 500 was
    retried for ever and the grace-0 delete after a 429's bound told "evict"; now either becomes a
    grace-0 delete after --eviction-timeout, and the Event says it overrode the budget."""
    database(rig)
    rig.run(10)
    rig.ks.inject(fail=10_000, status=status, path_prefix=f"{POD}/eviction", method="POST")
    rig.partition("n1")
    rig.run(30 + 5)
    assert len(rig.writes("POST", "/eviction")) >= 1 and rig.writes("DELETE", "/pods/") == []
    rig.run(60)
    assert rig.ks.get("Pod", "db-0") is None
    assert len(rig.writes("DELETE", "/pods/")) == 1
    (event,) = rig.events("FencedPod", "db-0")
    assert "--eviction-timeout" in event["message"] and str(status) in event["message"], event["message"]
    assert "overriding any PodDisruptionBudget" in event["message"]


@pytest.mark.parametrize("how", ["pod_delete", "pod_evict"])
def test_a_removal_carried_out_but_answered_late_is_counted_once_and_never_sent_twice(rig, how):
    """The API server takes db-0's delete (n1 lost power: grace 0) or eviction (n1 cut from its
    peers) and answers only after the client gave up. Before, the write was reported failed
    (Warning FencingActionFailed), missing from the budget and the histogram, and the DELETE was
    sent again. Now it is in doubt until its effect shows, then counted once."""
    database(rig)
    rig.ctrl.actions.timeout = 1.0  # the client gives up after 1 s (real time) without an answer
    rig.run(10)
    method, path = ("DELETE", POD) if how == "pod_delete" else ("POST", f"{POD}/eviction")
    rig.ks.hang(path_prefix=path, method=method, count=1)
    rig.power_off("n1") if how == "pod_delete" else rig.partition("n1")
    rig.run(35)
    assert rig.ks.hung_requests() == 1, "the removal was sent and is held by the API server"
    assert rig.ks.get("Pod", "db-0") is not None
    assert in_doubt(rig) == 1
    rig.ks.release_hangs()  # the API server carries it out; the answer goes to a client that left
    wait_for(lambda: rig.ks.get("Pod", "db-0") is None, 5, "the held write carried out")
    rig.run(30)
    sent = rig.writes(method, path)
    assert len(sent) == 1, sent
    assert rig.writes("DELETE" if how == "pod_evict" else "POST", "/pods/") == []
    assert count(rig, how, "done") == 1 and count(rig, how, "error") == 0
    assert in_doubt(rig) == 0
    assert histogram_count(rig) == 1
    assert len(rig.ctrl.budget._history["default/db-0"]) == 1
    assert rig.events("FencingActionFailed") == []
    assert len(rig.events("FencedPod" if how == "pod_delete" else "EvictedPod", "db-0")) == 1


# --- finding 5: every hold visible --------------------------------------------------------------
def test_a_kept_attachment_names_the_pod_that_still_uses_it(rig):
    """db-0 (labelled) and backup-0 (not labelled) on n1 share the claim. n1 loses power; db-0 is
    removed and its StatefulSet recreates it elsewhere, where it waits on Multi-Attach. Before, the
    kept VolumeAttachment was an info log; now a Warning on the waiting pod names backup-0."""
    claim = database(rig)
    rig.pod("backup-0", "n1", [claim], labelled=False, attach=False)
    rig.run(10)
    rig.power_off("n1")
    rig.run(35)
    assert rig.evicted() == ["db-0"]
    replacement = rig.recreate("db-0", None, [claim])
    rig.run(15)
    assert rig.attachment_deletes() == []
    (event,) = [e for e in rig.events("VolumeStillInUse", "db-0")
                if e["involvedObject"]["uid"] == replacement["metadata"]["uid"]]
    assert event["type"] == "Warning" and "default/backup-0" in event["message"], event


def test_a_pod_held_by_a_finalizer_is_one_event_not_one_delete_per_pass(rig):
    database(rig)
    pod = rig.ks.get("Pod", "db-0")
    pod["metadata"]["finalizers"] = ["example.com/backup-in-progress"]
    rig.ks.update(pod)
    rig.run(10)
    rig.power_off("n1")
    rig.run(100)
    assert len(rig.writes("DELETE", "/pods/")) == 1, "the grace-0 delete is sent once"
    (event,) = rig.events("HeldByFinalizer", "db-0")
    assert event["type"] == "Warning" and "example.com/backup-in-progress" in event["message"]
    assert event.get("count", 1) == 1


def test_a_node_name_linstor_does_not_know_is_a_warning_and_a_metric(rig):
    """The Kubernetes Node is 'worker-1'; LINSTOR registered that host as 'n1'. Before, every pass
    said 'healthy' about db-0 while n1's storage was lost."""
    from devkit import kube_objects as k

    rig.ks.add(k.node("worker-1"))
    claim = rig.volume("pvc-db-0", ["n1", "n2"], in_use="n1")
    rig.pod("db-0", "worker-1", [claim], attach=False)
    rig.run(10)
    rig.power_off("n1")
    rig.run(40)
    assert rig.pod_deletes() == []
    (event,) = rig.events("NodeUnknownToLinstor", "db-0")
    assert event["type"] == "Warning" and "worker-1" in event["message"]
    assert rig.ctrl.metrics.unknown_nodes.value() == 1


@pytest.mark.parametrize("status", [403, 503])
def test_a_taint_refused_or_failed_says_so_and_is_retried(rig, status):
    rig.settings.taint = True  # --taint
    database(rig)
    rig.run(10)
    rig.ks.inject(fail=1, status=status, path_prefix="/api/v1/nodes/n1", method="PATCH")
    rig.power_off("n1")
    rig.run(35)
    assert rig.evicted() == ["db-0"]
    (event,) = rig.events("TaintFailed")
    assert event["type"] == "Warning" and str(status) in event["message"]
    assert event["involvedObject"]["kind"] == "Node" and event["involvedObject"]["name"] == "n1"
    rig.run(5)
    assert TAINT_KEY in [t["key"] for t in rig.ks.get("Node", "n1")["spec"].get("taints") or []]


# --- finding 6: the grace survives a leader change ----------------------------------------------------
def restarting_leaders(rig: Rig, every: float, until: float) -> list:
    """A fencing Deployment whose leader crashes every ``every`` seconds; a new instance (a new
    identity) takes the Lease once it expired. Drives electors and controllers on the fake clock."""
    settings = Settings()
    instances = []
    current = None
    started = rig.clock.now
    while rig.clock.now - started < until and rig.ks.get("Pod", "db-0") is not None:
        if current is None or rig.clock.now - current[2] >= every:
            elector = lease_leader(rig, f"fencing-{len(instances)}")
            current = (elector, rig.controller(leader=elector, settings=settings), rig.clock.now)
            instances.append(current)
        elector, ctrl, _ = current
        rig.clock.now += 1
        elector.step()
        if int(rig.clock.now) % 5 == 0:
            rig.reports.append(rig.loop.run_until_complete(ctrl.run_once()))
    return instances


def test_a_controller_crashing_every_25_seconds_still_fails_the_pod_over(rig):
    """Each new leader continues the grace its predecessor timed (kept on the Lease) because its own
    first read sees the same fault; before, every term restarted the timer and the pod never moved."""
    database(rig)
    rig.clock.now = round(rig.clock.now)
    rig.power_off("n1")
    instances = restarting_leaders(rig, every=25, until=200)
    assert rig.ks.get("Pod", "db-0") is None, f"{len(instances)} leaders, none failed the pod over"
    assert rig.clock.now - rig.fault_at <= 30 + 15 + 2 * 25, rig.clock.now - rig.fault_at
    lease = rig.ks.get("Lease", "linstor-scheduler-fencing", "kube-system")
    assert ANNOTATION in lease["metadata"].get("annotations", {})


def leading_through_the_fault(rig: Rig, identity: str, passes: int):
    """A leader (Lease on the fake clock) that sees n1 lose power and times it for ``passes`` passes."""
    elector = lease_leader(rig, identity)
    ctrl = rig.controller(leader=elector)
    elector.step()
    rig.power_off("n1")
    for _ in range(passes):
        rig.clock.now += 5
        elector.step()
        rig.loop.run_until_complete(ctrl.run_once())
    return elector


def leading_until_the_pod_moves(rig: Rig, identity: str, within: float):
    """A new instance that campaigns, leads, and makes a pass every 5 s until db-0 is gone."""
    elector = lease_leader(rig, identity)
    ctrl = rig.controller(leader=elector)
    started = rig.clock.now
    while rig.ks.get("Pod", "db-0") is not None and rig.clock.now - started < within:
        elector.step()
        rig.reports.append(rig.loop.run_until_complete(ctrl.run_once()))
        rig.clock.now += 5
    return elector


def test_a_leader_handing_over_on_shutdown_passes_its_timing_and_the_event_says_so(rig):
    """The leader is replaced in a rolling update (it releases the Lease on SIGTERM) 10 s into n1's
    fault; the new one sees the same fault, continues the timing and says so on the pod; the pod
    moves 30 s after the fault was first seen, not 30 s after the handover."""
    database(rig)
    leading_through_the_fault(rig, "fencing-a", passes=2).release()
    rig.clock.now += 5
    leading_until_the_pod_moves(rig, "fencing-b", within=60)
    assert rig.ks.get("Pod", "db-0") is None
    assert rig.clock.now - rig.fault_at <= 30 + 10, "the grace ran from the first sighting"
    said = [e["message"] for e in rig.events("StorageFaultObserved", "db-0")]
    assert any("by the previous Lease holder" in m for m in said), said


def test_a_rolling_update_from_a_node_whose_clock_is_behind_does_not_shorten_the_grace(rig):
    """The leader's node has lost NTP: its clock runs 18 s behind. It times n1's fault for three
    passes and hands the Lease over on SIGTERM; the standby takes it a second later. Its own clock
    says the record is 19 s old, so the gap would be bridged by a whole poll (5 s) where 1 s passed:
    the pod would move 26 s after the fault was first seen. The standby saw the release's renewTime
    19 s behind its own clock and reads the record on the old leader's clock."""
    a, ctrl_a, b, ctrl_b = skewed_leader_and_standby(rig, skew=18.0)
    rig.power_off("n1")
    first_seen = rig.clock.now + 5
    for _ in range(3):
        rig.clock.now += 5
        a.step()
        rig.loop.run_until_complete(ctrl_a.run_once())
        b.step()
    a.step()  # the renewal that writes the last record
    a.release()
    while rig.ks.get("Pod", "db-0") is not None and rig.clock.now - first_seen < 60:
        rig.clock.now += 1
        if b.step() and int(rig.clock.now - first_seen) % 5 == 1:
            rig.reports.append(rig.loop.run_until_complete(ctrl_b.run_once()))
    assert rig.ks.get("Pod", "db-0") is None, "B fails db-0 over"
    assert rig.clock.now - first_seen >= 30, f"db-0 removed {rig.clock.now - first_seen:.0f}s after the first sighting"


def test_a_new_leader_that_does_not_see_the_fault_starts_nothing(rig):
    """The predecessor timed n1's fault for 25 s; n1 comes back before the new leader's first read,
    and fails again later: the new fault gets a whole grace period of its own."""
    database(rig)
    leading_through_the_fault(rig, "fencing-a", passes=5)
    second = lease_leader(rig, "fencing-b")
    successor = rig.controller(leader=second)
    assert not second.step(), "a standby while the first instance renews"
    rig.recover("n1")
    rig.clock.now += 16  # the first instance crashed: its Lease expires
    assert second.step()
    rig.loop.run_until_complete(successor.run_once())  # sees no fault: the record is not taken
    rig.power_off("n1")
    again = rig.clock.now
    while rig.ks.get("Pod", "db-0") is not None and rig.clock.now - again < 60:
        rig.clock.now += 5
        second.step()
        rig.reports.append(rig.loop.run_until_complete(successor.run_once()))
    assert rig.ks.get("Pod", "db-0") is None
    assert rig.clock.now - again >= 30, "the new fault had a whole grace period"


def test_the_handed_over_record_is_continued_only_where_it_agrees_and_is_recent():
    """handover.py, pure: the predecessor saw r1 and r2 lost on n1 since 100 (wall clock) and r3 on
    n2, and last observed them at 120; the new leader's clock reads 10 where the wall clock reads 130.
    It continues what the predecessor observed (120 - 102 = 18 s) and bridges the 10 s gap by one
    poll (5 s) at most: the gap nobody observed is not fault time."""
    from fencing.handover import inherit, record

    text = record({("r1", "n1"): 40.0, ("r2", "n1"): 42.0, ("r3", "n2"): 50.0}, now=60.0, wall_now=120.0)
    same = inherit(text, {("r1", "n1"), ("r2", "n1")}, now=10.0, wall_now=130.0, max_gap=35, bridge=5)
    assert same == {("r1", "n1"): 10.0 - 23.0, ("r2", "n1"): 10.0 - 23.0}, \
        "timed from the latest first sighting on the node (wall 102) to the last observation (120), plus 5 s"
    assert inherit(text, {("r1", "n1"), ("r2", "n1")}, 10.0, 122.0, 35, bridge=5) == \
        {("r1", "n1"): 10.0 - 20.0, ("r2", "n1"): 10.0 - 20.0}, "a gap shorter than the bridge counts whole"
    assert inherit(text, {("r1", "n1")}, 10.0, 130.0, 35) == {}, "another set of faults is another fault"
    assert inherit(text, {("r4", "n3")}, 10.0, 130.0, 35) == {}, "a fault the record does not name starts nothing"
    assert inherit(text, {("r3", "n2")}, 10.0, 160.0, 35) == {}, "a record older than the bound is blindness"
    assert inherit(text, {("r3", "n2")}, 10.0, 100.0, 35) == {}, "a record from the future is not trusted"
    assert inherit("{not json", {("r3", "n2")}, 10.0, 130.0, 35) == {}
    assert inherit(None, {("r3", "n2")}, 10.0, 130.0, 35) == {}


def test_a_record_from_a_clock_behind_ours_is_read_on_that_clock():
    """handover.py, pure: the predecessor's clock is 18 s behind; its record says r3 on n2 was first
    seen at 100 and last observed at 101 (its clock: 118 and 119 on ours). We saw its last renewal 19 s
    after the renewTime it wrote (18 s of skew, 1 s of our own lateness) and read at 121 (ours)."""
    from fencing.handover import inherit, record

    text = record({("r3", "n2"): 50.0}, now=51.0, wall_now=101.0)
    trusting = inherit(text, {("r3", "n2")}, now=10.0, wall_now=121.0, max_gap=35, bridge=5)
    assert trusting == {("r3", "n2"): 10.0 - 6.0}, "the 20 s 'gap' (2 s real) bridged by 5 s: 3 s early"
    read = inherit(text, {("r3", "n2")}, 10.0, 121.0, 35, bridge=5, skew=19.0, max_skew=5.0)
    assert read == {("r3", "n2"): 10.0 - 2.0}, "on its clock the gap is 1 s (our lateness taken off): never early"
    assert inherit(text, {("r3", "n2")}, 10.0, 121.0, 35, bridge=5, skew=4.0, max_skew=5.0) == trusting, \
        "within a renewal interval the clocks are taken to agree"
    assert inherit(text, {("r3", "n2")}, 10.0, 121.0, 35, bridge=5, skew=None, max_skew=5.0) == {}, \
        "a renewal without renewTime: the clocks cannot be checked"
    far = record({("r3", "n2"): 50.0}, now=51.0, wall_now=61.0)  # 60 s behind: past the bound on our clock
    assert inherit(far, {("r3", "n2")}, 10.0, 121.0, 35, bridge=5) == {}
    assert inherit(far, {("r3", "n2")}, 10.0, 121.0, 35, bridge=5, skew=59.0, max_skew=5.0) == {("r3", "n2"): 8.0}


def test_linstor_silent_at_the_storage_re_check_costs_one_deadline_per_pass_not_one_per_write():
    """n1, with three labelled pods, loses power; when their grace runs out LINSTOR stops answering
    the small re-reads (an overloaded controller). The first write's re-read waits its deadline;
    every later write of the pass is held at once (before, each would have waited its own)."""
    with Rig(settings=Settings(api_timeout=1.0)) as rig:
        for name in ("db-0", "db-1", "db-2"):
            database(rig, name=name)
        rig.run(10)
        rig.power_off("n1")
        get_pod, calls = rig.ctrl.actions.get_pod, []
        storage = rig.ctrl.executor.storage

        def linstor_stalls_meanwhile(namespace: str, name: str):
            rig.emu.inject(latency=5.0, path_prefix="/v1/view/resources")
            return get_pod(namespace, name)

        async def counted(node, resources):
            calls.append(resources)
            return await storage(node, resources)

        rig.ctrl.actions.get_pod = linstor_stalls_meanwhile
        rig.ctrl.executor.storage = counted
        rig.run(35)
        assert len(calls) == 1, calls
        assert rig.pod_deletes() == [] and rig.writes("PATCH", "/nodes/") == []
        held = [a for r in rig.reports for a in r.actions if a[2] == "held"]
        assert {a[1] for a in held} >= {"default/db-0", "default/db-1", "default/db-2"}, held
        rig.emu.reset_faults()


# --- a write in doubt is settled even by a leader that stepped down -------------------------------
def test_a_delete_in_doubt_when_the_lease_is_lost_is_still_accounted_once():
    """n1 loses power; A's grace-0 delete of db-0 reaches an API server that stalls (an etcd leader
    election): it carries the delete out, but the answer never reaches A, and A's Lease renewal fails
    in the same stall, so A steps down. B leads, finds db-0 gone and has nothing to do. Before, the
    fail-over was counted nowhere: A, a standby, never settled its write (writes_in_doubt stayed 1 on it
    for good; no actions{pod_delete,done}, no FencedPod Event, no fault-to-deletion sample), and B did
    not make it. A standby may still read what its own writes did."""
    from fencing.controller import Settings

    with Rig(settings=Settings()) as rig:
        database(rig)
        a = rig.ctrl
        a.actions.timeout = 1.0
        rig.run(10)
        rig.ks.hang(path_prefix=POD, method="DELETE", count=1)
        rig.power_off("n1")
        rig.run(35)
        assert rig.ks.hung_requests() == 1, "the delete was sent and is held by the API server"
        assert a.metrics.in_doubt.collect()[0].samples[0].value == 1
        a.leader.is_leader, a.leader.leader_since = False, None  # its renewal failed in the same stall
        rig.ks.release_hangs()
        wait_for(lambda: rig.ks.get("Pod", "db-0") is None, 5, "the held delete carried out")
        b = rig.controller()
        for _ in range(4):
            rig.step(ctrl=b)
            rig.loop.run_until_complete(a.run_once())
        done = sum(c.metrics.actions.labels("pod_delete", "done")._value.get() for c in (a, b))
        in_doubt = a.metrics.in_doubt.collect()[0].samples[0].value
        assert (done, in_doubt) == (1, 0), f"pod_delete done {done} times, {in_doubt} write(s) in doubt on A"
        assert len(rig.events("FencedPod", "db-0")) == 1


class LapsingLeader:
    """A Lease holder whose renewals stop at ``until`` (the API server went away)."""

    def __init__(self, rig: Rig, until: float) -> None:
        self.rig, self.until = rig, until
        self.leader_since: float | None = rig.clock.now

    @property
    def is_leader(self) -> bool:
        return self.rig.clock.now < self.until


def slow_live_reads(rig: Rig, seconds: float) -> None:
    """The API server answers the live read of the pod ``seconds`` late (fake clock)."""
    get_pod = rig.ctrl.actions.get_pod

    def slow(namespace: str, name: str):
        rig.clock.now += seconds
        return get_pod(namespace, name)

    rig.ctrl.actions.get_pod = slow


@pytest.mark.parametrize("what", ["lease", "evidence"])
def test_a_write_is_not_sent_when_the_lease_or_the_evidence_lapsed_meanwhile(what):
    with Rig() as rig:
        leader = LapsingLeader(rig, until=float("inf"))
        if what == "lease":
            rig.ctrl = rig.controller(leader=leader)
        rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
        rig.run(5)
        rig.power_off("n1")
        rig.run(30)
        leader.until = rig.clock.now + rig.settings.poll_interval + 2  # held when the next pass starts
        slow_live_reads(rig, 3 if what == "lease" else 25)  # the lease lapses / the reads get older than 20 s
        report = rig.step()
        assert rig.pod_deletes() == [] and rig.writes("PATCH", "/nodes/") == [], "no write, not even the taint"
        assert any(outcome == "held" for _, _, outcome in report.actions)
        if what == "evidence":
            (event,) = rig.events("StaleData", "db-0")
            assert "evidence is" in event["message"]
