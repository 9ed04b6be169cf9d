"""Human tables and JSON for ``sync-node --once`` and ``sync-classes --once`` (``--output``)."""

from __future__ import annotations

from typing import Any

import orjson

from .agent import PassResult
from .class_sync import ClassPassResult


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def node_pass_doc(node: str, result: PassResult, *, dry_run: bool) -> dict[str, Any]:
    applied = {id(i) for i in result.applied}
    failed = {id(i): "failed: " + why for i, why in result.failed}
    failed.update({id(i): "deferred: " + why for i, why in result.deferred})
    items = []
    for item in result.plan.items if result.plan else ():
        done = "applied" if id(item) in applied else failed.get(id(item))
        items.append({"action": item.action, "pool": item.pool, "provider_kind": item.provider_kind or None,
                      "backing": item.backing or None, "reason": item.reason or None, "message": item.message,
                      "result": done})
    return {"node": node, "dry_run": dry_run, "in_sync": result.in_sync, "error": result.error, "items": items}


def render_node_pass(node: str, result: PassResult, *, dry_run: bool) -> str:
    doc = node_pass_doc(node, result, dry_run=dry_run)
    head = f"node {node}" + (" (dry run: nothing changed)" if dry_run else "")
    if result.error:
        return f"{head}\nerror: {result.error}\nnothing was changed"
    rows = [[i["action"].upper(), i["pool"] or "-", i["provider_kind"] or "-", i["backing"] or "-",
             (i["message"] + (f" [{i['result']}]" if i["result"] else ""))] for i in doc["items"]]
    status = "in sync" if result.in_sync else "NOT in sync"
    return f"{head}: {status}\n" + (_table(["action", "pool", "kind", "backing", "detail"], rows) if rows
                                      else "no tagged LVM objects and no pools of ours")


def class_pass_doc(result: ClassPassResult, *, dry_run: bool) -> dict[str, Any]:
    applied = {id(a) for a in result.applied}
    failed = {id(a): why for a, why in result.failed}
    return {"dry_run": dry_run, "in_sync": result.in_sync, "error": result.error, "items": [
        {"action": a.action, "storage_class": a.name, "pool": a.pool, "message": a.message,
         "result": "applied" if id(a) in applied else ("failed: " + failed[id(a)] if id(a) in failed else None)}
        for a in result.actions]}


def render_class_pass(result: ClassPassResult, *, dry_run: bool) -> str:
    doc = class_pass_doc(result, dry_run=dry_run)
    head = "StorageClasses" + (" (dry run: nothing changed)" if dry_run else "")
    if result.error:
        return f"{head}\nerror: {result.error}\nnothing was changed"
    rows = [[i["action"].upper(), i["storage_class"], i["pool"] or "-",
             i["message"] + (f" [{i['result']}]" if i["result"] else "")] for i in doc["items"]]
    return f"{head}: {'in sync' if result.in_sync else 'NOT in sync'}\n" + (
        _table(["action", "class", "pool", "detail"], rows) if rows else "no LINSTOR storage pools")


def dumps(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
