"""kube-scheduler's choices as the PersistentVolumeClaim informer hears them, applied to the ledger
of holds (reservations.py) at once.

The Kubernetes part of the state is rebuilt a debounce (0.2 s) after a change, and a burst
schedules a pod every few milliseconds: waiting for the rebuild would leave dozens of claims held
on every node their pods passed. So each claim event that can change a hold is handed to the
serving loop as it arrives (one ``call_soon_threadsafe`` from the informer's thread) and judged
there against the current state (``reservations.heard_claim``). Only the loop touches the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from linstor_scheduler.claims import ClaimRecord, as_claim
from linstor_scheduler.clock import now as boottime

from .holder import StateHolder
from .reservations import Ledger, heard_claim
from .state import ClusterState


class SelectionFeed:
    def __init__(self, ledger: Ledger, holder: StateHolder, *, clock: Callable[[], float] = boottime) -> None:
        self.ledger = ledger
        self.holder = holder
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        # Claims whose pool the state could not tell yet (its StorageClass or node not seen, e.g.
        # the first list, before the first state): the latest news of each, asked again with each
        # published state, for at most the ledger's TTL.
        self.waiting: dict[str, tuple[ClaimRecord | None, float]] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def heard(self, kind: str, obj: Any) -> None:
        """The claim informer's ``on_change`` (its thread). Only news that can change a hold crosses
        to the loop: a claim held now, or one chosen a node for and not bound (a bound claim
        keeps the annotation for good: a restart's first list must not hand over every claim).
        Reads the ledger from this thread: a dict look-up, atomic under the GIL."""
        loop = self._loop
        record = as_claim(obj) if isinstance(obj, ClaimRecord | Mapping) else None
        if loop is None or record is None:
            return
        key = record.key
        if self.ledger.get(key) is None and key not in self.waiting and (kind == "DELETED" or not record.selected_node
                                                                         or record.volume):
            return
        loop.call_soon_threadsafe(self._apply, key, None if kind == "DELETED" else record)

    def _apply(self, key: str, pvc: ClaimRecord | None) -> None:
        now = self.clock()
        if heard_claim(self.ledger, key, pvc, self.holder.state, now) is None:
            self.waiting[key] = (pvc, now)
        else:
            self.waiting.pop(key, None)

    def published(self, state: ClusterState) -> None:
        """After each published state: the news that waited for it."""
        now = self.clock()
        for key, (pvc, at) in list(self.waiting.items()):
            if now - at >= self.ledger.ttl or heard_claim(self.ledger, key, pvc, state, now) is not None:
                del self.waiting[key]
