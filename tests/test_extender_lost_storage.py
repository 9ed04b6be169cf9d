"""The extender keeps pods with LINSTOR volumes off nodes whose storage fencing judges lost (issue 20,
item 6), from the record fencing's leader publishes on its Lease, over real HTTP: the LINSTOR emulator
and the API stand-in, fencing as deployed (``FencingService``: its Lease, its passes on the real clock)
and the live extender, asked as kube-scheduler asks.

The case it is for: n1 is cut from its DRBD peers but its satellite stays ONLINE and its kubelet Ready,
so neither LINSTOR's node list nor the Node object says anything is wrong (the extender alone would
pass n1), and with the taint off by default nothing else keeps the replacement pod off n1. Most of the
matrix is where the right answer is to filter nothing: nothing lost, a pod without LINSTOR volumes,
the link back, fencing's leader gone (its record ages out), a record from a clock gone wrong.
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
LEASE = "kube-system/linstor-scheduler-fencing"  # FencingService's (--lease-namespace kube-system)
MAX_AGE = 3.0


@contextlib.contextmanager
def extender(rig: Rig, max_age: float = MAX_AGE) -> Iterator[httpx.Client]:
    """The live extender on the rig's doubles, reading fencing's Lease (``--fencing-lease``)."""
    client = LinstorClient(rig.emu_url, timeout=2.0, retries=1)
    app = build_live_app(client, rig.ks.api_client(rig.ks_url), poll_interval=0.2, max_staleness=5.0,
                         use_events=False, fencing_lease=LEASE, fencing_record_max_age=max_age)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        wait_for(lambda: http.get("/readyz").status_code == 200, what="the extender's first full sync")
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
