"""Where the controller's Kubernetes objects come from: informer caches (the service) or one list per
pass (``--once`` and the fault-matrix tests, where each pass must see exactly the API's state).

Both answer ``objects()`` (None while not synced; claims and volumes as the records of
``linstor_scheduler.claims``, Nodes and our VolumeAttachments as those of ``records.py``, never the
objects) and ``age()`` (seconds the view may lag the API;
None while unknown), so the staleness guard treats them alike.

The caches are tuned from ``--max-staleness`` (``informer_settings``), so that each way the API
server misbehaves costs less than the bound, or is over within about one bound once it is over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from kubernetes import client as k8s

from linstor_scheduler.claims import TRANSFORMS as CLAIM_TRANSFORMS
from linstor_scheduler.claims import claim_record, volume_record
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube.informer import RECORD_PAGE_SIZE, KubeCaches, bounded_by, object_key
from linstor_scheduler.volumes import pod_claims

from .observe import ALL, LABELLED, KubeObjects, label_selector
from .records import TRANSFORMS as RECORD_TRANSFORMS
from .records import attachment_record, node_record

log = logging.getLogger(__name__)
KINDS = ("Pod", "PersistentVolumeClaim", "PersistentVolume", "Node", "VolumeAttachment")


class FencingKubeView(Protocol):
    def objects(self) -> KubeObjects | None: ...
    def age(self) -> float | None: ...
    def refresh(self) -> None: ...


def _objects(items: dict[str, list[dict[str, Any]]]) -> KubeObjects:
    """From one list per kind: claims, volumes, Nodes and our VolumeAttachments read into records, as
    the caches keep them."""
    return KubeObjects(
        pods=items["Pod"],
        pvcs={object_key(o): claim_record(o) for o in items["PersistentVolumeClaim"]},
        pvs={object_key(o): volume_record(o) for o in items["PersistentVolume"]},
        nodes={object_key(o): node_record(o) for o in items["Node"]},
        attachments=[va for va in map(attachment_record, items["VolumeAttachment"]) if va is not None])


def informer_settings(bound: float, api_timeout: float) -> dict[str, float]:
    """How the informers follow the API server, from the staleness fencing tolerates (``bound``): the
    core's ``bounded_by`` (each watch ended by the server every third of the bound, a silent one given
    up a sixth of it later, retries at least every third of it, a list page ``--api-timeout``), with
    at least 1 s of slack and back-off (1 to 10 s, 1 to 30 s)."""
    return {"max_age": bound, **bounded_by(bound, api_timeout, floor=1.0)}


def with_claims(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod informer's transform with ``--select all``: a pod without any claim (PVC or generic
    ephemeral volume) can have no LINSTOR volume and is never judged, so it is not kept; the cache
    then holds the pods that use claims, not every pod of the cluster (volumes are immutable: a pod
    skipped stays skippable)."""
    return pod if pod_claims(pod) else None


class CachedKube:
    """List+watch caches; pods through a server-side label selector (``observe.label_selector``: with
    ``--select labelled`` only those that carry our label, with ``all`` every pod not labelled keep)."""

    def __init__(self, api_client: k8s.ApiClient, *, bound: float = 20.0, api_timeout: float = 10.0,
                 select: str = LABELLED) -> None:
        self.bound = bound
        # Claims and volumes as records (linstor_scheduler/claims.py): a PVC + PV pair is ~0.6 KB
        # instead of ~18 KB as the API server sends it, and every volume of the cluster is one. Nodes
        # and our VolumeAttachments as records too (records.py): every Node of the cluster is one.
        transforms = {**CLAIM_TRANSFORMS, **RECORD_TRANSFORMS, **({"Pod": with_claims} if select == ALL else {})}
        self.caches = KubeCaches(api_client, KINDS, label_selectors={"Pod": label_selector(select)},
                                 transforms=transforms, page_size=RECORD_PAGE_SIZE,
                                 **informer_settings(bound, api_timeout))

    def readiness(self) -> tuple[bool, str]:
        """Fresh: the stalest informer's view younger than the bound (the reason names it otherwise)."""
        return self.caches.readiness(self.bound)

    def liveness(self) -> tuple[bool, str]:
        return self.caches.liveness()

    def start(self) -> None:
        self.caches.start()

    def stop(self) -> None:
        self.caches.stop()

    def refresh(self) -> None:
        """Informers refresh themselves."""

    def objects(self) -> KubeObjects | None:
        if not self.caches.synced:
            return None
        caches = self.caches
        return KubeObjects(pods=caches["Pod"].items(), pvcs=caches["PersistentVolumeClaim"].snapshot(),
                           pvs=caches["PersistentVolume"].snapshot(), nodes=caches["Node"].snapshot(),
                           attachments=caches["VolumeAttachment"].items())

    def age(self) -> float | None:
        return self.caches.age()


class ListedKube:
    """One LIST per kind per ``refresh()``; a failed list leaves no view at all until the next success."""

    def __init__(self, api_client: k8s.ApiClient, *, timeout: float = 10.0,
                 clock: Callable[[], float] = boottime, select: str = LABELLED) -> None:
        core, storage = k8s.CoreV1Api(api_client), k8s.StorageV1Api(api_client)
        opts: dict[str, Any] = {"_preload_content": False, "_request_timeout": (min(timeout, 3.0), timeout)}
        self._lists = {
            "Pod": lambda: core.list_pod_for_all_namespaces(label_selector=label_selector(select), **opts),
            "PersistentVolumeClaim": lambda: core.list_persistent_volume_claim_for_all_namespaces(**opts),
            "PersistentVolume": lambda: core.list_persistent_volume(**opts),
            "Node": lambda: core.list_node(**opts),
            "VolumeAttachment": lambda: storage.list_volume_attachment(**opts),
        }
        self.clock = clock
        self._objects: KubeObjects | None = None
        self._listed_at: float | None = None
        self.error: str | None = None

    def refresh(self) -> None:
        self._objects = None
        started = self.clock()
        try:
            items = {kind: list(orjson.loads(fn().data).get("items") or []) for kind, fn in self._lists.items()}
        except Exception as exc:  # any failure: no view this pass (never half a view)
            self.error = f"{type(exc).__name__}: {getattr(exc, 'status', '')} {getattr(exc, 'reason', exc)}"
            log.warning("Kubernetes list failed: %s", self.error)
            return
        self.error = None
        self._objects = _objects(items)
        self._listed_at = started

    def objects(self) -> KubeObjects | None:
        return self._objects

    def age(self) -> float | None:
        """Since the start of the last complete list (the evidence is as old as its first read)."""
        return self.clock() - self._listed_at if self._objects is not None and self._listed_at is not None else None
