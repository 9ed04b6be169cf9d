"""sync-node ``--once`` as the DaemonSet runs it (root, privileged, the host's /dev, LVM's lock directory,
the host's /etc/lvm read-only), on real LVM: a volume group on a loop device of this host, tagged
``linstor-<pool>``, becomes the LINSTOR storage pool ``<pool>`` of the node in the emulator.

Needs root, the LVM tools and loop devices (.ci/run installs lvm2): a missing one fails, never skips.
"""

from __future__ import annotations

import copy
import uuid

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from tests.test_storage_lvm_real import LoopVGs, _missing

from .conftest import https_api, run_once, with_linstor_at
from .pod import Workload

NODE = "n1"


def sync_node_once(manifests, image, tmp_path, *args: str, objects=None):
    """(LINSTOR emulator, API stand-in, result) of one ``sync-node --once`` as the DaemonSet runs it."""
    emu, ks = LinstorEmulator(), KubeStandin()
    emu.add_node(NODE)
    ks.add(k.node(NODE))
    with emu.serve() as linstor, https_api(ks, tmp_path) as api:
        workload = Workload(with_linstor_at(objects or manifests, linstor.url), "DaemonSet",
                            "linstor-scheduler-sync-node")
        done = run_once(workload, "sync-node", image, tmp_path, kube=api, node_name=NODE, extra_args=("--once", *args))
    return emu, ks, done


def row(output: str, pool: str) -> list[str]:
    """The table's row for ``pool`` (other volume groups of this host, other tests', may have rows too)."""
    return next((line.split()[:4] for line in output.splitlines() if line.split()[1:2] == [pool]), [])


def test_sync_node_once_registers_the_tagged_volume_group_of_its_node(image, manifests, tmp_path):
    assert _missing() is None, _missing()
    pool = f"img{uuid.uuid4().hex[:6]}"
    lvm = LoopVGs(tmp_path)
    try:
        vg, _loop = lvm.vg("image", f"linstor-{pool}")
        emu, ks, done = sync_node_once(manifests, image, tmp_path)
        # As shipped before issue 22: the DaemonSet without runAsUser 0 ran LVM as the image's 65532.
        objs = copy.deepcopy(manifests)
        ds = next(o for o in objs if o["kind"] == "DaemonSet")
        del ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"]
        _, _, as_65532 = sync_node_once(manifests, image, tmp_path / "as-65532", objects=objs)
    finally:
        lvm.cleanup()
    assert row(done.stdout, pool) == ["CREATE", pool, "LVM", vg], done.stdout + done.stderr
    (registered,) = [p for p in emu.snapshot()["storage_pools"]
                     if (p["node_name"], p["storage_pool_name"]) == (NODE, pool)]
    assert registered["provider_kind"] == "LVM" and registered["props"]["StorDriver/LvmVg"] == vg
    assert [e["reason"] for e in ks.list("Event") if pool in e["message"]] == ["PoolCreated"]
    refused = as_65532.stdout + as_65532.stderr
    assert as_65532.returncode != 0 and "/run/lock/lvm/P_global:aux: open failed: Permission denied" in refused
