"""``linstor-scheduler drill``: what would happen if these nodes died now? Pure: a snapshot document
and the failed nodes in, a prediction out. No I/O, no clock.

It runs the code that acts in production on a copy of the cluster in which the failed nodes' satellites
are OFFLINE and their Kubernetes Nodes NotReady, as after a power loss, with the grace period over:

- fencing's own verdict (``fencing.verdict.judge`` over ``fencing.observe``'s view of the same LINSTOR
  and Kubernetes objects) says, per labelled pod, whether it would be removed or refused and why;
- fencing's storm rule (``fencing.guards.storm_sentence``, the share of storage nodes lost at once) says
  whether the breaker would hold, and its ``StormGuard`` turns a removal into a refusal;
- the extender's ranking (``scheduler_extender`` over the same snapshot, failed nodes OFFLINE) says where
  a removed pod would go;
- per resource with a replica on a failed node: how many UpToDate diskful replicas are left, and whether
  the survivors keep quorum (more than half of DRBD's voters: diskful replicas and tie-breakers).

The failed copy reads as LINSTOR would answer after the power loss: the satellites OFFLINE with no
state for their replicas, the survivors' DRBD connections to them down, and a surviving UpToDate
diskful replica allowed to promote when the survivors keep quorum (while the primary lived, DRBD
reported ``may_promote: false`` for it).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fencing as fv  # fencing's verdict and its words: fv.judge, fv.Observed, fv.FENCE, ...
from fencing import (
    LABEL,
    GuardContext,
    KubeObjects,
    LinstorView,
    StormGuard,
    add_replicas,
    apply,
    build_observed,
    faults,
    lost_storage_nodes,
    resource_states,
    storage_nodes,
    storm_sentence,
    with_policies,
)
from linstor_scheduler import drbd_quorum
from linstor_scheduler.config import ConfigError, setting
from linstor_scheduler.kube import objects
from linstor_scheduler.linstor.models import Resource, ResourceDefinition, ResourceGroup
from linstor_scheduler.snapshot import Snapshot, SnapshotError, snapshot_of
from scheduler_extender import ResourceIndexer, Weights, all_node_names, ranking, snapshot_extender

NOW = 1_000_000.0  # the drill's own clock: the failure happened ``grace`` + 1 s before it
REMOVE, REFUSE, NONE = "remove", "refuse", "none"
RANKED = 3


@dataclass(frozen=True)
class DrillSettings:
    """Fencing's defaults (fencing/cli.py); the drill takes the deployed values as flags."""

    grace_period: float = 30.0
    storm_share: float = 1 / 3
    weights: Weights = field(default_factory=Weights)


def failed_document(doc: Mapping[str, Any], failed: Iterable[str], cut: Iterable[str] = ()) -> dict[str, Any]:
    """The snapshot as it would read after a power loss of ``failed``: satellites OFFLINE, Nodes NotReady,
    surviving peers' DRBD connections to them down; and with ``cut`` cut from the other nodes on the
    replication network: the DRBD connections across the cut down on both sides, satellites and
    Nodes as they were."""
    lost, apart = set(failed), set(cut)
    out = copy.deepcopy(dict(doc))
    linstor = out.setdefault("linstor", {})
    for node in linstor.get("nodes") or []:
        if node.get("name") in lost:
            node["connection_status"] = "OFFLINE"
    for item in linstor.get("resources") or []:
        drbd = (item.get("layer_object") or {}).get("drbd") or {}
        if item.get("node_name") in lost:  # the controller has no satellite state for it any more
            item["state"] = {}
            for vol in item.get("volumes") or []:
                vol.pop("state", None)
            for key in ("connections", "may_promote", "promotion_score"):
                drbd.pop(key, None)
            continue
        inside = item.get("node_name") in apart
        for peer, conn in (drbd.get("connections") or {}).items():
            if (peer in lost or (peer in apart) != inside) and isinstance(conn, dict):
                conn["connected"] = False
    for obj in (out.setdefault("kubernetes", {}).get("items") or []):
        if obj.get("kind") == "Node" and objects.name(obj) in lost:
            status = obj.setdefault("status", {})
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
            status["conditions"].append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"})
    return out


def as_document(doc: Mapping[str, Any] | Snapshot) -> dict[str, Any]:
    """A plain snapshot document; a ``Snapshot`` must have been read with ``keep_raw`` (the drill needs
    the resource items as the REST API returned them, DRBD connections and all)."""
    if not isinstance(doc, Snapshot):
        return dict(doc)
    if (doc.resource_items and not doc.raw_resources) or doc.claims:
        raise ValueError("the drill needs the snapshot's resource items: read it with keep_raw=True")
    linstor: dict[str, Any] = {
        "nodes": [n.dump() for n in doc.nodes],
        "storage_pools": [p.dump() for p in doc.pools],
        "resources": doc.raw_resources, "resource_groups": doc.groups, "controller_properties": doc.controller_props}
    if doc.definitions is not None:
        linstor["resource_definitions"] = doc.definitions
    return {"linstor": linstor, "kubernetes": {"items": doc.kube_items}}


def _view(snap: Snapshot) -> tuple[LinstorView, bool]:
    """fencing's LINSTOR view from a snapshot; False when the snapshot carries no resource definitions."""
    try:
        resources = [Resource.parse(x) for x in snap.raw_resources]
        definitions = [ResourceDefinition.parse(x) for x in snap.definitions or []]
        groups = [ResourceGroup.parse(x) for x in snap.groups]
    except ValueError as exc:
        raise SnapshotError(f"snapshot: LINSTOR items do not match the REST shapes: {exc}") from None
    replicas: dict[str, dict[str, Any]] = {}
    add_replicas(replicas, resources)  # fencing's own fold, from whole records as from its projections
    props = dict(snap.controller_props)
    view = LinstorView(snap.nodes, with_policies(replicas, definitions, groups, props), props, NOW, snap.pools)
    return view, snap.definitions is not None


def _kube(items: Sequence[Mapping[str, Any]]) -> KubeObjects:
    return KubeObjects(
        pods=[dict(o) for o in items if o.get("kind") == "Pod" and LABEL in objects.labels(o)],
        pvcs={objects.key(o): dict(o) for o in items if o.get("kind") == "PersistentVolumeClaim"},
        pvs={objects.name(o): dict(o) for o in items if o.get("kind") == "PersistentVolume"},
        nodes={objects.name(o): dict(o) for o in items if o.get("kind") == "Node"})


def _drbd_after(res: fv.ResourceState, down: set[str], apart: set[str]) -> drbd_quorum.Outcome:
    """DRBD's own rules (``linstor_scheduler.drbd_quorum``) on the survivors of ``res``, from a whole
    resource: ``down`` lost power at once, ``apart`` is cut from the other nodes."""
    replicas = {n: drbd_quorum.Replica(n, r.diskful, r.up_to_date, r.in_use)
                for n, r in res.replicas.items() if not r.ignored}
    alive = {n for n in replicas if n not in down}

    def links(node: str, peer: str) -> bool:
        return node in alive and peer in alive and (node in apart) == (peer in apart)

    return drbd_quorum.outcome(replicas, alive, links, drbd_quorum.Options.from_props(res.props))


def _touched(res: fv.ResourceState, down: set[str], apart: set[str]) -> bool:
    nodes = set(res.replicas)
    return bool(down & nodes) or bool(apart & nodes and nodes - apart)


def _after_failure(resources: Mapping[str, fv.ResourceState], down: set[str],
                   apart: set[str]) -> dict[str, fv.ResourceState]:
    """What LINSTOR reports of DRBD after the failure: each surviving replica's ``may_promote`` as DRBD
    decides it. ``down``: every node that is down (the failed ones and any already OFFLINE)."""
    out = {}
    for name, res in resources.items():
        if not _touched(res, down, apart):
            out[name] = res
            continue
        promotable = _drbd_after(res, down, apart).promotable
        replicas = {n: (r if n not in promotable else dataclasses.replace(r, may_promote=promotable[n]))
                    for n, r in res.replicas.items()}
        out[name] = fv.ResourceState(name, replicas, res.props)
    return out


def storm(observed: fv.Observed, view: LinstorView, share: float) -> tuple[str | None, str]:
    """fencing's storm rule over the failed view: its sentence while it would hold, and a summary."""
    population, diskless = storage_nodes(view)
    lost = lost_storage_nodes(population, observed.nodes, observed.resources)
    summary = (f"{len(lost)} of {len(population)} storage nodes would look lost at once"
               f"{' (' + ', '.join(sorted(lost)) + ')' if lost else ''}; the limit is more than {share:.0%}")
    return storm_sentence(population, diskless, lost, share), summary


def drill(doc: Mapping[str, Any] | Snapshot, failed: Sequence[str],
          settings: DrillSettings | None = None, cut: Sequence[str] = ()) -> dict[str, Any]:
    """The prediction for ``failed`` losing power and ``cut`` being cut from the other nodes on the
    replication network (satellites and kubelets still reached), at once."""
    settings = settings or DrillSettings()
    lost, apart = set(failed), set(cut)
    base = as_document(doc)
    checked = snapshot_of(base, keep_raw=True)  # a malformed snapshot is reported as such
    known = {n.name for n in checked.nodes} | {
        objects.name(o) for o in checked.kube_items if o.get("kind") == "Node"}
    for flag, nodes in (("--fail-node", lost), ("--cut-node", apart)):
        unknown = sorted(nodes - known)
        if unknown:
            raise ConfigError(f"{setting(flag)} names {', '.join(unknown)}: no such node in the cluster")
    snap = snapshot_of(failed_document(base, lost, apart), keep_raw=True, resources=ResourceIndexer())
    view, has_policies = _view(snap)
    kube = _kube(snap.kube_items)
    observed = build_observed(view, kube, {})
    down = {n for n, st in observed.nodes.items() if st.linstor_status is not None and not st.online}  # incl. lost
    resources = _after_failure(resource_states(view), down, apart)
    observed = fv.Observed(observed.nodes, resources, observed.pods,
                           {f: NOW - settings.grace_period - 1 for f in faults(resources, observed.nodes)})
    if not has_policies:  # fencing reads the policy from the definitions: without them it is unknown
        observed = fv.Observed(observed.nodes, {k: fv.ResourceState(v.name, v.replicas, {})
                                                for k, v in observed.resources.items()},
                               observed.pods, observed.fault_since)
    sentence, storm_detail = storm(observed, view, settings.storm_share)
    held = sentence is not None
    decisions = {d.pod.key: d for d in fv.judge(observed, NOW, settings.grace_period)}
    guard = GuardContext(NOW, None, sentence)

    extender = snapshot_extender(snap, now=NOW, weights=settings.weights)
    survivors = [n for n in all_node_names(extender.holder.state) if n not in lost]
    raw_pods = {objects.key(p): p for p in kube.pods}

    async def rows() -> list[dict[str, Any]]:
        out = []
        for key in sorted(decisions):
            d = decisions[key]
            refusal = apply([StormGuard()], d, guard)  # the guard fencing applies; the others need history
            if refusal is not None:
                action, reason, detail = REFUSE, refusal.reason, refusal.detail
            elif d.verdict == fv.FENCE:
                action, reason, detail = REMOVE, d.reason, d.detail
            elif d.verdict in (fv.REFUSE, fv.WAITING) or d.reason in fv.NOTICES:  # a notice: nothing is done
                action, reason, detail = REFUSE, d.reason, d.detail
            else:
                action, reason, detail = NONE, "", d.detail
            # not back onto its own node: fencing keeps the scheduler off a node it acts on (taint)
            to = []
            if action == REMOVE:
                ranked = await ranking(extender, raw_pods[key], [n for n in survivors if n != d.node], RANKED)
                to = [n for n, _ in ranked]
            out.append({"pod": key, "node": d.node, "action": action, "reason": reason, "detail": detail, "to": to})
        return out

    at_risk = []
    for name, res in sorted(observed.resources.items()):
        if not _touched(res, lost, apart):
            continue
        left = sum(1 for r in res.replicas.values() if r.node not in down and r.diskful and r.up_to_date
                   and not r.ignored)
        keeps = bool(_drbd_after(res, down, apart).kept_by(res.replicas))
        if left == 0 or not keeps:
            at_risk.append({"resource": name, "up_to_date_left": left, "quorum": keeps,
                            "lost_replicas": sorted(lost.intersection(res.replicas))})
    notes = [] if has_policies else [
        "the snapshot has no linstor.resource_definitions: quorum policies are unknown, so fencing would refuse "
        f"({fv.NO_QUORUM_POLICY}); write the snapshot with `linstor-scheduler snapshot` to include them"]
    return {"failed_nodes": sorted(lost), "cut_nodes": sorted(apart), "storm": held, "storm_detail": storm_detail,
            "pods": asyncio.run(rows()),
            "resources_at_risk": at_risk, "notes": notes,
            "settings": {"grace_period": settings.grace_period, "storm_share": round(settings.storm_share, 4)}}


def render_drill_table(result: Mapping[str, Any]) -> str:
    grace = f"grace period {result['settings']['grace_period']:.0f}s over"
    failed, cut = ", ".join(result["failed_nodes"]), ", ".join(result.get("cut_nodes") or [])
    if not cut:
        lines = [f"drill: {failed} fail(s) (power loss; {grace})"]
    else:
        lines = [f"drill: {cut} cut from the other nodes (replication network)"
                 f"{f', {failed} fail(s) (power loss)' if failed else ''}; {grace}"]
    lines.append(f"storm breaker: {'WOULD HOLD every action' if result['storm'] else 'would not hold'} "
                 f"({result['storm_detail']})")
    pods = result["pods"]
    if pods:
        pw = max(len("POD"), *(len(p["pod"]) for p in pods))
        lines.append(f"{'POD':<{pw}}  {'ON':<8}  {'ACTION':<7}  {'TO':<16}  REASON")
        for p in pods:
            to = ", ".join(p["to"]) or "-"
            reason = p["reason"] or "-"
            lines.append(f"{p['pod']:<{pw}}  {p['node']:<8}  {p['action']:<7}  {to:<16}  {reason}")
            if p["action"] != NONE:
                lines.append(f"{'':<{pw}}  {p['detail']}")
    else:
        lines.append("no pod carries the label linstor.csi.linbit.com/on-storage-lost")
    if result["resources_at_risk"]:
        lines.append("resources at risk:")
        for r in result["resources_at_risk"]:
            lines.append(f"  {r['resource']}: {r['up_to_date_left']} UpToDate replica(s) left, "
                         f"quorum {'kept' if r['quorum'] else 'LOST'}")
    else:
        lines.append("no resource would be left without an UpToDate replica or without quorum")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)
