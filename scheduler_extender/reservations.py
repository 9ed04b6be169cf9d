"""Capacity promised but not yet in LINSTOR: a small ledger of holds. Pure: no I/O, no clock of its own.

Free capacity comes from the last LINSTOR poll only, so in a burst of WaitForFirstConsumer pods
every pod would see the same emptiest node (topolvm/topolvm#119, longhorn/longhorn#12591). A hold
says "this unbound claim's size will land in this node's pool": the extender takes one when it
ranks a node first for the claim (``rank``), moves it to the node kube-scheduler really chose when
the claim carries ``volume.kubernetes.io/selected-node`` (``selected``), and drops it when LINSTOR
shows the volume (``settle``: the poll's free space now counts it) or after a TTL (``expire``: the
pod went elsewhere, or never bound). Scoring subtracts ``held`` from each pool's free space.

Bounded: at most ``max_holds``, the oldest dropped first (a hold lost early only makes a pool look
emptier than it is for one poll, as before this ledger existed). ``version`` changes with every
change, so whatever was computed from the holds can be keyed by it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from .state import ClusterState, NodeInfo

SELECTED_NODE = "volume.kubernetes.io/selected-node"  # set by kube-scheduler's VolumeBinding PreBind
DEFAULT_TTL = 120.0
DEFAULT_MAX_HOLDS = 10_000

Source = Literal["ranked", "selected"]


@dataclass(frozen=True, slots=True)
class Hold:
    claim: str  # "namespace/name" of the PVC
    node: str
    pool: str
    size_bytes: int
    since: float  # clock() when taken (or moved: a move starts the TTL again)
    source: Source


class Ledger:
    def __init__(self, *, ttl: float = DEFAULT_TTL, max_holds: int = DEFAULT_MAX_HOLDS) -> None:
        self.ttl = ttl
        self.max_holds = max_holds
        self._holds: dict[str, Hold] = {}  # claim -> hold, oldest first
        self._held: dict[tuple[str, str], int] = {}  # (node, pool) -> bytes
        self.version = 0

    def __len__(self) -> int:
        return len(self._holds)

    def holds(self) -> list[Hold]:
        return list(self._holds.values())

    def get(self, claim: str) -> Hold | None:
        return self._holds.get(claim)

    def held(self, node: str, pool: str) -> int:
        """Bytes promised on ``node``'s ``pool`` and not yet in LINSTOR's free space."""
        return self._held.get((node, pool), 0)

    def held_excluding(self, claims: Iterable[str]) -> dict[tuple[str, str], int]:
        """(node, pool) -> bytes held by every claim but ``claims``: a pod's own claims must not
        push it away from the node its claims are promised to."""
        out = dict(self._held)
        for claim in claims:
            hold = self._holds.get(claim)
            if hold is not None:
                key = (hold.node, hold.pool)
                out[key] -= hold.size_bytes
                if out[key] <= 0:
                    del out[key]
        return out

    def rank(self, claim: str, node: str, pool: str, size_bytes: int, now: float) -> bool:
        """The extender ranked ``node`` first for ``claim``: hold its size there, unless
        kube-scheduler has already chosen (a ``selected`` hold is never moved by a ranking).
        True when the ledger changed."""
        hold = self._holds.get(claim)
        if hold is not None and (hold.source == "selected" or (hold.node, hold.pool) == (node, pool)):
            return False
        self._put(Hold(claim, node, pool, size_bytes, now, "ranked"))
        return True

    def selected(self, claim: str, node: str, pool: str, size_bytes: int, now: float) -> bool:
        """kube-scheduler chose ``node`` for ``claim``: the hold moves there (or is taken there).
        True when the ledger changed."""
        hold = self._holds.get(claim)
        if hold is not None and hold.source == "selected" and (hold.node, hold.pool) == (node, pool):
            return False
        self._put(Hold(claim, node, pool, size_bytes, now, "selected"))
        return True

    def release(self, claim: str) -> bool:
        hold = self._holds.pop(claim, None)
        if hold is None:
            return False
        self._unheld(hold)
        self.version += 1
        return True

    def settle(self, done: Callable[[Hold], bool]) -> list[Hold]:
        """Drops the holds ``done`` says are over (LINSTOR shows the volume, or the claim is gone)."""
        over = [h for h in self._holds.values() if done(h)]
        for hold in over:
            self.release(hold.claim)
        return over

    def expire(self, now: float) -> list[Hold]:
        """Drops holds older than the TTL (a pod that never bound, or went to another node). Holds
        are kept in the order they were taken or moved, so this stops at the first one still young:
        nothing to do costs one look."""
        old: list[Hold] = []
        for hold in self._holds.values():
            if now - hold.since < self.ttl:
                break
            old.append(hold)
        for hold in old:
            self.release(hold.claim)
        return old

    def totals(self) -> Mapping[str, tuple[int, int]]:
        """source -> (holds, bytes): for the metric."""
        out = {"ranked": (0, 0), "selected": (0, 0)}
        for hold in self._holds.values():
            count, size = out[hold.source]
            out[hold.source] = (count + 1, size + hold.size_bytes)
        return out

    def _put(self, hold: Hold) -> None:
        old = self._holds.pop(hold.claim, None)
        if old is not None:
            self._unheld(old)
        while len(self._holds) >= self.max_holds:
            self._unheld(self._holds.pop(next(iter(self._holds))))
        self._holds[hold.claim] = hold
        key = (hold.node, hold.pool)
        self._held[key] = self._held.get(key, 0) + hold.size_bytes
        self.version += 1

    def _unheld(self, hold: Hold) -> None:
        key = (hold.node, hold.pool)
        left = self._held.get(key, 0) - hold.size_bytes
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)


def promised_state(state: ClusterState, held: Mapping[tuple[str, str], int]) -> ClusterState:
    """``state`` with the held bytes taken from each pool's free space (never below 0). Only the
    nodes with holds are copied; ``pool_max_free`` (the scale of the free-space score) stays the
    poll's, so a held pool scores lower without moving every other node's score."""
    if not held:
        return state
    nodes: dict[str, NodeInfo] = dict(state.nodes)
    for (name, pool), size in held.items():
        node = nodes.get(name)
        found = node.pools.get(pool) if node is not None else None
        if node is None or found is None or found.free_kib is None:
            continue
        free = max(0, found.free_kib - size // 1024)
        pools = {**node.pools, pool: dataclasses.replace(found, free_kib=free)}
        nodes[name] = dataclasses.replace(node, pools=pools)
    return dataclasses.replace(state, nodes=nodes)
