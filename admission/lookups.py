"""Lookups from the informer caches, with one bounded direct read when a claim is not cached yet.

A StatefulSet controller creates a pod's PVC a moment before the pod: our PVC watch may lag that
by a few milliseconds. Rather than leave such a pod on the default scheduler, a cache miss costs one
GET of that PVC (timeout ``read_timeout``); errors count as "not seen" (the pod is left alone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from linstor_scheduler.kube.informer import KubeCaches
from linstor_scheduler.volumes import Obj, StorageClassInfo

from .review import Lookups, is_default_class

log = logging.getLogger(__name__)

WEBHOOK_KINDS = ("PersistentVolumeClaim", "PersistentVolume", "StorageClass")


def kube_lookups(caches: KubeCaches, api_client: k8s.ApiClient | None = None, *, read_timeout: float = 1.0,
                 on_direct_read: Callable[[str], None] | None = None) -> Lookups:
    core = k8s.CoreV1Api(api_client) if api_client is not None else None

    def read_pvc(namespace: str, name: str) -> Obj | None:
        if core is None:
            return None
        try:
            resp = core.read_namespaced_persistent_volume_claim(
                name, namespace, _preload_content=False, _request_timeout=read_timeout)
            outcome, doc = "found", orjson.loads(resp.data)
        except ApiException as exc:
            outcome, doc = ("not_found" if exc.status == 404 else "error"), None
            if exc.status != 404:
                log.warning("direct read of PVC %s/%s: API error %s", namespace, name, exc.status)
        except Exception as exc:  # timeouts, refused connections: the pod is left alone, never failed
            outcome, doc = "error", None
            log.warning("direct read of PVC %s/%s: %s", namespace, name, exc)
        if on_direct_read:
            on_direct_read(outcome)
        return doc if isinstance(doc, dict) else None

    def get_pvc(key: str) -> Obj | None:
        namespace, _, name = key.partition("/")
        return caches["PersistentVolumeClaim"].get(name, namespace) or read_pvc(namespace, name)

    def get_pv(name: str) -> Obj | None:
        return caches["PersistentVolume"].get(name)

    def get_sc(name: str) -> StorageClassInfo | None:
        obj: dict[str, Any] | None = caches["StorageClass"].get(name)
        return StorageClassInfo.from_object(obj) if obj else None

    def default_class() -> str | None:
        defaults = [o for o in caches["StorageClass"].items() if is_default_class(o)]
        # Like the API server's DefaultStorageClass admission: the newest default wins.
        defaults.sort(key=lambda o: ((o.get("metadata") or {}).get("creationTimestamp") or "",
                                     (o.get("metadata") or {}).get("name") or ""))
        return (defaults[-1].get("metadata") or {}).get("name") if defaults else None

    return Lookups(get_pvc, get_pv, get_sc, default_class)
