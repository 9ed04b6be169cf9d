"""NotPlacedLocally over real HTTP: the live extender (LINSTOR emulator + Kubernetes API stand-in) is
asked /filter and /prioritize as kube-scheduler asks them, then the pod is bound as the binding
does it (spec.nodeName set): bound away from a replica node our filter passed, the pod gets one
Event and the metric counts it, once, however often the pod changes afterwards."""

from __future__ import annotations

import contextlib

import httpx

from devkit import kube_objects as k
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.linstor import LinstorClient
from scheduler_extender.wiring import build_live_app

from .probing import scrape
from .test_extender_live import NAMES, populated
from .waiting import wait_for

REASON = "NotPlacedLocally"


@contextlib.contextmanager
def cluster(offline: list[str] = ()):
    """populated()'s cluster, plus a claim ``shared`` in a class that allows remote access, its one
    diskful replica on w1: every node passes our filter, w1 scores highest."""
    emu, ks = populated()
    for node in offline:
        emu.set_node_status(node, "OFFLINE")
    emu.add_resource("pvc-shared", "w1")
    for obj in k.bound_volume("shared", "pvc-shared", storage_class="r2"):
        ks.add(obj)
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=2.0, retries=1)
        app = build_live_app(client, ks.api_client(ksrv.url), poll_interval=3600, use_events=False)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, what="first full sync")
            yield ks, http, app


def schedule(ks, http, name: str, node: str, *, offered: list[str] = NAMES, claims=("shared",)) -> dict:
    """One scheduling cycle as kube-scheduler runs it for a pod: /filter on the candidates, /prioritize
    on those that passed, then the binding (the API server sets spec.nodeName)."""
    pod = ks.add(k.pod(name, claims=list(claims)))
    r = http.post("/filter", json={"Pod": pod, "NodeNames": offered})
    assert r.status_code == 200, r.text
    passed = r.json()["NodeNames"]
    assert node in passed, r.json()
    assert http.post("/prioritize", json={"Pod": pod, "NodeNames": passed}).status_code == 200
    return ks.patch("Pod", name, {"spec": {"nodeName": node}}, namespace="default")


def placed(http, outcome: str) -> float:
    return scrape(http).get(f'linstor_scheduler_extender_placements_total{{outcome="{outcome}"}}', 0.0)


def events_of(ks, app, pod: str) -> list[dict]:
    assert app.state.recorder.flush(10)
    return [e for e in ks.list("Event", "default")
            if e["reason"] == REASON and e["involvedObject"]["name"] == pod]


def test_bound_away_from_the_replica_node_it_was_offered_gets_one_event_and_counts_once():
    with cluster() as (ks, http, app):
        pod = schedule(ks, http, "app-0", "w3")
        wait_for(lambda: placed(http, "not_chosen") == 1, what="the binding judged")
        [event] = events_of(ks, app, "app-0")
        assert event["type"] == "Normal"
        assert event["involvedObject"]["uid"] == pod["metadata"]["uid"]
        assert event["message"].startswith("bound to node w3, which holds no diskful replica of its volumes")
        assert "w1 (1 of 1 volumes): offered, passed our filter, our score 10 of 10" in event["message"]
        assert "3 candidates" in event["message"]

        # The pod goes on changing (kubelet's status, a label): it was judged once, and only once.
        ks.patch("Pod", "app-0", {"metadata": {"labels": {"again": "1"}}, "status": {"phase": "Running"}},
                 namespace="default")
        ks.patch("Pod", "app-0", {"metadata": {"labels": {"again": "2"}}}, namespace="default")
        # A later pod's judgement is after those changes in the same watch stream.
        schedule(ks, http, "app-1", "w1")
        wait_for(lambda: placed(http, "local") == 1, what="the second pod judged")
        assert len(events_of(ks, app, "app-0")) == 1
        assert placed(http, "not_chosen") == 1


def test_bound_to_the_replica_node_says_nothing():
    with cluster() as (ks, http, app):
        schedule(ks, http, "app-0", "w1")
        wait_for(lambda: placed(http, "local") == 1, what="the binding judged")
        assert events_of(ks, app, "app-0") == []
        assert placed(http, "not_chosen") == placed(http, "not_offered") == 0


def test_a_replica_node_kube_scheduler_never_offered_is_named_as_such():
    """percentageOfNodesToScore's cut-off as the extender sees it: w1 is not among the candidates."""
    with cluster() as (ks, http, app):
        schedule(ks, http, "app-0", "w2", offered=["w2", "w3"])
        wait_for(lambda: placed(http, "not_offered") == 1, what="the binding judged")
        [event] = events_of(ks, app, "app-0")
        assert "w1 (1 of 1 volumes): kube-scheduler did not offer it" in event["message"]
        assert "our filter would pass it" in event["message"]
        assert "2 candidates" in event["message"]


def test_no_replica_node_our_filter_passes_is_no_local_choice_and_no_event():
    """w1, the replica node, is OFFLINE: our filter fails it, so a pod bound elsewhere had no local
    choice. Counted, not announced."""
    with cluster(offline=["w1"]) as (ks, http, app):
        schedule(ks, http, "app-0", "w2")
        wait_for(lambda: placed(http, "no_local_choice") == 1, what="the binding judged")
        assert events_of(ks, app, "app-0") == []
        assert placed(http, "not_chosen") == placed(http, "not_offered") == 0


def test_a_pod_whose_volumes_have_no_replica_yet_is_not_judged():
    """A new volume is made where the pod goes: nothing to be local to, no record, no count."""
    with cluster() as (ks, http, app):
        ks.add(k.pvc("fresh", storage_class="r2"))
        wait_for(lambda: http.post("/explain", json={"Pod": k.pod("probe", claims=["fresh"])}).json()["neutral"]
                 is None, what="the claim in the index")
        schedule(ks, http, "app-0", "w3", claims=("fresh",))
        schedule(ks, http, "app-1", "w1")
        wait_for(lambda: placed(http, "local") == 1, what="the second binding judged")
        assert sum(placed(http, o) for o in ("not_chosen", "not_offered", "no_local_choice")) == 0
        assert len(app.state.placements) == 0, "every record went with its judgement"
