"""The fencing fault matrix over real HTTP (LINSTOR emulator + Kubernetes API stand-in, fake clock).

Each scenario says what was and was not deleted, and with which preconditions. Passes run every
poll interval (5 s) of fake time; the grace period is the default 30 s.
"""

from __future__ import annotations

import pytest

from .fencing_rig import Rig


@pytest.fixture
def rig():
    with Rig() as rig:
        yield rig


def two_volume_pod(rig: Rig, node: str = "n1") -> dict:
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use=node)
    c3 = rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use=node)
    return rig.pod("db-0", node, [c2, c3])


def test_node_crash_removes_pod_then_attachments_after_grace_once(rig):
    pod = two_volume_pod(rig)
    rig.attach("pvc-r2", "n2", attacher="other.csi.example.com")  # another driver: never touched
    rig.run(10)
    assert rig.pod_deletes() == []
    rig.crash("n1")
    rig.run(25)
    assert rig.pod_deletes() == [], "still within the grace period"
    rig.run(20)
    deletes = rig.pod_deletes()
    assert len(deletes) == 1
    method, path, body = deletes[0]
    assert method == "DELETE"
    assert path == "/api/v1/namespaces/default/pods/db-0"
    assert body["preconditions"] == {"uid": pod["metadata"]["uid"]} and body["gracePeriodSeconds"] == 0
    vas = rig.attachment_deletes()
    assert sorted(p.rsplit("/", 1)[1] for _, p, _ in vas) == ["csi-pvc-r2-n1-linstor", "csi-pvc-r3-n1-linstor"]
    assert all(b["preconditions"]["uid"] for _, _, b in vas)
    assert rig.ks.get("VolumeAttachment", "csi-pvc-r2-n2-other") is not None
    assert rig.events("FencedPod", "db-0") and len(rig.events("DetachedVolume", "db-0")) == 2
    assert 30 <= rig.deletion_times()[0] <= 35
    rig.run(120)
    assert len(rig.pod_deletes()) == 1 and len(rig.attachment_deletes()) == 2, "once"
