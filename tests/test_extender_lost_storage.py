"""The extender keeps pods with LINSTOR volumes off nodes whose storage fencing judges lost (issue 20,
item 6), from the record fencing's leader publishes on its Lease, over real HTTP: the LINSTOR emulator
and the API stand-in, fencing as deployed (``FencingService``: its Lease, its passes on the real clock)
and the live extender, asked as kube-scheduler asks.

The case it is for: n1 is cut from its DRBD peers but its satellite stays ONLINE and its kubelet Ready,
so neither LINSTOR's node list nor the Node object says anything is wrong (the extender alone would
pass n1), and with the taint off by default nothing else keeps the replacement pod off n1. Most of the
matrix is where the right answer is to filter nothing: nothing lost, a pod without LINSTOR volumes,
the link back, fencing's leader gone (its record ages out), a record from a clock gone wrong; then
fencing's Lease unreadable, deleted or renewed, a fault of one resource, and a storm (nothing refused
on fencing's word while its breaker holds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from linstor_scheduler import lost_storage
from linstor_scheduler.cli import build_parser
from linstor_scheduler.config import ConfigError
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.linstor import LinstorClient
from scheduler_extender.scoring import LOST_STORAGE
from scheduler_extender.wiring import build_live_app, fencing_lease

from .fencing_rig import FencingService, Rig, k
from .waiting import wait_for

NAMES = ["n1", "n2", "n3", "n4", "n5", "n6"]
LEASE_NS, LEASE_NAME = "kube-system", "linstor-scheduler-fencing"
LEASE = f"{LEASE_NS}/{LEASE_NAME}"  # FencingService's (--lease-namespace kube-system)
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"
MAX_AGE = 3.0


@contextlib.contextmanager
def extender(rig: Rig, max_age: float = MAX_AGE, ready: bool = True) -> Iterator[httpx.Client]:
    """The live extender on the rig's doubles, reading fencing's Lease (``--fencing-lease``); with
    ``ready``, once its first full sync is done."""
    client = LinstorClient(rig.emu_url, timeout=2.0, retries=1)
    app = build_live_app(client, rig.ks.api_client(rig.ks_url), poll_interval=0.2, max_staleness=5.0,
                         use_events=False, fencing_lease=LEASE, fencing_record_max_age=max_age)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        if ready:
            wait_for(lambda: http.get("/readyz").status_code == 200, timeout=15, what="the extender's first full sync")
        yield http


def failed(http: httpx.Client, pod: dict[str, Any]) -> dict[str, str]:
    """``/filter`` as kube-scheduler calls it (nodeCacheCapable: names only): the nodes it refused.
    A lost node is in FailedAndUnresolvableNodes (preempting pods there would not bring its storage
    back, so kube-scheduler must not try), never in FailedNodes, and never also among NodeNames."""
    r = http.post("/filter", json={"Pod": pod, "NodeNames": NAMES})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body.get("Error"), body
    unresolvable = body.get("FailedAndUnresolvableNodes") or {}
    assert not set(unresolvable) & set(body.get("FailedNodes") or {}), body
    assert not set(unresolvable) & set(body.get("NodeNames") or []), body
    return {**(body.get("FailedNodes") or {}), **unresolvable}



def filter_failed(http: httpx.Client, pod: dict[str, Any]) -> dict[str, str]:
    """``/filter``'s refused nodes, FailedNodes and FailedAndUnresolvableNodes together, without
    ``failed``'s checks of which list each node is in."""
    r = http.post("/filter", json={"Pod": pod, "NodeNames": NAMES})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body.get("Error"), body
    return {**(body.get("FailedNodes") or {}), **(body.get("FailedAndUnresolvableNodes") or {})}

def record(rig: Rig) -> lost_storage.LostStorage | None:
    lease = rig.ks.get("Lease", "linstor-scheduler-fencing", "kube-system")
    return lost_storage.read_record(lease) if lease else None


@pytest.fixture
def cluster():
    """db-0 runs on n1 (its volume diskful on n1 and n2, a tie-breaker on n3); fencing leads with a
    grace long enough that it acts on nothing here; the replacement pod db-1 waits for a node."""
    with Rig() as rig:
        claim = rig.volume("pvc-db", ["n1", "n2"], in_use="n1")
        rig.pod("db-0", "n1", [claim])
        with FencingService(rig, grace=600.0, lease=2.0) as fencing:
            yield rig, fencing, k.pod("db-1", claims=[claim], scheduler="linstor"), k.pod("web-0", scheduler="linstor")


def test_nothing_lost_filters_nothing(cluster):
    rig, _, pod, _ = cluster
    wait_for(lambda: record(rig) is not None, what="fencing's first record on its Lease")
    with extender(rig) as http:
        assert "n1" not in failed(http, pod)
        assert record(rig).nodes == {}


def test_a_node_cut_from_its_peers_is_filtered_for_linstor_pods_only_and_back_when_the_link_is(cluster):
    rig, _, pod, web = cluster
    with extender(rig) as http:
        rig.partition("n1")  # the replication network of n1 goes down; LINSTOR and kubelet still reach it
        wait_for(lambda: "n1" in failed(http, pod), timeout=15, what="n1 filtered for the LINSTOR pod")
        reason = failed(http, pod)["n1"]
        assert reason == LOST_STORAGE.replace("{node}", "n1")
        assert "n2" not in failed(http, pod)  # the other diskful replica's node still serves
        assert failed(http, web) == {}  # a pod without LINSTOR volumes goes anywhere
        rig.partition("n1", cut=False)  # the link is back
        wait_for(lambda: "n1" not in failed(http, pod), timeout=15, what="n1 admitted again")


def test_the_record_of_a_leader_that_is_gone_ages_out(cluster):
    rig, fencing, pod, _ = cluster
    with extender(rig) as http:
        rig.partition("n1")
        wait_for(lambda: "n1" in failed(http, pod), timeout=15, what="n1 filtered")
        fencing.__exit__()  # fencing's only replica ends (its node drained): nobody renews the record
        left = record(rig)
        assert left is not None and "n1" in left.nodes  # the record stays on the Lease ...
        # ... and is trusted no longer past --fencing-record-max-age: the extender's own view decides
        # (satellite ONLINE, so n1 passes, as it did before fencing existed)
        wait_for(lambda: "n1" not in failed(http, pod), timeout=MAX_AGE + 10, what="the record aged out")


def test_records_it_cannot_trust_name_no_node():
    observed = 1_000_000.0
    text = orjson.dumps({"observed": observed, "nodes": {"n1": {"since": observed - 5, "faults": "x"}}}).decode()
    rec = lost_storage.parse(text)
    assert rec is not None and lost_storage.lost_nodes(rec, observed + 1, 60) == {"n1"}
    assert lost_storage.lost_nodes(rec, observed + 61, 60) == frozenset()  # too old
    assert lost_storage.lost_nodes(rec, observed - 61, 60) == frozenset()  # from the future: a clock wrong
    for garbled in ("", "{", '{"nodes": {}}', '{"observed": "soon"}', '{"observed": 1, "nodes": {"n1": 3}}'):
        assert lost_storage.lost_nodes(lost_storage.parse(garbled), observed, 60) == frozenset()


@pytest.mark.parametrize(("value", "expected"), [
    ("linstor-scheduler-fencing", "linstor-scheduler/linstor-scheduler-fencing"),
    ("storage/fence", "storage/fence"),
    ("", None),
])
def test_fencing_lease_flag(value, expected):
    args = build_parser().parse_args(["extender", "--fencing-lease", value])
    assert fencing_lease(args) == expected


def test_a_fencing_lease_that_cannot_be_a_lease_is_refused_naming_the_flag():
    args = build_parser().parse_args(["extender", "--fencing-lease", "Fencing_Lease"])
    with pytest.raises(ConfigError, match="--fencing-lease"):
        fencing_lease(args)


def test_the_record_names_the_lost_resources_of_a_node_lost_in_part_only():
    """handover.record, as fencing's leader writes it: a node where every replica that can be
    witnessed is lost names no resources (lost whole); one where fewer are names them, up to
    lost_storage.LISTED_MAX (more: read as whole, the careful reading); an older record without
    replica counts names none."""
    from fencing.handover import record as write

    since = {("r1", "n1"): 10.0, ("r1", "n2"): 10.0, ("r2", "n2"): 11.0,
             **{(f"x{i}", "n3"): 12.0 for i in range(lost_storage.LISTED_MAX + 1)}}
    replicas = {"n1": 1, "n2": 5, "n3": 1000}
    rec = lost_storage.parse(write(since, 20.0, 1_000_020.0, replicas=replicas))
    assert rec is not None and set(rec.nodes) == {"n1", "n2", "n3"}
    assert rec.resources == {"n2": frozenset({"r1", "r2"})}
    lost = lost_storage.lost_now(rec, 1_000_021.0, 60)
    assert lost.nodes == {"n1", "n3"} and lost.replicas == {("r1", "n2"), ("r2", "n2")}
    assert lost_storage.lost_now(lost_storage.parse(write(since, 20.0, 1_000_020.0)), 1_000_021.0, 60).nodes == \
        {"n1", "n2", "n3"}


# --- a fault of one resource keeps every LINSTOR pod off the node ---------------------------------
def test_one_resource_cut_on_a_node_does_not_keep_a_healthy_volumes_pod_off_it():
    """One resource's DRBD connection down on n1 (LINSTOR gives each resource its own TCP port,
    TcpPortAutoRange: a firewall rule on one port; or a split brain that leaves that one resource
    StandAlone until resolved by hand, DRBD User's Guide, "Split brain notification and automatic
    recovery"). Fencing judges storage per (resource, node) (fencing/verdict.py judge_volume), and
    its record names the lost resources of a node not lost whole: n1 is refused to pvc-logs' pods
    only; db's replica there is UpToDate and connected, and n1 serves db-1 as it did db-0 (a record
    kept per node would refuse n1 to every pod)."""
    with Rig() as rig:
        db = rig.volume("pvc-db", ["n1", "n2"], in_use="n1")
        rig.pod("db-0", "n1", [db])
        logs = rig.volume("pvc-logs", ["n1", "n4"], in_use="n4")  # its tie-breaker on n2
        with FencingService(rig, grace=600.0, lease=2.0), extender(rig) as http:
            rig.emu.cut_peers("n1", resource="pvc-logs")  # pvc-logs' port on n1 blocked; pvc-db untouched
            wait_for(lambda: "n1" in (record(rig) or lost_storage.LostStorage(0, {})).nodes, timeout=15,
                     what="fencing records n1 (for pvc-logs)")
            logs_pod = k.pod("logs-1", claims=[logs], scheduler="linstor")
            wait_for(lambda: "n1" in filter_failed(http, logs_pod), timeout=15, what="n1 refused to pvc-logs' pod")
            assert "fencing judges the storage of its replica on node n1 lost" in filter_failed(http, logs_pod)["n1"]
            assert record(rig).resources == {"n1": frozenset({"pvc-logs"})}
            # db's replica on n1 is UpToDate and connected to n2 and n3: n1 serves db-1 as it did db-0
            assert "n1" not in filter_failed(http, k.pod("db-1", claims=[db], scheduler="linstor"))


# --- fencing's Lease unreadable: the whole extender goes neutral ------------------------------------
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
            refused = filter_failed(http, k.pod("db-1", claims=[db], scheduler="linstor"))
            assert "n5" in refused and "OFFLINE" in refused["n5"], refused
            assert "n1" not in refused  # nothing on fencing's word
            assert "fencing's record unread" in http.get("/readyz").text  # said, not hidden


# --- what holds: the Lease deleted, a new fencing leader, prioritize agreeing with filter -----------
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
                wait_for(lambda: "n1" in filter_failed(http, pod), timeout=15, what="n1 refused")
                ranked = scores(http, pod)
                assert ranked["n1"] == min(ranked.values()) and ranked["n2"] > ranked["n1"], ranked
            assert rig.ks.delete("Lease", LEASE_NAME, LEASE_NS) is not None
            wait_for(lambda: "n1" not in filter_failed(http, pod), timeout=10,
                     what="n1 admitted once the Lease is gone")
            with FencingService(rig, grace=600.0, lease=2.0):
                wait_for(lambda: "n1" in filter_failed(http, pod), timeout=15,
                         what="n1 refused on the new leader's word")


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
                assert filter_failed(http, k.pod("p", claims=[claim], scheduler="linstor")) == {}


# --- every renewal of fencing's Lease rebuilds the whole Kubernetes view ------------------------------
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
