"""StorageClasses r1..r3 from LINSTOR's pools: the pure plan, then the reconciler over real HTTP
(LINSTOR emulator + Kubernetes API stand-in, read back with the official client)."""

from __future__ import annotations

import asyncio
import json

import pytest
from kubernetes import client as k8s

from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.config import ConfigError
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.linstor.client import LinstorClient
from linstor_scheduler.linstor.models import StoragePool
from storage_sync.class_sync import ClassReconciler
from storage_sync.classes import (
    CONFLICT,
    CREATE,
    IN_SYNC,
    MANAGED_BY,
    POOL_GONE,
    RECREATE,
    ClassConfig,
    desired_class,
    plan_classes,
)
from storage_sync.wiring import load_class_config

PROP = "property.linstor.csi.linbit.com/DrbdOptions/"


def pool(name, node, kind="LVM_THIN"):
    return StoragePool(storage_pool_name=name, node_name=node, provider_kind=kind)


def test_replica_counts_follow_the_nodes_with_the_pool_and_diskless_is_ignored():
    pools = [pool("data", "n1"), pool("data", "n2"), pool("fast", "n1"), pool("DfltDisklessStorPool", "n1", "DISKLESS")]
    pools += [pool("big", f"n{i}") for i in range(5)]
    names = [(a.action, a.name) for a in plan_classes(pools, [], ClassConfig())]
    assert names == [(CREATE, "linstor-big-r1"), (CREATE, "linstor-big-r2"), (CREATE, "linstor-big-r3"),
                     (CREATE, "linstor-data-r1"), (CREATE, "linstor-data-r2"), (CREATE, "linstor-fast-r1")]


def test_class_parameters():
    r1, r3 = desired_class("data", 1, ClassConfig()), desired_class("data", 3, ClassConfig())
    assert r1["provisioner"] == "linstor.csi.linbit.com"
    assert r1["parameters"] == {"linstor.csi.linbit.com/storagePool": "data",
                                "linstor.csi.linbit.com/placementCount": "1"}
    assert (r1["volumeBindingMode"], r1["reclaimPolicy"], r1["allowVolumeExpansion"]) == (
        "WaitForFirstConsumer", "Delete", True)
    assert r3["parameters"]["linstor.csi.linbit.com/placementCount"] == "3"
    assert r3["parameters"][PROP + "Resource/quorum"] == "majority"
    assert r3["parameters"][PROP + "Resource/on-no-quorum"] == "suspend-io"
    assert r3["metadata"]["labels"] == {MANAGED_BY: "linstor-scheduler"}


def test_config_file(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text("parameters:\n  csi.storage.k8s.io/fstype: xfs\nreplicatedParameters: {}\nmaxReplicas: 2\n"
                    "reclaimPolicy: Retain\n")
    config = load_class_config(str(path))
    r2 = desired_class("data", 2, config)
    assert r2["parameters"]["csi.storage.k8s.io/fstype"] == "xfs" and PROP + "Resource/quorum" not in r2["parameters"]
    assert r2["reclaimPolicy"] == "Retain"
    assert [a.name for a in plan_classes([pool("d", f"n{i}") for i in range(3)], [], config)] == [
        "linstor-d-r1", "linstor-d-r2"]
    path.write_text("paramters: {}\n")
    with pytest.raises(ConfigError, match="unknown keys in the class config: paramters"):
        load_class_config(str(path))


def test_stale_managed_class_is_recreated_keeping_user_metadata_and_unmanaged_is_left_alone():
    stale = desired_class("data", 1, ClassConfig())
    stale["parameters"]["linstor.csi.linbit.com/placementCount"] = "9"
    stale["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] = "true"
    stale["metadata"]["labels"]["team"] = "db"
    foreign = desired_class("data", 2, ClassConfig())
    foreign["metadata"]["labels"] = {}
    gone = desired_class("old", 1, ClassConfig())
    acts = {a.name: a for a in plan_classes([pool("data", "n1"), pool("data", "n2")], [stale, foreign, gone],
                                            ClassConfig())}
    assert acts["linstor-data-r1"].action == RECREATE
    assert "parameters linstor.csi.linbit.com/placementCount" in acts["linstor-data-r1"].message
    body = acts["linstor-data-r1"].body
    assert body["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert body["metadata"]["labels"] == {"team": "db", MANAGED_BY: "linstor-scheduler"}
    assert body["parameters"]["linstor.csi.linbit.com/placementCount"] == "1"
    assert acts["linstor-data-r2"].action == CONFLICT
    assert acts["linstor-old-r1"].action == POOL_GONE
    assert acts["linstor-old-r1"].message == (
        "StorageClass linstor-old-r1 is kept although pool old no longer exists in LINSTOR: volumes may still use "
        "it; delete it by hand when it is no longer needed")


# --- over HTTP ---------------------------------------------------------------------------------
@pytest.fixture
def env():
    emu, ks = LinstorEmulator(), KubeStandin()
    for n in ("n1", "n2", "n3", "n4"):
        emu.add_node(n)
    with emu.serve() as lsrv, ks.serve() as ksrv:
        api = ks.api_client(ksrv.url)
        yield emu, ks, lsrv.url, api


def reconcile(env, **kw):
    _emu, _ks, url, api = env

    async def go():
        async with LinstorClient(url, retries=1) as client:
            rec = ClassReconciler(client, api, events=EventRecorder(api, "sync-classes"), **kw)
            result = await rec.run_pass()
            assert rec.events.flush(10), "the Events are queued (EventRecorder): sent before the test looks"
            return result
    return asyncio.run(go())


def class_names(api):
    return sorted(sc.metadata.name for sc in k8s.StorageV1Api(api).list_storage_class().items)


def test_classes_appear_as_the_pool_appears_on_1_2_3_nodes_and_steady_state_writes_nothing(env):
    emu, ks, _, api = env
    assert reconcile(env).in_sync and class_names(api) == []
    for count, node in enumerate(("n1", "n2", "n3", "n4"), start=1):
        emu.add_storage_pool(node, "data", "LVM")
        result = reconcile(env)
        assert result.ok
        assert class_names(api) == [f"linstor-data-r{n}" for n in range(1, min(count, 3) + 1)]
    sc = k8s.StorageV1Api(api).read_storage_class("linstor-data-r3")  # the official client's strict models
    assert sc.provisioner == "linstor.csi.linbit.com" and sc.volume_binding_mode == "WaitForFirstConsumer"
    assert sc.parameters["linstor.csi.linbit.com/placementCount"] == "3" and sc.allow_volume_expansion is True
    ks.clear_requests()
    emu.clear_requests()
    steady = reconcile(env)
    assert steady.in_sync and [a.action for a in steady.actions] == [IN_SYNC] * 3
    assert [m for m, _ in ks.requests if m != "GET"] == [], "steady state: no writes to Kubernetes"
    assert [p.split("?")[0] for _, p in emu.requests] == ["/v1/view/storage-pools"], "one LINSTOR read per pass"
    created = [e for e in ks.list("Event") if e["reason"] == "Created"]
    assert len(created) == 3 and created[0]["involvedObject"]["kind"] == "StorageClass"
    assert created[0]["involvedObject"]["uid"]


def test_stale_managed_class_recreated_keeping_annotations_unmanaged_untouched(env):
    emu, ks, _, _api = env
    emu.add_storage_pool("n1", "data", "LVM")
    emu.add_storage_pool("n2", "data", "LVM")
    stale = desired_class("data", 1, ClassConfig())
    stale["parameters"]["linstor.csi.linbit.com/storagePool"] = "renamed"
    stale["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] = "true"
    old_uid = ks.add(stale)["metadata"]["uid"]
    foreign = desired_class("data", 2, ClassConfig())
    foreign["metadata"]["labels"] = {"owner": "me"}
    foreign["parameters"] = {"linstor.csi.linbit.com/storagePool": "mine"}
    ks.add(foreign)
    result = reconcile(env)
    assert [(a.action, a.name) for a in result.applied] == [(RECREATE, "linstor-data-r1")]
    assert not result.in_sync, "the unmanaged class is a reported conflict"
    now = ks.get("StorageClass", "linstor-data-r1")
    assert now["metadata"]["uid"] != old_uid
    assert now["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert now["parameters"]["linstor.csi.linbit.com/storagePool"] == "data"
    assert ks.get("StorageClass", "linstor-data-r2")["parameters"] == {"linstor.csi.linbit.com/storagePool": "mine"}
    deletes = [p for m, p in ks.requests if m == "DELETE"]
    assert deletes == ["/apis/storage.k8s.io/v1/storageclasses/linstor-data-r1"]
    reasons = {e["reason"] for e in ks.list("Event")}
    assert {"Recreating", "Recreated", "NotManaged"} <= reasons


def test_pool_gone_is_reported_and_the_class_kept(env):
    emu, ks, _, api = env
    emu.add_storage_pool("n1", "data", "LVM")
    reconcile(env)
    emu.remove_node("n1")
    result = reconcile(env)
    assert [a.action for a in result.actions] == [POOL_GONE] and class_names(api) == ["linstor-data-r1"]
    assert [m for m, _ in ks.requests if m == "DELETE"] == []


def test_read_failures_mean_no_write(env):
    emu, ks, _, api = env
    emu.add_storage_pool("n1", "data", "LVM")
    emu.inject(fail=5, status=500)
    assert reconcile(env).error.startswith("LINSTOR: ")
    emu.reset_faults()
    ks.inject(fail=1, status=500, path_prefix="/apis/storage.k8s.io")
    result = reconcile(env)
    assert result.error.startswith("Kubernetes: ") and class_names(api) == []
    ks.reset_faults()
    assert reconcile(env).ok and class_names(api) == ["linstor-data-r1"]


def test_dry_run_writes_nothing(env):
    emu, ks, _, _api = env
    emu.add_storage_pool("n1", "data", "LVM")
    result = reconcile(env, dry_run=True)
    assert [a.action for a in result.actions] == [CREATE] and not result.in_sync
    assert [m for m, _ in ks.requests if m != "GET"] == []


class OneLook:
    """An elector view that ends ``run_as_leader`` after its first look at the Lease."""

    def __init__(self, elector, stop):
        self.elector, self.stop = elector, stop

    @property
    def is_leader(self):
        self.stop.set()
        return self.elector.is_leader


def test_two_instances_only_the_lease_holder_writes(env):
    from linstor_scheduler.kube.lease import LeaderElector
    from linstor_scheduler.leader_worker import run_as_leader

    emu, _ks, url, api = env
    emu.add_storage_pool("n1", "data", "LVM")
    a = LeaderElector(api, "sync-classes", "default", identity="a")
    b = LeaderElector(api, "sync-classes", "default", identity="b")
    assert a.step() and not b.step()

    async def one_round(elector):
        async with LinstorClient(url, retries=1) as client:
            rec = ClassReconciler(client, api)
            stop = asyncio.Event()
            await run_as_leader(rec, OneLook(elector, stop), stop, interval=30)
            return rec
    standby = asyncio.run(one_round(b))
    assert standby.last_result is None and class_names(api) == [], "the standby does not even read"
    leader = asyncio.run(one_round(a))
    assert leader.last_result.ok and class_names(api) == ["linstor-data-r1"]
    assert leader.metrics.leader._value.get() == 1 and standby.metrics.leader._value.get() == 0
    # issue 18: the standby claims no figures and no age; the holder's are measured
    for name, labels in (("linstor_scheduler_class_sync_classes", {"state": "create"}),
                         ("linstor_scheduler_class_sync_pools", {"pool": "data"}),
                         ("linstor_scheduler_class_sync_state_age_seconds", {})):
        assert standby.metrics.registry.get_sample_value(name, labels) is None, name
        assert leader.metrics.registry.get_sample_value(name, labels) is not None, name


def test_cli_once_against_both_doubles(env, capsys):
    from linstor_scheduler.cli import main

    emu, _ks, url, api = env
    emu.add_storage_pool("n1", "data", "LVM")
    kube_url = api.configuration.host
    argv = ["sync-classes", "--once", "--controllers", url, "--kube-api-url", kube_url]
    assert main([*argv, "--dry-run"]) == 1
    assert capsys.readouterr().out.splitlines()[:3] == [
        "StorageClasses (dry run: nothing changed): NOT in sync",
        "ACTION  CLASS            POOL  DETAIL",
        "CREATE  linstor-data-r1  data  create StorageClass linstor-data-r1 (1 replica(s) in pool data, on 1 node(s))"]
    assert main(argv) == 0 and class_names(api) == ["linstor-data-r1"]
    capsys.readouterr()
    assert main([*argv, "--output", "json"]) == 0
    assert '"in_sync": true' in capsys.readouterr().out


def test_once_in_its_own_process_sends_its_events_before_it_exits(env):
    """As the image runs it: a process that ends after one pass. Its Events were sent by a thread the
    exit cut off (lost, and at times SIGABRT during Python's teardown instead of exit code 0)."""
    import subprocess
    import sys

    emu, ks, url, api = env
    emu.add_storage_pool("n1", "data", "LVM")
    emu.add_storage_pool("n2", "data", "LVM")
    done = subprocess.run([sys.executable, "-m", "linstor_scheduler.cli", "sync-classes", "--once", "--controllers",
                           url, "--kube-api-url", api.configuration.host], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert class_names(api) == ["linstor-data-r1", "linstor-data-r2"]
    events = sorted(e["involvedObject"]["name"] for e in ks.list("Event") if e["reason"] == "Created")
    assert events == ["linstor-data-r1", "linstor-data-r2"], done.stderr


def test_health_app_answers_with_reasons():
    import httpx
    from prometheus_client import CollectorRegistry, Counter

    from linstor_scheduler.health import health_app
    from linstor_scheduler.httpserver import ServerThread

    registry = CollectorRegistry()
    Counter("probe_total", "a probe", registry=registry).inc()
    state = {"ready": (False, "no successful pass yet: LINSTOR: HTTP 500")}
    with ServerThread(health_app(registry, ready=lambda: state["ready"])) as srv:
        assert httpx.get(srv.url + "/healthz").text == "ok\n"
        not_ready = httpx.get(srv.url + "/readyz")
        assert not_ready.status_code == 503 and "LINSTOR: HTTP 500" in not_ready.text
        state["ready"] = (True, "last successful pass 3s ago")
        assert httpx.get(srv.url + "/readyz").status_code == 200
        assert "probe_total 1.0" in httpx.get(srv.url + "/metrics").text


def test_auto_diskful_is_off_by_default_and_written_when_configured(tmp_path):
    for replicas in (1, 2, 3):
        assert not any("auto-diskful" in k for k in desired_class("data", replicas, ClassConfig())["parameters"])
    path = tmp_path / "classes.yaml"
    path.write_text("autoDiskful:\n  afterMinutes: 10\n")
    config = load_class_config(str(path))
    for replicas in (1, 2):
        params = desired_class("data", replicas, config)["parameters"]
        assert params[PROP + "auto-diskful"] == "10"
        assert params[PROP + "auto-diskful-allow-cleanup"] == "True"
    path.write_text("autoDiskful:\n  afterMinutes: 5\n  allowCleanup: false\n")
    params = desired_class("data", 2, load_class_config(str(path)))["parameters"]
    assert (params[PROP + "auto-diskful"], params[PROP + "auto-diskful-allow-cleanup"]) == ("5", "False")
    assert params[PROP + "Resource/quorum"] == "majority"  # the replicated defaults stay


@pytest.mark.parametrize(("text", "error"), [
    ("autoDiskful:\n  afterMinutes: 0\n", "afterMinutes must be a whole number"),
    ("autoDiskful:\n  afterMinutes: ten\n", "afterMinutes must be a whole number"),
    ("autoDiskful:\n  afterMinutes: 3\n  allowCleanup: maybe\n", "allowCleanup must be true or false"),
    ("autoDiskful:\n  aftrMinutes: 3\n", "unknown keys in autoDiskful: aftrMinutes"),
    ("autoDiskful: 10\n", "autoDiskful must be a mapping"),
])
def test_auto_diskful_config_errors_are_clear(tmp_path, text, error):
    path = tmp_path / "classes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):  # a setting to fix: exit 2, one line
        load_class_config(str(path))


def test_turning_auto_diskful_on_recreates_the_managed_classes():
    current = [desired_class("data", n, ClassConfig()) for n in (1, 2)]
    config = ClassConfig.from_mapping({"autoDiskful": {"afterMinutes": 10}})
    actions = plan_classes([pool("data", "n1"), pool("data", "n2")], current, config)
    assert [a.action for a in actions] == [RECREATE, RECREATE]
    assert all("auto-diskful" in a.message for a in actions)


# --- pools sync-classes did not make (issue #23) ---------------------------------------------------
def test_pools_whose_names_form_no_storageclass_name_get_one_report_and_no_post(env):
    """Every LINSTOR has DfltStorPool, and an admin made pool_ssd by hand: 'linstor-DfltStorPool-r1' is
    no StorageClass name, and the API server (the stand-in validates names as it does) would refuse it
    with 422 on every pass, so the Deployment never became Ready."""
    emu, ks, _, api = env
    for node in ("n1", "n2"):
        emu.add_storage_pool(node, "DfltStorPool", "LVM")
        emu.add_storage_pool(node, "pool_ssd", "LVM")
        emu.add_storage_pool(node, "data", "LVM")
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "linstor-scheduler-sync-classes", "namespace": "default"}}
    result = reconcile(env, report_object=lease)
    assert result.ok and result.in_sync, "a pool that can have no class is reported, not a failure"
    assert class_names(api) == ["linstor-data-r1", "linstor-data-r2"]
    skipped = {a.pool: a.message for a in result.actions if a.action == "no-class"}
    assert set(skipped) == {"DfltStorPool", "pool_ssd"}
    assert "register the storage under a name like pool-ssd" in skipped["pool_ssd"]
    assert len([p for m, p in ks.requests if m == "POST" and p.endswith("/storageclasses")]) == 2, "data's only"
    events = [e for e in ks.list("Event") if e.get("reason") == "PoolNameNotAClassName"]
    assert len(events) == 2 and {e["involvedObject"]["kind"] for e in events} == {"Lease"}
    assert reconcile(env).in_sync


def test_the_api_server_refuses_a_storageclass_name_that_is_no_dns_subdomain(env):
    _emu, _ks, _, api = env
    body = desired_class("pool_ssd", 1, ClassConfig())
    with pytest.raises(k8s.ApiException) as refused:
        k8s.StorageV1Api(api).create_storage_class(body)
    assert refused.value.status == 422
    answer = json.loads(refused.value.body)
    assert answer["reason"] == "Invalid"
    assert 'metadata.name: Invalid value: "linstor-pool_ssd-r1": a lowercase RFC 1123 subdomain' in answer["message"]


def test_a_pool_mixing_provider_kinds_gets_r1_only_unless_linstor_allows_mixing(env):
    """'data' is LVM on n1, n2 and LVM_THIN on n3: LINSTOR will not place one volume's replicas across
    provider kinds unless AllowMixingStoragePoolDriver is true, so r2/r3 claims would never bind."""
    emu, _ks, _, api = env
    emu.add_storage_pool("n1", "data", "LVM")
    emu.add_storage_pool("n2", "data", "LVM")
    emu.add_storage_pool("n3", "data", "LVM_THIN")
    result = reconcile(env)
    assert class_names(api) == ["linstor-data-r1"]
    (mixed,) = [a for a in result.actions if a.action == "mixed-providers"]
    assert mixed.message.startswith("pool data mixes provider kinds (LVM on n1, n2; LVM_THIN on n3): LINSTOR places")
    assert not result.in_sync
    emu.set_controller_props({"AllowMixingStoragePoolDriver": "true"})
    assert reconcile(env).in_sync and class_names(api) == ["linstor-data-r1", "linstor-data-r2", "linstor-data-r3"]


def test_a_class_kept_after_maxreplicas_was_lowered_says_so():
    pools = [pool("data", f"n{i}") for i in range(1, 4)]
    kept = desired_class("data", 3, ClassConfig())
    acts = {a.name: a for a in plan_classes(pools, [kept], ClassConfig(max_replicas=2))}
    assert acts["linstor-data-r3"].message == (
        "StorageClass linstor-data-r3 is kept although maxReplicas is 2: volumes may still use it; delete it by "
        "hand when it is no longer needed")


def test_dry_run_takes_no_lease(env):
    """A dry run changes nothing; holding the Lease would stop the real instance from acting."""
    import argparse

    from linstor_scheduler.kube.lease import AlwaysLeader
    from linstor_scheduler.leader_worker import worker_elector as classes_elector

    _emu, ks, _, api = env
    args = argparse.Namespace(dry_run=True, leader_elect=True, lease_name="linstor-scheduler-sync-classes",
                              lease_namespace="default", lease_duration=15.0)
    elector = classes_elector(api, args, None)
    assert isinstance(elector, AlwaysLeader) and elector.start() is elector
    assert not [p for _, p in ks.requests if "leases" in p]
    real = classes_elector(api, argparse.Namespace(**{**vars(args), "dry_run": False}), None)
    assert not isinstance(real, AlwaysLeader), "without --dry-run the Lease elects"
