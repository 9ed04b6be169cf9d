"""The writes of the fencing controller, each guarded by a UID precondition, each answering an Outcome.

Stateless on purpose: nothing here remembers what it did. The controller re-derives on every pass
what is left to do, so a crash or a new leader between the pod delete and the VolumeAttachment
delete finishes the job. A UID precondition makes sure we never delete a *new* object of the same
name (a StatefulSet pod recreated meanwhile, a VolumeAttachment re-created for the new pod).

Answers are mapped, never raised: 404 = already gone (the goal is reached), 409 = the object changed
(re-judge next pass), 429 = refused for now (PDB or API throttling: retry next pass), others
(410, 5xx, network) = error (retry next pass).
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from linstor_scheduler.volumes import CSI_DRIVER

log = logging.getLogger(__name__)
TAINT_KEY = "drbd.linbit.com/lost-storage"


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


def _outcome(exc: Exception, what: str) -> Outcome:
    if isinstance(exc, ApiException):
        if exc.status == 404:
            return Outcome.GONE
        if exc.status == 409:
            log.info("%s: precondition failed (the object changed): %s", what, exc.reason)
            return Outcome.CONFLICT
        if exc.status == 429:
            log.warning("%s: refused for now (429 %s)", what, exc.reason)
            return Outcome.THROTTLED
        log.warning("%s: API error %s %s", what, exc.status, exc.reason)
        return Outcome.ERROR
    log.warning("%s: %s: %s", what, type(exc).__name__, exc)
    return Outcome.ERROR


class KubeActions:
    """Kubernetes writes and the few live reads done right before a write."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.policy = k8s.PolicyV1Api(api_client)
        self.storage = k8s.StorageV1Api(api_client)

    # --- live reads (the caches may lag; a write is only done on what the API says now) --------
    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as the API server has it now; None if gone. Raises on other errors."""
        try:
            resp = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return orjson.loads(resp.data)

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        resp = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}", _preload_content=False)
        return list(orjson.loads(resp.data).get("items") or [])

    # --- writes ---------------------------------------------------------------------------------
    def delete_pod(self, namespace: str, name: str, uid: str) -> Outcome:
        """Delete with grace 0: for a node that cannot run kubelet's part of the deletion."""
        body = k8s.V1DeleteOptions(grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=uid))
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body)
        except Exception as exc:  # mapped, see the module docstring
            return _outcome(exc, f"delete pod {namespace}/{name}")
        return Outcome.DONE

    def evict_pod(self, namespace: str, name: str, uid: str) -> Outcome:
        """The Eviction API: PodDisruptionBudgets are respected (429 while they forbid it)."""
        body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace),
                              delete_options=k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid)))
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, body)
        except Exception as exc:
            return _outcome(exc, f"evict pod {namespace}/{name}")
        return Outcome.DONE

    def delete_attachment(self, attachment: dict[str, Any]) -> Outcome:
        meta = attachment.get("metadata") or {}
        spec = attachment.get("spec") or {}
        if spec.get("attacher") != CSI_DRIVER:  # belt and braces: never another driver's attachment
            raise ValueError(f"refusing to delete VolumeAttachment {meta.get('name')} of {spec.get('attacher')}")
        body = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=meta.get("uid")))
        try:
            self.storage.delete_volume_attachment(meta.get("name"), body=body)
        except Exception as exc:
            return _outcome(exc, f"delete VolumeAttachment {meta.get('name')}")
        return Outcome.DONE

    def set_taint(self, node: dict[str, Any], present: bool) -> Outcome:
        """Add or remove our NoSchedule taint; the resourceVersion guards against lost updates."""
        meta = node.get("metadata") or {}
        taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != TAINT_KEY]
        if present:
            taints.append({"key": TAINT_KEY, "effect": "NoSchedule"})
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "spec": {"taints": taints}}
        try:
            self.core.patch_node(meta.get("name"), patch)
        except Exception as exc:
            return _outcome(exc, f"{'taint' if present else 'untaint'} node {meta.get('name')}")
        return Outcome.DONE


def has_taint(node: dict[str, Any] | None) -> bool:
    return any(t.get("key") == TAINT_KEY for t in ((node or {}).get("spec") or {}).get("taints") or [])


def attachment_matches(attachment: dict[str, Any], pv: str, node: str) -> bool:
    """Ours (attacher linstor.csi.linbit.com), for exactly this PV, on exactly this node."""
    spec = attachment.get("spec") or {}
    return (spec.get("attacher") == CSI_DRIVER and spec.get("nodeName") == node
            and (spec.get("source") or {}).get("persistentVolumeName") == pv)
