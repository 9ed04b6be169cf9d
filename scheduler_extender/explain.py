"""``explain``: why would a pod go where? The same verdicts the extender serves, as a table or JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.snapshot import Snapshot, find_pod, snapshot_of

from .answers import verdict_rows
from .judge import Extender, StateHolder
from .scoring import Weights, all_node_names
from .snapshot_mode import state_from_snapshot
from .state import ResourceIndexer


def explain_doc(doc: Mapping[str, Any] | Snapshot, pod: Mapping[str, Any], nodes: Sequence[str] | None,
                weights: Weights | None = None) -> dict[str, Any]:
    """Judge ``pod`` against a snapshot document, exactly as the extender would."""
    holder = StateHolder(static=True, ready=True)
    holder.swap(state_from_snapshot(doc, now=boottime()))
    extender = Extender(holder, weights=weights)
    names = list(nodes) if nodes else all_node_names(holder.state)
    decision = asyncio.run(extender.decide(dict(pod), names))
    return {"pod": decision.pod, "neutral": decision.neutral_reason, "nodes": verdict_rows(decision)}


def explain_ref(doc: Mapping[str, Any] | Snapshot, ref: str, nodes: Sequence[str] | None,
                weights: Weights | None = None) -> dict[str, Any]:
    # a malformed snapshot is reported as such, before looking for the pod
    snap = snapshot_of(doc, resources=ResourceIndexer())
    pod = find_pod(snap, ref)
    if pod is None:
        raise LookupError(f"pod {ref} not found (give NAMESPACE/NAME)")
    return explain_doc(snap, pod, nodes, weights)


def render_table(result: Mapping[str, Any]) -> str:
    rows = result["nodes"]
    lines = [f"pod {result['pod']}"]
    if result.get("neutral"):
        lines.append(f"  neutral: {result['neutral']}")
    width = max([len("NODE")] + [len(r["node"]) for r in rows])
    lines.append(f"  {'NODE':<{width}}  VERDICT  SCORE  REASON")
    order = sorted(rows, key=lambda r: (r["verdict"] != "pass", -r["score"], r["node"]))
    for row in order:
        reasons = row["reasons"] or ["-"]
        lines.append(f"  {row['node']:<{width}}  {row['verdict']:<7}  {row['score']:>5}  {reasons[0]}")
        lines += [f"  {'':<{width}}  {'':<7}  {'':>5}  {more}" for more in reasons[1:]]
    return "\n".join(lines)
