"""The extender in snapshot mode (the format and its reading are the core's, ``linstor_scheduler.snapshot``):
the ``ClusterState`` a snapshot makes, and an ``Extender`` that judges against it, which never ages.

``extender --snapshot``, ``explain``, the locality report, the drill, the demo and the benchmarks all
make theirs with ``snapshot_extender``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.linstor.models import Resource
from linstor_scheduler.snapshot import Snapshot, read_snapshot, snapshot_of

from .holder import StateHolder
from .judge import Extender
from .scoring import Weights
from .state import ClusterState, ExtenderKubeView, ResourceIndexer


def state_from_snapshot(doc: Mapping[str, Any] | Snapshot, *, now: float, generation: int = 1) -> ClusterState:
    """The state a snapshot makes. A ``Snapshot`` read without the extender's index as its resource sink
    (``resources=ResourceIndexer()``, as each of ours is read) has its resource items indexed now."""
    snap = snapshot_of(doc, resources=ResourceIndexer())
    index = snap.resources
    if not isinstance(index, ResourceIndexer):
        index = ResourceIndexer()
        index.add(Resource.parse(item) for item in snap.raw_resources)
    return ClusterState.build(
        generation=generation, nodes=snap.nodes, pools=snap.pools, resources=index.index,
        kube=ExtenderKubeView.from_objects([*snap.kube_items, *snap.claims]), linstor_synced_at=now, kube_synced_at=now,
        reserved=index.reserved, definitions=snap.pool_definitions, controller_props=snap.controller_props,
    )


def snapshot_extender(source: str | os.PathLike[str] | Mapping[str, Any] | Snapshot | ClusterState, *,
                      now: float | None = None, weights: Weights | None = None, **options: Any) -> Extender:
    """An ``Extender`` over a snapshot, ready, its state never aging: ``source`` is a snapshot file
    (``-``: standard input), a document, a ``Snapshot`` or the ``ClusterState`` one made; ``now`` is the
    state's time (default: the boot clock's now); ``options`` go to ``Extender``."""
    if isinstance(source, str | os.PathLike):
        source = read_snapshot(source, resources=ResourceIndexer())
    if not isinstance(source, ClusterState):
        source = state_from_snapshot(source, now=boottime() if now is None else now)
    holder = StateHolder(static=True, ready=True)
    holder.swap(source)
    return Extender(holder, weights=weights, **options)
