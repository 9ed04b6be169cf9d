"""What locality keeps of a pod: namespace, name, node, scheduler and its claim names, nothing more.

At 100,000 pods a whole Pod object (2-10 KB as a dict) per pod is hundreds of MB; a ``PodRecord``
is a few hundred bytes. The informer stores records (its ``transform``), so the exporter never
holds the objects (of claims and volumes it keeps the extender's records); the claims are resolved
against the extender's ``ClusterState`` with the same
functions the extender uses (linstor_scheduler.volumes), so a pod's volumes mean the same thing
everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from linstor_scheduler.kube import objects
from linstor_scheduler.volumes import ClaimRef, pod_claims, resolve_claim
from scheduler_extender import EXTENDER_TRANSFORMS, ClusterState

from .classify import UNKNOWN, PodLocality, VolumeLocality, classify_volume, up_to_date_nodes, why_not_local

DONE_PHASES = frozenset({"Succeeded", "Failed"})
_intern = sys.intern  # node and scheduler names repeat across pods: one string each


@dataclass(frozen=True, slots=True)
class PodRecord:
    namespace: str
    name: str
    node: str
    scheduler: str
    claims: tuple[str, ...]  # PVC names in the pod's namespace (an ephemeral volume's is <pod>-<volume>)

    @property
    def key(self) -> str:
        return objects.key_of(self.namespace, self.name)

    def as_pod(self) -> dict[str, Any]:
        """The minimal Pod the extender's ``prepare`` reads: enough to rank nodes for it."""
        return {"metadata": {"namespace": self.namespace, "name": self.name},
                "spec": {"schedulerName": self.scheduler,
                         "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in self.claims]}}


def pod_record(obj: Mapping[str, Any]) -> PodRecord | None:
    """The record of a running (bound, not finished) pod with claims; None for any other pod."""
    spec = objects.spec(obj)
    node = spec.get("nodeName")
    if not node or objects.status(obj).get("phase") in DONE_PHASES:
        return None
    refs = pod_claims(obj)
    if not refs:
        return None
    return PodRecord(_intern(objects.namespace(obj, objects.DEFAULT_NAMESPACE)), str(objects.name(obj, "")),
                     _intern(str(node)),
                     _intern(str(spec.get("schedulerName") or "default-scheduler")),
                     tuple(r.name for r in refs))


def records_of(pods: Iterable[Mapping[str, Any]]) -> list[PodRecord]:
    return [r for r in map(pod_record, pods) if r is not None]


def locate(record: PodRecord, state: ClusterState) -> PodLocality | None:
    """The pod's locality against ``state``; None when none of its claims is a LINSTOR volume."""
    volumes = []
    pools: dict[str, str | None] = {}
    sizes: dict[str, int | None] = {}
    wffc: dict[str, bool] = {}
    for name in record.claims:
        claim = resolve_claim(ClaimRef(record.namespace, name, name), state.get_pvc, state.get_pv, state.get_sc)
        if not claim.is_linstor:
            continue
        sc = claim.storage_class
        sc_name = sc.name if sc else ""
        pools[name], sizes[name] = (sc.storage_pool if sc else None), claim.size_bytes
        wffc[name] = sc.wait_for_first_consumer if sc else True
        if claim.pending or not claim.bound:
            volumes.append(VolumeLocality(name, claim.resource, sc_name, UNKNOWN, (),
                                          claim.pending or "claim not bound yet"))
            continue
        resource = state.resources.get(claim.resource or "")
        locality, detail = classify_volume(resource, record.node, state.nodes.get(record.node))
        volumes.append(VolumeLocality(name, claim.resource, sc_name, locality, up_to_date_nodes(resource), detail))
    if not volumes:
        return None
    pod = PodLocality(record.key, record.node, record.scheduler, tuple(volumes))
    why = why_not_local(pod, state.nodes, pools=pools, sizes=sizes, wait_for_first_consumer=wffc)
    return PodLocality(pod.pod, pod.node, pod.scheduler, pod.volumes, why) if why else pod


def locate_all(records: Iterable[PodRecord], state: ClusterState) -> Iterator[PodLocality]:
    for record in records:
        found = locate(record, state)
        if found is not None:
            yield found


# What the exporter's informers keep: the extender's records (claims, volumes, topology, classes;
# linstor_scheduler/claims.py) and a PodRecord per running pod with claims.
EXPORTER_TRANSFORMS = {**EXTENDER_TRANSFORMS, "Pod": pod_record}
