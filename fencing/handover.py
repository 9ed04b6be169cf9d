"""The grace timers handed over with the Lease: what a new leader may keep of its predecessor's timing.

A leader that crash-loops or loses its Lease every 25 s would otherwise never let a 30 s grace period
run out: every term started every timer afresh (issue 20, finding 6). So the leader writes, with each
renewal of its Lease (an annotation: ``kube.lease.LeaderElector.annotations``), per lost node since
when its faults were observed and which faults they were. A new leader continues that timing only
where its own first complete observation agrees:

- the record is recent: its last observation at most ``--max-staleness`` + the Lease duration before
  the new leader's first read (the Lease cannot pass sooner than its duration after the last
  renewal; a longer gap is blindness, which restarts timers as it does for one leader);
- the node has, in the new leader's first observation, exactly the same set of faulty resources as
  recorded (a fault it does not see starts nothing; a different set is a different fault);
- the fault is then timed from what the predecessor observed of it (its last observation minus its
  first sighting), plus the gap between the two terms up to one poll interval (``bridge``). Only
  observed time counts: a gap longer than the grace (the bound above is 35 s by default) would
  otherwise let a recovery and a new fault inside it, which nobody saw, pass for one old fault. The
  bridge keeps a leader that crash-loops every 25 s (it leads about 10 s of each 25, after its
  predecessor's Lease expired) failing the pod over: each term adds what it observed plus one poll.
  A flap inside the gap is still unseen, as between two polls without the promotion stream; it
  counts as the predecessor's observed time plus at most one poll, never as the whole gap;
- times cross between instances as wall-clock times (as the Lease's own ``renewTime``), and only
  the bridge over the gap depends on the two clocks agreeing (the observed span is a difference on
  the predecessor's clock alone). A predecessor whose clock is behind makes the gap look longer;
  the elector measures it (``LeaderElector.inherited_skew``: our wall clock when we first saw the
  predecessor's last renewal, minus the ``renewTime`` it wrote; with clocks that agree, only how
  late we looked, at most a retry interval). When that is more than a renewal interval
  (``skew`` > ``max_skew``), the record is read on the predecessor's clock: our wall clock is moved
  back by the whole difference, which makes its faults look younger by how late we looked, never
  older. A record whose renewal carries no ``renewTime`` (``skew`` None) is refused. A clock ahead
  makes faults look younger: later action, never earlier.

The same record carries the fail-over budget's history (per pod name, the times and UIDs of its
fail-overs inside ``--budget-window``): a budget spent stays spent for the next leader, whatever the
record's age (the window ages the entries out). At most ``--evictions-per-minute`` x 60 entries an
hour (the rate limit), about 70 bytes each.

Pure: the controller passes its clocks in. Per node, not per (resource, node): a node that lost
20,000 replicas is one entry of a few dozen bytes (an annotation must stay well under 256 KiB); its
faults are named by a checksum of their sorted names, and the time kept is the latest "since" of
them, the most careful one.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

import orjson

# The record's name is the core's: the extender reads the same record (lost_storage.py).
from linstor_scheduler.lost_storage import ANNOTATION, LISTED_MAX

__all__ = ["ANNOTATION", "inherit", "inherit_budget", "record"]

Key = tuple[str, str]  # (resource, node)


def _by_node(keys: Iterable[Key]) -> dict[str, list[str]]:
    nodes: dict[str, list[str]] = {}
    for resource, node in keys:
        nodes.setdefault(node, []).append(resource)
    return nodes


def _checksum(resources: Iterable[str]) -> str:
    return f"{zlib.crc32(chr(10).join(sorted(resources)).encode()):08x}"


def record(since: Mapping[Key, float], now: float, wall_now: float,
           budget: Mapping[str, Sequence[tuple[float, str]]] | None = None,
           replicas: Mapping[str, int] | None = None) -> str:
    """The annotation's value: when the observation was made and, per node, since when its faults
    were seen (wall clock; ``since`` and ``now`` on the controller's clock, ``wall_now`` is ``now``);
    and ``budget``: per pod name, the fail-overs inside the budget's window, (when, pod UID).

    ``replicas``: how many replicas LINSTOR lists on each node. A node where fewer are lost than it
    holds (one resource's connection cut, a split brain) has its lost resources named, up to
    ``lost_storage.LISTED_MAX``: the extender then keeps off it only the pods of those volumes
    (lost_storage.py). A node lost whole, or with more lost than that, names none."""
    nodes: dict[str, dict[str, object]] = {}
    for node, resources in _by_node(since).items():
        latest = max(since[(r, node)] for r in resources)
        entry: dict[str, object] = {"since": round(wall_now - max(0.0, now - latest), 3),
                                    "faults": _checksum(resources)}
        if replicas is not None and len(resources) < replicas.get(node, 0) and len(resources) <= LISTED_MAX:
            entry["resources"] = sorted(resources)
        nodes[node] = entry
    doc: dict[str, object] = {"observed": round(wall_now, 3), "nodes": nodes}
    if budget:
        doc["budget"] = {key: [[round(wall_now - max(0.0, now - when), 3), uid] for when, uid in entries]
                         for key, entries in budget.items() if entries}
    return orjson.dumps(doc).decode()


def inherit_budget(text: str | None, now: float, wall_now: float) -> dict[str, list[tuple[float, str]]]:
    """The predecessor's fail-overs (per pod name, (when on this clock, UID)), whatever the record's
    age: the budget's own window ages them out. A budget spent stays spent across a leader change
    (a memory that only makes the controller more careful). Nothing for a missing or garbled record."""
    if not text:
        return {}
    try:
        handed = orjson.loads(text).get("budget") or {}
        return {str(key): [(now - max(0.0, wall_now - float(when)), str(uid)) for when, uid in entries]
                for key, entries in handed.items()}
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return {}


def inherit(text: str | None, faults: Iterable[Key], now: float, wall_now: float,
            max_gap: float, *, bridge: float = 0.0, skew: float | None = 0.0,
            max_skew: float = float("inf")) -> dict[Key, float]:
    """The grace timers a new leader continues: ``since`` (on its own clock, ``now``) for each of
    its observed ``faults`` whose node the record names with the same faults, timed by what the
    predecessor observed (``observed - since``) plus the gap up to ``bridge`` seconds. Nothing for a
    record that is missing, garbled or older than ``max_gap`` seconds (wall clock). ``skew``: our
    wall clock when we saw the predecessor's last renewal minus its ``renewTime``; above
    ``max_skew`` the record is read with our clock moved back by it (the predecessor's clock was
    behind); None (not measured): nothing."""
    if not text:
        return {}
    try:
        doc = orjson.loads(text)
        observed = float(doc["observed"])
        recorded = {str(node): (float(v["since"]), str(v["faults"])) for node, v in doc["nodes"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return {}
    if skew is None:
        return {}
    if skew > max_skew:
        wall_now -= skew  # onto the predecessor's clock: late by how late we looked, never early
    gap = wall_now - observed
    if not 0.0 <= gap <= max_gap:
        return {}
    carried = min(gap, max(0.0, bridge))
    inherited: dict[Key, float] = {}
    for node, resources in _by_node(faults).items():
        since, checksum = recorded.get(node, (observed, ""))
        if checksum == _checksum(resources):
            timed = max(0.0, observed - since) + carried
            inherited.update({(resource, node): now - timed for resource in resources})
    return inherited
