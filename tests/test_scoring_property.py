"""judge_many's shortcut (nodes without a replica judged once per class) gives exactly what judging
every node alone gives, on generated clusters: a topology level, label or node state the class key
forgets would show here as two nodes with one verdict; so would a pod's node set (a fromSame rule on a
rack, which is no level of ours; a PV's node affinity) left out of the key, which only clusters whose
nodes share a zone and region and differ in rack show (``bound_only``: judging a claim by free space
turns the grouping off, so those pods have bound claims only). Pods carry up to three unbound claims, often
on one pool: the per-node fast path must sum them per (node, pool) as judge_node does, and a node
that passes holds them all."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit import kube_objects as k
from linstor_scheduler.volumes import resolve_pod_claims
from scheduler_extender.grouping import judge_many, node_class
from scheduler_extender.reservations import promised_state
from scheduler_extender.scoring import NodeVerdict, Weights, all_node_names, judge_node, prepare
from scheduler_extender.state import ClusterState

from .cluster import build, lnode, lpool, lres

NAMES = [f"n{i}" for i in range(7)]
RACK = "example.com/rack"
CLASSES = {
    "r2": dict(remote=True),
    "local": dict(remote=False),
    "zonal": dict(remote=[{"fromSame": ["topology.kubernetes.io/zone"]}]),
    "racked": dict(remote=[{"fromSame": [RACK]}]),
    "anypool": dict(pool=None, remote=True),
    "strictpool": dict(remote=False, pool="fastdata"),
}
REPLICA_STATES = ["UpToDate", "UpToDate", "Inconsistent", "Outdated", "Failed", "Diskless"]


@st.composite
def clusters(draw: Any, several_unbound: bool = False, bound_only: bool = False) -> tuple[ClusterState, dict[str, Any]]:
    """A cluster and a pod; ``several_unbound``: the pod has two or three unbound claims, mostly of
    classes that name a pool and forbid remote access (their sum must fit the node's pool);
    ``bound_only``: none (an unbound claim judged by free space turns the shortcut off, so only these
    pods group nodes and test the class key and the pod's node sets)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=5 if bound_only else 4, max_size=len(NAMES), unique=True))
    nodes, pools, kube = [], [], [k.storage_class(n, **kw) for n, kw in CLASSES.items()]
    for name in names:
        kind = draw(st.sampled_from(["ONLINE", "ONLINE", "ONLINE", "OFFLINE", "EVACUATE", "CONTROLLER", "none"]
                                    + ["ONLINE"] * 8 * bound_only))  # a node problem masks the node sets
        if kind != "none":
            nodes.append(lnode(name, "OFFLINE" if kind == "OFFLINE" else "ONLINE",
                               type="CONTROLLER" if kind == "CONTROLLER" else "SATELLITE",
                               flags=["EVACUATE"] if kind == "EVACUATE" else None))
        for pool in draw(st.lists(st.sampled_from(["thindata", "fastdata"]), unique=True, max_size=2)):
            pools.append(lpool(name, pool, free_gib=draw(st.sampled_from([None, 0, 5, 50, 400]))))
        if bound_only or draw(st.integers(0, 5)):  # most nodes are Kubernetes nodes too
            # racks vary within a zone (a rack is no level of ours, so nodes of one class differ in it
            # and only a fromSame rule's node set tells them apart)
            labels = {RACK: draw(st.sampled_from(["r1", "r2"]))} if draw(st.integers(0, 3)) else {}
            # (only a pod with bound claims alone groups nodes: there, most nodes share a zone and region)
            zones, regions = (["a"] * 4 + ["b"], ["eu"] * 4 + ["us"]) if bound_only else \
                (["a", "a", "b", None], ["eu", "eu", "us", None])
            kube.append(k.node(name, zone=draw(st.sampled_from(zones)), region=draw(st.sampled_from(regions)),
                               labels=labels))
    resources, claims = [], []
    for r in range(draw(st.integers(1, 2 if bound_only else 3))):
        holders = draw(st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=2 if bound_only else 3))
        for node in holders:
            state = draw(st.sampled_from(REPLICA_STATES))
            resources.append(lres(f"pvc-{r}", node, diskless=state == "Diskless",
                                  disk_state=None if state == "Diskless" else state,
                                  done=draw(st.sampled_from([None, 30.0])) if state == "Inconsistent" else None))
        affinity = draw(st.one_of(st.none(), st.lists(st.sampled_from(names), unique=True, max_size=3)))
        kube += k.bound_volume(f"c-{r}", f"pvc-{r}", storage_class=draw(st.sampled_from(["r2", "racked", *CLASSES])),
                               size=draw(st.sampled_from(["1Gi", "10Gi", "100Gi"])), affinity_nodes=affinity)
        claims.append(f"c-{r}")
    unbound_classes = ["local", "local", "strictpool", "anypool"] if several_unbound else sorted(CLASSES)
    unbound_sizes = ["1Gi", "30Gi"] if several_unbound else ["1Gi", "20Gi", "1000Gi"]  # 30 + 30 GiB > 50 free
    for u in range(0 if bound_only else draw(st.integers(2, 3) if several_unbound else st.integers(0, 2))):
        # unbound WaitForFirstConsumer claims: judged by free space
        kube.append(k.pvc(f"u-{u}", storage_class=draw(st.sampled_from(unbound_classes)),
                          size=draw(st.sampled_from(unbound_sizes))))
        claims.append(f"u-{u}")
    kube.append(k.pvc("c-missing", storage_class="r2", volume="pvc-not-in-linstor"))
    kube.append(k.pv("pvc-not-in-linstor", claim=("default", "c-missing"), storage_class="r2"))
    claims.append("c-missing")
    if several_unbound:  # every unbound claim, several on one pool (30 + 30 GiB do not fit 50), and maybe a bound one
        picked = [c for c in claims if c.startswith("u-")]
        picked += draw(st.lists(st.sampled_from([c for c in claims if c not in picked]), unique=True, max_size=1))
    else:
        judged = [c for c in claims if c != "c-missing"] if bound_only else claims  # not judged: no sets
        picked = draw(st.lists(st.sampled_from(judged), unique=True, min_size=1, max_size=3))
    held: dict[str, dict[str, int]] = {}  # capacity promised to other claims (reservations.py)
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=3)):
        held.setdefault(draw(st.sampled_from(["thindata", "fastdata"])), {})[name] = \
            draw(st.sampled_from([1, 30, 500])) * 1024**3
    state = build(nodes, pools, resources, kube)
    lost = frozenset(draw(st.lists(st.sampled_from(names), unique=True, max_size=2)))  # fencing's record
    # replicas lost on nodes not lost whole; some on nodes the index lists no replica of (a record
    # ahead of the index)
    lost_replicas = frozenset(draw(st.lists(st.tuples(st.sampled_from([f"pvc-{r}" for r in range(3)]),
                                                      st.sampled_from(names)), unique=True, max_size=3)))
    state = dataclasses.replace(state, kube=dataclasses.replace(state.kube, lost=lost, lost_replicas=lost_replicas))
    return promised_state(state, held), k.pod("p", claims=picked)


def seen(name: str, verdict: NodeVerdict) -> tuple[Any, ...]:
    """Everything a verdict tells kube-scheduler and a person (reasons rendered for the node)."""
    return (verdict.fits, verdict.score, verdict.reasons(name),
            [(v.fits, v.score, v.judged) for v in verdict.volumes])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(clusters(), clusters(several_unbound=True), clusters(bound_only=True)),
       st.sampled_from([Weights(), Weights.parse("same_zone=9,same_region=0,remote=0")]))
def test_judge_many_equals_judging_each_node(cluster, weights):
    state, pod = cluster
    claims = [c for c in resolve_pod_claims(pod, state.get_pvc, state.get_pv, state.get_sc) if c.is_linstor]
    contexts = prepare(claims, [state.resources.get(c.resource) if c.resource else None for c in claims], state)
    names = [*all_node_names(state), "not-a-node"]
    ids: dict[Any, int] = {}
    classes = {n: ids.setdefault(node_class(n, state), len(ids)) for n in all_node_names(state)}
    many = judge_many(names, contexts, state, weights, classes)
    assert list(many) == names
    assert {n: seen(n, v) for n, v in many.items()} == {n: seen(n, judge_node(n, contexts, state, weights))
                                                        for n in names}


STRICT_POOL = {"local": "thindata", "strictpool": "fastdata"}  # no remote access: the volume is made on the node


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(several_unbound=True))
def test_a_node_that_passes_holds_every_unbound_claim_of_the_pod_on_its_pool(cluster):
    """VolumeBinding puts every claim of a pod on the node it chooses: a node the filter passes must
    have room, on each pool, for the sum of the pod's strict unbound claims there (after holds)."""
    state, pod = cluster
    claims = [c for c in resolve_pod_claims(pod, state.get_pvc, state.get_pv, state.get_sc) if c.is_linstor]
    contexts = prepare(claims, [state.resources.get(c.resource) if c.resource else None for c in claims], state)
    names = all_node_names(state)
    ids: dict[Any, int] = {}
    classes = {n: ids.setdefault(node_class(n, state), len(ids)) for n in names}
    for name, verdict in judge_many(names, contexts, state, Weights(), classes).items():
        node = state.nodes.get(name)
        if not verdict.fits or node is None:
            continue
        wanted: dict[str, int] = {}
        for ctx in contexts:
            sc = ctx.claim.storage_class
            if ctx.claim.bound or ctx.unjudged is not None or sc is None or sc.name not in STRICT_POOL:
                continue
            wanted[sc.storage_pool] = wanted.get(sc.storage_pool, 0) + (ctx.claim.size_bytes or 0) // 1024
        for pool, kib in wanted.items():
            free = node.pools[pool].free_kib
            if free is None:
                continue  # unknown free space is no reason to refuse
            free -= state.held.get(pool, {}).get(name, 0) // 1024
            assert kib <= max(0, free), f"{name} passed with {kib} KiB of the pod's claims on {pool}, {free} free"
