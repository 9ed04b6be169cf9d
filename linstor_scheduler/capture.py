"""``linstor-scheduler snapshot`` (and ``explain``, ``locality``, ``affinity``, ``drill`` on the live
cluster): one read of LINSTOR and one list of each Kubernetes kind the extender indexes, as a snapshot
document (the format: ``snapshot.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from kubernetes import client as k8s

from .kube import objects
from .linstor.client import LinstorClient


def _raw(resp: Any) -> dict[str, Any]:
    return orjson.loads(resp.data)


def _slim(item: dict[str, Any], kind: str, api_version: str) -> dict[str, Any]:
    """Lists omit kind/apiVersion per item; managedFields and node images only bloat reports."""
    item = {"apiVersion": api_version, "kind": kind, **item}
    if "managedFields" in objects.meta(item):
        del objects.writable_meta(item)["managedFields"]
    if kind == "Node":
        (item.get("status") or {}).pop("images", None)
    return item


def kube_snapshot_items(api: k8s.ApiClient, *, pod: str | None = None,
                        scheduler_name: str | None = "linstor") -> list[dict[str, Any]]:
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
        selector = {"field_selector": f"spec.schedulerName={scheduler_name}"} if scheduler_name else {}
        pods = core.list_pod_for_all_namespaces(_preload_content=False, **selector)
        items += [_slim(i, "Pod", "v1") for i in _raw(pods)["items"]]
    return items


async def capture(client: LinstorClient, api: k8s.ApiClient, *, pod: str | None = None,
                  scheduler_name: str | None = "linstor") -> dict[str, Any]:
    """One read of everything the extender indexes, as a snapshot document; ``pod`` adds that pod,
    else the pods with ``scheduler_name`` (None: every pod). The resource definitions, groups and
    controller properties carry the quorum policies (inherited in that order) the drill needs; the
    storage pool definitions and the controller properties the pools' over-subscription ratios.
    Closes ``client``."""
    try:
        nodes = await client.get_nodes()
        pools = await client.get_storage_pools()
        resources = await client.get_resources()
        definitions = await client.get_resource_definitions()
        groups = await client.get_resource_groups()
        controller_props = await client.get_controller_properties()
        pool_definitions = await client.get_storage_pool_definitions()
    finally:
        await client.aclose()
    items = await asyncio.to_thread(kube_snapshot_items, api, pod=pod, scheduler_name=scheduler_name)

    def dump(models: list[Any]) -> list[dict[str, Any]]:
        return [m.dump() for m in models]

    return {"linstor": {"nodes": dump(nodes), "storage_pools": dump(pools), "resources": dump(resources),
                        "resource_definitions": dump(definitions), "resource_groups": dump(groups),
                        "controller_properties": controller_props,
                        "storage_pool_definitions": dump(pool_definitions)},
            "kubernetes": {"items": items}}
