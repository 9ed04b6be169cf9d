"""The writes of the fencing controller, each guarded by a UID precondition, each answering an Outcome.

Stateless on purpose: nothing here remembers what it did. The controller re-derives on every pass
what is left to do, so a crash or a new leader between the pod delete and the VolumeAttachment
delete finishes the job. A UID precondition makes sure we never delete a *new* object of the same
name (a StatefulSet pod recreated meanwhile, a VolumeAttachment re-created for the new pod).

Answers are mapped, never raised, and judged by their HTTP status alone: an answer body we do not
use is never deserialized (``_preload_content=False``), so a delete that worked is never recorded as
failed because the client could not parse what came back. 404 = already gone (the goal is
reached), 409 = the object changed (re-judge next pass), 429 = refused for now (PDB or API
throttling: retried after ``Retry-After``), others (410, 5xx, network, timeout) = error (retry next
pass). Every call carries ``_request_timeout``: no call waits for ever.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from linstor_scheduler.kube import objects
from linstor_scheduler.kube.client import retry_after_seconds
from linstor_scheduler.volumes import CSI_DRIVER

from . import intents
from .records import AttachmentRecord, NodeRecord, as_attachment, attachment_object, node_object

log = logging.getLogger(__name__)
TAINT_KEY = intents.TAINT_KEY
OLD_TAINT_KEYS = ("drbd.linbit.com/lost-storage",)  # set by earlier versions: removed like ours


class Outcome(enum.Enum):
    DONE = "done"
    GONE = "gone"  # 404: nothing left to delete
    CONFLICT = "conflict"  # 409: precondition failed, the object is not the one we judged
    THROTTLED = "throttled"  # 429: eviction refused (PodDisruptionBudget) or API rate limit
    ERROR = "error"

    @property
    def reached(self) -> bool:
        """The object we judged is gone."""
        return self in (Outcome.DONE, Outcome.GONE)


@dataclass(frozen=True, slots=True)
class WriteAnswer:
    """A write's result: its outcome and, for 429, how long the server asked us to wait."""

    outcome: Outcome
    retry_after: float | None = None
    status: int | None = None
    held: str | None = None  # not sent: why (checked at the moment of the write)
    held_by: str | None = None  # which check held it (executor.py: the preconditions, the storage, a doubt)

    @property
    def value(self) -> str:
        return "held" if self.held else self.outcome.value

    @property
    def reached(self) -> bool:
        return self.outcome.reached

    @property
    def lost(self) -> bool:
        """Sent, and no HTTP status came back (a cut connection, no answer in time): the API server
        may have carried it out. Only a live read tells."""
        return self.outcome is Outcome.ERROR and self.status is None and self.held is None


def _answer(exc: Exception, what: str) -> WriteAnswer:
    if isinstance(exc, ApiException):
        if exc.status == 404:
            return WriteAnswer(Outcome.GONE, status=404)
        if exc.status == 409:
            log.info("%s: precondition failed (the object changed): %s", what, exc.reason)
            return WriteAnswer(Outcome.CONFLICT, status=409)
        if exc.status == 429:
            log.warning("%s: refused for now (429 %s)", what, exc.reason)
            return WriteAnswer(Outcome.THROTTLED, retry_after_seconds(exc), status=429)
        log.warning("%s: API error %s %s", what, exc.status, exc.reason)
        return WriteAnswer(Outcome.ERROR, status=exc.status)
    log.warning("%s: %s: %s", what, type(exc).__name__, exc)
    return WriteAnswer(Outcome.ERROR)


class KubeActions:
    """Kubernetes writes and the few live reads done right before a write."""

    def __init__(self, api_client: k8s.ApiClient, timeout: float = 10.0) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.storage = k8s.StorageV1Api(api_client)
        self.timeout = timeout  # seconds, for connect and for read (the client's _request_timeout)

    @property
    def _opts(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": (min(self.timeout, 3.0), self.timeout)}

    # --- live reads (the caches may lag; a write is only done on what the API says now) --------
    def _current(self, read: Any, *args: str) -> dict[str, Any] | None:
        """``read(*args)`` as the API server answers it now; None if the object is gone (404).
        Raises on other errors."""
        try:
            resp = read(*args, **self._opts)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return orjson.loads(resp.data)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as the API server has it now; None if gone. Raises on other errors."""
        return self._current(self.core.read_namespaced_pod, name, namespace)

    def get_node(self, name: str) -> dict[str, Any] | None:
        """The Node as the API server has it now (its current resourceVersion); None if gone."""
        return self._current(self.core.read_node, name)

    def get_attachment(self, name: str) -> dict[str, Any] | None:
        """The VolumeAttachment as the API server has it now; None if gone."""
        return self._current(self.storage.read_volume_attachment, name)

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        resp = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}", **self._opts)
        return list(orjson.loads(resp.data).get("items") or [])

    # --- writes ---------------------------------------------------------------------------------
    def delete_pod(self, namespace: str, name: str, uid: str) -> WriteAnswer:
        """Delete with grace 0: for a node that cannot run kubelet's part of the deletion."""
        body = k8s.V1DeleteOptions(grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=uid))
        try:
            _release(self.core.delete_namespaced_pod(name, namespace, body=body, **self._opts))
        except Exception as exc:  # mapped, see the module docstring
            return _answer(exc, f"delete pod {namespace}/{name}")
        return WriteAnswer(Outcome.DONE)

    def evict_pod(self, namespace: str, name: str, uid: str) -> WriteAnswer:
        """The Eviction API: PodDisruptionBudgets are respected (429 while they forbid it)."""
        body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace),
                              delete_options=k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid)))
        try:
            _release(self.core.create_namespaced_pod_eviction(name, namespace, body, **self._opts))
        except Exception as exc:
            return _answer(exc, f"evict pod {namespace}/{name}")
        return WriteAnswer(Outcome.DONE)

    def delete_attachment(self, attachment: AttachmentRecord | dict[str, Any]) -> WriteAnswer:
        attachment = attachment_object(attachment)
        name = objects.name(attachment)
        attacher = objects.spec(attachment).get("attacher")
        if attacher != CSI_DRIVER:  # belt and braces: never another driver's attachment
            raise ValueError(f"refusing to delete VolumeAttachment {name} of {attacher}")
        body = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=objects.uid(attachment)))
        try:
            _release(self.storage.delete_volume_attachment(name, body=body, **self._opts))
        except Exception as exc:
            return _answer(exc, f"delete VolumeAttachment {name}")
        return WriteAnswer(Outcome.DONE)

    def set_taint(self, node: NodeRecord | dict[str, Any], present: bool) -> WriteAnswer:
        """Add or remove our NoSchedule taint; the resourceVersion guards against lost updates. Every
        other taint is sent back as it was."""
        node = node_object(node)
        name = objects.name(node)
        taints = [t for t in objects.spec(node).get("taints") or [] if not _ours(t)]
        if present:
            taints.append({"key": TAINT_KEY, "effect": "NoSchedule"})
        patch = {"metadata": {"resourceVersion": objects.resource_version(node)}, "spec": {"taints": taints}}
        try:
            _release(self.core.patch_node(name, patch, **self._opts))
        except Exception as exc:
            return _answer(exc, f"{'taint' if present else 'untaint'} node {name}")
        return WriteAnswer(Outcome.DONE)


def _release(resp: Any) -> None:
    """The answer's body is not used (the status said it all): read it off so the connection is reused."""
    for name in ("drain_conn", "release_conn"):
        method = getattr(resp, name, None)
        if callable(method):
            method()


def _ours(taint: dict[str, Any]) -> bool:
    return taint.get("key") == TAINT_KEY or taint.get("key") in OLD_TAINT_KEYS


def has_taint(node: NodeRecord | dict[str, Any] | None) -> bool:
    """The node (its record, or the object of a live read) carries our taint (or the one earlier
    versions set)."""
    if isinstance(node, NodeRecord):
        return any(key == "key" and (value == TAINT_KEY or value in OLD_TAINT_KEYS)
                   for taint in node.taints for key, value in taint)
    return any(_ours(t) for t in objects.spec(node).get("taints") or [])


AttachmentIndex = dict[str, dict[str, list[AttachmentRecord]]]  # PV -> node -> our VolumeAttachments


def index_attachments(attachments: Iterable[AttachmentRecord | dict[str, Any]]) -> AttachmentIndex:
    """Ours only (attacher linstor.csi.linbit.com), by PV and node: one pass over the list per pass.
    The informer keeps only ours, as records (``records.attachment_record``); an object is read
    into one, or skipped when it is not ours."""
    index: AttachmentIndex = {}
    for va in attachments:
        record = as_attachment(va)
        if record is not None:
            index.setdefault(record.pv, {}).setdefault(record.node, []).append(record)
    return index
