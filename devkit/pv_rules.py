"""What the real API server and kube-controller-manager do to PersistentVolumes and their claims,
for the API stand-in (``KubeStandin(pv_rules=PvRules())``): the rules a PV replacement meets.

Sources (kubernetes/kubernetes, cited by path):

- ``pkg/registry/core/persistentvolume/strategy.go``: ``PrepareForCreate`` clears the status and
  sets phase ``Pending``; ``PrepareForUpdate`` keeps the old status (a write to the main resource
  cannot change it; the PV controller writes it through ``/status``).
- ``pkg/apis/core/validation/validation.go`` ``ValidatePersistentVolumeUpdate``: the volume source
  is immutable ("spec.persistentvolumesource is immutable after creation"), and so is
  ``spec.nodeAffinity`` once set, unless the ``MutablePVNodeAffinity`` feature gate is on
  (``pkg/features/kube_features.go``, KEP-5381, alpha in 1.35, off by default):
  ``mutable_node_affinity=True`` models a 1.35+ API server with the gate on.
- ``plugin/pkg/admission/storage/storageobjectinuseprotection/admission.go``: every PV created gets
  the ``kubernetes.io/pv-protection`` finalizer.
- ``pkg/controller/volume/pvprotection/pv_protection_controller.go`` ``processPV``: the finalizer of
  a PV being deleted is removed only when the PV is not in use, and a PV is in use while its phase is
  ``Bound`` (``isBeingUsed``): a Bound PV being deleted stays until someone removes the finalizer.
- k8s.io/apiserver ``pkg/registry/generic/registry/store.go``: an update that leaves an object
  with ``deletionTimestamp`` and no finalizers deletes it (``shouldDeleteDuringUpdate``); the
  stand-in applies this to every kind (``KubeStandin.update``).
- ``pkg/controller/volume/persistentvolume/pv_controller.go``: ``syncBoundClaim``: a Bound claim
  whose PV is not found turns ``Lost`` (Warning ``ClaimLost``, "Bound claim has lost its
  PersistentVolume. Data on the volume is lost!"); when a PV comes back whose ``claimRef.uid`` is the
  claim's, ``bind`` makes both ``Bound`` again. ``syncVolume``: a PV whose ``claimRef`` names a claim
  that is gone or has another UID is ``Released``; one whose claim is there, with that UID and
  ``volumeName``, is ``Bound``.

The controllers run at once after each write through HTTP that touches a PV (on the PV and its
claim only, so a write costs the same with 10 or 10,000 volumes); the real ones run within their
resync and informer delays, so a client must not rely on the gap being short or long.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from linstor_scheduler.kube import objects

PV_PROTECTION = "kubernetes.io/pv-protection"
SOURCE_KEYS = ("csi", "nfs", "iscsi", "hostPath", "local", "rbd", "cephfs", "fc")


class Invalid(ValueError):
    """422 Invalid, with the API server's message."""


@dataclass
class PvRules:
    mutable_node_affinity: bool = False  # the MutablePVNodeAffinity gate (1.35+, alpha, off by default)
    claims_lost: int = 0  # Bound claims that turned Lost (their PV was gone when the controller looked)

    # --- the API server ---------------------------------------------------------------------------
    def prepare_create(self, pv: dict[str, Any]) -> dict[str, Any]:
        pv = copy.deepcopy(pv)
        meta = objects.writable_meta(pv)
        finalizers = list(meta.get("finalizers") or [])
        if PV_PROTECTION not in finalizers:
            finalizers.append(PV_PROTECTION)  # storageobjectinuseprotection admission
        meta["finalizers"] = finalizers
        pv["status"] = {"phase": "Pending"}  # strategy.go PrepareForCreate
        return pv

    def prepare_update(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """The stored PV after a write to the main resource, or ``Invalid``."""
        name = objects.name(old)
        ospec, nspec = objects.spec(old), objects.spec(new)
        for key in SOURCE_KEYS:
            if ospec.get(key) != nspec.get(key):
                raise Invalid(f'PersistentVolume "{name}" is invalid: spec.persistentvolumesource: Forbidden: '
                              "spec.persistentvolumesource is immutable after creation")
        if (not self.mutable_node_affinity and ospec.get("nodeAffinity") is not None
                and ospec.get("nodeAffinity") != nspec.get("nodeAffinity")):
            raise Invalid(f'PersistentVolume "{name}" is invalid: spec.nodeAffinity: Invalid value: '
                          f'"{nspec.get("nodeAffinity")}": field is immutable')
        stored = copy.deepcopy(new)
        stored["status"] = copy.deepcopy(objects.status(old))  # strategy.go PrepareForUpdate
        return stored

    # --- kube-controller-manager ------------------------------------------------------------------
    def settle(self, ks: Any, pv_name: str, claim: tuple[str, str] | None = None) -> None:
        """The PV controller and the pv-protection controller, on one PV and its claim."""
        pv = ks.get("PersistentVolume", pv_name)
        ref = objects.spec(pv).get("claimRef") or {}
        if claim is None and ref.get("name"):
            claim = (ref.get("namespace") or objects.DEFAULT_NAMESPACE, ref["name"])
        pvc = ks.get("PersistentVolumeClaim", claim[1], claim[0]) if claim else None
        if pv is not None:
            phase = objects.status(pv).get("phase")
            want = phase
            if ref.get("uid"):
                bound = (pvc is not None and objects.uid(pvc) == ref["uid"]
                         and objects.spec(pvc).get("volumeName") == pv_name)
                want = "Bound" if bound else "Released"
            elif phase == "Pending":
                want = "Available"
            if want != phase:
                pv = self._set_status(ks, pv, "PersistentVolume", {**objects.status(pv), "phase": want})
            if (objects.deletion_timestamp(pv) and PV_PROTECTION in objects.finalizers(pv)
                    and objects.status(pv).get("phase") != "Bound"):
                pv = copy.deepcopy(pv)
                pv["kind"] = "PersistentVolume"
                meta = objects.writable_meta(pv)
                meta["finalizers"] = [f for f in meta["finalizers"] if f != PV_PROTECTION]
                ks.update(pv)
                pv = ks.get("PersistentVolume", pv_name)
        if pvc is None or objects.spec(pvc).get("volumeName") != pv_name:
            return
        phase = objects.status(pvc).get("phase")
        if pv is None and phase == "Bound":
            self.claims_lost += 1
            self._set_status(ks, pvc, "PersistentVolumeClaim", {**objects.status(pvc), "phase": "Lost"})
        elif (pv is not None and phase == "Lost"
              and (objects.spec(pv).get("claimRef") or {}).get("uid") == objects.uid(pvc)):
            self._set_status(ks, pvc, "PersistentVolumeClaim", {**objects.status(pvc), "phase": "Bound"})

    @staticmethod
    def _set_status(ks: Any, obj: dict[str, Any], kind: str, status: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["kind"] = kind
        obj["status"] = status
        return ks.update(obj)
