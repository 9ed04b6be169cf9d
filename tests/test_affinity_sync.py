"""``affinity-sync`` over real HTTP: the LINSTOR emulator moves replicas as LINSTOR does (a node
evacuated, auto-diskful, a node replaced), the API stand-in plays the API server and
kube-controller-manager for PVs (devkit/pv_rules.py: pv-protection, UID preconditions, immutable
``spec.nodeAffinity`` before 1.35, a Bound claim Lost while its PV is gone), and the worker fixes
what is stale, or holds it, or dies between two steps and a new worker finishes. In every case
nothing is lost: the claim ends Bound to a PV with the same volume handle and its reclaim policy."""

from __future__ import annotations

import asyncio
import json

import pytest
from kubernetes import client as k8s

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from devkit.pv_rules import PvRules
from linstor_scheduler.cli import main
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.linstor.client import LinstorClient
from linstor_scheduler.volumes import RemoteAccess
from locality.affinity import node_affinity, segments, wanted_terms
from locality.affinity_plan import CREATE, DELETE, RETAIN_STEP, SAVE, SAVED_PROP, UNPROTECT
from locality.affinity_sync import (
    CLAIM_DELETING,
    POD_EXCLUDED,
    SNAPSHOTTING,
    TOO_YOUNG,
    AffinitySync,
    Crash,
)

NODES = ("n1", "n2", "n3", "n4")


def affinity_for(nodes) -> dict | None:
    return node_affinity(wanted_terms(RemoteAccess(False), nodes, {n: segments(n, None) for n in NODES}))


@pytest.fixture
def world():
    """The emulator and the stand-in (with the PV rules), served; claims data-<i> bound to pvc-<i>."""
    emu = LinstorEmulator()
    for n in NODES[:3]:
        emu.add_node(n)
        emu.add_storage_pool(n, "thindata")
    rules = PvRules()
    ks = KubeStandin(pv_rules=rules)
    ks.rules = rules
    ks.add(k.storage_class("strict", remote=False))
    for n in NODES:
        ks.add(k.node(n))
    with ks.serve() as ksrv, emu.serve() as lsrv:
        ks.url, ks.api, emu.url = ksrv.url, ks.api_client(ksrv.url), lsrv.url
        yield emu, ks


def volume(emu, ks, i: int, nodes=("n1", "n2"), *, storage_class="strict", pod_on: str | None = None) -> None:
    """A volume as CSI provisioned it: replicas on ``nodes``, the PV's affinity naming them."""
    for n in nodes:
        emu.add_resource(f"pvc-{i}", n)
    claim, pv = k.bound_volume(f"data-{i}", f"pvc-{i}", storage_class=storage_class)
    claim["metadata"]["uid"] = f"uid-default-data-{i}"
    pv["spec"]["nodeAffinity"] = affinity_for(nodes)
    ks.add(claim)
    ks.add(pv)
    if pod_on:
        pod = k.pod(f"app-{i}", claims=[f"data-{i}"], node_name=pod_on)
        pod["status"] = {"phase": "Running"}
        ks.add(pod)


def worker(emu, ks, **kw) -> AffinitySync:
    kw.setdefault("dry_run", False)
    kw.setdefault("min_age", 0.0)
    kw.setdefault("rate_per_minute", 0.0)
    return AffinitySync(LinstorClient(emu.url), ks.api, events=EventRecorder(ks.api, "affinity-sync"), **kw)


def run(w: AffinitySync):
    async def go():
        try:
            return await w.run_pass()
        finally:
            await w.linstor.aclose()

    result = asyncio.run(go())
    if w.events is not None:
        assert w.events.flush(10)
    return result


def intact(emu, ks, i: int, nodes, reclaim="Delete") -> dict:
    """Nothing lost: the claim Bound to a PV of the same handle, its claimRef UID, its reclaim policy, the
    affinity CSI would write now; no property left on the resource definition."""
    pv = ks.get("PersistentVolume", f"pvc-{i}")
    claim = ks.get("PersistentVolumeClaim", f"data-{i}")
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["volumeName"] == f"pvc-{i}"
    assert pv["status"]["phase"] == "Bound" and not pv["metadata"].get("deletionTimestamp")
    assert pv["spec"]["csi"]["volumeHandle"] == f"pvc-{i}"
    assert pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == reclaim
    assert pv["spec"]["capacity"] == {"storage": "10Gi"} and pv["spec"]["storageClassName"] == "strict"
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "linstor.csi.linbit.com"
    assert "kubernetes.io/pv-protection" in pv["metadata"]["finalizers"]
    assert pv["spec"].get("nodeAffinity") == affinity_for(nodes)
    assert SAVED_PROP not in emu._rds[f"pvc-{i}"]["props"]
    return pv


def reasons(ks, kind: str, name: str) -> list[str]:
    return [e["reason"] for e in ks.list("Event") if e["involvedObject"]["kind"] == kind
            and e["involvedObject"]["name"] == name]


def test_a_node_evacuated_the_pv_is_replaced_and_the_claim_stays_bound(world):
    emu, ks = world
    volume(emu, ks, 1, pod_on="n2")
    old_uid = ks.get("PersistentVolume", "pvc-1")["metadata"]["uid"]
    emu.evacuate("n1", to="n3")
    result = run(worker(emu, ks))
    assert [a["outcome"] for a in result.actions] == ["replaced"]
    pv = intact(emu, ks, 1, ["n2", "n3"])
    assert pv["metadata"]["uid"] != old_uid
    assert ks.rules.claims_lost == 1, "the claim was Lost while its PV was gone, then Bound again"
    assert "VolumeAffinityUpdated" in reasons(ks, "PersistentVolume", "pvc-1")
    assert "VolumeAffinityUpdated" in reasons(ks, "PersistentVolumeClaim", "data-1")
    assert not run(worker(emu, ks)).actions, "in step now: the next pass does nothing"


def test_auto_diskful_gives_the_pods_node_a_disk_and_the_pv_follows(world):
    emu, ks = world
    volume(emu, ks, 1, pod_on="n3")
    emu.add_resource("pvc-1", "n3", diskful=False, in_use=True)  # the pod failed over to n3: diskless
    assert not run(worker(emu, ks)).actions, "a diskless replica changes nothing"
    emu.make_diskful("pvc-1", "n3")
    assert [a["outcome"] for a in run(worker(emu, ks)).actions] == ["replaced"]
    intact(emu, ks, 1, ["n1", "n2", "n3"])


def test_a_node_replaced_the_pv_names_the_new_one(world):
    emu, ks = world
    volume(emu, ks, 1)
    emu.remove_node("n1")  # lost for good (linstor node lost), n4 joins and gets the replica back
    emu.add_node("n4")
    emu.add_storage_pool("n4", "thindata")
    emu.add_resource("pvc-1", "n4")
    run(worker(emu, ks))
    intact(emu, ks, 1, ["n2", "n4"])


@pytest.mark.parametrize("crash_after", [SAVE, RETAIN_STEP, DELETE, UNPROTECT, CREATE])
def test_a_worker_dies_after_each_step_and_a_new_one_finishes(world, crash_after):
    emu, ks = world
    volume(emu, ks, 1, pod_on="n2")
    emu.evacuate("n1", to="n3")

    def die(step: str, pv: str) -> None:
        if step == crash_after:
            raise Crash(step)

    first = worker(emu, ks, on_step=die)
    with pytest.raises(Crash):
        run(first)
    assert SAVED_PROP in emu._rds["pvc-1"]["props"], "the intent outlives the worker"
    result = run(worker(emu, ks))  # a new instance, knowing nothing but what LINSTOR and the API server hold
    assert [a["outcome"] for a in result.actions] == ["replaced"]
    intact(emu, ks, 1, ["n2", "n3"])


def test_a_second_writer_changes_the_pv_mid_way_and_it_is_left_alone(world):
    emu, ks = world
    volume(emu, ks, 1)
    emu.evacuate("n1", to="n3")

    def die(step: str, pv: str) -> None:
        if step == RETAIN_STEP:
            raise Crash(step)

    with pytest.raises(Crash):
        run(worker(emu, ks, on_step=die))
    ks.patch("PersistentVolume", "pvc-1", {"metadata": {"labels": {"team": "db"}}})  # someone else
    uid = ks.get("PersistentVolume", "pvc-1")["metadata"]["uid"]
    result = run(worker(emu, ks, max_per_pass=1))
    assert result.actions[0]["outcome"] == "abandoned"
    pv = ks.get("PersistentVolume", "pvc-1")
    assert pv["metadata"]["uid"] == uid and pv["metadata"]["labels"] == {"team": "db"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete", "our Retain was taken back"
    assert SAVED_PROP not in emu._rds["pvc-1"]["props"]
    assert "AffinityFixAbandoned" in reasons(ks, "PersistentVolume", "pvc-1")


def test_a_pod_on_a_node_the_new_affinity_would_leave_out_holds_the_fix(world):
    emu, ks = world
    volume(emu, ks, 1, pod_on="n1")  # still runs on n1, which is being evacuated
    emu.evacuate("n1", to="n3")
    before = len(ks.writes)
    result = run(worker(emu, ks))
    assert [a["outcome"] for a in result.actions] == ["held:" + POD_EXCLUDED]
    assert not [w for w in ks.writes[before:] if "/persistentvolumes" in w[1]], "no PV written"
    assert "AffinityFixHeld" in reasons(ks, "PersistentVolumeClaim", "data-1")
    ks.delete("Pod", "app-1")  # the pod moves on
    assert [a["outcome"] for a in run(worker(emu, ks)).actions] == ["replaced"]


def test_a_claim_being_deleted_a_snapshot_and_a_young_pv_hold_the_fix(world):
    emu, ks = world
    for i in (1, 2, 3):
        volume(emu, ks, i)
    emu.evacuate("n1", to="n3")
    # through the API: marked, kubernetes.io/pvc-protection holds it while a pod may use it
    k8s.CoreV1Api(ks.api).delete_namespaced_persistent_volume_claim("data-1", "default")
    assert ks.get("PersistentVolumeClaim", "data-1")["metadata"]["deletionTimestamp"]
    ks.add({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "snap-2", "namespace": "default"},
            "spec": {"source": {"persistentVolumeClaimName": "data-2"}}, "status": {"readyToUse": False}})
    held = {a["pv"]: a["outcome"] for a in run(worker(emu, ks, min_age=3600.0)).actions}
    assert held == {"pvc-1": "held:" + CLAIM_DELETING, "pvc-2": "held:" + SNAPSHOTTING, "pvc-3": "held:" + TOO_YOUNG}
    assert [a["outcome"] for a in run(worker(emu, ks)).actions if a["pv"] == "pvc-3"] == ["replaced"]


def test_without_its_storage_class_the_policy_comes_from_the_volume_context(world):
    emu, ks = world
    volume(emu, ks, 1, storage_class="gone")
    context = {"linstor.csi.linbit.com/uses-volume-context": "true",
               "linstor.csi.linbit.com/remote-access-policy": "false"}
    ks.patch("PersistentVolume", "pvc-1", {"spec": {"csi": {"volumeAttributes": context}}})
    emu.evacuate("n1", to="n3")
    assert [a["outcome"] for a in run(worker(emu, ks)).actions] == ["replaced"]
    pv = ks.get("PersistentVolume", "pvc-1")
    assert pv["spec"]["nodeAffinity"] == affinity_for(["n2", "n3"])
    assert pv["spec"]["csi"]["volumeAttributes"]["linstor.csi.linbit.com/remote-access-policy"] == "false"


def test_where_the_api_server_allows_it_the_affinity_is_patched_in_place(world):
    emu, ks = world
    ks.pv_rules.mutable_node_affinity = True  # 1.35+ with MutablePVNodeAffinity
    volume(emu, ks, 1)
    uid = ks.get("PersistentVolume", "pvc-1")["metadata"]["uid"]
    emu.evacuate("n1", to="n3")
    assert [a["outcome"] for a in run(worker(emu, ks)).actions] == ["patched"]
    pv = intact(emu, ks, 1, ["n2", "n3"])
    assert pv["metadata"]["uid"] == uid and ks.rules.claims_lost == 0


def test_dry_run_by_default_and_the_limits(world):
    emu, ks = world
    for i in (1, 2, 3):
        volume(emu, ks, i)
    emu.evacuate("n1", to="n3")
    before = len(ks.writes)
    result = run(worker(emu, ks, dry_run=True))
    assert [a["outcome"] for a in result.actions] == ["would-fix"] * 3
    assert ks.writes[before:] == [] and not any(SAVED_PROP in rd["props"] for rd in emu._rds.values())
    limited = run(worker(emu, ks, max_per_pass=2))
    assert sorted(a["outcome"] for a in limited.actions) == ["held:MaxPerPass", "replaced", "replaced"]
    rated = worker(emu, ks, rate_per_minute=1)
    rated._started.append(rated.clock())  # one fix begun in the last minute
    assert [a["outcome"] for a in run(rated).actions] == ["held:RateLimited"]


def test_cli_once_dry_run_by_default_then_acting(world, capsys):
    emu, ks = world
    volume(emu, ks, 1)
    emu.evacuate("n1", to="n3")
    argv = ["affinity-sync", "--once", "--output", "json", "--controllers", emu.url, "--kube-api-url", ks.url,
            "--min-age", "0", "--no-leader-elect"]
    assert main(argv) == 1  # stale and nothing done
    doc = json.loads(capsys.readouterr().out)
    assert [a["outcome"] for a in doc["actions"]] == ["would-fix"] and len(doc["stale"]) == 1
    assert main([*argv, "--no-dry-run"]) == 0
    assert [a["outcome"] for a in json.loads(capsys.readouterr().out)["actions"]] == ["replaced"]
    intact(emu, ks, 1, ["n2", "n3"])


def test_the_service_acts_only_while_it_holds_the_lease(world):
    """``serve_affinity_sync`` as the CLI runs it (Lease, passes, side port), in its own thread."""
    import argparse
    import threading

    import httpx

    from linstor_scheduler.kube.lease import LeaderElector
    from locality.wiring import serve_affinity_sync

    from .probing import scrape
    from .test_runtime import _free_port
    from .waiting import wait_for

    emu, ks = world
    volume(emu, ks, 1)
    emu.evacuate("n1", to="n3")
    other = LeaderElector(ks.api, "linstor-scheduler-affinity-sync", "linstor-scheduler", identity="other",
                          lease_seconds=5, renew_seconds=0.5, retry_seconds=0.2)
    assert other.step()  # someone else holds the Lease first
    elector = LeaderElector(ks.api, "linstor-scheduler-affinity-sync", "linstor-scheduler", identity="me",
                            lease_seconds=2, renew_seconds=0.5, retry_seconds=0.2)
    port, flag = _free_port(), threading.Event()
    args = argparse.Namespace(interval=0.2, max_staleness=5.0, listen_address="127.0.0.1", port=port)
    sync = worker(emu, ks)
    thread = threading.Thread(target=asyncio.run, args=(serve_affinity_sync(args, sync, elector, stop_flag=flag),))
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/readyz").status_code == 200 if _listening(url) else False,
                 what="the standby ready")
        assert other.step(), "still the holder: renewed"
        assert scrape(url)["linstor_scheduler_affinity_sync_leader"] == 0
        assert ks.get("PersistentVolume", "pvc-1")["spec"]["nodeAffinity"] == affinity_for(["n1", "n2"])
        # the holder goes away without releasing: its Lease expires and this one takes over
        wait_for(lambda: scrape(url).get('linstor_scheduler_affinity_sync_fixes_total{outcome="replaced"}') == 1,
                 timeout=30, what="the fix, once leading")
        assert scrape(url)["linstor_scheduler_affinity_sync_leader"] == 1
    finally:
        flag.set()
        thread.join(15)
    assert not thread.is_alive()
    intact(emu, ks, 1, ["n2", "n3"])


def _listening(url: str) -> bool:
    import httpx

    try:
        httpx.get(url + "/healthz")
    except httpx.TransportError:
        return False
    return True


@pytest.mark.parametrize("lost", ["save", "retain", "delete", "unprotect", "create", "clear"])
def test_a_write_whose_answer_is_lost_is_not_lost(world, lost):
    """The write is carried out, then the connection breaks before its answer: the worker fails that
    step; the next pass (a new worker) reads what is there and finishes."""
    emu, ks = world
    volume(emu, ks, 1)
    emu.evacuate("n1", to="n3")
    rd = "/v1/resource-definitions/pvc-1"
    arm_after = {"save": None, "retain": SAVE, "delete": RETAIN_STEP, "unprotect": DELETE, "create": UNPROTECT,
                 "clear": CREATE}[lost]
    method = {"retain": "PATCH", "delete": "DELETE", "unprotect": "PATCH", "create": "POST"}.get(lost)

    def arm() -> None:
        if lost in ("save", "clear"):
            emu.inject(lose_answer=1, path_prefix=rd)
        else:
            ks.lose_answers("/api/v1/persistentvolumes" + ("" if lost == "create" else "/pvc-1"), method=method)

    def armed(step: str, pv: str) -> None:
        if step == arm_after:
            arm()

    if arm_after is None:
        arm()
    result = run(worker(emu, ks, on_step=armed))
    assert [a["outcome"] for a in result.actions] == ["failed"], result.actions
    ks.reset_faults()
    emu.reset_faults()
    second = [a["outcome"] for a in run(worker(emu, ks)).actions]
    assert second == ([] if lost == "clear" else ["replaced"])  # the clear was done: nothing left to do
    intact(emu, ks, 1, ["n2", "n3"])
