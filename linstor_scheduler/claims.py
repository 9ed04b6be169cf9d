"""One small record per claim (PVC) and per volume (PV): the fields our decisions read, nothing else.

Every component that follows claims (the extender, the webhook, the locality exporter, fencing)
keeps these instead of the objects. A bound PVC as the API server sends it is 2-3 KB of JSON
(managedFields, the PV controller's annotations, finalizers, status), several KB as a Python dict,
and so is its PV; at a claim per volume (33,334 claims for 100,000 replicas) the copies were most
of each component's memory. The informers turn each object into its record as it arrives
(``TRANSFORMS``, ``KubeCaches(transforms=...)``), so no component ever holds the objects.

Values that repeat across claims are one string each (``sys.intern``: namespaces, class names,
sizes, phases, drivers, node names, access modes as one shared tuple); a claim's own name and its
volume's name are its only strings of its own, and the PV's handle is its name's string when they
are equal (as linstor-csi makes them). ``size_bytes`` parses the quantity when read
(``volumes.parse_quantity``, cached): a few distinct sizes, not an int per claim.

What is read, and by whom (``volumes.resolve_claim`` joins the two):
- claim: class, requested size and bound volume (every component); ``selected_node``, the annotation
  kube-scheduler's VolumeBinding PreBind writes (the extender's capacity holds); phase, access modes
  and the controlling owner (reports).
- volume: CSI driver and handle (is it ours, which LINSTOR resource), class and capacity, the node
  affinity (kube-scheduler's VolumeBinding filter reads the same field, so the extender does too).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .kube import objects
from .quantity import parse_quantity

SELECTED_NODE = "volume.kubernetes.io/selected-node"  # volume.AnnSelectedNode: VolumeBinding writes it in PreBind

_intern = sys.intern
_modes: dict[tuple[str, ...], tuple[str, ...]] = {}  # a few distinct tuples of access modes, shared


def _shared(value: Any) -> str | None:
    """A repeating value as one string for all records (None stays None)."""
    return _intern(value) if isinstance(value, str) and value else None


def _access_modes(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        return ()
    modes = tuple(_intern(str(m)) for m in raw)
    return _modes.setdefault(modes, modes)


def _quantity(raw: Any) -> str | None:
    return _intern(str(raw)) if isinstance(raw, str | int | float) and raw != "" else None


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """A PersistentVolumeClaim as our decisions see it."""

    namespace: str
    name: str
    storage_class: str | None  # spec.storageClassName
    volume: str | None  # spec.volumeName: the PV it is bound to
    size: str | None  # spec.resources.requests.storage, as written ("10Gi")
    access_modes: tuple[str, ...] = ()
    phase: str | None = None  # status.phase: Pending, Bound, Lost
    owner: str | None = None  # the controlling owner, "Kind/name"
    selected_node: str | None = None  # the SELECTED_NODE annotation

    @property
    def key(self) -> str:
        return objects.key_of(self.namespace, self.name)

    @property
    def size_bytes(self) -> int | None:
        return parse_quantity(self.size)


@dataclass(frozen=True, slots=True)
class VolumeRecord:
    """A PersistentVolume as our decisions see it."""

    name: str
    driver: str | None  # spec.csi.driver (None: not a CSI volume)
    handle: str | None  # spec.csi.volumeHandle: the LINSTOR resource definition for ours
    storage_class: str | None
    capacity: str | None  # spec.capacity.storage, as written
    affinity: Selector | None = None  # spec.nodeAffinity.required, compact (``selector``)
    access_modes: tuple[str, ...] = ()
    phase: str | None = None
    read_only: bool = False  # spec.csi.readOnly: attached read-only wherever it is used
    source: str | None = None  # a volume that is not CSI: its spec's source key ("nfs", "iscsi", ...)
    # the remote-access policy linstor-csi wrote into the volume context (locality/affinity.py reads
    # it when the StorageClass is gone); None when the context has none
    access_policy: str | None = None

    @property
    def size_bytes(self) -> int | None:
        return parse_quantity(self.capacity)

    @property
    def node_affinity(self) -> dict[str, Any] | None:
        """The required node selector in the API's form, as ``volumes.node_selector_matches`` reads it."""
        return as_node_selector(self.affinity) if self.affinity is not None else None


# A v1.NodeSelector in tuples: terms of (matchExpressions, matchFields), each expression
# (key, operator, values). About a quarter of the dicts' size, its strings interned (node names).
Expression = tuple[str, str, tuple[str, ...]]
Selector = tuple[tuple[tuple[Expression, ...], tuple[Expression, ...]], ...]


def _expressions(raw: Any) -> tuple[Expression, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple((_intern(str(e.get("key") or "")), _intern(str(e.get("operator") or "")),
                  tuple(_intern(str(v)) for v in e.get("values") or ()))
                 for e in raw if isinstance(e, Mapping))


def selector(raw: Any) -> Selector | None:
    """``nodeAffinity.required`` in tuples; None when there is none (or it is not a mapping)."""
    if not isinstance(raw, Mapping):
        return None
    terms = raw.get("nodeSelectorTerms")
    if not isinstance(terms, list):
        return None
    return tuple((_expressions(t.get("matchExpressions")), _expressions(t.get("matchFields")))
                 for t in terms if isinstance(t, Mapping))


def as_node_selector(compact: Selector) -> dict[str, Any]:
    def exprs(items: tuple[Expression, ...]) -> list[dict[str, Any]]:
        return [{"key": k, "operator": op, "values": list(values)} for k, op, values in items]

    return {"nodeSelectorTerms": [{"matchExpressions": exprs(m), "matchFields": exprs(f)} for m, f in compact]}


def _owner(obj: Mapping[str, Any]) -> str | None:
    for ref in objects.owner_references(obj):
        if isinstance(ref, Mapping) and ref.get("controller"):
            return _intern(f"{ref.get('kind')}/{ref.get('name')}")
    return None


def claim_record(obj: Mapping[str, Any]) -> ClaimRecord:
    """The record of a PVC object (an informer's transform; also a direct read's answer)."""
    spec = objects.spec(obj)
    return ClaimRecord(
        namespace=_intern(str(objects.namespace(obj, objects.DEFAULT_NAMESPACE))),
        name=str(objects.name(obj, "")),
        storage_class=_shared(spec.get("storageClassName")),
        volume=spec.get("volumeName") or None,
        size=_quantity(((spec.get("resources") or {}).get("requests") or {}).get("storage")),
        access_modes=_access_modes(spec.get("accessModes")),
        phase=_shared(objects.status(obj).get("phase")),
        owner=_owner(obj),
        selected_node=_shared(objects.annotations(obj).get(SELECTED_NODE)),
    )


def template_record(namespace: str, name: str, template: Mapping[str, Any]) -> ClaimRecord:
    """The claim an ephemeral volume's ``volumeClaimTemplate`` will become (not bound: no volume)."""
    spec = objects.spec(template)
    return ClaimRecord(_intern(str(namespace)), str(name), _shared(spec.get("storageClassName")), None,
                       _quantity(((spec.get("resources") or {}).get("requests") or {}).get("storage")),
                       _access_modes(spec.get("accessModes")))


# The in-tree volume sources a PersistentVolume's spec may carry instead of ``csi`` (core/v1
# PersistentVolumeSource): fencing names the one a claim is on when it refuses to fail it over.
PV_SOURCES = frozenset({"nfs", "iscsi", "rbd", "cephfs", "fc", "hostPath", "local", "glusterfs",
                        "awsElasticBlockStore", "gcePersistentDisk", "azureDisk", "azureFile", "cinder",
                        "vsphereVolume", "portworxVolume", "flexVolume", "flocker", "quobyte", "photonPersistentDisk",
                        "scaleIO", "storageos"})


def volume_record(obj: Mapping[str, Any]) -> VolumeRecord:
    """The record of a PV object."""
    spec = objects.spec(obj)
    csi = spec.get("csi") or {}
    name = str(objects.name(obj, ""))
    handle = csi.get("volumeHandle")
    return VolumeRecord(
        name=name,
        driver=_shared(csi.get("driver")),
        handle=name if handle == name else (str(handle) if handle else None),
        storage_class=_shared(spec.get("storageClassName")),
        capacity=_quantity((spec.get("capacity") or {}).get("storage")),
        affinity=selector((spec.get("nodeAffinity") or {}).get("required")),
        access_modes=_access_modes(spec.get("accessModes")),
        phase=_shared(objects.status(obj).get("phase")),
        read_only=csi.get("readOnly") is True,
        source=None if csi else next((_intern(k) for k in spec if k in PV_SOURCES), None),
        access_policy=_context_policy(csi.get("volumeAttributes")),
    )


CONTEXT_MARKER = "linstor.csi.linbit.com/uses-volume-context"  # linstor-csi pkg/driver/volume_context.go
CONTEXT_POLICY = "linstor.csi.linbit.com/remote-access-policy"


def _context_policy(attrs: Any) -> str | None:
    if not isinstance(attrs, Mapping) or CONTEXT_MARKER not in attrs:
        return None
    return _intern(str(attrs.get(CONTEXT_POLICY) or ""))


def as_claim(value: ClaimRecord | Mapping[str, Any] | None) -> ClaimRecord | None:
    """A record as is; an object (a direct read, a snapshot item, a test's dict) read into one."""
    if value is None or isinstance(value, ClaimRecord):
        return value
    return claim_record(value)


def as_volume(value: VolumeRecord | Mapping[str, Any] | None) -> VolumeRecord | None:
    if value is None or isinstance(value, VolumeRecord):
        return value
    return volume_record(value)


# What an informer keeps of each kind (``KubeCaches(transforms=...)``).
TRANSFORMS = {"PersistentVolumeClaim": claim_record, "PersistentVolume": volume_record}
