"""``GenerationCache``: the one cache type of the extender's request path.

Everything the extender caches (the pod's side by its bytes and by its claims, verdict tables,
node sets, finished answers) was computed from one ``ClusterState`` and is right exactly as long
as that state's content is: each entry belongs to a generation, and the first look-up or store
for a newer generation empties the cache. The sync keeps the generation when a poll finds
LINSTOR and Kubernetes unchanged (refresh.py), so the caches live until the content changes, not
until the next poll.

Bounded by entries and, where sizes are given, by bytes; the oldest entry goes first (insertion
order: a hit costs one dict look-up and no bookkeeping, which is what the hot path can afford).
An entry that grows in place (a verdict table filled node by node) is stored again with ``put``:
its size is charged anew, it becomes the newest, and older entries make room.
Generations only move forward: a request still holding an older state neither empties the cache
nor stores into it. Single-threaded (the event loop): no locks.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class GenerationCache(Generic[K, V]):
    def __init__(self, name: str, *, max_entries: int, max_bytes: int | None = None,
                 sizeof: Callable[[K, V], int] | None = None) -> None:
        if max_bytes is not None and sizeof is None:
            raise ValueError("max_bytes needs sizeof")
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._items: dict[K, V] = {}
        self._sizes: dict[K, int] = {}
        self.generation = -1
        self.bytes = 0
        self.hits = self.misses = self.clears = 0

    def __len__(self) -> int:
        return len(self._items)

    def _advance(self, generation: int) -> bool:
        """True when ``generation`` is the current one (after emptying the cache for a newer one)."""
        if generation == self.generation:
            return True
        if generation < self.generation:
            return False
        if self._items:
            self.clears += 1
        self._items.clear()
        self._sizes.clear()
        self.bytes = 0
        self.generation = generation
        return True

    def get(self, key: K, generation: int) -> V | None:
        # The current generation is checked inline: this runs several times per request.
        found = self._items.get(key) if generation == self.generation or self._advance(generation) else None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: K, generation: int, value: V) -> None:
        if not self._advance(generation):
            return
        size = 0
        if key in self._items:
            self._drop(key)  # replaced, or the same object grown: charged anew below
        if self._sizeof is not None:
            size = self._sizeof(key, value)
            if self.max_bytes is not None and size > self.max_bytes // 4:
                return  # one huge entry would push out everything else
        while self._items and (len(self._items) >= self.max_entries
                               or (self.max_bytes is not None and self.bytes + size > self.max_bytes)):
            self._drop(next(iter(self._items)))
        self._items[key] = value
        if self._sizeof is not None:
            self._sizes[key] = size
            self.bytes += size

    def get_or_compute(self, key: K, generation: int, compute: Callable[[], V]) -> V:
        found = self.get(key, generation)
        if found is None:
            found = compute()
            self.put(key, generation, found)
        return found

    def discard(self, key: K) -> None:
        if key in self._items:
            self._drop(key)

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def evict_while(self, stale: Callable[[K, V], bool]) -> None:
        """Drops entries, oldest first, while the oldest is ``stale``: for entries stored in time
        order with one lifetime (the fallback's remembered misses), the expired ones are the oldest."""
        items = self._items
        while items:
            key = next(iter(items))
            if not stale(key, items[key]):
                return
            self._drop(key)

    def _drop(self, key: K) -> None:
        del self._items[key]
        self.bytes -= self._sizes.pop(key, 0)

    def hit_rate(self) -> float | None:
        looked = self.hits + self.misses
        return self.hits / looked if looked else None
