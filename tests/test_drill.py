"""The failure drill: fencing's verdict and storm rule and the extender's ranking on a failed copy of the
cluster. The do-nothing answers (refusals, the storm breaker, unknown policies) as hard as the removals."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from devkit import kube_objects as k
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.cli import main
from linstor_scheduler.config import ConfigError
from locality.drill import DrillSettings, drill, render_drill_table

LABEL = {"linstor.csi.linbit.com/on-storage-lost": "remove"}
QUORUM = {"DrbdOptions/Resource/quorum": "majority", "DrbdOptions/Resource/on-no-quorum": "suspend-io"}


def cluster(nodes: int = 4, *, labelled: bool = True, quorum: bool = True):  # type: ignore[no-untyped-def]
    """db-0 on n1 (replicas n1, n2; tie-breaker n3), web-0 on n3 (replicas n3, n4), n1..``nodes``."""
    emu = LinstorEmulator()
    kube: list[dict] = [k.storage_class("linstor-thindata-r2")]
    for i in range(1, nodes + 1):
        emu.add_node(f"n{i}")
        emu.add_storage_pool(f"n{i}", "thindata")
        kube.append(k.node(f"n{i}"))
    emu.add_resource("pvc-db", "n1", in_use=True)
    emu.add_resource("pvc-db", "n2")
    emu.add_resource("pvc-db", "n3", diskful=False, flags=["TIE_BREAKER"])
    emu.add_resource("pvc-web", "n3", in_use=True)
    emu.add_resource("pvc-web", "n4")
    for rd in ("pvc-db", "pvc-web"):
        emu.set_rd_props(rd, QUORUM if quorum else {"DrbdOptions/Resource/quorum": "off"})
    kube += k.bound_volume("data-db-0", "pvc-db") + k.bound_volume("data-web-0", "pvc-web")
    for name, node, claim in (("db-0", "n1", "data-db-0"), ("web-0", "n3", "data-web-0")):
        pod = k.pod(name, claims=[claim], node_name=node, labels=LABEL if labelled else {})
        pod["status"] = {"phase": "Running"}
        kube.append(pod)
    return emu, kube


def doc_of(emu: LinstorEmulator, kube: list[dict], *, definitions: bool = True) -> dict:
    linstor = emu.snapshot()
    if definitions:
        linstor["resource_definitions"] = [dict(rd) for rd in emu._rds.values()]
    return json.loads(json.dumps({"linstor": linstor, "kubernetes": {"items": kube}}))  # no shared objects


def test_a_node_failure_removes_its_pod_and_names_where_it_goes():
    result = drill(doc_of(*cluster()), ["n1"])
    assert result["failed_nodes"] == ["n1"] and result["storm"] is False
    db = next(p for p in result["pods"] if p["pod"] == "default/db-0")
    assert db["action"] == "remove" and db["reason"] == "StorageLost"
    assert db["to"][0] == "n2"  # the surviving UpToDate replica, as the extender would rank it
    assert "n1" not in db["to"]
    web = next(p for p in result["pods"] if p["pod"] == "default/web-0")
    assert web["action"] == "none" and web["to"] == []  # its node is fine: nothing happens to it
    assert result["resources_at_risk"] == []  # pvc-db keeps n2 (UpToDate) and quorum (n2 + tie-breaker n3)


def test_losing_every_uptodate_replica_refuses_and_reports_the_resource():
    result = drill(doc_of(*cluster(6)), ["n3", "n4"], DrillSettings(storm_share=0.9))
    web = next(p for p in result["pods"] if p["pod"] == "default/web-0")
    assert web["action"] == "refuse" and web["to"] == []
    assert web["reason"] == "NoPeerWitness"  # both replicas died: no surviving peer can witness the loss
    risk = {r["resource"]: r for r in result["resources_at_risk"]}
    assert risk["pvc-web"] == {"resource": "pvc-web", "up_to_date_left": 0, "quorum": False,
                               "lost_replicas": ["n3", "n4"]}
    assert "pvc-db" not in risk  # only its tie-breaker was on n3: n1 + n2 keep quorum


def test_the_storm_breaker_holds_when_many_storage_nodes_fail_at_once():
    result = drill(doc_of(*cluster()), ["n1", "n4"])  # 2 of the 4 storage nodes
    assert result["storm"] is True and "2 of 4" in result["storm_detail"]
    db = next(p for p in result["pods"] if p["pod"] == "default/db-0")
    assert (db["action"], db["reason"], db["to"]) == ("refuse", "StormBreaker", [])
    assert "WOULD HOLD" in render_drill_table(result)
    calm = drill(doc_of(*cluster()), ["n1", "n4"], DrillSettings(storm_share=0.9))
    assert calm["storm"] is False


def test_without_resource_definitions_the_policy_is_unknown_and_fencing_would_refuse():
    result = drill(doc_of(*cluster(), definitions=False), ["n1"])
    db = next(p for p in result["pods"] if p["pod"] == "default/db-0")
    assert (db["action"], db["reason"]) == ("refuse", "NoQuorumPolicy")
    assert result["notes"] and "resource_definitions" in result["notes"][0]


def test_no_quorum_policy_and_not_opted_in_are_refusals():
    assert next(p for p in drill(doc_of(*cluster(quorum=False)), ["n1"])["pods"]
                if p["pod"] == "default/db-0")["reason"] == "NoQuorumPolicy"
    unlabelled = drill(doc_of(*cluster(labelled=False)), ["n1"])
    assert unlabelled["pods"] == []  # fencing watches labelled pods only
    assert "no pod carries the label" in render_drill_table(unlabelled)


def test_an_unknown_node_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"--fail-node \(or LINSTOR_SCHEDULER_FAIL_NODE\) names n9: no such node"):
        drill(doc_of(*cluster()), ["n9"])


def test_cli_drill_from_a_snapshot(tmp_path, capsys):
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump(doc_of(*cluster())))
    assert main(["drill", "--fail-node", "n1", "--snapshot", str(path), "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"failed_nodes", "storm", "pods", "resources_at_risk"}
    assert next(p for p in out["pods"] if p["pod"] == "default/db-0")["action"] == "remove"
    assert main(["drill", "--fail-node", "n1,n4", "--snapshot", str(path)]) == 0
    assert "WOULD HOLD" in capsys.readouterr().out
    assert main(["drill", "--snapshot", str(path)]) == 2  # a setting to fix
    assert "--fail-node (or LINSTOR_SCHEDULER_FAIL_NODE) is required" in capsys.readouterr().err


def test_cli_drill_on_the_live_cluster_reads_the_quorum_policies(ks, capsys):
    emu, kube = cluster()
    for obj in kube:
        ks.add(obj)
    with emu.serve() as lsrv:
        assert main(["drill", "--fail-node", "n1", "--output", "json", "--controllers", lsrv.url,
                     "--kube-api-url", ks.url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["notes"] == []  # the live read carries the resource definitions
    db = next(p for p in out["pods"] if p["pod"] == "default/db-0")
    assert db["action"] == "remove" and db["to"][0] == "n2"


def test_the_drill_changes_nothing_in_the_snapshot():
    doc = doc_of(*cluster())
    before = json.dumps(doc, sort_keys=True)
    drill(doc, ["n1", "n2"])
    assert json.dumps(doc, sort_keys=True) == before


@pytest.mark.parametrize(("fail", "nodes"), [(["n1"], 4), (["n3"], 4), (["n1", "n4"], 4), (["n3", "n4"], 6)])
def test_the_prediction_matches_what_fencing_decides_after_the_real_failure(ks, fail, nodes):
    """The drill on the healthy cluster vs. fencing's own verdict and storm rule on what the LINSTOR
    emulator (its DRBD model) answers after those nodes really lose power: the same action and reason."""
    from fencing import verdict as fv
    from linstor_scheduler.capture import capture
    from locality.drill import _kube, _view, storm

    emu, kube = cluster(nodes)
    for obj in kube:
        ks.add(obj)
    with emu.serve() as lsrv:
        from linstor_scheduler.linstor.client import LinstorClient

        before = asyncio.run(capture(LinstorClient(lsrv.url), ks.api, scheduler_name=None))
        predicted = drill(before, fail)
        for node in fail:
            emu.power_off(node)
            ks.patch("Node", node, {"status": k.node(node, ready=False)["status"]})
        after = asyncio.run(capture(LinstorClient(lsrv.url), ks.api, scheduler_name=None))
    from linstor_scheduler.snapshot import snapshot_of

    snap = snapshot_of(after, keep_raw=True)
    view, _ = _view(snap)
    from fencing.observe import build_observed, faults

    observed = build_observed(view, _kube(snap.kube_items), {})
    observed = fv.Observed(observed.nodes, observed.resources, observed.pods,
                           {f: 0.0 for f in faults(observed.resources, observed.nodes)})
    sentence, _ = storm(observed, view, 1 / 3)
    assert predicted["storm"] == (sentence is not None)
    actual = {d.pod.key: d for d in fv.judge(observed, 1000.0, 30.0)}
    for row in predicted["pods"]:
        decision = actual[row["pod"]]
        if sentence is not None and decision.verdict == fv.FENCE:
            assert (row["action"], row["reason"]) == ("refuse", "StormBreaker")
        elif decision.verdict == fv.FENCE:
            assert row["action"] == "remove", (row, decision)
        elif decision.verdict == fv.REFUSE or decision.reason in fv.NOTICES:
            assert (row["action"], row["reason"]) == ("refuse", decision.reason), (row, decision)
        else:
            assert row["action"] == "none", (row, decision)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_snapshots_carry_the_policies_and_the_extender_still_reads_them(tmp_path, fmt):
    """The policy inherited from the controller reaches the drill through a file; the extender's
    reader accepts the new keys (a snapshot written by `snapshot` serves `extender --snapshot`)."""
    from linstor_scheduler.snapshot import read_snapshot

    doc = doc_of(*cluster())
    for rd in doc["linstor"]["resource_definitions"]:
        rd["props"] = {}  # the policy only at the controller: inherited
    doc["linstor"]["controller_properties"] = {"DrbdOptions/Resource/quorum": "majority",
                                               "DrbdOptions/Resource/on-no-quorum": "suspend-io"}
    doc["linstor"]["resource_groups"] = [{"name": "DfltRscGrp", "props": {}}]
    path = tmp_path / f"snap.{fmt}"
    path.write_text(yaml.safe_dump(doc) if fmt == "yaml" else json.dumps(doc))
    assert read_snapshot(path).resource_items == 5
    result = drill(read_snapshot(path, keep_raw=True), ["n1"])
    assert next(p for p in result["pods"] if p["pod"] == "default/db-0")["action"] == "remove"
    doc["linstor"]["controller_properties"] = {}
    path.write_text(yaml.safe_dump(doc) if fmt == "yaml" else json.dumps(doc))
    refused = drill(read_snapshot(path, keep_raw=True), ["n1"])
    assert next(p for p in refused["pods"] if p["pod"] == "default/db-0")["reason"] == "NoQuorumPolicy"


def test_a_diskless_client_breaks_the_tie_so_the_standard_fail_over_is_predicted():
    """Diskful replicas on n1 (the pod's, Primary) and n2, a diskless client replica on n3 (not
    LINSTOR's TIE_BREAKER): n1 loses power. DRBD's voters are n1 and n2; n2 is 1 of 2, and the
    connected diskless n3 breaks the tie (drbd9-tests tests/quorum-tiebreaker, case 3: the secondary
    keeps quorum): n2 may promote, fencing would act."""
    emu, kube = cluster()
    emu.remove_resource("pvc-db", "n3")
    emu.add_resource("pvc-db", "n3", diskful=False)  # a client: no TIE_BREAKER flag
    result = drill(doc_of(emu, kube), ["n1"])
    db = next(p for p in result["pods"] if p["pod"] == "default/db-0")
    assert (db["action"], db["reason"], db["to"][0]) == ("remove", "StorageLost", "n2")
    assert result["resources_at_risk"] == []
    emu.remove_resource("pvc-db", "n3")  # no diskless peer at all: 1 of 2 voters, nothing breaks the tie
    result = drill(doc_of(emu, kube), ["n1"])
    db = next(p for p in result["pods"] if p["pod"] == "default/db-0")
    assert (db["action"], db["reason"]) == ("refuse", "NoPromotableReplica")
    assert [r["resource"] for r in result["resources_at_risk"] if not r["quorum"]] == ["pvc-db"]


def test_cli_drill_of_a_node_cut_from_its_peers(tmp_path, capsys):
    """``--cut-node n1``: n1's replication network is down, LINSTOR and its kubelet still reach it. Its
    replica reports every peer down, the peers report it down: fencing would evict db-0 (Node Ready)
    and send it to n2, which keeps quorum with the tie-breaker n3. ``--cut-node n1,n3``: n1 and n3
    still talk, so n1 is not alone and nothing is lost: nothing happens."""
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump(doc_of(*cluster())))
    assert main(["drill", "--cut-node", "n1", "--snapshot", str(path), "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["failed_nodes"], out["cut_nodes"]) == ([], ["n1"])
    db = next(p for p in out["pods"] if p["pod"] == "default/db-0")
    assert (db["action"], db["to"][0]) == ("remove", "n2") and "evict" in db["detail"]
    assert main(["drill", "--cut-node", "n1,n3", "--snapshot", str(path)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("drill: n1, n3 cut from the other nodes (replication network); grace period 30s over")
    assert "db-0" in table and "remove" not in table
