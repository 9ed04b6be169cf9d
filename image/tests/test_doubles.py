"""fencing ``--once --dry-run`` and sync-classes ``--once`` as deploy/ runs them, against the LINSTOR
emulator (where the operator's ConfigMap points) and the Kubernetes API stand-in (reached as from a
pod: service account, HTTPS)."""

from __future__ import annotations

from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from tests.fencing_rig import Rig, assert_verdicts_of_one_node_crashed, one_node_crashed

from .conftest import https_api, run_once, with_linstor_at
from .pod import Workload


def test_fencing_once_dry_run_prints_its_verdicts_and_writes_nothing(image, manifests, tmp_path):
    with Rig() as rig:
        one_node_crashed(rig)
        workload = Workload(with_linstor_at(manifests, rig.emu_url), "Deployment", "linstor-scheduler-fencing")
        with https_api(rig.ks, tmp_path) as api:
            done = run_once(workload, "fencing", image, tmp_path, kube=api, extra_args=("--once", "--dry-run"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert_verdicts_of_one_node_crashed(done.stdout)
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
