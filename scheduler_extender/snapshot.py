"""Snapshot files: a whole cluster's LINSTOR and Kubernetes state in one YAML or JSON document.

Used by ``extender --snapshot``, ``explain --snapshot``, the demo and the tests, and written by
``linstor-scheduler snapshot`` for bug reports. The format is what the APIs return, so anyone can
write one by hand or from ``curl``/``kubectl`` output::

    linstor:
      nodes: [...]          # items exactly as GET /v1/nodes returns them
      resources: [...]      # items exactly as GET /v1/view/resources returns them
      storage_pools: [...]  # items exactly as GET /v1/view/storage-pools returns them
      resource_definitions: [...]  # optional: items exactly as GET /v1/resource-definitions returns them
      resource_groups: [...]       # optional: GET /v1/resource-groups
      controller_properties: {}    # optional: GET /v1/controller/properties
                                   # (props inherited controller < group < definition: the quorum policy
                                   # the drill judges; without definitions the drill says it is unknown)
    kubernetes:
      items: [...]          # Node, PersistentVolumeClaim, PersistentVolume, StorageClass, Pod objects
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from linstor_scheduler.linstor.models import Node, Resource, StoragePool

from .state import ClusterState, KubeView


class SnapshotError(ValueError):
    pass


def read_snapshot(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_bytes()
    try:
        doc = orjson.loads(text) if text.lstrip()[:1] in (b"{", b"[") else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise SnapshotError(f"{path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SnapshotError(f"{path}: a snapshot is a mapping with 'linstor' and 'kubernetes' keys")
    return doc


def _section(doc: Mapping[str, Any], *keys: str) -> list[Any]:
    cur: Any = doc
    for key in keys:
        cur = (cur or {}).get(key) if isinstance(cur, Mapping) else None
    if cur is None:
        return []
    if not isinstance(cur, list):
        raise SnapshotError(f"snapshot: {'.'.join(keys)} must be a list")
    return cur


def parse_linstor(doc: Mapping[str, Any]) -> tuple[list[Node], list[StoragePool], list[Resource]]:
    try:
        nodes = [Node.model_validate(x) for x in _section(doc, "linstor", "nodes")]
        pools = [StoragePool.model_validate(x) for x in _section(doc, "linstor", "storage_pools")]
        resources = [Resource.model_validate(x) for x in _section(doc, "linstor", "resources")]
    except ValidationError as exc:
        raise SnapshotError(f"snapshot: LINSTOR items do not match the REST shapes: {exc}") from None
    return nodes, pools, resources


def kube_items(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = _section(doc, "kubernetes", "items")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "kind" not in item:
            raise SnapshotError(f"snapshot: kubernetes.items[{i}] is not a Kubernetes object with a kind")
    return items


def state_from_snapshot(doc: Mapping[str, Any], *, now: float, generation: int = 1) -> ClusterState:
    nodes, pools, resources = parse_linstor(doc)
    return ClusterState.build(
        generation=generation, nodes=nodes, pools=pools, resources=resources,
        kube=KubeView.from_objects(kube_items(doc)), linstor_synced_at=now, kube_synced_at=now,
    )


def find_pod(doc: Mapping[str, Any], ref: str) -> dict[str, Any] | None:
    namespace, _, name = ref.rpartition("/")
    namespace = namespace or "default"
    for item in kube_items(doc):
        meta = item.get("metadata") or {}
        if item.get("kind") == "Pod" and meta.get("name") == name and (meta.get("namespace") or "default") == namespace:
            return item
    return None
