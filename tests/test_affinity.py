"""PV node affinity against LINSTOR (locality/affinity.py): the affinity CSI would write now, the stale
verdict, the ``affinity`` report from a snapshot and from the live cluster, the exporter's metric."""

from __future__ import annotations

import json

import pytest
import yaml

from devkit import kube_objects as k
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.claims import selector, volume_record
from linstor_scheduler.cli import main
from linstor_scheduler.volumes import RemoteAccess, StorageClassInfo, parse_remote_access
from locality.affinity import (
    HOSTNAME_KEY,
    admits,
    judge,
    node_affinity,
    policy_of,
    report_from_doc,
    segments,
    stale_counts,
    wanted_terms,
)

ZONE = "topology.kubernetes.io/zone"
SEGS = {n: segments(n, {"Aux/" + ZONE: z, "Other/x": "y"}) for n, z in (("n1", "a"), ("n2", "a"), ("n3", "b"))}
LOCAL_ONLY, ANYWHERE = RemoteAccess(False), RemoteAccess(True)
SAME_ZONE = parse_remote_access(f"- fromSame: [{ZONE}]")


def csi_pv(name: str, nodes: list[str], policy: RemoteAccess = LOCAL_ONLY, **kw) -> dict:
    """A PV as CSI provisions it while its replicas are on ``nodes``."""
    obj = k.pv(name, **kw)
    affinity = node_affinity(wanted_terms(policy, nodes, SEGS))
    if affinity:
        obj["spec"]["nodeAffinity"] = affinity
    return obj


def test_segments_are_aux_props_without_the_prefix_and_the_hostname():
    assert SEGS["n1"] == {ZONE: "a", HOSTNAME_KEY: "n1"}


@pytest.mark.parametrize("policy,want", [
    (LOCAL_ONLY, [[(HOSTNAME_KEY, "n1")], [(HOSTNAME_KEY, "n3")]]),
    (SAME_ZONE, [[(ZONE, "a")], [(ZONE, "b")]]),
    (ANYWHERE, None),
])
def test_the_affinity_csi_would_write(policy, want):
    terms = wanted_terms(policy, ["n3", "n1"], SEGS)
    assert (None if terms is None else [sorted(t) for t in terms]) == want


def test_a_same_zone_rule_keeps_one_term_per_zone_and_a_missing_key_means_anywhere():
    assert [sorted(t) for t in wanted_terms(SAME_ZONE, ["n1", "n2"], SEGS)] == [[(ZONE, "a")]]
    assert wanted_terms(SAME_ZONE, ["n9"], {"n9": {HOSTNAME_KEY: "n9"}}) is None  # linstor-csi: empty segment


def test_node_affinity_has_the_shape_replace_pv_writes():
    assert node_affinity(wanted_terms(LOCAL_ONLY, ["n1"], SEGS)) == {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": HOSTNAME_KEY, "operator": "In", "values": ["n1"]}]}]}}


def verdict(pv: dict, diskful, policy=LOCAL_ONLY):
    return judge(volume_record(pv), diskful=diskful, node_segments=SEGS, policy=policy, policy_source="test")


def test_in_step_stale_and_merely_different():
    assert verdict(csi_pv("pvc-1", ["n1", "n2"]), {"n1", "n2"}).reason == "in step"
    moved = verdict(csi_pv("pvc-1", ["n1", "n2"]), {"n2", "n3"})  # n1 evacuated to n3
    assert moved.stale and moved.reason == "excludes n3, which hold(s) a diskful replica"
    gone = verdict(csi_pv("pvc-1", ["n1"]), {"n3"})
    assert gone.stale and gone.reason.startswith("admits only nodes without a diskful replica")
    extra = verdict(csi_pv("pvc-1", ["n1", "n2"]), {"n2"})  # a replica dropped: n1 still admitted
    assert not extra.stale and extra.differs and extra.judged


def test_zone_policy_judged_by_zone_and_anywhere_needs_no_affinity():
    pv = csi_pv("pvc-1", ["n1"], SAME_ZONE)  # zone a
    assert not verdict(pv, {"n2"}, SAME_ZONE).stale  # n2 is in zone a too
    assert verdict(pv, {"n3"}, SAME_ZONE).stale
    assert not verdict(csi_pv("pvc-1", ["n1"], ANYWHERE), {"n3"}, ANYWHERE).stale
    pinned = verdict(csi_pv("pvc-1", ["n1"]), {"n3"}, ANYWHERE)
    assert pinned.stale and pinned.want is None  # the fix removes the affinity


def test_not_judged_without_replicas_policy_or_our_driver():
    assert not verdict(csi_pv("pvc-1", ["n1"]), None).judged
    assert not verdict(csi_pv("pvc-1", ["n1"]), set()).judged
    assert not verdict(csi_pv("pvc-1", ["n1"]), {"n3"}, None).judged
    assert verdict(k.pv("nfs-1", driver="nfs.csi.k8s.io"), {"n1"}) is None


def test_policy_from_the_class_else_the_volume_context():
    sc = StorageClassInfo.from_object(k.storage_class("r2", remote=False))
    assert policy_of(sc, None) == (RemoteAccess(False), "StorageClass r2")
    pv = k.pv("pvc-1")
    pv["spec"]["csi"]["volumeAttributes"].update({"linstor.csi.linbit.com/uses-volume-context": "true",
                                                  "linstor.csi.linbit.com/remote-access-policy": "false"})
    record = volume_record(pv)
    assert policy_of(None, None, record.access_policy) == (RemoteAccess(False), "the PV's volume context")
    assert policy_of(None, None, volume_record(k.pv("pvc-2")).access_policy)[0] is None


def test_admits_follows_kube_schedulers_rules():
    sel = selector({"nodeSelectorTerms": [{"matchExpressions": [{"key": ZONE, "operator": "NotIn", "values": ["b"]}]},
                                          {"matchFields": [{"key": "metadata.name", "operator": "In",
                                                            "values": ["n3"]}]}]})
    assert admits(sel, SEGS["n1"], "n1") and admits(sel, SEGS["n3"], "n3")
    assert not admits(selector({"nodeSelectorTerms": [{}]}), SEGS["n1"], "n1")  # an empty term matches nothing
    assert admits(None, {}, "any")


# --- over a cluster: the emulator and the API stand-in ------------------------------------------------


def cluster(replicas: tuple[str, ...] = ("n2", "n3")) -> tuple[LinstorEmulator, list[dict]]:
    """pvc-1 provisioned on n1+n2 (strict class), its replica since moved from n1 to n3; pvc-2 in step."""
    emu = LinstorEmulator()
    for n, z in (("n1", "a"), ("n2", "a"), ("n3", "b")):
        emu.add_node(n, props={"Aux/" + ZONE: z})
        emu.add_storage_pool(n, "thindata")
    for n in replicas:
        emu.add_resource("pvc-1", n)
    for n in ("n1", "n2"):
        emu.add_resource("pvc-2", n)
    kube = [k.storage_class("strict", remote=False), *(k.node(n) for n in ("n1", "n2", "n3")),
            k.pvc("data-1", storage_class="strict", volume="pvc-1"),
            csi_pv("pvc-1", ["n1", "n2"], claim=("default", "data-1"), storage_class="strict"),
            k.pvc("data-2", storage_class="strict", volume="pvc-2"),
            csi_pv("pvc-2", ["n1", "n2"], claim=("default", "data-2"), storage_class="strict")]
    return emu, kube


def test_cli_report_from_a_snapshot(tmp_path, capsys):
    emu, kube = cluster()
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump({"linstor": emu.snapshot(), "kubernetes": {"items": kube}}))
    assert main(["affinity", "--snapshot", str(path), "--output", "json"]) == 1  # 1: something is stale
    report = json.loads(capsys.readouterr().out)
    assert report["summary"] == {"volumes": 2, "stale": 1, "not_judged": 0, "stale_by_class": {"strict": 1}}
    first = report["volumes"][0]
    assert (first["pv"], first["claim"], first["diskful_nodes"]) == ("pvc-1", "default/data-1", ["n2", "n3"])
    assert first["reason"] == "excludes n3, which hold(s) a diskful replica"
    assert first["policy_from"] == "StorageClass strict"
    assert first["wanted_affinity"] == node_affinity(wanted_terms(LOCAL_ONLY, ["n2", "n3"], SEGS))
    assert main(["affinity", "--snapshot", str(path)]) == 1
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "1 of 2 LINSTOR volumes have a stale node affinity"
    assert "pvc-1" in table and "pvc-2" not in table


def test_cli_report_from_the_live_cluster(ks, capsys):
    emu, kube = cluster(("n1", "n2"))
    for obj in kube:
        ks.add(obj)
    with emu.serve() as lsrv:
        argv = ["affinity", "--output", "json", "--controllers", lsrv.url, "--kube-api-url", ks.url]
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["summary"]["stale"] == 0
        emu.remove_resource("pvc-1", "n1")  # evacuated: LINSTOR places the replica on n3
        emu.add_resource("pvc-1", "n3")
        assert main(argv) == 1
        report = json.loads(capsys.readouterr().out)
    assert report["summary"]["stale_by_class"] == {"strict": 1}
    assert report == report_from_doc({"linstor": emu.snapshot(), "kubernetes": {"items": ks.list("Node")
                                      + ks.list("StorageClass") + ks.list("PersistentVolume")
                                      + ks.list("PersistentVolumeClaim")}})


def test_exporter_counts_stale_pvs_per_class_from_its_state():
    from scheduler_extender.snapshot_mode import state_from_snapshot

    emu, kube = cluster()
    state = state_from_snapshot({"linstor": emu.snapshot(), "kubernetes": {"items": kube}}, now=0.0)
    assert stale_counts(state) == {"strict": 1}
    emu2, kube2 = cluster(("n1", "n2"))
    assert stale_counts(state_from_snapshot({"linstor": emu2.snapshot(), "kubernetes": {"items": kube2}},
                                            now=0.0)) == {"strict": 0}


def test_affinity_sync_reads_every_node_selector_operator_as_the_extender_does():
    """One operator rule (``volumes.requirement_holds``): affinity-sync's check of a PV's node
    affinity and the extender's agree for every operator Kubernetes has, ``Gt`` and ``Lt`` too."""
    from linstor_scheduler.claims import selector
    from linstor_scheduler.volumes import node_selector_matches
    from locality.affinity import admits

    labels = {"zone": "a", "gpus": "4"}
    cases = [("zone", "In", ["a"]), ("zone", "NotIn", ["a"]), ("zone", "Exists", []), ("rack", "DoesNotExist", []),
             ("gpus", "Gt", ["2"]), ("gpus", "Lt", ["2"]), ("gpus", "Gt", ["many"]), ("zone", "Bogus", ["a"])]
    for key, op, values in cases:
        raw = {"nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]}
        assert admits(selector(raw), labels, "n1") == node_selector_matches(raw, "n1", labels), (key, op, values)
    gt = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["2"]}]}]}
    assert admits(selector(gt), labels, "n1"), "4 > 2: the node qualifies"
