"""Kubernetes half of ``linstor-scheduler snapshot``: one list of each kind the extender indexes."""

from __future__ import annotations

from typing import Any

import orjson
from kubernetes import client as k8s


def _raw(resp: Any) -> dict[str, Any]:
    return orjson.loads(resp.data)


def _slim(item: dict[str, Any], kind: str, api_version: str) -> dict[str, Any]:
    """Lists omit kind/apiVersion per item; managedFields and node images only bloat reports."""
    item = {"apiVersion": api_version, "kind": kind, **item}
    (item.get("metadata") or {}).pop("managedFields", None)
    if kind == "Node":
        (item.get("status") or {}).pop("images", None)
    return item


def kube_snapshot_items(api: k8s.ApiClient, *, pod: str | None = None,
                        scheduler_name: str = "linstor") -> list[dict[str, Any]]:
    core = k8s.CoreV1Api(api)
    storage = k8s.StorageV1Api(api)
    items: list[dict[str, Any]] = []
    for kind, version, fn in (
        ("Node", "v1", core.list_node),
        ("PersistentVolume", "v1", core.list_persistent_volume),
        ("PersistentVolumeClaim", "v1", core.list_persistent_volume_claim_for_all_namespaces),
        ("StorageClass", "storage.k8s.io/v1", storage.list_storage_class),
    ):
        items += [_slim(i, kind, version) for i in _raw(fn(_preload_content=False))["items"]]
    if pod:
        namespace, _, name = pod.rpartition("/")
        raw = _raw(core.read_namespaced_pod(name, namespace or "default", _preload_content=False))
        items.append(_slim(raw, "Pod", "v1"))
    else:
        pods = core.list_pod_for_all_namespaces(field_selector=f"spec.schedulerName={scheduler_name}",
                                                _preload_content=False)
        items += [_slim(i, "Pod", "v1") for i in _raw(pods)["items"]]
    return items
