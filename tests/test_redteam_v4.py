"""Red team v4: what was merged on the extender's lost-storage filter (fencing's Lease record), as
real-world events over real HTTP on the project's doubles (the LINSTOR emulator, the Kubernetes API
stand-in, fencing as deployed: tests/fencing_rig.py) and the live extender asked as kube-scheduler asks.
Each scenario that failed on main when it was written is xfail(strict) with why, until fixed; the
others show behaviour that is right as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from linstor_scheduler import lost_storage
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.linstor import LinstorClient
from scheduler_extender.wiring import build_live_app

from .fencing_rig import FencingService, Rig, k
from .waiting import wait_for

NAMES = ["n1", "n2", "n3", "n4", "n5", "n6"]
LEASE_NS, LEASE_NAME = "kube-system", "linstor-scheduler-fencing"
LEASE = f"{LEASE_NS}/{LEASE_NAME}"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"


@contextlib.contextmanager
def extender(rig: Rig, max_age: float = 3.0, ready: bool = True) -> Iterator[httpx.Client]:
    client = LinstorClient(rig.emu_url, timeout=2.0, retries=1)
    app = build_live_app(client, rig.ks.api_client(rig.ks_url), poll_interval=0.2, max_staleness=5.0,
                         use_events=False, fencing_lease=LEASE, fencing_record_max_age=max_age)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        if ready:
            wait_for(lambda: http.get("/readyz").status_code == 200, timeout=15, what="the extender's first full sync")
        yield http


def failed(http: httpx.Client, pod: dict[str, Any]) -> dict[str, str]:
    r = http.post("/filter", json={"Pod": pod, "NodeNames": NAMES})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body.get("Error"), body
    return {**(body.get("FailedNodes") or {}), **(body.get("FailedAndUnresolvableNodes") or {})}


def record(rig: Rig) -> lost_storage.LostStorage | None:
    lease = rig.ks.get("Lease", LEASE_NAME, LEASE_NS)
    return lost_storage.read_record(lease) if lease else None


# --- 1. a fault of one resource keeps every LINSTOR pod off the node ---------------------------------
def test_one_resource_cut_on_a_node_does_not_keep_a_healthy_volumes_pod_off_it():
    """One resource's DRBD connection down on n1 (LINSTOR gives each resource its own TCP port,
    TcpPortAutoRange: a firewall rule on one port; or a split brain that leaves that one resource
    StandAlone until resolved by hand, DRBD User's Guide, "Split brain notification and automatic
    recovery"). Fencing judges storage per (resource, node) (fencing/verdict.py judge_volume), and
    its record names the lost resources of a node not lost whole: n1 is refused to pvc-logs' pods
    only; db's replica there is UpToDate and connected, and n1 serves db-1 as it did db-0 (found by
    the red team as a strict xfail: the record was per node and n1 was refused to every pod)."""
    with Rig() as rig:
        db = rig.volume("pvc-db", ["n1", "n2"], in_use="n1")
        rig.pod("db-0", "n1", [db])
        logs = rig.volume("pvc-logs", ["n1", "n4"], in_use="n4")  # its tie-breaker on n2
        with FencingService(rig, grace=600.0, lease=2.0), extender(rig) as http:
            rig.emu.cut_peers("n1", resource="pvc-logs")  # pvc-logs' port on n1 blocked; pvc-db untouched
            wait_for(lambda: "n1" in (record(rig) or lost_storage.LostStorage(0, {})).nodes, timeout=15,
                     what="fencing records n1 (for pvc-logs)")
            logs_pod = k.pod("logs-1", claims=[logs], scheduler="linstor")
            wait_for(lambda: "n1" in failed(http, logs_pod), timeout=15, what="n1 refused to pvc-logs' pod")
            assert "fencing judges the storage of its replica on node n1 lost" in failed(http, logs_pod)["n1"]
            assert record(rig).resources == {"n1": frozenset({"pvc-logs"})}
            # db's replica on n1 is UpToDate and connected to n2 and n3: n1 serves db-1 as it did db-0
            assert "n1" not in failed(http, k.pod("db-1", claims=[db], scheduler="linstor"))


# --- 2. fencing's Lease unreadable: the whole extender goes neutral ------------------------------------
def test_a_forbidden_fencing_lease_filters_nothing_on_its_word_but_the_extender_still_judges():
    """The extender's Role may not reach fencing's Lease: ``--fencing-lease`` names a namespace the
    RoleBinding (deploy/base/scheduler-rbac.yaml, linstor-scheduler-extender-fencing-record) is not
    in, or the Role is applied after the new image. The API server answers the list 403 Forbidden
    (apiserver authorization filter: k8s.io/apiserver/pkg/endpoints/filters/authorization.go,
    ``responsewriters.Forbidden``), again on every retry. Fencing's record is advice with its own
    clock (its ``observed`` time ages it out, lost_storage.lost_nodes): unread, it must filter
    nothing, as when fencing is not deployed (docs/fencing.md "The taint"). It must not make the
    extender unready and neutral for every pod - a node whose satellite is OFFLINE is then offered
    to pods with LINSTOR volumes again, which the extender did before fencing's record existed."""
    with Rig() as rig:
        db = rig.volume("pvc-db", ["n1", "n2"], in_use="n1")
        rig.emu.power_off("n5")  # n5's satellite OFFLINE (its kubelet still Ready: not yet noticed)
        rig.ks.inject(fail=10**6, status=403, path_prefix=LEASES, method="GET")
        with extender(rig, ready=False) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, timeout=15,
                     what="ready although fencing's Lease cannot be read")
            refused = failed(http, k.pod("db-1", claims=[db], scheduler="linstor"))
            assert "n5" in refused and "OFFLINE" in refused["n5"], refused
            assert "n1" not in refused  # nothing on fencing's word
            assert "fencing's record unread" in http.get("/readyz").text  # said, not hidden


# --- 3. what holds: the Lease deleted, a new fencing leader, prioritize agreeing with filter -----------
def scores(http: httpx.Client, pod: dict[str, Any]) -> dict[str, int]:
    r = http.post("/prioritize", json={"Pod": pod, "NodeNames": NAMES})
    assert r.status_code == 200, r.text
    return {h["Host"]: h["Score"] for h in r.json()}


def test_the_lease_deleted_then_a_new_fencing_leader_and_prioritize_agreeing_with_filter():
    """n1 cut from its DRBD peers (satellite ONLINE, kubelet Ready). Fencing's leader records it; the
    extender refuses n1 and scores it lowest (kube-scheduler asks /prioritize only about the nodes
    that passed, but the two must not disagree when it asks anyway). Fencing's Deployment is scaled
    to 0 and an operator deletes its Lease (``kubectl delete lease``): the record is gone with the
    object (a DELETED watch event), so nothing is refused on its word at once, without waiting for
    --fencing-record-max-age. Fencing scaled back: the new leader creates the Lease (a Lease the
    elector finds absent is created: client-go leaderelection ``tryAcquireOrRenew``), its first read
    still sees n1 cut, and n1 is refused again."""
    with Rig() as rig:
        db = rig.volume("pvc-db", ["n1", "n2"], in_use="n1")
        rig.pod("db-0", "n1", [db])
        pod = k.pod("db-1", claims=[db], scheduler="linstor")
        with extender(rig, max_age=60.0) as http:
            with FencingService(rig, grace=600.0, lease=2.0):
                rig.partition("n1")
                wait_for(lambda: "n1" in failed(http, pod), timeout=15, what="n1 refused")
                ranked = scores(http, pod)
                assert ranked["n1"] == min(ranked.values()) and ranked["n2"] > ranked["n1"], ranked
            assert rig.ks.delete("Lease", LEASE_NAME, LEASE_NS) is not None
            wait_for(lambda: "n1" not in failed(http, pod), timeout=10, what="n1 admitted once the Lease is gone")
            with FencingService(rig, grace=600.0, lease=2.0):
                wait_for(lambda: "n1" in failed(http, pod), timeout=15, what="n1 refused on the new leader's word")


def test_in_a_storm_nothing_is_refused_on_fencings_word():
    """A top-of-rack switch fails: the replication network between n1-n3 and n4-n6 goes down at once
    (satellites stay ONLINE over the management network, kubelets Ready). Which side is "lost" is then
    a matter of which replicas happen to be where (here n4-n6 look lost): refusing them would keep
    pods with LINSTOR volumes off half the cluster on a verdict fencing itself does not trust. Its
    storm breaker holds (more than --storm-share of the storage nodes lost at once: maybe its view,
    not the storage, is wrong) and its record names no node while it does, so the extender refuses
    nothing on fencing's word, as before fencing existed. The right call, and nothing to change; the
    docs did not say it (docs/fencing.md "The taint" now does)."""
    with Rig() as rig:
        db = rig.volume("pvc-db", ["n1", "n4"], in_use="n1")  # tie-breaker on n2
        web = rig.volume("pvc-web", ["n5", "n2"], in_use="n5")  # tie-breaker on n1
        rig.volume("pvc-q", ["n3", "n6"], in_use="n6")  # tie-breaker on n1
        rig.pod("db-0", "n1", [db])
        with FencingService(rig, grace=600.0, lease=2.0) as fencing, extender(rig) as http:
            rig.emu.split(["n1", "n2", "n3"])
            fencing.wait(lambda: fencing.metric("linstor_scheduler_fencing_storm_active") == 1.0, "the storm breaker")
            wait_for(lambda: (r := record(rig)) is not None and r.nodes == {}, timeout=10, what="a record of no node")
            for claim in (db, web):
                assert failed(http, k.pod("p", claims=[claim], scheduler="linstor")) == {}


# --- 4. every renewal of fencing's Lease rebuilds the whole Kubernetes view ------------------------------
def kube_rebuilds(http: httpx.Client) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(http.get("/metrics").text):
        for s in family.samples:
            if s.name == "linstor_scheduler_sync_total" and s.labels == {"source": "kubernetes", "outcome": "ok"}:
                return s.value
    return 0.0


def test_renewals_of_fencings_lease_that_name_the_same_nodes_rebuild_nothing():
    """Fencing's leader renews its Lease every third of --lease-duration (lease.py
    ``elector_from_args``), each renewal with a record of a new ``observed`` time
    (``_publish_grace`` on every fresh read). The nodes named did not change: nothing the extender
    uses did, and a rebuild of its whole Kubernetes view (copies of every store, the view compared,
    a state built) every few seconds is the cost docs/performance.md rules out ("a change to a field
    nobody keeps is no change"). Found rebuilding at every renewal; fixed: the Lease wakes a rebuild
    only when the nodes it names differ from the view's (``Syncer.lost_changed``)."""
    with Rig() as rig:
        rig.volume("pvc-db", ["n1", "n2"], in_use="n1")
        with FencingService(rig, grace=600.0, lease=2.0), extender(rig, max_age=30.0) as http:
            wait_for(lambda: record(rig) is not None, what="fencing's record")
            before_rv = rig.ks.get("Lease", LEASE_NAME, LEASE_NS)["metadata"]["resourceVersion"]
            before = kube_rebuilds(http)
            wait_for(lambda: int(rig.ks.get("Lease", LEASE_NAME, LEASE_NS)["metadata"]["resourceVersion"])
                     >= int(before_rv) + 4, timeout=10, what="four renewals of fencing's Lease")
            assert record(rig).nodes == {}
            assert kube_rebuilds(http) - before <= 1  # nothing the extender uses changed
