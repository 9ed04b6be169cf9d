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
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.linstor import LinstorClient
from scheduler_extender.reservations import SELECTED_NODE, Ledger, promised_state
from scheduler_extender.state import ClusterState, KubeView, NodeInfo, PoolInfo
from scheduler_extender.wiring import build_live_app

from .probing import scrape
from .waiting import wait_for

GiB = 1024**3
NAMES = ["w1", "w2", "w3"]


# --- the ledger -----------------------------------------------------------------------------------
def test_rank_holds_once_and_selected_moves_it():
    ledger = Ledger(ttl=60)
    assert ledger.rank("ns/a", "w1", "thin", 10 * GiB, now=0)
    assert ledger.held("w1", "thin") == 10 * GiB
    assert not ledger.rank("ns/a", "w1", "thin", 10 * GiB, now=1), "the same ranking changes nothing"
    version = ledger.version
    assert ledger.selected("ns/a", "w2", "thin", 10 * GiB, now=2)
    assert ledger.version > version
    assert (ledger.held("w1", "thin"), ledger.held("w2", "thin")) == (0, 10 * GiB)
    assert not ledger.rank("ns/a", "w3", "thin", 10 * GiB, now=3), "kube-scheduler's choice outranks ours"
    assert ledger.get("ns/a").node == "w2"
    assert ledger.totals() == {"ranked": (0, 0), "selected": (1, 10 * GiB)}


def test_holds_add_up_and_a_pods_own_claims_are_left_out():
    ledger = Ledger()
    ledger.rank("ns/a", "w1", "thin", 10 * GiB, now=0)
    ledger.rank("ns/b", "w1", "thin", 5 * GiB, now=0)
    assert ledger.held("w1", "thin") == 15 * GiB
    assert ledger.held_excluding(["ns/a"]) == {("w1", "thin"): 5 * GiB}
    assert ledger.held_excluding(["ns/a", "ns/b"]) == {}


def test_settle_and_expire_release():
    ledger = Ledger(ttl=10)
    ledger.rank("ns/a", "w1", "thin", GiB, now=0)
    ledger.rank("ns/b", "w2", "thin", GiB, now=5)
    assert [h.claim for h in ledger.settle(lambda h: h.claim == "ns/b")] == ["ns/b"]
    assert ledger.expire(now=9.9) == []
    assert [h.claim for h in ledger.expire(now=10)] == ["ns/a"]
    assert len(ledger) == 0 and ledger.held("w1", "thin") == 0


def test_bounded_oldest_out():
    ledger = Ledger(max_holds=3)
    for i in range(5):
        ledger.rank(f"ns/c{i}", "w1", "thin", GiB, now=i)
    assert [h.claim for h in ledger.holds()] == ["ns/c2", "ns/c3", "ns/c4"]
    assert ledger.held("w1", "thin") == 3 * GiB


def test_promised_state_takes_held_bytes_from_free_space_only_where_held():
    pools = {"thin": PoolInfo("thin", "LVM_THIN", 100 * 1024**2)}
    nodes = {n: NodeInfo(n, True, True, "ONLINE", False, pools) for n in NAMES}
    state = ClusterState.build(generation=1, nodes=nodes, pools=(), resources={}, kube=KubeView(),
                               linstor_synced_at=0, kube_synced_at=0)
    held = promised_state(state, {("w1", "thin"): 60 * GiB, ("w2", "thin"): 500 * GiB, ("w9", "thin"): GiB})
    assert held.nodes["w1"].pools["thin"].free_kib == 40 * 1024**2
    assert held.nodes["w2"].pools["thin"].free_kib == 0
    assert held.nodes["w3"] is state.nodes["w3"]
    assert held.pool_max_free == state.pool_max_free, "the score's scale stays the poll's"
    assert promised_state(state, {}) is state


# --- the live extender ----------------------------------------------------------------------------
def populated() -> tuple[LinstorEmulator, KubeStandin]:
    """Pool thindata: 100 GiB free on w1, 70 GiB on w2, 30 GiB on w3; a WaitForFirstConsumer class
    without remote access; claims of 60 GiB (more than half of w1's free space) for pods p0..p3."""
    emu = LinstorEmulator()
    for n, free in zip(NAMES, (100, 70, 30), strict=True):
        emu.add_node(n)
        emu.add_storage_pool(n, "thindata", "LVM_THIN", free_kib=free * 1024**2, total_kib=200 * 1024**2)
    ks = KubeStandin()
    for i, n in enumerate(NAMES):
        ks.add(k.node(n, zone=f"z{i}"))
    ks.add(k.storage_class("local", remote=False))
    for i in range(4):
        ks.add(k.pvc(f"data-{i}", storage_class="local", size="60Gi"))
    return emu, ks


@contextlib.contextmanager
def cluster(**app_kwargs):
    emu, ks = populated()
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=2.0, retries=1)
        app = build_live_app(client, ks.api_client(ksrv.url), use_events=False, **app_kwargs)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, what="first full sync")
            yield emu, ks, http


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


def holds(http) -> dict[str, tuple[str, str]]:
    r = http.post("/explain", json={"Pod": pod(0), "NodeNames": NAMES})
    assert r.status_code == 200, r.text
    return {h["claim"]: (h["node"], h["source"]) for h in r.json()["reservations"]}


def test_a_burst_does_not_pile_onto_the_emptiest_node():
    with cluster(poll_interval=3600) as (_, _, http):
        assert passing(http, pod(0)) == ["w1", "w2"]  # 30 GiB on w3 is too little for 60 GiB
        first = prioritize(http, pod(0))
        assert max(first, key=first.get) == "w1"
        assert holds(http) == {"default/data-0": ("w1", "ranked")}
        # p0 asked again (a retry) is not pushed away by its own hold
        assert prioritize(http, pod(0)) == first
        # p1 in the same burst: w1's 100 GiB are promised down to 40, too little for 60 GiB
        assert passing(http, pod(1)) == ["w2"]
        second = prioritize(http, pod(1))
        assert max(second, key=second.get) == "w2" and second["w1"] == 0
        # p2: both promised; nothing left with room for it until LINSTOR or kube-scheduler says more
        assert passing(http, pod(2)) == []
        metrics = scrape(http)
        assert metrics['linstor_scheduler_extender_reservations{source="ranked",stat="holds"}'] == 2
        assert metrics['linstor_scheduler_extender_reservations{source="ranked",stat="bytes"}'] == 120 * GiB


def test_selected_node_moves_the_hold_and_linstor_showing_the_volume_releases_it():
    with cluster(poll_interval=0.5) as (emu, ks, http):
        prioritize(http, pod(0))
        assert holds(http) == {"default/data-0": ("w1", "ranked")}
        assert passing(http, pod(1)) == ["w2"]
        # kube-scheduler chose w2 for p0 (its own scores weighed in): VolumeBinding's PreBind says so
        ks.patch("PersistentVolumeClaim", "data-0", {"metadata": {"annotations": {SELECTED_NODE: "w2"}}},
                 namespace="default")
        wait_for(lambda: holds(http) == {"default/data-0": ("w2", "selected")}, what="the hold moved to w2")
        assert passing(http, pod(1)) == ["w1"], "w1's space is free again, w2's is promised"
        # the CSI driver creates the volume on w2 and binds the claim; LINSTOR's next read shows it
        emu.add_resource("pvc-data-0", "w2")
        emu.set_pool_free("w2", "thindata", 10 * 1024**2)
        ks.add(k.pv("pvc-data-0", claim=("default", "data-0"), storage_class="local", size="60Gi"))
        ks.patch("PersistentVolumeClaim", "data-0", {"spec": {"volumeName": "pvc-data-0"},
                                                     "status": {"phase": "Bound"}}, namespace="default")
        wait_for(lambda: holds(http) == {}, what="the hold released once LINSTOR shows the volume")
        assert passing(http, pod(1)) == ["w1"], "the poll's free space now counts the volume itself"


def test_a_hold_nobody_confirms_expires():
    with cluster(poll_interval=3600, reservation_ttl=0.5) as (_, _, http):
        prioritize(http, pod(0))
        assert holds(http) == {"default/data-0": ("w1", "ranked")}
        assert passing(http, pod(1)) == ["w2"]
        wait_for(lambda: holds(http) == {}, what="the hold expired")
        assert passing(http, pod(1)) == ["w1", "w2"]
