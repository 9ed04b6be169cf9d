"""Replacing a PV to give it a new node affinity, step by step, crash-safe. Pure; no I/O.

Before Kubernetes 1.35 (and after it while the ``MutablePVNodeAffinity`` gate is off) a PV's
``spec.nodeAffinity`` cannot be changed, so the PV is replaced under the same name, as
piraeusdatastore/linstor-affinity-controller does (pkg/operations/replace_pv.go ``ReplacePV``):

1. ``save``: the intended PV is written to a property of the LINSTOR resource definition
   (``SAVED_PROP``; replace_pv.go keeps it on the volume definition as ``Aux/affinity-updater-saved-pv``).
   From here on every step is decided again from that property and what the API server has now,
   so a worker that dies anywhere is replaced by one that finishes the job.
2. ``retain``: ``persistentVolumeReclaimPolicy: Retain`` (deleting the PV must not delete the volume);
3. ``delete``: DELETE with the PV's UID as precondition (never a PV someone made meanwhile); a Bound
   PV stays, marked, held by the ``kubernetes.io/pv-protection`` finalizer;
4. ``unprotect``: its finalizers removed, so the deletion completes (the claim keeps its
   ``volumeName``; the PV controller calls it ``Lost`` while the PV is gone);
5. ``create``: the replacement: same name, claimRef (UID included), CSI source, capacity, access and
   volume mode, class, labels, annotations, mount options, the original reclaim policy, the new
   affinity. The PV controller binds it at once (the claimRef's UID is the claim's), and the claim is
   ``Bound`` again;
6. ``clear``: the property removed.

A PV changed by someone else since the property was written (its spec other than the reclaim
policy, its labels or annotations: ``fingerprint``) before our DELETE is left alone: the reclaim
policy we set is put back (``restore``) and the property dropped (``abandon``), with a Warning
Event. Once our DELETE has marked it, a deletion cannot be undone: the replacement is finished. A PV of that name
that is not ours and not the one we meant is left alone too.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from linstor_scheduler.kube import objects

SAVED_PROP = "Aux/linstor-scheduler/affinity-replace"
RETAIN = "Retain"
SAVE, RETAIN_STEP, DELETE, UNPROTECT, CREATE, CLEAR, RESTORE, ABANDON = (
    "save", "retain", "delete", "unprotect", "create", "clear", "restore", "abandon")
FORMAT = 1


class BadIntent(ValueError):
    """The property does not hold an intent we wrote."""


@dataclass(frozen=True)
class Intent:
    """What the property holds: the PV to create, and the PV it replaces as it was when we began."""

    pv: dict[str, Any]  # the replacement's body
    old_uid: str
    fingerprint: str  # of the PV we began with (``fingerprint``)
    reclaim: str  # its reclaim policy (restored when we give up; the replacement has it)

    def encode(self) -> str:
        return orjson.dumps({"v": FORMAT, "pv": self.pv, "old_uid": self.old_uid, "fingerprint": self.fingerprint,
                             "reclaim": self.reclaim}, option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def decode(cls, text: str) -> Intent:
        try:
            doc = orjson.loads(text)
            if doc.get("v") != FORMAT:
                raise BadIntent(f"format {doc.get('v')!r}, expected {FORMAT}")
            return cls(dict(doc["pv"]), str(doc["old_uid"]), str(doc["fingerprint"]), str(doc["reclaim"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise BadIntent(f"not an intent: {exc}") from None

    @property
    def name(self) -> str:
        return str(objects.name(self.pv))


def fingerprint(pv: dict[str, Any]) -> str:
    """What someone else might change: the spec less the reclaim policy (ours to change) and the
    claimRef's resourceVersion (the PV controller's), the labels and annotations."""
    spec = copy.deepcopy(objects.spec(pv))
    spec.pop("persistentVolumeReclaimPolicy", None)
    (spec.get("claimRef") or {}).pop("resourceVersion", None)
    doc = {"spec": spec, "labels": objects.labels(pv), "annotations": objects.annotations(pv)}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


# the spec fields a replacement carries over (core/v1 PersistentVolumeSpec, as replace_pv.go copies them,
# plus mountOptions and volumeAttributesClassName, which it would lose)
SPEC_KEPT = ("accessModes", "capacity", "claimRef", "csi", "mountOptions", "persistentVolumeReclaimPolicy",
             "storageClassName", "volumeMode", "volumeAttributesClassName")


def replacement(pv: dict[str, Any], affinity: dict[str, Any] | None) -> dict[str, Any]:
    """The PV to create instead of ``pv``: everything kept but the affinity (None: no affinity)."""
    spec = {k: copy.deepcopy(v) for k, v in objects.spec(pv).items() if k in SPEC_KEPT}
    spec.setdefault("volumeMode", "Filesystem")
    ref = spec.get("claimRef")
    if isinstance(ref, dict):
        ref.pop("resourceVersion", None)  # the claim's, when bound: a stale value only confuses
    if affinity is not None:
        spec["nodeAffinity"] = affinity
    out_meta: dict[str, Any] = {"name": objects.name(pv)}
    for key, value in (("labels", objects.labels(pv)), ("annotations", objects.annotations(pv))):
        if value:
            out_meta[key] = copy.deepcopy(value)
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": out_meta, "spec": spec}


def intent_for(pv: dict[str, Any], affinity: dict[str, Any] | None) -> Intent:
    return Intent(replacement(pv, affinity), str(objects.uid(pv)), fingerprint(pv),
                  str(objects.spec(pv).get("persistentVolumeReclaimPolicy") or "Delete"))


def is_the_replacement(intent: Intent, current: dict[str, Any]) -> bool:
    """``current`` (another UID than the old PV's) is the PV we meant to create."""
    spec, want = objects.spec(current), intent.pv["spec"]
    return (((spec.get("csi") or {}).get("volumeHandle") == (want.get("csi") or {}).get("volumeHandle"))
            and ((spec.get("claimRef") or {}).get("uid") == (want.get("claimRef") or {}).get("uid"))
            and spec.get("nodeAffinity") == want.get("nodeAffinity"))


@dataclass(frozen=True)
class Step:
    name: str
    detail: str


def next_step(intent: Intent | None, current: dict[str, Any] | None) -> Step:
    """The next step of a replacement, from the property's intent and the PV the API server has now."""
    if intent is None:
        return Step(SAVE, "write the intended PV to the resource definition")
    if current is None:
        return Step(CREATE, f"create {intent.name} with the new node affinity")
    spec = objects.spec(current)
    if objects.uid(current) != intent.old_uid:
        if is_the_replacement(intent, current):
            return Step(CLEAR, "the replacement is in place: remove the property")
        return Step(ABANDON, f"another PV {intent.name} (UID {objects.uid(current)}) was made by someone else: "
                    "left alone")
    if objects.deletion_timestamp(current):  # our DELETE (UID precondition) began it: it cannot be undone
        return Step(UNPROTECT, "remove its finalizers so that its deletion completes")
    if fingerprint(current) != intent.fingerprint:
        if spec.get("persistentVolumeReclaimPolicy") != intent.reclaim:
            return Step(RESTORE, f"changed by someone else meanwhile: reclaim policy back to {intent.reclaim}")
        return Step(ABANDON, "changed by someone else meanwhile: left alone")
    if spec.get("persistentVolumeReclaimPolicy") != RETAIN:
        return Step(RETAIN_STEP, "set the reclaim policy to Retain (the volume outlives the PV object)")
    return Step(DELETE, f"delete PV {intent.name} (UID {intent.old_uid} as precondition)")
