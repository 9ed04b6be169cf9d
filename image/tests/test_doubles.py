"""fencing ``--once --dry-run`` and sync-classes ``--once`` as deploy/ runs them, against the LINSTOR
emulator (where the operator's ConfigMap points) and the Kubernetes API stand-in (reached as from a
pod: service account, HTTPS)."""

from __future__ import annotations

from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from tests.fencing_rig import Rig

from .conftest import https_api, run_once, with_linstor_at
from .pod import Workload


def test_fencing_once_dry_run_prints_its_verdicts_and_writes_nothing(image, manifests, tmp_path):
    with Rig() as rig:
        c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
        rig.pod("db-0", "n1", [c2])
        c_b = rig.volume("pvc-b", ["n3", "n4"], in_use="n3")
        rig.pod("web-0", "n3", [c_b], labelled="keep")
        rig.crash("n1")
        workload = Workload(with_linstor_at(manifests, rig.emu_url), "Deployment", "linstor-scheduler-fencing")
        with https_api(rig.ks, tmp_path) as api:
            done = run_once(workload, "fencing", image, tmp_path, kube=api, extra_args=("--once", "--dry-run"))
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split() == ["POD", "NODE", "VERDICT", "REASON", "DETAIL"], done.stdout
        row = next(line for line in lines if line.startswith("default/db-0"))
        assert row.split()[1:4] == ["n1", "waiting", "GracePeriod"] and "satellite of node n1 is OFFLINE" in row
        assert next(line for line in lines if line.startswith("default/web-0")).split()[2] == "healthy"
        assert rig.ks.writes == [], "--once acts never and records no Events"


def test_sync_classes_once_creates_the_classes_of_the_configmap(image, manifests, tmp_path):
    emu, ks = LinstorEmulator(), KubeStandin()
    for node in ("n1", "n2"):
        emu.add_node(node)
        emu.add_storage_pool(node, "data", "LVM")
    with emu.serve() as linstor, https_api(ks, tmp_path) as api:
        workload = Workload(with_linstor_at(manifests, linstor.url), "Deployment", "linstor-scheduler-sync-classes")
        done = run_once(workload, "sync-classes", image, tmp_path, kube=api, extra_args=("--once",))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "StorageClasses: in sync", done.stdout
    classes = {o["metadata"]["name"]: o for o in ks.list("StorageClass")}
    assert sorted(classes) == ["linstor-data-r1", "linstor-data-r2"]
    r2 = classes["linstor-data-r2"]
    # From the ConfigMap deploy/ mounts (classes.yaml), not only the built-in defaults.
    assert r2["parameters"]["property.linstor.csi.linbit.com/DrbdOptions/Resource/quorum"] == "majority"
    assert r2["volumeBindingMode"] == "WaitForFirstConsumer"
    assert r2["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "linstor-scheduler"
    assert sorted(e["involvedObject"]["name"] for e in ks.list("Event")) == sorted(classes), "its Events were sent"
