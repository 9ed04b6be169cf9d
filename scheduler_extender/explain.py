"""``explain``: why would a pod go where? The same verdicts the extender serves, as a table or JSON; and
``ranking``, where it would place a pod now (the locality report's and the drill's "would go to")."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from linstor_scheduler.snapshot import Snapshot, find_pod, snapshot_of

from .answers import verdict_rows
from .judge import Extender
from .scoring import Weights, all_node_names
from .snapshot_mode import snapshot_extender
from .state import ResourceIndexer


def explain_doc(doc: Mapping[str, Any] | Snapshot, pod: Mapping[str, Any], nodes: Sequence[str] | None,
                weights: Weights | None = None) -> dict[str, Any]:
    """Judge ``pod`` against a snapshot document, exactly as the extender would."""
    extender = snapshot_extender(doc, weights=weights)
    names = list(nodes) if nodes else all_node_names(extender.holder.state)
    decision = asyncio.run(extender.decide(dict(pod), names))
    return {"pod": decision.pod, "neutral": decision.neutral_reason, "nodes": verdict_rows(decision)}


async def ranking(extender: Extender, pod: Mapping[str, Any], names: Sequence[str], top: int) -> list[tuple[str, int]]:
    """The ``top`` nodes of ``names`` the extender passes for ``pod``, as (node, score), best first (ties
    by name): where it would place the pod now."""
    decision = await extender.decide(pod, names)
    if decision.verdicts is None:
        return []
    rows = sorted(((v.score, n) for n, v in zip(names, decision.verdicts, strict=True) if v.fits),
                  key=lambda r: (-r[0], r[1]))
    return [(n, s) for s, n in rows[:top]]


def explain_ref(doc: Mapping[str, Any] | Snapshot, ref: str, nodes: Sequence[str] | None,
                weights: Weights | None = None) -> dict[str, Any]:
    # a malformed snapshot is reported as such, before looking for the pod
    snap = snapshot_of(doc, resources=ResourceIndexer())
    pod = find_pod(snap, ref)
    if pod is None:
        raise LookupError(f"pod {ref} not found (give NAMESPACE/NAME)")
    return explain_doc(snap, pod, nodes, weights)


def render_explain_table(result: Mapping[str, Any]) -> str:
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
