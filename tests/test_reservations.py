"""Capacity promised is counted: the ledger on its own (reservations.py), then the live extender over
real HTTP against the LINSTOR emulator and the Kubernetes API stand-in, as a burst of
WaitForFirstConsumer pods meets it: ranked -> held, selected-node -> moved, LINSTOR shows the volume
-> released, nobody binds -> expired."""

from __future__ import annotations

import contextlib

import httpx

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.claims import SELECTED_NODE
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.linstor import LinstorClient
from linstor_scheduler.volumes import Claim, ClaimRef, StorageClassInfo
from scheduler_extender.reservations import Ledger, heard_claim, promised_state
from scheduler_extender.scoring import Weights, judge_unbound
from scheduler_extender.state import EMPTY_STATE, ClusterState, ExtenderKubeView, NodeInfo, PoolInfo
from scheduler_extender.wiring import build_live_app

from .probing import scrape
from .waiting import wait_for

GiB = 1024**3
NAMES = ["w1", "w2", "w3"]


# --- the ledger -----------------------------------------------------------------------------------
def test_a_filtered_hold_covers_every_node_passed_and_the_selection_shrinks_it():
    ledger = Ledger(ttl=60)
    assert ledger.filtered("ns/a", ["w1", "w2"], ["thin", "thin"], 10 * GiB, now=0)
    assert (ledger.held("w1", "thin"), ledger.held("w2", "thin")) == (10 * GiB, 10 * GiB)
    assert not ledger.filtered("ns/a", ["w1", "w2"], ["thin", "thin"], 10 * GiB, now=1), "a retry changes nothing"
    version = ledger.version
    assert ledger.selected("ns/a", "w2", "thin", 10 * GiB, now=2)
    assert ledger.version > version
    assert (ledger.held("w1", "thin"), ledger.held("w2", "thin")) == (0, 10 * GiB)
    assert not ledger.filtered("ns/a", ["w3"], ["thin"], 10 * GiB, now=3), "kube-scheduler's choice outranks a filter"
    assert ledger.get("ns/a").nodes == ("w2",)
    assert ledger.totals() == {"filtered": (0, 0), "selected": (1, 10 * GiB)}


def test_the_version_a_pods_verdicts_are_keyed_by_moves_with_other_claims_only():
    """Its prioritize follows its filter, whose answer took the pod's own hold: its verdicts,
    which leave its own holds out, are still good; another claim's hold makes new ones."""
    ledger = Ledger()
    before = ledger.version_for(["ns/a"])
    ledger.filtered("ns/a", ["w1", "w2"], ["thin"], GiB, now=0)
    ledger.selected("ns/a", "w1", "thin", GiB, now=1)
    assert ledger.version_for(["ns/a"]) == before
    ledger.filtered("ns/b", ["w1"], ["thin"], GiB, now=2)
    after_b = ledger.version_for(["ns/a"])
    assert after_b > before
    ledger.release("ns/a")
    assert ledger.version_for(["ns/a"]) >= after_b, "never back to a version an older table was keyed by"


def test_a_pod_the_filter_lets_through_nowhere_holds_nothing():
    ledger = Ledger()
    ledger.filtered("ns/a", ["w1"], ["thin"], GiB, now=0)
    assert ledger.filtered("ns/a", [], [], GiB, now=1)
    assert len(ledger) == 0 and ledger.held("w1", "thin") == 0


def test_holds_add_up_and_a_pods_own_claims_are_left_out():
    ledger = Ledger()
    ledger.filtered("ns/a", ["w1", "w2"], ["thin", "thin"], 10 * GiB, now=0)
    ledger.selected("ns/b", "w1", "thin", 5 * GiB, now=0)
    assert ledger.held("w1", "thin") == 15 * GiB
    assert ledger.held_excluding(["ns/a"]) == {"thin": {"w1": 5 * GiB}}
    assert ledger.held_excluding(["ns/a", "ns/b"]) == {}
    assert ledger.held_excluding(["ns/zzz"]) == {"thin": {"w1": 15 * GiB, "w2": 10 * GiB}}
    assert ledger.held("w1", "thin") == 15 * GiB, "leaving a pod's claims out changes nothing held"


def test_settle_and_expire_release():
    ledger = Ledger(ttl=10)
    ledger.filtered("ns/a", ["w1"], ["thin"], GiB, now=0)
    ledger.selected("ns/b", "w2", "thin", GiB, now=5)
    assert [h.claim for h in ledger.settle(lambda h: h.claim == "ns/b")] == ["ns/b"]
    assert ledger.expire(now=9.9) == []
    assert [h.claim for h in ledger.expire(now=10)] == ["ns/a"]
    assert len(ledger) == 0 and ledger.held("w1", "thin") == 0


def test_only_filter_holds_expire_by_the_ttl_a_selection_while_the_claim_shows_it_is_kept():
    """A selection is kube-scheduler's choice, which external-provisioner carries out from the claim's
    annotation however long its queue is: the TTL (a pod deleted mid-scheduling) does not end it. One
    the state's claim does not show (news never confirmed, a withdrawal missed) ends a TTL after it
    was taken; one whose claim is gone ends at once."""
    from scheduler_extender.reservations import reconcile

    ledger = Ledger(ttl=10)
    ledger.selected("default/shown", "w2", "thin", GiB, now=0)
    ledger.selected("default/unshown", "w2", "thin", GiB, now=0)
    ledger.filtered("default/filtered", ["w1"], ["thin"], GiB, now=0)
    assert [h.claim for h in ledger.expire(now=50)] == ["default/filtered"], "expire drops filter holds only"
    shown = k.pvc("shown", storage_class="local", size="1Gi")
    shown["metadata"]["annotations"] = {SELECTED_NODE: "w2"}
    pools = {"thin": PoolInfo("thin", "LVM_THIN", 100 * 1024**2)}
    state = ClusterState.build(
        generation=1, nodes={n: NodeInfo(n, True, True, "ONLINE", False, pools) for n in ("w1", "w2")}, pools=(),
        resources={}, kube=ExtenderKubeView(pvcs={"default/shown": shown,
                                          "default/unshown": k.pvc("unshown", storage_class="local", size="1Gi")}),
        linstor_synced_at=0, kube_synced_at=0)
    reconcile(ledger, state, now=9)
    assert {h.claim for h in ledger.holds()} == {"default/shown", "default/unshown"}, "young: the state may lag"
    reconcile(ledger, state, now=10)
    assert [h.claim for h in ledger.holds()] == ["default/shown"]
    reconcile(ledger, state, now=3600)
    assert ledger.held("w2", "thin") == GiB, "still chosen, still no volume: still promised"
    gone = ClusterState.build(generation=2, nodes=state.nodes, pools=(), resources={}, kube=ExtenderKubeView(pvcs={}),
                              linstor_synced_at=0, kube_synced_at=0)
    reconcile(ledger, gone, now=3601)
    assert len(ledger) == 0


def test_bounded_by_holds_and_by_places_oldest_out():
    ledger = Ledger(max_holds=3)
    for i in range(5):
        ledger.selected(f"ns/c{i}", "w1", "thin", GiB, now=i)
    assert [h.claim for h in ledger.holds()] == ["ns/c2", "ns/c3", "ns/c4"]
    assert ledger.held("w1", "thin") == 3 * GiB
    wide = Ledger(max_places=5)
    wide.filtered("ns/a", ["w1", "w2", "w3"], ["thin"] * 3, GiB, now=0)
    wide.filtered("ns/b", ["w1", "w2", "w3"], ["thin"] * 3, GiB, now=1)
    assert [h.claim for h in wide.holds()] == ["ns/b"]
    assert wide.held("w1", "thin") == GiB


def three_nodes(held=None) -> ClusterState:
    pools = {"thin": PoolInfo("thin", "LVM_THIN", 100 * 1024**2)}
    nodes = {n: NodeInfo(n, True, True, "ONLINE", False, pools) for n in NAMES}
    classes = {"local": StorageClassInfo.from_object(k.storage_class("local", pool="thin", remote=False))}
    return ClusterState.build(generation=1, nodes=nodes, pools=(), resources={},
                              kube=ExtenderKubeView(storage_classes=classes), linstor_synced_at=0, kube_synced_at=0)


def test_the_filter_and_the_score_see_free_space_minus_what_is_held():
    state = three_nodes()
    claim = Claim(ClaimRef("ns", "c", "vol0"), True, None, state.get_sc("local"), 60 * GiB)
    held = promised_state(state, {"thin": {"w1": 60 * GiB, "w2": 500 * GiB, "w9": GiB}})
    assert held.pool_max_free == state.pool_max_free, "the score's scale stays the poll's"
    assert promised_state(state, {}) is state
    verdicts = {n: judge_unbound(claim, held.nodes[n], held, Weights()) for n in NAMES}
    assert not verdicts["w1"].fits and not verdicts["w2"].fits, "40 GiB and nothing left: too little for 60"
    assert verdicts["w3"].fits and verdicts["w3"].score == Weights().wffc_max
    assert "promised to other claims" in verdicts["w1"].text("w1")


def test_a_pods_claims_are_summed_per_pool_and_held_where_the_filter_put_them():
    """A pod with two 60 GiB claims of a class naming no pool, on w1 with pools fast (100 GiB free) and
    bulk (90 GiB): the first takes fast, the second no longer fits there (40 GiB left) and takes bulk.
    The filter passes w1 and holds each claim on the pool it was judged in (before, both were judged
    and held on fast alone). A third claim of 60 GiB fits neither pool once the other two are counted,
    and its reason says what the pod's other claims take."""
    from devkit import kube_objects as k
    from scheduler_extender.reservations import hold_filtered
    from scheduler_extender.scoring import judge_node, prepare

    pools = {"fast": PoolInfo("fast", "LVM_THIN", 100 * 1024**2), "bulk": PoolInfo("bulk", "LVM_THIN", 90 * 1024**2)}
    classes = {"any": StorageClassInfo.from_object(k.storage_class("any", pool=None, remote=False))}
    state = ClusterState.build(generation=1, nodes={"w1": NodeInfo("w1", True, True, "ONLINE", False, pools)},
                               pools=(), resources={}, kube=ExtenderKubeView(storage_classes=classes),
                               linstor_synced_at=0, kube_synced_at=0)
    claims = [Claim(ClaimRef("db", f"data-{i}", f"vol{i}"), True, None, state.get_sc("any"), 60 * GiB)
              for i in range(3)]
    two = judge_node("w1", prepare(claims[:2], [None, None], state), state, Weights())
    assert two.fits
    ledger = Ledger()
    hold_filtered(ledger, claims[:2], state, ["w1"], now=0)
    assert (ledger.held("w1", "fast"), ledger.held("w1", "bulk")) == (60 * GiB, 60 * GiB)
    three = judge_node("w1", prepare(claims, [None] * 3, state), state, Weights())
    assert not three.fits
    assert "60.0GiB for the pod's other claims" in three.failure("w1"), three.failure("w1")


def test_what_each_claim_event_means_for_its_hold():
    state = three_nodes()
    ledger = Ledger()
    claim = k.pvc("c", storage_class="local", size="10Gi")
    ledger.filtered("default/c", ["w1", "w2"], ["thin", "thin"], 10 * GiB, now=0)
    assert heard_claim(ledger, "default/c", claim, state, now=1) is False, "no selection yet: held on both"
    chosen = {**claim, "metadata": {**claim["metadata"], "annotations": {SELECTED_NODE: "w2"}}}
    assert heard_claim(ledger, "default/c", chosen, state, now=2)
    assert ledger.get("default/c").nodes == ("w2",)
    assert heard_claim(ledger, "default/c", claim, state, now=3), "the provisioner withdrew the selection"
    assert ledger.get("default/c") is None
    # kube-scheduler chose w3 without a filter hold there (an extender restarted in between)
    only = {**claim, "metadata": {**claim["metadata"], "annotations": {SELECTED_NODE: "w3"}}}
    assert heard_claim(ledger, "default/c", only, state, now=4)
    assert (ledger.get("default/c").nodes, ledger.get("default/c").source) == (("w3",), "selected")
    assert heard_claim(ledger, "default/c", None, state, now=5), "the claim was deleted"
    assert len(ledger) == 0
    assert heard_claim(ledger, "default/c", only, EMPTY_STATE, now=6) is None, "no state yet: ask again later"


# --- the live extender ----------------------------------------------------------------------------
def populated(ratio: str | None = "1") -> tuple[LinstorEmulator, KubeStandin]:
    """Pool thindata: 100 GiB free on w1, 70 GiB on w2, 30 GiB on w3; a WaitForFirstConsumer class
    without remote access; claims of 60 GiB (more than half of w1's free space) for pods p0..p3. The
    pools' ``MaxOversubscriptionRatio`` is ``ratio``: 1 (no over-commit) makes LINSTOR's rule
    (``linstor.capacity``) admit what is free; None leaves LINSTOR's default for thin pools, 20."""
    emu = LinstorEmulator()
    for n, free in zip(NAMES, (100, 70, 30), strict=True):
        emu.add_node(n)
        emu.add_storage_pool(n, "thindata", "LVM_THIN", free_kib=free * 1024**2, total_kib=200 * 1024**2,
                             props={} if ratio is None else {"MaxOversubscriptionRatio": ratio})
    ks = KubeStandin()
    for i, n in enumerate(NAMES):
        ks.add(k.node(n, zone=f"z{i}"))
    ks.add(k.storage_class("local", remote=False))
    for i in range(4):
        ks.add(k.pvc(f"data-{i}", storage_class="local", size="60Gi"))
    return emu, ks


@contextlib.contextmanager
def cluster(*, ratio: str | None = "1", setup=None, **app_kwargs):
    """The live extender over ``populated(ratio)``; ``setup(emu, ks)`` changes the cluster before it starts."""
    emu, ks = populated(ratio)
    if setup is not None:
        setup(emu, ks)
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=2.0, retries=1)
        app = build_live_app(client, ks.api_client(ksrv.url), use_events=False, **app_kwargs)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, what="first full sync")
            yield emu, ks, http, app


def pod(i: int) -> dict:
    return k.pod(f"p{i}", claims=[f"data-{i}"])


def prioritize(http, p) -> dict[str, int]:
    r = http.post("/prioritize", json={"Pod": p, "NodeNames": NAMES})
    assert r.status_code == 200, r.text
    return {h["Host"]: h["Score"] for h in r.json()}


def passing(http, p) -> list[str]:
    r = http.post("/filter", json={"Pod": p, "NodeNames": NAMES})
    assert r.status_code == 200, r.text
    return r.json()["NodeNames"]


def holds(http) -> dict[str, tuple[tuple[str, ...], str]]:
    """claim -> (the nodes it is held on, source), as /explain lists them."""
    r = http.post("/explain", json={"Pod": pod(0), "NodeNames": NAMES})
    assert r.status_code == 200, r.text
    out: dict[str, tuple[tuple[str, ...], str]] = {}
    for h in r.json()["reservations"]:
        nodes, _ = out.get(h["claim"], ((), h["source"]))
        out[h["claim"]] = ((*nodes, h["node"]), h["source"])
    return out


def select(ks, claim: str, node: str | None) -> None:
    """VolumeBinding's PreBind writes kube-scheduler's choice on the claim (None: the provisioner
    removes it again, to make the scheduler retry)."""
    ks.patch("PersistentVolumeClaim", claim, {"metadata": {"annotations": {SELECTED_NODE: node}}},
             namespace="default")


def test_pods_arriving_back_to_back_are_kept_off_every_node_an_earlier_one_may_take():
    with cluster(poll_interval=3600) as (_, ks, http, _):
        assert passing(http, pod(0)) == ["w1", "w2"]  # 30 GiB on w3 is too little for 60 GiB
        assert holds(http) == {"default/data-0": (("w1", "w2"), "filtered")}
        first = prioritize(http, pod(0))
        assert max(first, key=first.get) == "w1"
        # p0 asked again (a retry) is not pushed away by its own hold
        assert passing(http, pod(0)) == ["w1", "w2"] and prioritize(http, pod(0)) == first
        # p1 right behind it: kube-scheduler may still put p0 on w1 (100 GiB) or w2 (70 GiB); either
        # way 60 GiB more would not fit there, so p1 passes nowhere until the choice is known
        assert passing(http, pod(1)) == []
        metrics = scrape(http)
        assert metrics['linstor_scheduler_extender_reservations{source="filtered",stat="holds"}'] == 1
        assert metrics['linstor_scheduler_extender_reservations{source="filtered",stat="bytes"}'] == 60 * GiB
        # kube-scheduler's own scores chose w2 for p0: w1 is free again for p1
        select(ks, "data-0", "w2")
        wait_for(lambda: holds(http) == {"default/data-0": (("w2",), "selected")}, what="the hold shrunk to w2")
        assert passing(http, pod(1)) == ["w1"]
        metrics = scrape(http)
        assert metrics['linstor_scheduler_extender_reservations{source="selected",stat="holds"}'] == 1


def test_the_choice_counts_before_the_kubernetes_view_is_rebuilt():
    """The claim informer's news goes to the ledger at once, not with the next rebuild (0.2 s
    later: dozens of pods in a burst)."""
    with cluster(poll_interval=3600) as (_, ks, http, app):
        app.state.syncer.kube_debounce = 3600  # no rebuild during this test
        assert passing(http, pod(0)) == ["w1", "w2"]
        select(ks, "data-0", "w1")
        wait_for(lambda: holds(http) == {"default/data-0": (("w1",), "selected")}, what="the hold moved to w1")
        assert passing(http, pod(1)) == ["w2"]


def test_only_w3_is_feasible_so_kube_scheduler_skips_prioritize_and_the_hold_is_still_there():
    with cluster(poll_interval=3600) as (_, ks, http, _):
        r = http.post("/filter", json={"Pod": pod(3), "NodeNames": ["w1"]})  # the plugins left w1 only
        assert r.json()["NodeNames"] == ["w1"]
        assert holds(http) == {"default/data-3": (("w1",), "filtered")}, "held without a prioritize"
        assert passing(http, pod(0)) == ["w2"]
        select(ks, "data-3", "w1")
        wait_for(lambda: holds(http)["default/data-3"] == (("w1",), "selected"), what="the selection")


def test_a_restarted_extender_holds_what_kube_scheduler_chose_before_it_started():
    emu, ks = populated()
    select(ks, "data-2", "w1")  # chosen by kube-scheduler while no extender was running
    # data-1 was chosen and provisioned before: bound, its volume in LINSTOR (whose free space counts it)
    select(ks, "data-1", "w2")
    emu.add_resource("pvc-data-1", "w2")
    ks.add(k.pv("pvc-data-1", claim=("default", "data-1"), storage_class="local", size="60Gi"))
    ks.patch("PersistentVolumeClaim", "data-1", {"spec": {"volumeName": "pvc-data-1"}, "status": {"phase": "Bound"}},
             namespace="default")
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=2.0, retries=1)
        app = build_live_app(client, ks.api_client(ksrv.url), use_events=False, poll_interval=3600)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, what="first full sync")
            wait_for(lambda: holds(http) == {"default/data-2": (("w1",), "selected")}, what="the hold on w1")
            assert passing(http, pod(0)) == ["w2"]
            assert app.state.syncer.holder.state.get_pvc("default/data-1") is not None
            assert "default/data-1" not in holds(http), "a provisioned claim is LINSTOR's to count"


def test_a_withdrawn_selection_releases_the_hold():
    with cluster(poll_interval=3600) as (_, ks, http, _):
        passing(http, pod(0))
        select(ks, "data-0", "w1")
        wait_for(lambda: holds(http) == {"default/data-0": (("w1",), "selected")}, what="the selection")
        select(ks, "data-0", None)  # the provisioner failed: kube-scheduler is to try again
        wait_for(lambda: holds(http) == {}, what="the hold released")
        assert passing(http, pod(1)) == ["w1", "w2"]


def test_linstor_showing_the_volume_releases_the_hold():
    with cluster(poll_interval=0.5) as (emu, ks, http, _):
        passing(http, pod(0))
        select(ks, "data-0", "w2")
        wait_for(lambda: holds(http) == {"default/data-0": (("w2",), "selected")}, what="the hold moved to w2")
        assert passing(http, pod(1)) == ["w1"], "w1's space is free again, w2's is promised"
        # the CSI driver creates the volume on w2 and binds the claim; LINSTOR's next read shows it
        emu.add_resource("pvc-data-0", "w2")
        emu.set_pool_free("w2", "thindata", 10 * 1024**2)
        ks.add(k.pv("pvc-data-0", claim=("default", "data-0"), storage_class="local", size="60Gi"))
        ks.patch("PersistentVolumeClaim", "data-0", {"spec": {"volumeName": "pvc-data-0"},
                                                     "status": {"phase": "Bound"}}, namespace="default")
        wait_for(lambda: "default/data-0" not in holds(http), what="the hold released once LINSTOR shows the volume")
        assert passing(http, pod(1)) == ["w1"], "the poll's free space now counts the volume itself"


def test_a_hold_nobody_confirms_expires():
    with cluster(poll_interval=3600, reservation_ttl=0.5) as (_, _, http, _):
        passing(http, pod(0))
        assert holds(http) == {"default/data-0": (("w1", "w2"), "filtered")}
        wait_for(lambda: holds(http) == {}, what="the hold expired")
        assert passing(http, pod(1)) == ["w1", "w2"]


# --- the ledger's bound, a pod's claims summed, a queued provisioning, a class naming no pool -----
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
    from scheduler_extender.state import ClusterState, ExtenderKubeView, NodeInfo, PoolInfo

    pools = {"thin": PoolInfo("thin", "LVM_THIN", 100 * 1024**2)}
    nodes = {"w1": NodeInfo("w1", True, True, "ONLINE", False, pools)}
    classes = {"local": StorageClassInfo.from_object(k.storage_class("local", pool="thin", remote=False))}
    state = ClusterState.build(generation=1, nodes=nodes, pools=(), resources={},
                               kube=ExtenderKubeView(storage_classes=classes), linstor_synced_at=0, kube_synced_at=0)
    sc = state.get_sc("local")
    claims = [Claim(ClaimRef("db", "data-0", "vol0"), True, None, sc, 60 * GiB),
              Claim(ClaimRef("db", "wal-0", "vol1"), True, None, sc, 60 * GiB)]
    verdict = judge_node("w1", prepare(claims, [None, None], state), state, Weights())
    ledger = Ledger()
    if verdict.fits:
        hold_filtered(ledger, claims, state, ["w1"], now=0)
    assert ledger.held("w1", "thin") <= 100 * GiB, "the pool is promised more than it has"
    assert not verdict.fits


def test_a_selection_whose_provisioning_is_queued_stays_held_past_the_ttl():
    """A burst of 1,000 WaitForFirstConsumer pods: kube-scheduler chose w2 for data-0 (selected-node on the
    claim), and the CSI external-provisioner, 100 workers deep behind LINSTOR creating volumes one
    after another, gets to it 3 minutes later. Until LINSTOR shows the volume, the 60 GiB stay
    promised on w2's pool; before, the hold expired after 120 s and the next pods saw w2's space as
    free again."""
    from devkit import kube_objects as k
    from linstor_scheduler.claims import SELECTED_NODE
    from scheduler_extender.reservations import Ledger, reconcile
    from scheduler_extender.state import ClusterState, ExtenderKubeView, NodeInfo, PoolInfo

    claim = k.pvc("data-0", storage_class="local", size="60Gi")
    claim["metadata"]["annotations"] = {SELECTED_NODE: "w2"}
    pools = {"thin": PoolInfo("thin", "LVM_THIN", 100 * 1024**2)}
    state = ClusterState.build(
        generation=1, nodes={n: NodeInfo(n, True, True, "ONLINE", False, pools) for n in ("w1", "w2")}, pools=(),
        resources={}, kube=ExtenderKubeView(pvcs={"default/data-0": claim}), linstor_synced_at=0, kube_synced_at=0)
    ledger = Ledger(ttl=120)
    ledger.selected("default/data-0", "w2", "thin", 60 * GiB, now=0)
    for now in range(5, 185, 5):  # a published state every 5 s; the volume is not in LINSTOR yet
        reconcile(ledger, state, now)
    assert ledger.held("w2", "thin") == 60 * GiB


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
    from scheduler_extender.state import ClusterState, ExtenderKubeView, NodeInfo, PoolInfo

    pools = {"fast": PoolInfo("fast", "LVM_THIN", 100 * 1024**2), "bulk": PoolInfo("bulk", "LVM_THIN", 90 * 1024**2)}
    classes = {"any": StorageClassInfo.from_object(k.storage_class("any", pool=None, remote=False))}
    state = ClusterState.build(generation=1, nodes={"w1": NodeInfo("w1", True, True, "ONLINE", False, pools)},
                               pools=(), resources={}, kube=ExtenderKubeView(storage_classes=classes),
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
