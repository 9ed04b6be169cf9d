"""The field's safety rules about a pod itself: would anything recreate it elsewhere, and does it use
storage fencing cannot fence. Pure functions of the pod and the PVC/PV lookups; the guards that act
on their answers are ``guards.NoControllerGuard`` and ``guards.UnfencedStorageGuard``.

Both rules come from piraeus-ha-controller v1 (``pkg/agent/reconcile_failover.go``, ``evictPods``
and ``IsSafeVolume``; its CHANGELOG 1.1.0: "Exempt Pods that are attached to other types of storage
by default, unless the volumes are known to be safe"). Where we are stricter, the docstring says why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from linstor_scheduler.claims import as_claim, as_volume
from linstor_scheduler.kube import objects
from linstor_scheduler.volumes import CSI_DRIVER, named_volumes

Obj = Mapping[str, Any]

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"  # a static pod's API copy (kubelet)
# Controllers that recreate a pod on the *same* node: removing it from a lost node only brings it
# back there (a DaemonSet pins each pod with a matchFields affinity on metadata.name; a mirror pod's
# owner is its Node).
PINNED_KINDS = frozenset({"DaemonSet", "Node"})
# Volume sources that hold nothing another node could write behind our back: each is re-created
# from the API (configMap, secret, downwardAPI, projected), is local scratch that dies with the pod
# (emptyDir), or is ephemeral by design (inline CSI, generic ephemeral, gitRepo). The list is
# piraeus-ha-controller's ``IsSafeVolume``, plus ``image`` (Kubernetes 1.31+: an OCI image, mounted
# read-only by the kubelet whatever the mount says).
SAFE_SOURCES = ("configMap", "secret", "downwardAPI", "projected", "emptyDir", "csi", "ephemeral", "gitRepo",
                "image")
# Every other source (hostPath, nfs, iscsi, rbd, cephfs, fc, glusterfs, azureDisk, ...) is unknown: it
# may be written from the lost node while the replacement writes it too.


def missing_controller(pod: Obj) -> str | None:
    """Why nothing would recreate the pod on another node, or None when its controller would.

    piraeus-ha-controller refuses a pod with no ``ownerReferences`` at all. We ask for the owner
    Kubernetes' own controllers follow (``controller: true``, as ``metav1.GetControllerOf``), and
    refuse a mirror pod (its owner is the Node: the kubelet runs the static pod from a file, deleting
    the API copy moves nothing) and a DaemonSet's pod (recreated on the same node)."""
    if MIRROR_ANNOTATION in objects.annotations(pod):
        return "it is the mirror of a static pod: the kubelet runs it from a file on that node"
    owners = [o for o in objects.owner_references(pod) if isinstance(o, Mapping)]
    controller = next((o for o in owners if o.get("controller") is True), None)
    if controller is None:
        if owners:
            names = ", ".join(f"{o.get('kind')}/{o.get('name')}" for o in owners)
            return f"none of its owners ({names}) is its controller (ownerReferences controller: true)"
        return "it has no controller (no ownerReferences): nothing would recreate it"
    kind = str(controller.get("kind") or "")
    if kind in PINNED_KINDS:
        return f"its controller {kind}/{controller.get('name')} recreates it on the same node"
    return None


def _mounted_read_only(pod: Obj, volume: str) -> bool:
    """Every container that uses the volume mounts it read-only (and one at least does): a
    writable mount anywhere, or a raw block device (volumeDevices), can write."""
    spec = objects.spec(pod)
    containers = [c for key in ("initContainers", "containers", "ephemeralContainers")
                  for c in spec.get(key) or [] if isinstance(c, Mapping)]
    mounts = [m for c in containers for m in c.get("volumeMounts") or [] if m.get("name") == volume]
    devices = [d for c in containers for d in c.get("volumeDevices") or [] if d.get("name") == volume]
    return bool(mounts) and not devices and all(m.get("readOnly") is True for m in mounts)


def unfenced_volumes(pod: Obj, get_pvc: Callable[[str], Any],
                     get_pv: Callable[[str], Any]) -> tuple[str, ...]:
    """The pod's volumes whose storage fencing cannot fence, each as "name (what)"; () when none.

    A claim is fenced when its PV is LINSTOR's (DRBD's quorum stops the lost node), or cannot be
    written (the pod's claim or the PV's CSI source is readOnly, the claim is ReadOnlyMany only, or
    every mount is read-only). A claim whose PVC is not seen is the LINSTOR resolution's business
    (``UnresolvedVolume``); one bound to a PV not seen has an unknown driver: unfenced.
    A hostPath mounted read-only everywhere is safe: the replacement reads the same files on its own
    node (the issue asks for that exception; piraeus-ha-controller refuses every hostPath)."""
    namespace = objects.namespace(pod)
    found: list[str] = []
    for name, vol in named_volumes(pod):
        if any(vol.get(source) is not None for source in SAFE_SOURCES):
            continue
        claim = vol.get("persistentVolumeClaim")
        if isinstance(claim, Mapping):
            problem = _claim_problem(objects.key_of(namespace, claim.get("claimName")), claim.get("readOnly") is True,
                                     get_pvc, get_pv)
            if problem and not _mounted_read_only(pod, name):
                found.append(f"{name} ({problem})")
            continue
        if vol.get("hostPath") is not None:
            if not _mounted_read_only(pod, name):
                path = (vol.get("hostPath") or {}).get("path")
                found.append(f"{name} (hostPath {path}, writable: its data stays on the node)")
            continue
        if not _mounted_read_only(pod, name):
            kind = next((k for k in vol if k != "name"), "unknown")
            found.append(f"{name} ({kind}: storage fencing cannot fence)")
    return tuple(found)


def _claim_problem(key: str, read_only: bool, get_pvc: Callable[[str], Any],
                   get_pv: Callable[[str], Any]) -> str | None:
    """What keeps claim ``key`` from being fenced, None when nothing does. The claim and its volume
    come as the core's records (``linstor_scheduler/claims.py``) or as objects (a test's, a direct read)."""
    if read_only:
        return None
    pvc = as_claim(get_pvc(key))
    if pvc is None:
        return None  # not seen yet: judged as unresolved (or not ours) by the LINSTOR resolution
    if pvc.access_modes and set(pvc.access_modes) <= {"ReadOnlyMany"}:
        return None
    if not pvc.volume:
        return None  # not bound: nothing is attached anywhere yet
    pv = as_volume(get_pv(pvc.volume))
    if pv is None:
        return f"claim {key}: its PersistentVolume {pvc.volume} is not seen, its driver unknown"
    if pv.driver == CSI_DRIVER or pv.read_only:
        return None
    return f"claim {key} on {pv.driver or pv.source or 'a non-CSI source'}, not LINSTOR"
