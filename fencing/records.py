"""What fencing keeps of each Node and VolumeAttachment: the fields it reads, nothing else.

The informers turn each object into its record as it arrives (``TRANSFORMS``), as the claims and
volumes of ``linstor_scheduler.claims`` are; a one-off list (``ListedKube``) reads its objects into
the same records. A Node as the API server sends it (status with conditions, addresses, capacity,
images, nodeInfo; managedFields) is several KB as a Python dict, and fencing follows every Node of
the cluster; a record is its name, UID, resourceVersion, Ready condition and taints.

Who reads what:
- Node: the Ready condition (``observe.node_states``, the second witness of a NotReady node); the
  taints (``actions.has_taint``: ours, to keep or remove; ``actions.set_taint`` patches the whole
  list, keeping every other taint, so each taint is kept whole); name, UID and resourceVersion
  (the taint patch's lost-update guard, the Events' involvedObject, an intent's UID).
- VolumeAttachment: name and UID (the delete's UID precondition, the effect check of a lost
  answer), the PV and the node (``actions.index_attachments``). Only ours are kept (attacher
  ``linstor.csi.linbit.com``, with a PV and a node): no other is ever read.

This is not the extender's Node record (``scheduler_extender.state.Topology``: labels only): a
record carrying the resourceVersion changes with every write to the Node, which the extender's
view must not hear of; fencing reads no labels.

Where a write or an Event needs the object, ``node_object`` / ``attachment_object`` give the
fields above in the API's form (the few objects acted on in a pass, not every one).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from linstor_scheduler.kube import objects
from linstor_scheduler.volumes import CSI_DRIVER

_intern = sys.intern
Taint = tuple[tuple[str, Any], ...]  # one taint's fields, in the API's order


def _ready(obj: Mapping[str, Any]) -> bool:
    """The Ready condition is True (a Node without one is not known to be ready)."""
    for cond in objects.status(obj).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A Node as fencing sees it."""

    name: str
    uid: str | None
    resource_version: str | None
    ready: bool  # status.conditions[type=Ready].status == "True"
    taints: tuple[Taint, ...] = ()  # spec.taints, each whole

    def taint_list(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.taints]


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """One of our VolumeAttachments (attacher ``CSI_DRIVER``)."""

    name: str
    uid: str | None
    pv: str  # spec.source.persistentVolumeName
    node: str  # spec.nodeName


def node_record(obj: Mapping[str, Any]) -> NodeRecord:
    taints = objects.spec(obj).get("taints") or ()
    return NodeRecord(
        name=_intern(str(objects.name(obj, ""))),
        uid=objects.uid(obj),
        resource_version=objects.resource_version(obj),
        ready=_ready(obj),
        taints=tuple(tuple(t.items()) for t in taints if isinstance(t, Mapping)))


def attachment_record(obj: Mapping[str, Any]) -> AttachmentRecord | None:
    """Ours with a PV and a node, else None (an informer keeps nothing of it)."""
    spec = objects.spec(obj)
    pv = (spec.get("source") or {}).get("persistentVolumeName")
    node = spec.get("nodeName")
    if spec.get("attacher") != CSI_DRIVER or not pv or not node:
        return None
    return AttachmentRecord(name=str(objects.name(obj, "")), uid=objects.uid(obj), pv=str(pv),
                            node=_intern(str(node)))


def as_node(value: NodeRecord | Mapping[str, Any] | None) -> NodeRecord | None:
    """A record as is; an object (a live read, a snapshot item, a test's dict) read into one."""
    if value is None or isinstance(value, NodeRecord):
        return value
    return node_record(value)


def as_attachment(value: AttachmentRecord | Mapping[str, Any] | None) -> AttachmentRecord | None:
    if value is None or isinstance(value, AttachmentRecord):
        return value
    return attachment_record(value)


def node_object(value: NodeRecord | Mapping[str, Any] | None) -> dict[str, Any]:
    """The Node in the API's form, as far as the record keeps it (kind, name, UID, resourceVersion,
    taints, the Ready condition): what a taint patch and an Event read. An object stays as it is."""
    if value is None:
        return {"apiVersion": "v1", "kind": "Node"}
    if not isinstance(value, NodeRecord):
        return {"apiVersion": "v1", "kind": "Node", **value}
    meta = {k: v for k, v in (("name", value.name), ("uid", value.uid), ("resourceVersion", value.resource_version))
            if v is not None}
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta,
            "spec": {"taints": value.taint_list()} if value.taints else {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if value.ready else "False"}]}}


def attachment_object(value: AttachmentRecord | Mapping[str, Any]) -> dict[str, Any]:
    """The VolumeAttachment in the API's form, as far as the record keeps it (name, UID, attacher,
    PV, node): what its delete and the check of a lost answer read. An object stays as it is."""
    if not isinstance(value, AttachmentRecord):
        return dict(value)
    meta = {"name": value.name, **({"uid": value.uid} if value.uid is not None else {})}
    return {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": meta,
            "spec": {"attacher": CSI_DRIVER, "nodeName": value.node,
                     "source": {"persistentVolumeName": value.pv}}}


# What fencing's informers keep of these kinds (``KubeCaches(transforms=...)``).
TRANSFORMS = {"Node": node_record, "VolumeAttachment": attachment_record}
