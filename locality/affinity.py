"""PV node affinity against LINSTOR: the affinity LINSTOR CSI would write now, and whether a PV's is
out of step. Pure; no I/O.

LINSTOR CSI writes a PV's ``spec.nodeAffinity`` once, at provisioning, from where the volume can be
reached then (piraeusdatastore/linstor-csi, pkg/linstor/highlevelclient/high_level_client.go
``GenericAccessibleTopologies``): for each node with a diskful replica (pkg/linstor/util/util.go
``DeployedDiskfullyNodes``: no DISKLESS flag, not DELETE, FAILED_DEPLOYMENT or FAILED_DISCONNECT)
its segments are the node's LINSTOR properties under ``Aux/`` with the prefix cut (the
``--property-namespace`` default) plus ``linbit.com/hostname`` = the node's name
(pkg/topology/topology.go ``LinstorNodeKey``); the StorageClass's ``allowRemoteVolumeAccess``
(pkg/volume/remoteaccess.go ``RemoteAccessPolicy.AccessibleSegments``) keeps of them, per
``fromSame`` rule, the keys it names: ``false`` is ``fromSame: [linbit.com/hostname]`` (the diskful
nodes), ``true`` is one rule naming nothing, an empty segment, which means no affinity at all. Each
segment becomes one node selector term of ``In`` expressions, keys sorted (linstor-affinity-controller
pkg/operations/replace_pv.go ``ApplyAffinity``). The same segments are what the CSI node plugin
reports and the kubelet puts on the Node as labels, which kube-scheduler's VolumeBinding filter
matches the PV's affinity against.

A PV is **stale** when its affinity excludes a node that now holds a diskful replica of its volume
(a pod cannot follow its data there), or admits only nodes that hold none; one that only admits
more than CSI would write now is reported as ``differs`` and left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from linstor_scheduler.claims import CONTEXT_MARKER, CONTEXT_POLICY, Selector, VolumeRecord, selector
from linstor_scheduler.kube import objects
from linstor_scheduler.volumes import (
    CSI_DRIVER,
    RemoteAccess,
    StorageClassInfo,
    parse_remote_access,
    requirement_holds,
)

HOSTNAME_KEY = "linbit.com/hostname"  # linstor-csi pkg/topology/topology.go LinstorNodeKey
AUX = "Aux/"  # linstor-csi --property-namespace default (golinstor NamespcAuxiliary)
# linstor-csi pkg/driver/volume_context.go: the policy CSI wrote into the PV's volume context
VOLUME_CONTEXT_MARKER, VOLUME_CONTEXT_POLICY = CONTEXT_MARKER, CONTEXT_POLICY
UNHEALTHY_FLAGS = frozenset({"DELETE", "FAILED_DEPLOYMENT", "FAILED_DISCONNECT"})  # util.go healthy()

Term = frozenset[tuple[str, str]]  # one segment: (key, value) pairs, all required ("In" one value)


def segments(name: str, props: Mapping[str, str] | None, labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """A node's topology segments: its Kubernetes labels (where known), its LINSTOR ``Aux/`` properties
    without the prefix (CSI's source; they win), and ``linbit.com/hostname``."""
    out = dict(labels or {})
    for key, value in (props or {}).items():
        if key.startswith(AUX):
            out[key[len(AUX):]] = value
    out[HOSTNAME_KEY] = name
    return out


def deployed_diskfully(flags: Iterable[str]) -> bool:
    """linstor-csi util.go ``DeployedDiskfully``: not DISKLESS and healthy."""
    upper = {str(f).upper() for f in flags}
    return "DISKLESS" not in upper and not (upper & UNHEALTHY_FLAGS)


def diskful_by_resource(items: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """resource name -> nodes with a diskful replica, from ``/v1/view/resources`` items."""
    out: dict[str, set[str]] = {}
    for item in items:
        if deployed_diskfully(item.get("flags") or ()):
            out.setdefault(str(item.get("name")), set()).add(str(item.get("node_name")))
        else:
            out.setdefault(str(item.get("name")), set())
    return out


def policy_of(storage_class: StorageClassInfo | None, volume_attributes: Mapping[str, Any] | None,
              context_policy: str | None = None) -> tuple[RemoteAccess | None, str]:
    """The remote-access rule CSI applies to this volume and where it came from: the StorageClass's
    ``allowRemoteVolumeAccess``; when the class is gone, the policy CSI wrote into the PV's volume
    context (``linstor.csi.linbit.com/remote-access-policy``, present when
    ``.../uses-volume-context`` is); else unknown (None): the PV is not judged."""
    if storage_class is not None:
        return storage_class.remote_access, f"StorageClass {storage_class.name}"
    attrs = volume_attributes or {}
    if context_policy is None and VOLUME_CONTEXT_MARKER in attrs:
        context_policy = str(attrs.get(VOLUME_CONTEXT_POLICY) or "")
    if context_policy is not None:
        return parse_remote_access(context_policy), "the PV's volume context"
    return None, "no StorageClass and no policy in the PV's volume context"


def _rules(policy: RemoteAccess) -> tuple[tuple[str, ...], ...]:
    if not policy.allowed:
        return ((HOSTNAME_KEY,),)
    return policy.from_same or ((),)


def prune(terms: Iterable[Term]) -> tuple[Term, ...]:
    """linstor-csi remoteaccess.go ``PrunePattern``: drop duplicates and terms a broader one covers."""
    out: list[Term] = []
    for term in sorted(set(terms), key=lambda t: (len(t), sorted(t))):
        if not any(kept <= term for kept in out):
            out.append(term)
    return tuple(sorted(out, key=sorted))


def wanted_terms(policy: RemoteAccess, diskful: Iterable[str],
                 node_segments: Mapping[str, Mapping[str, str]]) -> tuple[Term, ...] | None:
    """The terms CSI would write now; None: no affinity (access from anywhere)."""
    terms: list[Term] = []
    for node in sorted(diskful):
        segs = node_segments.get(node) or {HOSTNAME_KEY: node}
        for rule in _rules(policy):
            term = frozenset((k, segs[k]) for k in rule if k in segs)
            if not term:
                return None  # linstor-csi: an empty segment means "from everywhere", no affinity
            terms.append(term)
    return prune(terms)


def _matches(expr: tuple[str, str, tuple[str, ...]], labels: Mapping[str, str]) -> bool:
    key, op, values = expr
    return requirement_holds(labels.get(key), op, values)


def admits(affinity: Selector | None, labels: Mapping[str, str], node: str) -> bool:
    """Would kube-scheduler's VolumeBinding filter let a pod of this PV onto the node (terms ORed,
    expressions ANDed; ``matchFields`` only ``metadata.name``)? No affinity admits every node."""
    if affinity is None:
        return True
    fields = {"metadata.name": node}
    return any(all(_matches(e, labels) for e in exprs) and all(_matches(e, fields) for e in flds)
               and (exprs or flds) for exprs, flds in affinity)


def as_terms(affinity: Selector | None) -> tuple[Term, ...] | None:
    """A PV's affinity in the form CSI writes (``In`` one value each), to compare; an affinity of any
    other shape is returned as an impossible term so it never equals what CSI wants."""
    if affinity is None:
        return None
    out: list[Term] = []
    for exprs, flds in affinity:
        if flds or any(op != "In" or len(values) != 1 for _, op, values in exprs):
            out.append(frozenset({("", repr((exprs, flds)))}))
        else:
            out.append(frozenset((k, values[0]) for k, _, values in exprs))
    return prune(out)


def node_affinity(terms: tuple[Term, ...] | None) -> dict[str, Any] | None:
    """``spec.nodeAffinity`` for the terms, as replace_pv.go ``ApplyAffinity`` builds it; None: none."""
    if terms is None:
        return None
    return {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(term)]}
        for term in terms]}}


@dataclass(frozen=True, slots=True)
class AffinityVerdict:
    pv: str
    resource: str
    storage_class: str
    claim: str | None  # "namespace/name" of the claimRef
    stale: bool
    reason: str  # why stale; or why in step, or why not judged
    judged: bool  # False: the policy or the replicas are not known
    differs: bool  # the affinity is not what CSI would write now (stale or not)
    diskful: tuple[str, ...]
    want: tuple[Term, ...] | None
    policy_source: str

    def as_dict(self) -> dict[str, Any]:
        return {"pv": self.pv, "resource": self.resource, "storage_class": self.storage_class, "claim": self.claim,
                "stale": self.stale, "judged": self.judged, "differs": self.differs, "reason": self.reason,
                "diskful_nodes": list(self.diskful), "policy_from": self.policy_source,
                "wanted_affinity": node_affinity(self.want)}


def judge(volume: VolumeRecord, *, diskful: Iterable[str] | None, node_segments: Mapping[str, Mapping[str, str]],
          policy: RemoteAccess | None, policy_source: str = "", claim: str | None = None) -> AffinityVerdict | None:
    """The verdict on one PV; None for a PV that is not LINSTOR CSI's."""
    if volume.driver != CSI_DRIVER or not volume.handle:
        return None
    base = {"pv": volume.name, "resource": volume.handle, "storage_class": volume.storage_class or "",
            "claim": claim, "policy_source": policy_source}
    nodes = tuple(sorted(diskful or ()))
    if diskful is None:
        return AffinityVerdict(**base, stale=False, judged=False, differs=False, diskful=(), want=None,
                               reason=f"resource {volume.handle} not known to LINSTOR")
    if not nodes:
        return AffinityVerdict(**base, stale=False, judged=False, differs=False, diskful=(), want=None,
                               reason="no diskful replica deployed: nothing to follow")
    if policy is None:
        return AffinityVerdict(**base, stale=False, judged=False, differs=False, diskful=nodes, want=None,
                               reason=f"remote-access policy unknown ({policy_source})")
    want = wanted_terms(policy, nodes, node_segments)
    differs = as_terms(volume.affinity) != want
    missing = [n for n in nodes if not admits(volume.affinity, node_segments.get(n) or {HOSTNAME_KEY: n}, n)]
    if missing and len(missing) == len(nodes):
        reason = f"admits only nodes without a diskful replica (the replicas are on {', '.join(nodes)})"
    elif missing:
        reason = f"excludes {', '.join(missing)}, which hold(s) a diskful replica"
    elif differs:
        reason = "admits more nodes than CSI would write now (not stale: pods can still reach their data)"
    else:
        reason = "in step"
    return AffinityVerdict(**base, stale=bool(missing), judged=True, differs=differs, diskful=nodes, want=want,
                           reason=reason)


def claim_key(pv: Mapping[str, Any]) -> str | None:
    ref = objects.spec(pv).get("claimRef") or {}
    return objects.key_of(ref.get("namespace"), ref["name"]) if ref.get("name") else None


def judge_objects(pvs: Iterable[Mapping[str, Any]], *, storage_classes: Mapping[str, StorageClassInfo],
                  resources: Mapping[str, set[str]], node_segments: Mapping[str, Mapping[str, str]]
                  ) -> list[AffinityVerdict]:
    """Every LINSTOR CSI PV object judged (the report and the worker)."""
    from linstor_scheduler.claims import volume_record

    out = []
    for pv in pvs:
        record = volume_record(pv)
        policy, source = policy_of(storage_classes.get(record.storage_class or ""), None, record.access_policy)
        verdict = judge(record, diskful=resources.get(record.handle or ""), node_segments=node_segments,
                        policy=policy, policy_source=source, claim=claim_key(pv))
        if verdict is not None:
            out.append(verdict)
    return sorted(out, key=lambda v: (not v.stale, v.pv))


def stale_counts(state: Any) -> dict[str, int]:
    """Stale PVs per StorageClass from the extender's ``ClusterState`` (the locality exporter): the
    replicas from its LINSTOR index, the segments from the Kubernetes Nodes' labels (the kubelet
    labels each Node with the segments the CSI node plugin reports) and the node's name."""
    kube = state.kube
    node_segments = {name: segments(name, None, topo.labels) for name, topo in kube.topology.items()}
    for name in state.nodes:
        node_segments.setdefault(name, {HOSTNAME_KEY: name})
    counts: dict[str, int] = {}
    for record in kube.pvs.values():
        if record.driver != CSI_DRIVER or not record.handle:
            continue
        resource = state.resources.get(record.handle)
        diskful = None if resource is None else [n for n, r in resource.replicas.items() if r.diskful]
        policy, source = policy_of(kube.storage_classes.get(record.storage_class or ""), None, record.access_policy)
        verdict = judge(record, diskful=diskful, node_segments=node_segments, policy=policy, policy_source=source)
        if verdict is not None:
            counts.setdefault(verdict.storage_class, 0)
            counts[verdict.storage_class] += verdict.stale
    return counts


def report_from_doc(doc: Any) -> dict[str, Any]:
    """``linstor-scheduler affinity``: every LINSTOR CSI PV of a snapshot document (or one live read)
    judged, the stale ones first, and a count per StorageClass."""
    from linstor_scheduler.snapshot import snapshot_of

    snap = snapshot_of(doc, keep_raw=True)
    kube = snap.kube_items
    labels = {str(objects.name(o)): objects.labels(o) for o in kube if o.get("kind") == "Node"}
    node_segments = {n.name: segments(n.name, n.props, labels.get(n.name)) for n in snap.nodes}
    classes = {c.name: c for c in (StorageClassInfo.from_object(o) for o in kube if o.get("kind") == "StorageClass")}
    verdicts = judge_objects([o for o in kube if o.get("kind") == "PersistentVolume"], storage_classes=classes,
                             resources=diskful_by_resource(snap.raw_resources), node_segments=node_segments)
    stale: dict[str, int] = {}
    for v in verdicts:
        if v.stale:
            stale[v.storage_class] = stale.get(v.storage_class, 0) + 1
    return {"volumes": [v.as_dict() for v in verdicts],
            "summary": {"volumes": len(verdicts), "stale": sum(stale.values()),
                        "not_judged": sum(1 for v in verdicts if not v.judged),
                        "stale_by_class": dict(sorted(stale.items()))}}


def render_affinity_table(report: Mapping[str, Any], *, show_all: bool = False) -> str:
    s = report["summary"]
    lines = [f"{s['stale']} of {s['volumes']} LINSTOR volumes have a stale node affinity"
             + (f"; {s['not_judged']} not judged" if s["not_judged"] else "")]
    rows = [v for v in report["volumes"] if show_all or v["stale"]]
    if not rows:
        return "\n".join(lines)
    pw = max(len("PV"), *(len(r["pv"]) for r in rows))
    cw = max(len("CLAIM"), *(len(r["claim"] or "-") for r in rows))
    lines.append(f"{'PV':<{pw}}  {'CLAIM':<{cw}}  {'STALE':<5}  {'DISKFUL ON':<14}  REASON")
    for r in rows:
        lines.append(f"{r['pv']:<{pw}}  {r['claim'] or '-':<{cw}}  {'yes' if r['stale'] else 'no':<5}  "
                     f"{','.join(r['diskful_nodes']) or '-':<14}  {r['reason']}")
    return "\n".join(lines)


__all__ = ["HOSTNAME_KEY", "AffinityVerdict", "admits", "judge", "judge_objects", "node_affinity", "policy_of",
           "report_from_doc", "segments", "selector", "wanted_terms"]
