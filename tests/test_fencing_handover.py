"""Red team of fencing v3 (issue 20) and the capacity holds (issue 19): real-world events over the
project's doubles (LINSTOR emulator, Kubernetes API stand-in, fake clock: tests/fencing_rig.py).
Each scenario failed on main when it was written; those not fixed yet are xfail(strict) with why.
"""

from __future__ import annotations

from .fencing_rig import Rig, lease_leader
from .waiting import wait_for


def database(rig: Rig, node: str = "n1", peers: tuple[str, ...] = ("n2",), name: str = "db-0") -> str:
    claim = rig.volume(f"pvc-{name}", [node, *peers], in_use=node)
    rig.pod(name, node, [claim])
    return claim


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
    database(rig)
    rig.clock.now = round(rig.clock.now)
    skew = 18.0
    elector_a = lease_leader(rig, "fencing-a")
    elector_a.wall_clock = lambda: rig.clock.now - skew
    ctrl_a = rig.controller(leader=elector_a)
    ctrl_a.wall_clock = lambda: rig.clock.now - skew
    assert elector_a.step()
    elector_b = lease_leader(rig, "fencing-b")
    ctrl_b = rig.controller(leader=elector_b)
    assert not elector_b.step()
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


def test_a_pod_whose_budget_is_spent_is_not_failed_over_again_by_the_next_leader():
    """--failover-budget 1 per hour. n1 loses power and db-0 fails over (grace 0); the StatefulSet
    recreates it on n2, which then loses power too: the budget holds it (BudgetSpent), which is what
    the budget is for (a pod that keeps landing on failing nodes, a flapping rack). The fencing
    Deployment is rolled meanwhile (the old leader hands its Lease over on SIGTERM): the new leader
    must hold db-0 as well. On main it deletes it at once."""
    from fencing.controller import Settings

    with Rig(settings=Settings(failover_budget=1)) as rig:
        claim = database(rig, peers=("n2", "n3"))
        rig.clock.now = round(rig.clock.now)
        elector_a = lease_leader(rig, "fencing-a")
        a = rig.controller(leader=elector_a)
        assert elector_a.step()
        rig.power_off("n1")
        while rig.ks.get("Pod", "db-0") is not None and rig.clock.now - rig.fault_at < 60:
            rig.clock.now += 5
            elector_a.step()
            rig.loop.run_until_complete(a.run_once())
        assert rig.ks.get("Pod", "db-0") is None, "the first fail-over"
        rig.recreate("db-0", "n2", [claim])
        rig.recover("n1")  # n1 is repaired and resyncs
        rig.emu.set_in_use("pvc-db-0", "n1", False)
        rig.emu.set_in_use("pvc-db-0", "n2", True)  # the new db-0 runs on n2 (Primary there)
        rig.clock.now += 60
        rig.power_off("n2")
        for _ in range(10):
            rig.clock.now += 5
            elector_a.step()
            rig.reports.append(rig.loop.run_until_complete(a.run_once()))
        assert rig.ks.get("Pod", "db-0") is not None
        assert any(d.reason == "BudgetSpent" for d in rig.reports[-1].decisions), rig.reports[-1].decisions
        elector_a.release()  # the rolling update: A hands over on SIGTERM
        elector_b = lease_leader(rig, "fencing-b")
        b = rig.controller(leader=elector_b)
        for _ in range(10):
            rig.clock.now += 5
            elector_b.step()
            rig.reports.append(rig.loop.run_until_complete(b.run_once()))
        assert elector_b.is_leader
        assert rig.ks.get("Pod", "db-0") is not None, "the new leader failed db-0 over past its budget"


# --- fencing must act ---------------------------------------------------------------------------------
def test_a_pass_that_sends_nothing_spends_no_fail_over_tokens(rig):
    """n1 runs ten labelled databases and loses power. When their grace runs out, the API server
    answers the ten live pod reads 503 (a kube-apiserver instance shutting down behind the load
    balancer): nothing is sent, each pod is retried next pass. Before, the rate limit (10 a minute)
    had taken a token for each decision all the same, so five seconds later, with the API server
    fine, all ten were held RateLimited and the last one failed over a minute later: a token
    is a fail-over, and none was made."""
    for i in range(10):
        database(rig, name=f"db-{i}")
    rig.run(10)
    rig.ks.inject(fail=10, status=503, path_prefix="/api/v1/namespaces/default/pods/db-", method="GET")
    rig.power_off("n1")
    rig.run(35)
    assert rig.pod_deletes() == []
    refused = [d.reason for d in rig.reports[-1].decisions]
    assert refused == ["StaleData"] * 10, refused
    rig.run(5)
    held = [d.pod.name for d in rig.reports[-1].decisions if d.reason == "RateLimited"]
    assert len(rig.pod_deletes()) == 10, f"{len(rig.pod_deletes())} deleted, held by the rate limit: {held}"


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

# --- capacity holds (issue 19) -----------------------------------------------------------------------
GiB = 1024**3


def test_a_burst_past_the_places_bound_keeps_kube_schedulers_choices_and_drops_filter_holds_first():
    """5,000 nodes, a burst of 400 WaitForFirstConsumer pods with a 10 GiB claim each, every pod passing
    every node's filter (a plain pool). kube-scheduler's scheduling cycle makes no API call and runs a
    pod every few ms; its binding cycles (VolumeBinding's PreBind writes selected-node, then the pod's
    Binding) go through its client's --kube-api-qps (50 by default): the choices come back through the
    claim informer at a quarter of the pace, so filter holds pile up. 200 of them (5,000 places each)
    fill the default bound of 1,000,000 places; the next pod's hold must push some out. Before, the
    oldest went first whatever they were: every selected hold (one place each: the claims whose node is
    *known* and whose volume is being provisioned there) older than the oldest filter hold went first,
    and the next pods saw those pools as free again. A filter hold is the cheapest to lose (the claim
    lands on one of its 5,000 nodes at most); a selection is the one hold that is certain."""
    from scheduler_extender.reservations import Ledger

    nodes = [f"w{i}" for i in range(5000)]
    ledger = Ledger(ttl=600)
    selected = []
    for i in range(400):
        ledger.filtered(f"ns/c{i}", nodes, ["thin"], 10 * GiB, now=i)
        if i % 4 == 3:  # one binding cycle done for every four pods scheduled
            chosen = len(selected)
            ledger.selected(f"ns/c{chosen}", nodes[chosen], "thin", 10 * GiB, now=i)
            selected.append(chosen)
    assert len(selected) == 100
    lost = [i for i in selected if (hold := ledger.get(f"ns/c{i}")) is None or hold.source != "selected"]
    assert lost == [], f"{len(lost)} claims kube-scheduler placed lost their hold (first: ns/c{lost[0]})"


def test_a_pod_with_two_claims_is_not_promised_a_pool_that_holds_only_one():
    """A database pod asks for data and WAL volumes, 60 GiB each, in a strict (no remote access)
    WaitForFirstConsumer class on pool thin; w1's pool has 100 GiB free. Both volumes would be
    created on w1 (VolumeBinding selects one node for every claim of the pod): the filter must not
    pass w1, and the holds its answer takes (120 GiB on a 100 GiB pool) promise more than the pool
    has. On main the filter passes w1 and both claims are held there."""
    from devkit import kube_objects as k
    from linstor_scheduler.volumes import Claim, ClaimRef, StorageClassInfo
    from scheduler_extender.reservations import Ledger, hold_filtered
    from scheduler_extender.scoring import Weights, judge_node, prepare
    from scheduler_extender.state import ClusterState, KubeView, NodeInfo, PoolInfo

    pools = {"thin": PoolInfo("thin", "LVM_THIN", 100 * 1024**2)}
    nodes = {"w1": NodeInfo("w1", True, True, "ONLINE", False, pools)}
    classes = {"local": StorageClassInfo.from_object(k.storage_class("local", pool="thin", remote=False))}
    state = ClusterState.build(generation=1, nodes=nodes, pools=(), resources={},
                               kube=KubeView(storage_classes=classes), linstor_synced_at=0, kube_synced_at=0)
    sc = state.get_sc("local")
    claims = [Claim(ClaimRef("db", "data-0", "vol0"), True, None, sc, 60 * GiB),
              Claim(ClaimRef("db", "wal-0", "vol1"), True, None, sc, 60 * GiB)]
    verdict = judge_node("w1", prepare(claims, [None, None], state), state, Weights())
    ledger = Ledger()
    if verdict.fits:
        hold_filtered(ledger, claims, state, ["w1"], now=0)
    assert ledger.held("w1", "thin") <= 100 * GiB, "the pool is promised more than it has"
    assert not verdict.fits


# --- every write accounted for ------------------------------------------------------------------------
POD = "/api/v1/namespaces/default/pods/db-0"


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


def test_a_selection_whose_provisioning_is_queued_stays_held_past_the_ttl():
    """A burst of 1,000 WaitForFirstConsumer pods: kube-scheduler chose w2 for data-0 (selected-node on the
    claim), and the CSI external-provisioner, 100 workers deep behind LINSTOR creating volumes one
    after another, gets to it 3 minutes later. Until LINSTOR shows the volume, the 60 GiB stay
    promised on w2's pool; before, the hold expired after 120 s and the next pods saw w2's space as
    free again."""
    from devkit import kube_objects as k
    from linstor_scheduler.claims import SELECTED_NODE
    from scheduler_extender.reservations import Ledger, reconcile
    from scheduler_extender.state import ClusterState, KubeView, NodeInfo, PoolInfo

    claim = k.pvc("data-0", storage_class="local", size="60Gi")
    claim["metadata"]["annotations"] = {SELECTED_NODE: "w2"}
    pools = {"thin": PoolInfo("thin", "LVM_THIN", 100 * 1024**2)}
    state = ClusterState.build(
        generation=1, nodes={n: NodeInfo(n, True, True, "ONLINE", False, pools) for n in ("w1", "w2")}, pools=(),
        resources={}, kube=KubeView(pvcs={"default/data-0": claim}), linstor_synced_at=0, kube_synced_at=0)
    ledger = Ledger(ttl=120)
    ledger.selected("default/data-0", "w2", "thin", 60 * GiB, now=0)
    for now in range(5, 185, 5):  # a published state every 5 s; the volume is not in LINSTOR yet
        reconcile(ledger, state, now)
    assert ledger.held("w2", "thin") == 60 * GiB


def a_70_gib_thin_pool_on_w2(emu, _ks) -> None:
    """w2's thindata: an empty thin pool of 70 GiB (its data space all free; no volume in it yet), with
    the props (the over-subscription ratio) the cluster gave it."""
    props = next(p for p in emu.snapshot()["storage_pools"]
                 if (p["node_name"], p["storage_pool_name"]) == ("w2", "thindata"))["props"]
    emu.add_storage_pool("w2", "thindata", "LVM_THIN", free_kib=70 * 1024**2, total_kib=70 * 1024**2, props=props)


def explained(http, pod: dict) -> dict[str, str]:
    """node -> verdict ("pass"/"fail") from /explain, which judges as /filter does and holds nothing."""
    r = http.post("/explain", json={"Pod": pod, "NodeNames": ["w1", "w2", "w3"]})
    assert r.status_code == 200, r.text
    return {row["node"]: row["verdict"] for row in r.json()["nodes"]}


def provision(emu, ks, claim: str, node: str, size: str = "60Gi") -> None:
    """The CSI driver creates the claim's volume on ``node`` (a thin volume: the pool's free data space
    stays as it was) and binds the claim."""
    from devkit import kube_objects as k

    emu.add_resource(f"pvc-{claim}", node, size_kib=int(size.removesuffix("Gi")) * 1024**2)
    ks.add(k.pv(f"pvc-{claim}", claim=("default", claim), storage_class="local", size=size))
    ks.patch("PersistentVolumeClaim", claim, {"spec": {"volumeName": f"pvc-{claim}"}, "status": {"phase": "Bound"}},
             namespace="default")


def test_a_thin_volume_just_provisioned_still_counts_against_its_pool():
    """Pool thindata on w2 (LVM_THIN): 70 GiB, empty, its over-subscription ratios 1 (the pools'
    ``MaxOversubscriptionRatio`` in tests/test_reservations.py ``populated``: no over-commit).
    kube-scheduler places p0 (a 60 GiB claim) on w2; the CSI driver creates the thin volume there and
    binds the claim. LINSTOR now lists the volume, and w2's free space is still 70 GiB: a fresh thin LV
    holds no data. p1 (60 GiB more) must not be promised w2: LINSTOR itself would refuse it there
    (min(70 x 1, 70 x 1 - 60) = 10 GiB, linstor.capacity). Before, the extender judged pools by the
    REST free_capacity alone: the hold was released and w2 passed again."""
    from .test_reservations import cluster, holds, passing, pod, select

    with cluster(poll_interval=0.5, setup=a_70_gib_thin_pool_on_w2) as (emu, ks, http, _):
        assert "w2" in passing(http, pod(0))
        select(ks, "data-0", "w2")
        wait_for(lambda: holds(http).get("default/data-0") == (("w2",), "selected"), what="the hold on w2")
        assert "w2" not in passing(http, pod(1)), "60 of w2's 70 GiB are promised"
        provision(emu, ks, "data-0", "w2")
        wait_for(lambda: "default/data-0" not in holds(http), what="LINSTOR's poll shows the volume")
        assert "w2" not in passing(http, pod(1)), "the volume LINSTOR lists takes 60 of w2's 70 GiB"


def test_with_linstors_default_ratio_a_thin_pool_admits_twenty_times_its_space_less_its_volumes():
    """The same 70 GiB thin pool on w2 without ratio properties: LINSTOR's default for thin pools,
    MaxOversubscriptionRatio 20 (StorPool.java getOversubscriptionRatio; LinStor.java
    OVERSUBSCRIPTION_RATIO_DEFAULT), admits min(70 x 20, 70 x 20 - reserved). p1 passes w2 after p0's
    volume is there, as LINSTOR would place it there; the volume still counts: a claim of 1,390 GiB
    fits w2 before (1,400 GiB) and no longer after (1,340 GiB). w3's 30 GiB free admit 600 GiB."""
    from devkit import kube_objects as k

    from .test_reservations import cluster, holds, passing, pod, select

    def setup(emu, ks):
        a_70_gib_thin_pool_on_w2(emu, ks)
        ks.add(k.pvc("huge", storage_class="local", size="1390Gi"))

    huge = k.pod("p-huge", claims=["huge"])
    with cluster(poll_interval=0.5, ratio=None, setup=setup) as (emu, ks, http, _):
        assert explained(http, huge)["w2"] == "pass", "1,400 GiB on w2 by LINSTOR's rule"
        assert passing(http, pod(0)) == ["w1", "w2", "w3"], "30 GiB free x 20 is room for 60 GiB"
        select(ks, "data-0", "w2")
        wait_for(lambda: holds(http).get("default/data-0") == (("w2",), "selected"), what="the hold on w2")
        provision(emu, ks, "data-0", "w2")
        wait_for(lambda: "default/data-0" not in holds(http), what="LINSTOR's poll shows the volume")
        assert explained(http, huge)["w2"] == "fail", "w2 admits 1,340 GiB now: its volume counts"
        assert "w2" in passing(http, pod(1)), "LINSTOR would place p1 on w2: 1,340 GiB admitted"


def test_a_class_without_a_pool_holds_where_the_filter_found_room():
    """w1 has two pools, fast (100 GiB free) and bulk (90 GiB free), and the StorageClass names no
    storagePool (LINSTOR picks the pool). Three pods with a 60 GiB claim each arrive back to back;
    room for two. The filter judges each claim against the roomiest pool once other claims' holds
    are counted, but the hold was taken on the roomiest pool of the poll (pool_for ignored the
    holds): every hold piled on fast, bulk stayed 'free', and every later pod passed w1 by bulk.
    The third pod must not pass: 60 + 60 + 60 GiB cannot fit in 100 + 90 GiB of two pools."""
    from devkit import kube_objects as k
    from linstor_scheduler.volumes import Claim, ClaimRef, StorageClassInfo
    from scheduler_extender.reservations import Ledger, hold_filtered, promised_state
    from scheduler_extender.scoring import Weights, judge_node, prepare
    from scheduler_extender.state import ClusterState, KubeView, NodeInfo, PoolInfo

    pools = {"fast": PoolInfo("fast", "LVM_THIN", 100 * 1024**2), "bulk": PoolInfo("bulk", "LVM_THIN", 90 * 1024**2)}
    classes = {"any": StorageClassInfo.from_object(k.storage_class("any", pool=None, remote=False))}
    state = ClusterState.build(generation=1, nodes={"w1": NodeInfo("w1", True, True, "ONLINE", False, pools)},
                               pools=(), resources={}, kube=KubeView(storage_classes=classes),
                               linstor_synced_at=0, kube_synced_at=0)
    ledger = Ledger()
    passed = []
    for i in range(3):
        claim = Claim(ClaimRef("db", f"data-{i}", "vol0"), True, None, state.get_sc("any"), 60 * GiB)
        judging = promised_state(state, ledger.held_excluding([claim.ref.key]))
        if judge_node("w1", prepare([claim], [None], judging), judging, Weights()).fits:
            passed.append(i)
            hold_filtered(ledger, [claim], state, ["w1"], now=i)
    held = {pool: ledger.held("w1", pool) // GiB for pool in pools}
    assert passed == [0, 1], f"pods {passed} passed w1; held {held} GiB"
