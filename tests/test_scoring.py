"""Pure placement logic: every score level and filter rule, with the exact reason text."""

from __future__ import annotations

import asyncio
import re

import pytest

from devkit import kube_objects as k
from scheduler_extender.holder import StateHolder
from scheduler_extender.judge import Extender
from scheduler_extender.scoring import Weights, all_node_names
from scheduler_extender.state import LEVELS

from .cluster import standard


def decide(pod: dict, names: list[str] | None = None, weights: Weights | None = None):
    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    ext = Extender(holder, weights=weights)
    names = names or all_node_names(holder.state)
    decision = asyncio.run(ext.decide(pod, names))
    if decision.verdicts is None:
        return decision, {}
    return decision, {n: Named(n, v) for n, v in zip(names, decision.verdicts, strict=True)}


class Named:
    """A verdict with its node name bound, so assertions read naturally."""

    def __init__(self, node, verdict):
        self.node, self.v = node, verdict
        self.fits, self.score, self.volumes = verdict.fits, verdict.score, verdict.volumes

    def reasons(self):
        return self.v.reasons(self.node)

    def failure(self):
        return self.v.failure(self.node)


def test_bound_volume_levels_and_reasons():
    _, v = decide(k.pod("p", claims=["c-a"]))
    expect = {
        "w1": (True, 10, "volume pvc-a: diskful replica on w1 is UpToDate"),
        "w3": (True, 8, "volume pvc-a: diskful replica on w3 is Inconsistent (syncing, 42% done)"),
        "w2": (True, 4, "volume pvc-a: diskless replica already on w2"),
        "w4": (True, 2, "volume pvc-a: no replica on w4; a diskful replica is in its zone b"),
        "w7": (True, 2, "volume pvc-a: no replica on w7; a diskful replica is in its region eu"),
        "w5": (True, 1, "volume pvc-a: no replica on w5; reachable over the network only"),
        "w6": (False, 0, "LINSTOR satellite on node w6 is OFFLINE, not ONLINE"),
        "nosat": (False, 0, "node nosat has no LINSTOR satellite"),
    }
    for node, (fits, score, reason) in expect.items():
        got = v[node]
        assert (got.fits, got.score) == (fits, score), node
        assert (got.failure() if not fits else got.reasons()[0]) == reason


def test_region_level_is_below_zone_before_rounding():
    _, v = decide(k.pod("p", claims=["c-a"]))
    assert v["w7"].volumes[0].score == 1.5 and v["w4"].volumes[0].score == 2


def test_remote_access_forbidden():
    _, v = decide(k.pod("p", claims=["c-local"]))
    assert v["w2"].fits and v["w2"].score == 10
    assert not v["w1"].fits
    assert v["w1"].failure() == (
        "volume pvc-local: no diskful replica on node w1 and its StorageClass forbids remote access")


def test_remote_access_from_same_zone():
    _, v = decide(k.pod("p", claims=["c-zonal"]))
    assert v["w4"].fits and v["w4"].score == 2
    assert not v["w1"].fits
    assert v["w1"].failure() == (
        "volume pvc-zonal: no diskful replica on node w1 and its StorageClass allows remote access only from "
        "nodes with the same topology.kubernetes.io/zone as a diskful replica")


def test_failed_local_disk_falls_back_to_remote_rules():
    _, v = decide(k.pod("p", claims=["c-failed"]))
    assert v["w4"].score == 10
    assert v["w1"].fits and v["w1"].score == 2  # region eu, 1.5 rounded half up
    assert v["w1"].reasons() == ["volume pvc-failed: diskful replica on w1 is Failed; a diskful replica is in "
                                 "its region eu"]


def test_pv_node_affinity():
    _, v = decide(k.pod("p", claims=["c-aff"]))
    assert v["w1"].fits and v["w3"].fits
    assert v["w2"].failure() == "volume pvc-a: node w2 does not match the PersistentVolume's node affinity"


def test_unbound_wffc_claim_scaled_by_free_space():
    _, v = decide(k.pod("p", claims=["c-new"]))
    assert (v["w2"].fits, v["w2"].score) == (True, 7)
    assert (v["w1"].fits, v["w1"].score) == (True, 5)
    assert v["w1"].reasons() == ["claim default/c-new: unbound, storage pool thindata on w1 has 50.0GiB free "
                                 "(claim requests 20.0GiB)"]
    assert (v["w5"].fits, v["w5"].score) == (True, 3)  # free capacity unknown: room assumed, lowest level
    assert v["w3"].failure() == ("claim default/c-new: storage pool thindata on node w3 has 5.0GiB free, the claim "
                                 "requests 20.0GiB and its StorageClass forbids remote access")
    assert v["w4"].failure() == ("claim default/c-new: storage pool thindata is missing on node w4 and its "
                                 "StorageClass forbids remote access")


def test_unbound_claim_with_remote_access_allowed_is_not_filtered():
    _, v = decide(k.pod("p", claims=["c-new-remote"]))
    assert (v["w4"].fits, v["w4"].score) == (True, 1)
    assert v["w4"].reasons() == ["claim default/c-new-remote: unbound; storage pool thindata is missing on node w4; "
                                 "the volume would be reached over the network"]


def test_unbound_claim_without_pool_parameter_uses_any_pool():
    _, v = decide(k.pod("p", claims=["c-any"]))
    assert v["w2"].score == 7 and v["w1"].score == 5
    assert v["w4"].failure() == ("claim default/c-any: any storage pool is missing on node w4 and its "
                                 "StorageClass forbids remote access")


def test_generic_ephemeral_volume_is_judged_from_its_template():
    pod = k.pod("eph", ephemeral={"scratch": k.claim_template("local", "60Gi")})
    _, v = decide(pod)
    assert (v["w2"].fits, v["w2"].score) == (True, 7)
    assert v["w1"].failure() == ("claim default/eph-scratch: storage pool thindata on node w1 has 50.0GiB free, "
                                 "the claim requests 60.0GiB and its StorageClass forbids remote access")


def test_several_volumes_weighted_by_size():
    _, v = decide(k.pod("p", claims=["c-a", "c-local"]))
    # w2: pvc-a diskless (4) x 10Gi + pvc-local UpToDate (10) x 1Gi -> 50/11 = 4.5 -> 5
    assert (v["w2"].fits, v["w2"].score) == (True, 5)
    assert not v["w1"].fits and "pvc-local" in v["w1"].failure() and "pvc-a" not in v["w1"].failure()
    assert len(v["w2"].reasons()) == 2


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        ("c-imm", "claim default/c-imm: not judged, claim is not bound yet and its StorageClass binds immediately"),
        ("c-missing", "claim default/c-missing: not judged, PersistentVolumeClaim default/c-missing not seen yet"),
        ("c-gone", "volume pvc-gone: not judged, resource not known to LINSTOR yet"),
    ],
)
def test_unjudged_claims_pass_every_node_with_zero(claim, reason):
    _, v = decide(k.pod("p", claims=[claim]))
    assert all(x.fits and x.score == 0 for x in v.values())
    assert v["nosat"].reasons() == [reason]


def test_pod_without_linstor_volumes_is_neutral():
    decision, _ = decide(k.pod("p", claims=["c-other"], extra_volumes=[{"name": "tmp", "emptyDir": {}}]))
    assert decision.verdicts is None and decision.neutral_reason == "pod has no LINSTOR volumes"


def test_every_weight_is_in_the_docs_table_with_its_default():
    """Weights and the topology levels are listed once in code (state.LEVELS); the docs follow."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "extender.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\d.]+) \|", doc, re.MULTILINE))
    documented = {name: float(value) for name, value in rows.items()}
    expected = {n: v for n, v in Weights.defaults().items() if not n.startswith("wffc_")}  # one row: 7..3
    assert documented == expected
    assert Weights.parse("same_region=0.5").levels[[lv.name for lv in LEVELS].index("region")] == 0.5


def test_weights_configurable_and_validated():
    _, v = decide(k.pod("p", claims=["c-a"]), weights=Weights.parse("local_syncing=9,remote=0"))
    assert v["w3"].score == 9 and v["w5"].score == 0
    with pytest.raises(ValueError, match="unknown score weight 'bogus'"):
        Weights.parse("bogus=1")
    with pytest.raises(ValueError, match=r"outside 0\.\.10"):
        Weights.parse("remote=11")


def test_evacuating_node_is_filtered():
    from scheduler_extender.scoring import node_problem
    from scheduler_extender.state import index_nodes

    from .cluster import lnode

    info = index_nodes([lnode("w9", flags=["EVACUATE"])], [])["w9"]
    assert node_problem(info) == "LINSTOR node {node} is being evacuated"


def test_a_replica_fencing_judges_lost_keeps_only_its_volume_s_pods_off_that_node():
    """Fencing's record names pvc-r lost on n3 only (one resource's connection cut there): a pod of
    pvc-r is refused n3, judged alone even where the index lists no replica of it (the record can be
    ahead of the index) and never by the verdict of n3's class; a pod of another volume is not."""
    import dataclasses

    from linstor_scheduler.volumes import resolve_pod_claims
    from scheduler_extender.grouping import judge_many, node_class
    from scheduler_extender.scoring import LOST_REPLICA, judge_node, prepare

    from .cluster import build, lnode, lpool, lres

    names = ["n1", "n2", "n3"]
    state = build([lnode(n) for n in names], [lpool(n, free_gib=100) for n in names],
                  [lres("pvc-r", "n1"), lres("pvc-s", "n1")],
                  [*(k.node(n) for n in names), k.storage_class("r2", remote=True),
                   *k.bound_volume("data", "pvc-r", storage_class="r2"),
                   *k.bound_volume("logs", "pvc-s", storage_class="r2")])
    state = dataclasses.replace(state, kube=dataclasses.replace(state.kube, lost_replicas=frozenset({("pvc-r", "n3")})))
    ids: dict = {}
    classes = {n: ids.setdefault(node_class(n, state), len(ids)) for n in names}
    assert classes["n2"] == classes["n3"], "the same class: only the record tells them apart"
    for claim, refused in (("data", {"n3"}), ("logs", set())):
        pod = k.pod("p", claims=[claim])
        claims = [c for c in resolve_pod_claims(pod, state.get_pvc, state.get_pv, state.get_sc) if c.is_linstor]
        contexts = prepare(claims, [state.resources.get(c.resource) for c in claims], state)
        many = judge_many(names, contexts, state, Weights(), classes)
        assert {n for n, v in many.items() if not v.fits} == refused
        assert {n: (v.fits, v.score) for n, v in many.items()} == {
            n: (v.fits, v.score) for n, v in ((n, judge_node(n, contexts, state, Weights())) for n in names)}
    assert many["n3"].fits
    data = prepare([c for c in resolve_pod_claims(k.pod("p", claims=["data"]), state.get_pvc, state.get_pv,
                                                     state.get_sc) if c.is_linstor], [state.resources["pvc-r"]], state)
    assert judge_node("n3", data, state, Weights()).failure("n3") == \
        LOST_REPLICA.replace("{label}", data[0].claim.label).replace("{node}", "n3")
