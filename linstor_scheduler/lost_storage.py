"""Which nodes fencing judges to have lost their storage, as its leader publishes it on its Lease.

Fencing's leader writes, with every renewal of its Lease, a record of the nodes where it observes
lost storage (both witnesses: LINSTOR and the surviving DRBD peers; fencing/verdict.py
``storage_proof``) and since when (fencing/handover.py ``record``, annotation ``ANNOTATION``). The
record was made for its successor (the grace survives a leader change); the extender reads the same
record to keep pods with LINSTOR volumes off those nodes (issue 20, item 6: with the taint off by
default, nothing else stops kube-scheduler from placing a replacement pod back on a node that is
still Ready but cut from its storage).

Fencing judges per (resource, node): a node where only some replicas lost their storage has them
named in its entry (``resources``), and only the pods of those volumes are kept off it; a node lost
whole (every replica that has a peer to witness it) is refused to every LINSTOR pod (``Lost``).

The record is trusted only while it is recent: its ``observed`` time (the leader's last complete
LINSTOR read, wall clock) at most ``max_age`` seconds old. A fencing leader that died, lost LINSTOR
or is not deployed publishes nothing recent, and then no node is filtered on its word (as before
fencing existed: the extender's own LINSTOR view still refuses nodes whose satellite is not
ONLINE). Times cross between hosts as wall-clock times, as the Lease's own ``renewTime`` does: the
nodes' clocks must agree (NTP), as docs/fencing.md already asks.

Pure: ``read_record`` is an informer transform (what the store keeps of the Lease), ``lost_nodes``
takes the wall clock in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from linstor_scheduler.kube import objects

ANNOTATION = "fencing.linstor.csi.linbit.com/grace-timers"
DEFAULT_LEASE = "linstor-scheduler-fencing"  # fencing's --lease-name default (fencing/cli.py)
# A node where only some replicas lost their storage has them named in the record, up to this many
# (an annotation stays small: a node that lost more is recorded, and read, as lost whole).
LISTED_MAX = 64


@dataclass(frozen=True, slots=True)
class LostStorage:
    """What the extender keeps of fencing's Lease: when its leader last observed, per node with lost
    storage since when (wall clock, seconds since the epoch), and, for a node where only some of its
    replicas lost their storage, which resources (``resources``; a node not in it is lost whole)."""

    observed: float
    nodes: Mapping[str, float]
    resources: Mapping[str, frozenset[str]] = field(default_factory=dict)


class Lost(NamedTuple):
    """What the extender judges by: the nodes lost whole (every LINSTOR pod kept off them), and the
    (resource, node) replicas lost on nodes that are not (only pods using those resources kept off)."""

    nodes: frozenset[str] = frozenset()
    replicas: frozenset[tuple[str, str]] = frozenset()


NOTHING_LOST = Lost()


def parse(text: str | None) -> LostStorage | None:
    """The record in the annotation's value; None for a missing or garbled one (nothing is filtered
    on a record we cannot read)."""
    if not text:
        return None
    try:
        doc = orjson.loads(text)
        observed = float(doc["observed"])
        entries = (doc.get("nodes") or {}).items()
        nodes = {str(node): float(entry["since"]) for node, entry in entries}
        resources = {str(node): frozenset(str(r) for r in entry["resources"])
                     for node, entry in entries if entry.get("resources")}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return LostStorage(observed, nodes, resources)


def read_record(lease: Mapping[str, Any]) -> LostStorage | None:
    """Informer transform for fencing's Lease: its record, or None (the store keeps nothing)."""
    return parse(objects.annotations(lease).get(ANNOTATION))


def lost_now(record: LostStorage | None, wall_now: float, max_age: float) -> Lost:
    """What to keep LINSTOR pods off, from a record observed at most ``max_age`` seconds ago (a
    record from the future by more than ``max_age`` is a clock gone wrong: not trusted): nodes lost
    whole, and the lost replicas of nodes that are not. A node whose entry names no resources (a
    record of an older fencing, or more lost replicas than a record lists) is lost whole: the
    careful reading."""
    if record is None or not -max_age <= wall_now - record.observed <= max_age:
        return NOTHING_LOST
    partial = record.resources
    return Lost(frozenset(n for n in record.nodes if n not in partial),
                frozenset((r, n) for n, names in partial.items() if n in record.nodes for r in names))


def lost_nodes(record: LostStorage | None, wall_now: float, max_age: float) -> frozenset[str]:
    """The nodes lost whole (``lost_now``)."""
    return lost_now(record, wall_now, max_age).nodes
