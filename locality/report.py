"""``linstor-scheduler locality``: which pods are not next to their data, why, and where the extender
would place each now. From a snapshot document (a file, or one read of the live cluster).

The ranking is the extender's own: an ``Extender`` over the same ``ClusterState`` judges the pod as
``/prioritize`` would, so the report never disagrees with the scheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.snapshot import Snapshot, snapshot_of
from scheduler_extender import (
    ClusterState,
    Extender,
    ResourceIndexer,
    Weights,
    all_node_names,
    ranking,
    snapshot_extender,
    state_from_snapshot,
)

from .classify import PodLocality, summarize
from .pods import PodRecord, locate, records_of

RANKED = 3  # nodes shown per pod: the extender's best


async def would_place(extender: Extender, record: PodRecord, names: Sequence[str], top: int = RANKED) -> list[dict]:
    """The extender's passing nodes for the pod, best first (ties by name): what it would pick now."""
    return [{"node": n, "score": s} for n, s in await ranking(extender, record.as_pod(), names, top)]


def pod_row(pod: PodLocality, ranked: list[dict] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"pod": pod.pod, "node": pod.node, "local": pod.local, "scheduler": pod.scheduler,
                           "volumes": [{"claim": v.claim, "resource": v.resource, "storage_class": v.storage_class,
                                        "locality": v.locality, "local_nodes": list(v.local_nodes),
                                        "detail": v.detail} for v in pod.volumes]}
    if not pod.local:
        row["why"] = pod.why
        row["would_place"] = ranked or []
    return row


def build_report(state: ClusterState, records: Iterable[PodRecord], *, namespace: str | None = None,
                 weights: Weights | None = None) -> dict[str, Any]:
    """Every pod with LINSTOR volumes (local or not) and a summary; non-local pods carry why/would_place."""
    extender = snapshot_extender(state, weights=weights)
    names = all_node_names(state)
    located = [p for r in records if (namespace is None or r.namespace == namespace)
               if (p := locate(r, state)) is not None]
    by_key = {r.key: r for r in records}

    async def rank_all() -> list[dict[str, Any]]:
        return [pod_row(p, None if p.local else await would_place(extender, by_key[p.pod], names)) for p in located]

    rows = asyncio.run(rank_all())
    rows.sort(key=lambda r: (r["local"], r["pod"]))
    summary = summarize(located)
    volumes = [{"storage_class": sc, "locality": loc, "volumes": n} for (sc, loc), n in sorted(summary.volumes.items())]
    return {"pods": rows, "summary": {"pods": summary.pods, "local": summary.local,
                                      "share": round(summary.share, 4), "volumes": volumes}}


def report_from_doc(doc: Mapping[str, Any] | Snapshot, *, namespace: str | None = None,
                    weights: Weights | None = None) -> dict[str, Any]:
    snap = snapshot_of(doc, resources=ResourceIndexer())
    state = state_from_snapshot(snap, now=boottime())
    pods = [i for i in snap.kube_items if i.get("kind") == "Pod"]
    return build_report(state, records_of(pods), namespace=namespace, weights=weights)


def render_summary(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    by = {}
    for row in s["volumes"]:
        by[row["locality"]] = by.get(row["locality"], 0) + row["volumes"]
    vols = ", ".join(f"{n} {loc}" for loc, n in sorted(by.items())) or "no volumes"
    if not s["pods"]:  # no share of nothing: "0 of 0 (100%)" read as all is well
        return f"no running pods with LINSTOR volumes to judge; volumes: {vols}"
    return f"{s['local']} of {s['pods']} pods local ({s['share'] * 100:.0f}%); volumes: {vols}"


def render_locality_table(report: Mapping[str, Any], *, show_all: bool = False) -> str:
    rows = [r for r in report["pods"] if show_all or not r["local"]]
    lines = [render_summary(report)]
    if not rows:
        if report["summary"]["pods"]:
            lines.append("every pod with LINSTOR volumes is local" if not show_all else "no pods with LINSTOR volumes")
        return "\n".join(lines)
    pw = max(len("POD"), *(len(r["pod"]) for r in rows))
    nw = max(len("NODE"), *(len(r["node"]) for r in rows))
    lines.append(f"{'POD':<{pw}}  {'NODE':<{nw}}  {'VOLUME':<14}  {'LOCALITY':<13}  UPTODATE ON  WOULD PLACE / WHY")
    for r in rows:
        place = ", ".join(f"{p['node']}={p['score']}" for p in r.get("would_place") or []) or "-"
        for i, v in enumerate(r["volumes"]):
            head = (r["pod"], r["node"]) if i == 0 else ("", "")
            lines.append(f"{head[0]:<{pw}}  {head[1]:<{nw}}  {v['claim']:<14}  {v['locality']:<13}  "
                         f"{','.join(v['local_nodes']) or '-':<11}  {place if i == 0 else ''}")
        if not r["local"]:
            lines.append(f"{'':<{pw}}  {'':<{nw}}  why: {r['why']}")
    return "\n".join(lines)
