"""Locality: the pure classification, the report (CLI, snapshot and live), the exporter over real HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time

import httpx
import pytest
import yaml

from devkit import kube_objects as k
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.cli import main
from linstor_scheduler.kube.lease import AlwaysLeader, LeaderElector
from linstor_scheduler.linstor.client import LinstorClient
from locality.classify import DISKLESS, LOCAL, LOCAL_SYNCING, NONE, UNKNOWN, classify_volume, summarize
from locality.pods import EXPORTER_TRANSFORMS, PodRecord, locate, pod_record
from locality.report import build_report, render_locality_table, report_from_doc
from scheduler_extender.state import ExtenderKubeView

from .cluster import build, lnode, lpool, lres
from .probing import scrape
from .waiting import wait_for


def cluster(*, offline: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """n1..n4; pvc-a diskful on n1 (UpToDate) and n2 (syncing), diskless on n3; pvc-b diskful on n2, n4."""
    nodes = [lnode(n, "OFFLINE" if n in offline else "ONLINE") for n in ("n1", "n2", "n3", "n4")]
    pools = [lpool(n, free_gib=100) for n in ("n1", "n2", "n3", "n4")]
    resources = [lres("pvc-a", "n1"), lres("pvc-a", "n2", disk_state="Inconsistent", done=40.0),
                 lres("pvc-a", "n3", diskless=True), lres("pvc-b", "n2"), lres("pvc-b", "n4")]
    kube = [k.node(n) for n in ("n1", "n2", "n3", "n4")] + [k.storage_class("linstor-thindata-r2")]
    kube += k.bound_volume("data-a", "pvc-a") + k.bound_volume("data-b", "pvc-b")
    kube += [k.pvc("data-new")]  # not bound yet
    return build(nodes, pools, resources, kube)


@pytest.mark.parametrize(("node", "expected"), [
    ("n1", LOCAL), ("n2", LOCAL_SYNCING), ("n3", DISKLESS), ("n4", NONE)])
def test_each_locality_of_a_volume(node, expected):
    state = cluster()
    assert classify_volume(state.resources["pvc-a"], node)[0] == expected
    assert classify_volume(None, node)[0] == UNKNOWN


def test_a_replica_whose_state_is_not_known_is_not_local():
    state = cluster(offline=("n1",))
    assert classify_volume(state.resources["pvc-a"], "n1", state.nodes["n1"])[0] == UNKNOWN
    failed = build([lnode("n1")], [], [lres("pvc-f", "n1", disk_state="Failed"), lres("pvc-u", "n1",
                                                                                    disk_state="DUnknown")], [])
    assert classify_volume(failed.resources["pvc-f"], "n1", failed.nodes["n1"])[0] == DISKLESS
    assert classify_volume(failed.resources["pvc-u"], "n1", failed.nodes["n1"])[0] == UNKNOWN
    located = locate(PodRecord("default", "p", "n1", "linstor", ("data-a",)), state)
    assert located is not None and not located.local and "OFFLINE" in located.volumes[0].detail


def test_a_pod_is_local_only_when_every_volume_is():
    state = cluster()
    both = PodRecord("default", "p", "n2", "linstor", ("data-a", "data-b"))
    located = locate(both, state)
    assert located is not None
    assert [v.locality for v in located.volumes] == [LOCAL_SYNCING, LOCAL]
    assert not located.local and "syncing" in (located.why or "")
    only_b = locate(PodRecord("default", "q", "n2", "linstor", ("data-b",)), state)
    assert only_b is not None and only_b.local and only_b.why is None
    unbound = locate(PodRecord("default", "r", "n1", "linstor", ("data-new",)), state)
    assert unbound is not None and unbound.volumes[0].locality == UNKNOWN
    assert locate(PodRecord("default", "s", "n1", "linstor", ("no-such-claim",)), state).volumes[0].locality \
        == UNKNOWN  # an unseen claim may be ours: never counted as local


def test_pods_without_linstor_volumes_are_not_counted():
    state = cluster()
    ebs = k.storage_class("other", provisioner="ebs.csi.aws.com")
    other = build([], [], [], [ebs, k.pvc("x", storage_class="other")])
    assert locate(PodRecord("default", "p", "n1", "linstor", ("x",)), other) is None
    assert summarize([]).share == 1.0
    pods = [locate(PodRecord("default", n, node, "linstor", ("data-a",)), state) for n, node in
            (("a", "n1"), ("b", "n3"), ("c", "n4"))]
    summary = summarize(p for p in pods if p)
    assert (summary.pods, summary.local) == (3, 1)
    assert summary.volumes[("linstor-thindata-r2", DISKLESS)] == 1


@pytest.mark.parametrize(("record", "offline", "why"), [
    (PodRecord("default", "p", "n4", "default-scheduler", ("data-a",)), (), "not scheduled by the linstor profile"),
    (PodRecord("default", "p", "n3", "linstor", ("data-a",)), ("n1",), "failed over"),
    (PodRecord("default", "p", "n3", "linstor", ("data-a",)), (), "placed away from its replicas"),
])
def test_why_a_pod_is_not_local(record, offline, why):
    located = locate(record, cluster(offline=offline))
    assert located is not None and not located.local
    assert why in (located.why or "")


def test_why_node_has_no_room_and_immediate_binding():
    nodes = [lnode("n1"), lnode("n2")]
    pools = [lpool("n1", free_gib=100), lpool("n2", free_gib=1)]
    kube = [k.storage_class("linstor-thindata-r2"), k.storage_class("imm", wffc=False)]
    kube += k.bound_volume("big", "pvc-big", size="50Gi")
    kube += k.bound_volume("early", "pvc-e", storage_class="imm", size="512Mi")
    state = build(nodes, pools, [lres("pvc-big", "n1"), lres("pvc-e", "n1")], kube)
    room = locate(PodRecord("default", "p", "n2", "linstor", ("big",)), state)
    assert room is not None and "node has no room" in (room.why or "")
    early = locate(PodRecord("default", "q", "n2", "linstor", ("early",)), state)
    assert early is not None and "binds Immediately" in (early.why or "")


def test_records_keep_only_what_locality_needs():
    pod = k.pod("db-0", claims=["data-db-0"], node_name="n1", ephemeral={"scratch": k.claim_template("r2")},
                extra_volumes=[{"name": "cfg", "configMap": {"name": "x"}}])
    pod["status"] = {"phase": "Running"}
    assert pod_record(pod) == PodRecord("default", "db-0", "n1", "linstor", ("data-db-0", "db-0-scratch"))
    assert pod_record({**pod, "status": {"phase": "Succeeded"}}) is None
    assert pod_record(k.pod("pending", claims=["c"])) is None  # not bound to a node
    assert pod_record(k.pod("plain", node_name="n1")) is None  # no claims
    # the claim and volume records the informers keep resolve as the whole objects do
    objs = k.bound_volume("data-db-0", "pvc-x", size="5Gi", affinity_nodes=["n1"])
    kept = [EXPORTER_TRANSFORMS[o["kind"]](o) for o in objs]
    whole, slim = ExtenderKubeView.from_objects(objs), ExtenderKubeView.from_objects(kept)
    state_whole = build([lnode("n1")], [], [lres("pvc-x", "n1")], list(objs))
    state_slim = build([lnode("n1")], [], [lres("pvc-x", "n1")], kept)
    rec = PodRecord("default", "db-0", "n1", "linstor", ("data-db-0",))
    assert locate(rec, state_whole) == locate(rec, state_slim)
    assert whole.pvcs.keys() == slim.pvcs.keys() and whole.pvs.keys() == slim.pvs.keys()


def test_report_ranks_the_extenders_nodes_for_non_local_pods():
    state = cluster()
    records = [PodRecord("default", "on-n1", "n1", "linstor", ("data-a",)),
               PodRecord("default", "on-n3", "n3", "linstor", ("data-a",)),
               PodRecord("other", "elsewhere", "n3", "linstor", ("data-a",))]
    report = build_report(state, records)
    # other/elsewhere: its claim is not seen (it may be ours): listed as unknown, never as local
    assert report["summary"]["pods"] == 3 and report["summary"]["local"] == 1
    unseen = next(p for p in report["pods"] if p["pod"] == "other/elsewhere")
    assert unseen["volumes"][0]["locality"] == "unknown" and "state not known" in unseen["why"]
    bad = next(p for p in report["pods"] if p["pod"] == "default/on-n3")
    assert bad["local"] is False and bad["volumes"][0]["locality"] == "diskless"
    assert bad["volumes"][0]["local_nodes"] == ["n1"]
    assert bad["would_place"][0] == {"node": "n1", "score": 10}  # the UpToDate replica, as /prioritize says
    assert [p["node"] for p in bad["would_place"]] == ["n1", "n2", "n3"]  # syncing 8, then diskless 4
    assert "would_place" not in next(p for p in report["pods"] if p["pod"] == "default/on-n1")
    assert build_report(state, records, namespace="other")["summary"]["pods"] == 1
    table = render_locality_table(report)
    assert "default/on-n3" in table and "default/on-n1" not in table
    assert "default/on-n1" in render_locality_table(report, show_all=True)
    assert table.splitlines()[0] == "1 of 3 pods local (33%); volumes: 1 diskless, 1 local, 1 unknown"


def snapshot_doc(emu: LinstorEmulator, kube: list[dict]) -> dict:
    return {"linstor": emu.snapshot(), "kubernetes": {"items": kube}}


def two_pods_cluster() -> tuple[LinstorEmulator, list[dict]]:
    emu = LinstorEmulator()
    kube: list[dict] = [k.storage_class("linstor-thindata-r2")]
    for n in ("n1", "n2", "n3"):
        emu.add_node(n)
        emu.add_storage_pool(n, "thindata")
        kube.append(k.node(n))
    emu.add_resource("pvc-1", "n1", in_use=True)
    emu.add_resource("pvc-1", "n2")
    emu.add_resource("pvc-2", "n1")
    emu.add_resource("pvc-2", "n2")
    emu.add_resource("pvc-2", "n3", diskful=False, in_use=True)
    kube += k.bound_volume("data-db-0", "pvc-1") + k.bound_volume("data-db-1", "pvc-2")
    for name, node, claim in (("db-0", "n1", "data-db-0"), ("db-1", "n3", "data-db-1")):
        pod = k.pod(name, claims=[claim], node_name=node)
        pod["status"] = {"phase": "Running"}
        kube.append(pod)
    return emu, kube


def test_cli_report_from_a_snapshot(tmp_path, capsys):
    emu, kube = two_pods_cluster()
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump(snapshot_doc(emu, kube)))
    assert main(["locality", "--snapshot", str(path), "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"] == {"pods": 2, "local": 1, "share": 0.5, "volumes": [
        {"storage_class": "linstor-thindata-r2", "locality": "diskless", "volumes": 1},
        {"storage_class": "linstor-thindata-r2", "locality": "local", "volumes": 1}]}
    first = report["pods"][0]
    assert first["pod"] == "default/db-1" and first["volumes"][0]["claim"] == "data-db-1"
    assert first["volumes"][0]["resource"] == "pvc-2" and first["volumes"][0]["local_nodes"] == ["n1", "n2"]
    assert [p["node"] for p in first["would_place"]][:2] == ["n1", "n2"]
    assert main(["locality", "--snapshot", str(path)]) == 0
    out = capsys.readouterr().out
    assert "default/db-1" in out and "default/db-0" not in out
    assert main(["locality", "--snapshot", str(path), "--namespace", "nowhere", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["pods"] == 0


def test_cli_report_on_a_malformed_snapshot_says_so(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("linstor: {nodes: 3}\n")
    assert main(["locality", "--snapshot", str(path)]) == 1
    assert "linstor.nodes: expected a list, got 3" in capsys.readouterr().err


def test_cli_report_from_the_live_cluster(ks, capsys):
    """Over HTTP: the LINSTOR emulator and the API stand-in, pods of any scheduler included."""
    emu, kube = two_pods_cluster()
    other = k.pod("web-0", claims=["data-db-1"], node_name="n2", scheduler="default-scheduler")
    other["status"] = {"phase": "Running"}
    for obj in [*kube, other]:
        ks.add(obj)
    with emu.serve() as lsrv:
        code = main(["locality", "--output", "json", "--controllers", lsrv.url, "--kube-api-url", ks.url])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["pods"] == 3 and report["summary"]["local"] == 2  # web-0 on n2: UpToDate there
    assert report_from_doc({"linstor": emu.snapshot(), "kubernetes": {"items": [*kube, other]}})["summary"] \
        == report["summary"]


def listening(url: str) -> bool:
    """The side port answers (the service starts it after the Lease and the informers)."""
    try:
        httpx.get(url + "/healthz")
    except httpx.TransportError:
        return False
    return True


def test_exporter_service_over_http_only_the_lease_holder_exports(ks):
    """Two ``locality-exporter`` services as the CLI runs them (informers, LINSTOR polls, Lease, side
    port), each in its own thread, against the emulator and the API stand-in."""
    import argparse

    from locality.wiring import serve_exporter

    from .test_runtime import _free_port

    emu, kube = two_pods_cluster()
    for obj in kube:
        ks.add(obj)
    with emu.serve() as lsrv:
        electors = [LeaderElector(ks.api, "linstor-scheduler-locality", "linstor-scheduler", identity=i,
                                  lease_seconds=60, renew_seconds=20, retry_seconds=0.2) for i in ("a", "b")]
        assert electors[0].step()  # "a" holds the Lease before either service starts
        ports = [_free_port(), _free_port()]
        flags = [threading.Event(), threading.Event()]
        threads = []
        for elector, port, flag in zip(electors, ports, flags, strict=True):
            args = argparse.Namespace(poll_interval=0.2, interval=0.1, listen_address="127.0.0.1", port=port,
                                      max_staleness=3.0, api_timeout=1.0)
            coro = serve_exporter(args, LinstorClient(lsrv.url), ks.api, elector, stop_flag=flag)
            threads.append(threading.Thread(target=asyncio.run, args=(coro,)))
        for thread in threads:
            thread.start()
        leader_url, standby_url = (f"http://127.0.0.1:{p}" for p in ports)
        try:
            key = 'linstor_scheduler_volume_locality{locality="diskless",storage_class="linstor-thindata-r2"}'
            wait_for(lambda: listening(leader_url) and listening(standby_url), what="both side ports")
            wait_for(lambda: scrape(leader_url).get(key) == 1, what="the holder's figures")
            figures = scrape(leader_url)
            assert figures["linstor_scheduler_pods_local_ratio"] == 0.5
            assert figures['linstor_scheduler_locality_pods{local="true"}'] == 1
            assert figures["linstor_scheduler_locality_leader"] == 1
            assert figures['linstor_scheduler_volume_affinity_stale{storage_class="linstor-thindata-r2"}'] == 0
            wait_for(lambda: httpx.get(standby_url + "/readyz").status_code == 200, what="the standby ready")
            standby = scrape(standby_url)
            assert standby["linstor_scheduler_locality_leader"] == 0
            assert not any(n.startswith("linstor_scheduler_volume_locality") for n in standby)
            # db-1's volume gets a diskful replica on n3 (LINSTOR's auto-diskful): locality rises, no move
            emu.remove_resource("pvc-2", "n3")
            emu.add_resource("pvc-2", "n3", in_use=True)
            wait_for(lambda: scrape(leader_url).get("linstor_scheduler_pods_local_ratio") == 1.0,
                     what="locality to rise")
            if shutil.which("promtool"):
                text = httpx.get(leader_url + "/metrics").text
                check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
                assert check.returncode == 0, check.stdout + check.stderr
        finally:
            for flag in flags:
                flag.set()
            for thread in threads:
                thread.join(15)
        assert not any(t.is_alive() for t in threads)
        lease = ks.get("Lease", "linstor-scheduler-locality", "linstor-scheduler")
        assert not lease["spec"].get("holderIdentity"), "released on the way out: the standby takes over at once"


def test_exporter_withdraws_its_figures_when_it_loses_the_lease():
    from locality.exporter import LocalityExporter
    from locality.metrics import LocalityMetrics
    from scheduler_extender.holder import StateHolder

    class Pods:
        synced = threading.Event()

        def items(self) -> list[PodRecord]:
            return [PodRecord("default", "p", "n3", "linstor", ("data-a",))]

    Pods.synced.set()
    leader = AlwaysLeader()
    metrics = LocalityMetrics()
    exporter = LocalityExporter(StateHolder(state=cluster(), ready=True), Pods(), metrics, leader)
    assert exporter.run_once().pods == 1
    assert metrics.registry.get_sample_value("linstor_scheduler_pods_local_ratio") == 0.0  # measured: none local
    assert metrics.registry.get_sample_value("linstor_scheduler_locality_state_age_seconds") is not None
    leader.is_leader = False
    assert exporter.run_once() is None
    for name in ("linstor_scheduler_pods_local_ratio", "linstor_scheduler_locality_state_age_seconds"):
        assert metrics.registry.get_sample_value(name) is None, f"a standby exports no {name}"
    assert metrics.registry.get_sample_value("linstor_scheduler_volume_locality",
                                             {"storage_class": "linstor-thindata-r2", "locality": "diskless"}) is None
    assert metrics.registry.get_sample_value("linstor_scheduler_locality_leader") == 0


RATIO, AGE = "linstor_scheduler_pods_local_ratio", "linstor_scheduler_locality_state_age_seconds"


def test_exporter_leading_without_linstor_claims_no_figures_and_a_failing_linstor_ages_them(ks):
    """Issue 18: the holder that cannot read LINSTOR exported a ratio of 0 and an age of 0 (LocalityLow
    fired). Over HTTP against the emulator: no ratio and no age before the first good read; then
    the figures; when LINSTOR fails again the figures stay and their age grows from that read."""
    import argparse

    from locality.wiring import serve_exporter

    from .test_runtime import _free_port

    emu, kube = two_pods_cluster()
    for obj in kube:
        ks.add(obj)
    emu.inject(fail=10**9, status=500, path_prefix="/v1/")
    with emu.serve() as lsrv:
        port, flag = _free_port(), threading.Event()
        args = argparse.Namespace(poll_interval=0.2, interval=0.1, listen_address="127.0.0.1", port=port,
                                      max_staleness=3.0, api_timeout=1.0)
        client = LinstorClient(lsrv.url, timeout=2.0, retries=1)
        thread = threading.Thread(target=asyncio.run, args=(serve_exporter(args, client, ks.api, AlwaysLeader(),
                                                                           stop_flag=flag),))
        thread.start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: listening(url), what="the side port")
            wait_for(lambda: emu.count("GET", "/v1/nodes") >= 2, what="failed LINSTOR reads")
            wait_for(lambda: scrape(url).get("linstor_scheduler_locality_leader") == 1, what="leading")
            blind = scrape(url)
            assert RATIO not in blind and AGE not in blind, blind
            assert not any(n.startswith(("linstor_scheduler_volume_locality", "linstor_scheduler_locality_pods"))
                           for n in blind), blind
            emu.reset_faults()
            wait_for(lambda: scrape(url).get(RATIO) == 0.5, what="the first figures")
            assert AGE in scrape(url)
            emu.inject(fail=10**9, status=500, path_prefix="/v1/")
            failing_since = time.monotonic()
            wait_for(lambda: scrape(url)[AGE] > 1.0, what="the figures' age past 1 s")
            ages = []
            for _ in range(5):
                elapsed = time.monotonic() - failing_since
                figures = scrape(url)
                ages.append(figures[AGE])
                assert ages[-1] >= elapsed, "measured from the last good read, before the failures began"
                assert figures[RATIO] == 0.5  # kept: the age says how old it is
            assert ages == sorted(ages), "failed reads never reset the age"
        finally:
            flag.set()
            thread.join(15)
        assert not thread.is_alive()


def test_no_pods_is_not_reported_as_all_local():
    """Nothing to judge is said as such: "0 of 0 pods local (100%)" read as all is well."""
    report = {"pods": [], "summary": {"pods": 0, "local": 0, "share": 1.0, "volumes": []}}
    text = render_locality_table(report)
    assert text == "no running pods with LINSTOR volumes to judge; volumes: no volumes"
    assert "100%" not in render_locality_table(report, show_all=True)
