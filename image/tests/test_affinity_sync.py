"""affinity-sync as ``components/affinity-sync`` runs it (dry run, as shipped), ``--once`` against the
LINSTOR emulator (where the operator's ConfigMap points) and the Kubernetes API stand-in (in-cluster
over HTTPS, with the API server's PV rules): a volume whose replicas moved away from the nodes its PV
names is reported stale, and nothing is written."""

from __future__ import annotations

import copy

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from devkit.pv_rules import PvRules
from linstor_scheduler.volumes import RemoteAccess
from locality.affinity import node_affinity, segments, wanted_terms

from .conftest import https_api, run_once, with_linstor_at
from .pod import Workload
from .test_main_scheduler import rendered_with_components

NODES = ("n1", "n2", "n3")


def test_affinity_sync_once_reports_a_stale_pv_and_changes_nothing(image, tmp_path):
    emu, ks = LinstorEmulator(), KubeStandin(pv_rules=PvRules())
    for n in NODES:
        emu.add_node(n)
        emu.add_storage_pool(n, "thindata")
        ks.add(k.node(n))
    ks.add(k.storage_class("strict", remote=False))
    # CSI provisioned pvc-1 on n1 and n2; n1 was evacuated since and LINSTOR placed its replica on n3
    for n in ("n2", "n3"):
        emu.add_resource("pvc-1", n)
    claim, pv = k.bound_volume("data-1", "pvc-1", storage_class="strict")
    pv["spec"]["nodeAffinity"] = node_affinity(wanted_terms(RemoteAccess(False), ("n1", "n2"),
                                                            {n: segments(n, None) for n in NODES}))
    ks.add(claim)
    ks.add(pv)
    before = copy.deepcopy(ks.get("PersistentVolume", "pvc-1"))
    manifests = rendered_with_components("affinity-sync")
    with emu.serve() as linstor, https_api(ks, tmp_path) as api:
        workload = Workload(with_linstor_at(manifests, linstor.url), "Deployment", "linstor-scheduler-affinity-sync")
        done = run_once(workload, "affinity-sync", image, tmp_path, kube=api,
                        extra_args=("--once", "--min-age", "0"))
    assert done.returncode == 1, done.stdout + done.stderr  # --once: 1 while a PV is stale
    assert "1 stale of 1 LINSTOR PVs (dry run: nothing changed)" in done.stdout, done.stdout + done.stderr
    assert "pvc-1" in done.stdout
    assert ks.get("PersistentVolume", "pvc-1") == before, "a dry run changes no PV"
    assert not [w for w in ks.writes if "persistentvolumes" in w[1]], ks.writes
