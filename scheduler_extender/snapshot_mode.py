"""The extender in snapshot mode (the format and its reading are the core's, ``linstor_scheduler.snapshot``):
the ``ClusterState`` a snapshot makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from linstor_scheduler.linstor.models import Resource
from linstor_scheduler.snapshot import Snapshot, snapshot_of

from .state import ClusterState, KubeView, ResourceIndexer


def state_from_snapshot(doc: Mapping[str, Any] | Snapshot, *, now: float, generation: int = 1) -> ClusterState:
    """The state a snapshot makes. A ``Snapshot`` read without the extender's index as its resource sink
    (``resources=ResourceIndexer()``, as each of ours is read) has its resource items indexed now."""
    snap = snapshot_of(doc, resources=ResourceIndexer())
    index = snap.resources
    if not isinstance(index, ResourceIndexer):
        index = ResourceIndexer()
        index.add(Resource.model_validate(item) for item in snap.raw_resources)
    return ClusterState.build(
        generation=generation, nodes=snap.nodes, pools=snap.pools, resources=index.index,
        kube=KubeView.from_objects([*snap.kube_items, *snap.claims]), linstor_synced_at=now, kube_synced_at=now,
        reserved=index.reserved, definitions=snap.pool_definitions, controller_props=snap.controller_props,
    )
