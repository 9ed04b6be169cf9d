"""Fencing's removal of a pod through the Eviction API: each new fault asks the PodDisruptionBudget
again first, whatever an earlier fault's eviction did; a refused eviction's Retry-After paces eviction
attempts only, never the grace-0 delete of a pod whose node is NotReady. Real HTTP (LINSTOR emulator +
Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, ``rig`` in tests/conftest.py).

The eviction's other cases: tests/test_fencing_matrix.py (a PDB blocking, grace 0 after the bound),
tests/test_fencing_executor.py (an eviction answering 500). Also here: 409 is an Event and a metric,
429 waits for Retry-After; a terminating pod's attachments (PVC and generic ephemeral) stay while it is
on the node; a crashed node's pod is deleted with grace 0 and its attachments after it.
"""

from __future__ import annotations


# --- a new fault starts with the Eviction API, whatever an old one did -----------------------------
def test_an_eviction_blocked_in_an_earlier_fault_does_not_skip_the_pdb_in_a_new_one(rig):
    """n1 (Ready) is cut from its peers; db-0's eviction is refused by its PodDisruptionBudget (429).
    The network heals before --eviction-timeout: nothing is deleted. Ten minutes later n1 is cut
    again. The first eviction attempt of the old fault was still remembered, so the new fault's
    first action, right after its grace period, was a grace-0 delete on a Ready node: the PDB
    skipped without ever being asked. Each fault starts with the Eviction API."""
    rig.pod("db-0", "n1", [rig.volume("pvc-a", ["n1", "n2"], diskless=["n3"], in_use="n1")])
    rig.ks.inject(fail=100_000, status=429, path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.run(10)
    rig.partition("n1")
    rig.run(50)
    assert rig.events("EvictionBlocked", "db-0") and rig.writes("DELETE", "/pods/") == []
    rig.partition("n1", cut=False)
    rig.run(600)
    rig.partition("n1")
    again = rig.clock.now
    rig.run(55)
    assert rig.writes("DELETE", "/pods/") == [], "a new fault: the PDB is asked again first"
    rig.run(40)
    (delete,) = rig.writes("DELETE", "/pods/db-0")
    assert delete[2]["gracePeriodSeconds"] == 0
    deleted_at = rig.deleted_at("default/db-0")
    assert deleted_at - again >= 30 + 60, "grace period, then the eviction timeout of this fault"


# --- the Retry-After of a refused eviction is about the eviction -----------------------------------
def test_a_long_retry_after_on_the_eviction_does_not_hold_the_grace_zero_delete(rig):
    """n1 loses power; as in a real cluster its Node stays Ready until the node-monitor grace period
    (40 s) runs out, so the fail-over at 30 s goes through the Eviction API, which answers 429 with
    Retry-After: 300. At 40 s the Node turns NotReady: kubelet's half of a deletion can never run,
    and the pod is deleted with grace 0 (no eviction any more, nothing to retry). The eviction's
    Retry-After held that delete for five minutes: the node-is-NotReady path and the
    --eviction-timeout bound were both ignored. Retry-After now paces eviction attempts only."""
    rig.pod("db-0", "n1", [rig.volume("pvc-a", ["n1", "n2"], diskless=["n3"], in_use="n1")])
    rig.run(10)
    rig.fault_at = rig.clock.now
    rig.emu.power_off("n1")  # the Node is still Ready for now
    rig.ks.inject(fail=100_000, status=429, retry_after=300,
                  path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.run(35)
    assert rig.events("EvictionBlocked", "db-0") and rig.writes("DELETE", "/pods/") == []
    rig.set_ready("n1", False)  # node-monitor grace period over
    rig.run(10)
    (delete,) = rig.writes("DELETE", "/pods/db-0")
    assert delete[2]["gracePeriodSeconds"] == 0
    assert max(rig.deletion_times()) <= 50


def test_ephemeral_and_pvc_volumes_of_a_terminating_pod_keep_their_attachments(rig):
    rig.volume("pvc-eph", ["n1", "n2"], in_use="n1", claim="db-0-scratch")  # the ephemeral volume's PVC
    claim = rig.volume("pvc-data", ["n1", "n2"], in_use="n1")
    pod = rig.pod("db-0", "n1", [claim], ephemeral=("scratch",))
    rig.run(10)
    rig.partition("n1")
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # evicted earlier; kubelet is stuck on the
    rig.ks.update(pod)  # suspended I/O and cannot finish: the pod stays on n1, terminating
    rig.run(85)  # the grace period, then the eviction timeout (60 s) runs from the first attempt
    assert rig.pod_deletes() == [], "terminating: waited for, within the eviction timeout"
    assert rig.attachment_deletes() == [], "both attachments stay while the pod is on the node"
    assert rig.ks.get("VolumeAttachment", "csi-pvc-eph-n1-linstor") is not None
    rig.run(15)
    (method, _path, body) = rig.pod_deletes()[0]
    assert (method, body["gracePeriodSeconds"]) == ("DELETE", 0), "grace 0 after the eviction timeout"
    rig.run(5)
    assert sorted(p.rsplit("/", 1)[1] for _, p, _ in rig.attachment_deletes()) == [
        "csi-pvc-data-n1-linstor", "csi-pvc-eph-n1-linstor"]


def test_eviction_conflict_is_an_event_and_a_metric_and_429_waits_for_retry_after(rig):
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.partition("n1")
    rig.ks.inject(fail=1, status=409, path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.run(35)
    (event,) = rig.events("EvictionConflict", "db-0")
    assert event["type"] == "Warning" and "409" in event["message"]
    assert rig.ctrl.metrics.actions.labels("pod_evict", "conflict")._value.get() == 1
    rig.ks.inject(fail=1, status=429, path_prefix="/api/v1/namespaces/default/pods/db-0/eviction")
    rig.step()
    posts = len(rig.writes("POST", "/eviction"))
    assert rig.events("EvictionBlocked", "db-0")
    rig.step(0.5)  # within the server's Retry-After (1 s): no new attempt
    assert len(rig.writes("POST", "/eviction")) == posts
    rig.step()
    assert rig.ks.get("Pod", "db-0") is None


def test_node_crash_with_r2_and_r3_volumes(rig):
    c2 = rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")
    c3 = rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2, c3])
    rig.run(10)
    rig.power_off("n1")
    rig.run(40)
    ((method, _, body),) = rig.pod_deletes()
    assert method == "DELETE" and body["gracePeriodSeconds"] == 0, "NotReady node: grace 0"
    assert len(rig.attachment_deletes()) == 2
