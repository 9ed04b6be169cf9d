"""The live extender end to end over real HTTP: LINSTOR emulator + Kubernetes API stand-in -> sync
-> index -> /filter and /prioritize, as kube-scheduler calls them."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.linstor import LinstorClient
from scheduler_extender.wiring import build_live_app

from .probing import scrape
from .waiting import wait_for

NAMES = ["w1", "w2", "w3"]


def populated(extra_claims: int = 0) -> tuple[LinstorEmulator, KubeStandin]:
    """Three nodes, a claim ``data`` whose volume has a diskful replica on w1 (a tie-breaker on w2);
    ``extra_claims`` more claims in namespace ``apps`` (more than 500: a list of several pages)."""
    emu = LinstorEmulator()
    for n in NAMES:
        emu.add_node(n)
        emu.add_storage_pool(n, "thindata", "LVM_THIN")
    emu.add_resource("pvc-db", "w1")
    emu.add_resource("pvc-db", "w2", diskful=False, flags=["TIE_BREAKER"])
    ks = KubeStandin()
    for i, n in enumerate(NAMES):
        ks.add(k.node(n, zone=f"z{i}"))
    ks.add(k.storage_class("r2"))
    ks.add(k.storage_class("local", remote=False))
    for obj in k.bound_volume("data", "pvc-db", storage_class="local"):
        ks.add(obj)
    for i in range(extra_claims):
        ks.add(k.pvc(f"other-{i:04d}", namespace="apps", storage_class="local"))
    return emu, ks


@contextlib.contextmanager
def cluster(**app_kwargs):
    emu, ks = populated()
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=2.0, retries=1)
        app = build_live_app(client, ks.api_client(ksrv.url), **app_kwargs)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, what="first full sync")
            yield emu, ks, http, app


def scores(http, pod, names=NAMES):
    r = http.post("/prioritize", json={"Pod": pod, "NodeNames": names})
    assert r.status_code == 200, r.text
    return {h["Host"]: h["Score"] for h in r.json()}


def test_live_placement_and_zero_linstor_calls_per_request():
    with cluster(poll_interval=3600, use_events=False) as (emu, _, http, _app):
        pod = k.pod("db-0", claims=["data"])
        before = list(emu.requests)
        for _ in range(50):
            # w2 holds only a diskless tie-breaker: with remote access forbidden it cannot serve the pod
            assert scores(http, pod) == {"w1": 10, "w2": 0, "w3": 0}
            r = http.post("/filter", json={"Pod": pod, "NodeNames": NAMES})
            assert r.json()["NodeNames"] == ["w1"]
            assert r.json()["FailedAndUnresolvableNodes"] == {
                n: f"volume pvc-db: no diskful replica on node {n} and its StorageClass forbids remote access"
                for n in ("w2", "w3")}
        assert emu.requests == before, "the request path must not call LINSTOR in steady state"


def test_fresh_volume_missing_from_index_gets_one_bounded_read():
    with cluster(poll_interval=3600, use_events=False) as (emu, ks, http, _app):
        emu.add_resource("pvc-new", "w3")  # created after the last poll
        for obj in k.bound_volume("fresh", "pvc-new", storage_class="r2"):
            ks.add(obj)
        pod = k.pod("new-0", claims=["fresh"])
        wait_for(lambda: scores(http, pod)["w3"] == 10, what="PVC seen by the informer and fallback read")
        for _ in range(5):
            assert scores(http, pod) == {"w1": 1, "w2": 1, "w3": 10}
        assert emu.count("GET", "/v1/resource-definitions/pvc-new/resources") == 1
        assert 'linstor_scheduler_fallback_reads_total{outcome="found"} 1.0' in http.get("/metrics").text


def test_linstor_down_keeps_last_state_then_turns_neutral_then_recovers():
    with cluster(poll_interval=0.2, max_staleness=1.5, use_events=False) as (emu, _, http, _app):
        pod = k.pod("db-0", claims=["data"])
        emu.inject(fail=10**9, status=500, path_prefix="/v1/")
        wait_for(lambda: http.get("/readyz").json()["last_error"], what="a failed LINSTOR read")
        ready = http.get("/readyz").json()
        if not ready["stale"]:  # still within the limit: answers from the last good state
            assert scores(http, pod)["w1"] in (10, 0)
        wait_for(lambda: http.get("/readyz").json()["stale"], what="staleness past the limit")
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["neutral"] is True
        assert "LINSTOR read failed" in ready.json()["last_error"]
        assert "LINSTOR state" in ready.json()["detail"] and "Kubernetes view" not in ready.json()["detail"]
        assert "passes every node with score 0" in ready.json()["detail"]
        assert scores(http, pod) == {"w1": 0, "w2": 0, "w3": 0}
        r = http.post("/filter", json={"Pod": pod, "NodeNames": NAMES})
        assert r.json()["NodeNames"] == NAMES and r.json()["FailedAndUnresolvableNodes"] == {}
        assert "linstor_scheduler_state_stale 1.0" in http.get("/metrics").text
        emu.reset_faults()
        wait_for(lambda: http.get("/readyz").status_code == 200, what="recovery")
        assert not http.get("/readyz").json()["stale"]
        assert scores(http, pod) == {"w1": 10, "w2": 0, "w3": 0}


AGE, STALE = "linstor_scheduler_state_age_seconds", "linstor_scheduler_state_stale"


def test_no_state_metric_before_the_first_read_and_the_age_grows_while_linstor_fails():
    """Issue 18: nothing measured, nothing claimed. LINSTOR down from the start: the age, the stale
    flag and the index sizes are absent (``ready`` 0 says why); after a good read they appear; when
    LINSTOR fails again the age keeps growing from that read, failed reads never reset it."""
    emu, ks = populated()
    emu.inject(fail=10**9, status=500, path_prefix="/v1/")
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=2.0, retries=1)
        app = build_live_app(client, ks.api_client(ksrv.url), poll_interval=0.2, max_staleness=60, use_events=False)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            wait_for(lambda: http.get("/readyz").json()["last_error"], what="a failed LINSTOR read")
            before = scrape(http)
            assert before["linstor_scheduler_ready"] == 0
            assert not [n for n in before if n.startswith((AGE, STALE, "linstor_scheduler_index_objects"))], before
            emu.reset_faults()
            wait_for(lambda: AGE in scrape(http), what="the first good read")
            after = scrape(http)
            assert after[STALE] == 0 and after["linstor_scheduler_ready"] == 1
            assert after['linstor_scheduler_index_objects{kind="nodes"}'] == 3
            emu.inject(fail=10**9, status=500, path_prefix="/v1/")
            failing_since = time.monotonic()
            wait_for(lambda: http.get("/readyz").json()["last_error"], what="LINSTOR failing again")
            wait_for(lambda: scrape(http)[AGE] > 1.0, what="the age to pass 1 s")
            ages = []
            for _ in range(5):
                elapsed = time.monotonic() - failing_since
                ages.append(scrape(http)[AGE])
                assert ages[-1] >= elapsed, "measured from the last good read, before the failures began"
            assert ages == sorted(ages), "failed reads never reset the age"
            assert scrape(http)['linstor_scheduler_index_objects{kind="nodes"}'] == 3  # kept, with its age


def test_node_event_makes_an_offline_satellite_visible_at_once():
    with cluster(poll_interval=3600, use_events=True) as (emu, _, http, _app):
        pod = k.pod("db-0", claims=["data"])
        wait_for(lambda: emu.count("GET", "/v1/events/nodes") >= 1, what="event stream subscribed")
        emu.set_node_status("w1", "OFFLINE")

        def w1_failed():
            r = http.post("/filter", json={"Pod": pod, "NodeNames": NAMES}).json()
            return r["FailedAndUnresolvableNodes"].get("w1") == "LINSTOR satellite on node w1 is OFFLINE, not ONLINE"

        wait_for(w1_failed, what="w1 filtered after the node event")


def test_kubernetes_changes_reach_the_index():
    with cluster(poll_interval=3600, use_events=False) as (_, ks, http, _app):
        pod = k.pod("db-0", claims=["data"])
        assert scores(http, pod) == {"w1": 10, "w2": 0, "w3": 0}
        ks.patch("StorageClass", "local", {"parameters": {"linstor.csi.linbit.com/allowRemoteVolumeAccess": "true"}})
        wait_for(lambda: scores(http, pod) == {"w1": 10, "w2": 4, "w3": 1}, what="StorageClass change applied")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_operational_endpoints_live(path):
    with cluster(poll_interval=3600, use_events=False) as (_, _, http, _app):
        r = http.get(path)
        assert r.status_code == 200
        if path == "/readyz":
            body = r.json()
            assert body["mode"] == "live" and body["nodes"] == 3 and body["resources"] == 1


def test_unchanged_polls_through_the_read_thread_keep_the_generation_and_the_caches():
    """The live path as deployed: compact records, decoded and indexed in the read thread, and the
    unchanged-poll check of the publish (issue 10 item 3 with issue 14's read path)."""
    with cluster(poll_interval=0.05, poll_min_factor=0, use_events=False) as (emu, _, http, app):
        syncer = app.state.syncer
        holder, registry = syncer.holder, syncer.metrics.registry
        assert syncer._reader is not None, "the live extender reads LINSTOR in its own thread"

        def sample(name, **labels):
            return registry.get_sample_value(name, labels) or 0.0

        def kept():
            return sample("linstor_scheduler_state_publishes_total", result="kept")

        pod = k.pod("db-0", claims=["data"])
        assert scores(http, pod) == {"w1": 10, "w2": 0, "w3": 0}
        generation, reads, kept_before = holder.state.generation, emu.count("GET", "/v1/view/resources"), kept()
        wait_for(lambda: emu.count("GET", "/v1/view/resources") >= reads + 5 and kept() >= kept_before + 5,
                 what="five more LINSTOR reads, each published as unchanged")
        assert holder.state.generation == generation
        clears = sample("linstor_scheduler_extender_cache", cache="answers", stat="clears")
        hits = sample("linstor_scheduler_extender_cache", cache="answers", stat="hits")
        assert scores(http, pod) == {"w1": 10, "w2": 0, "w3": 0}
        assert sample("linstor_scheduler_extender_cache", cache="answers", stat="hits") == hits + 1
        assert sample("linstor_scheduler_extender_cache", cache="answers", stat="clears") == clears

        emu.set_disk_state("pvc-db", "w1", "Outdated")  # what LINSTOR says changed: a new generation
        wait_for(lambda: holder.state.generation > generation, what="the change published as new")
        assert scores(http, pod) == {"w1": 8, "w2": 0, "w3": 0}
        assert sample("linstor_scheduler_extender_cache", cache="answers", stat="clears") == clears + 1
        changed, kept_before = holder.state.generation, kept()
        wait_for(lambda: kept() >= kept_before + 3, what="unchanged again after the change")
        assert holder.state.generation == changed


def test_healthz_fails_naming_an_informer_that_stopped_turning():
    """/healthz is the informers' liveness and the sync loops': an informer whose loop made no progress
    past its bound makes it 503 with its name (the kubelet restarts the container); /readyz is not it."""
    with cluster(poll_interval=3600, use_events=False) as (_, _, http, app):
        r = http.get("/healthz")
        assert r.status_code == 200 and r.text == "informers running; sync loops turning"
        node = app.state.caches["Node"]
        node.stop()  # its loop no longer turns ...
        node.beat -= 1000  # ... and has not for 1000 s
        r = http.get("/healthz")
        assert r.status_code == 503 and "Node informer loop idle for 100" in r.text, r.text
        assert http.get("/readyz").status_code == 200


def test_an_api_server_down_at_start_is_named_by_readyz():
    """Started while the API server answers only 503 (it is restarting): not ready, and /readyz says
    which informer has never listed and why; ready once it answers."""
    from linstor_scheduler.kube import make_api_client

    emu, ks = populated()
    ks.down()
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=2.0, retries=1)
        app = build_live_app(client, make_api_client(host=ksrv.url, timeout=1.0), poll_interval=0.2,
                             max_staleness=6, use_events=False, api_timeout=1.0)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            wait_for(lambda: "503" in http.get("/readyz").json().get("detail", ""), what="a failed list")
            r = http.get("/readyz")
            assert r.status_code == 503 and r.json()["ready"] is False
            assert "Kubernetes: Node never listed (API error 503" in r.json()["detail"], r.json()["detail"]
            ks.up()
            wait_for(lambda: http.get("/readyz").status_code == 200, what="ready once the API server answers")
