"""One bounded read of a resource the index does not know yet (a volume bound seconds ago), with its
memories: the decision (judge.py) asks it, the sync (refresh.py) tells it what each new state knows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from linstor_scheduler.clock import now as boottime

from .cache import GenerationCache
from .state import ClusterState, ResourceInfo, index_resources

log = logging.getLogger(__name__)
FALLBACK_GENERATION = 0  # the fallback's memories are not tied to a state generation (FallbackReader)


class ResourceReader(Protocol):
    async def get_resources_of(self, resource_definition: str, *, timeout: float | None = None) -> list[Any]: ...


class FallbackReader:
    """One bounded read of a resource the index does not know yet (a volume created seconds ago).

    Both memories are bounded ``GenerationCache``s (``max_entries`` each), oldest out first:
    - ``found``: resources read here, kept until the index knows them (``forget_known``, on each
      published state). They outlive state generations on purpose: a volume bound before LINSTOR's
      next poll shows it must not cost a LINSTOR call per request whenever a Kubernetes change
      makes a new generation. One pushed out is read again (one call), never answered wrong.
    - ``missing``: "not found" (or a failed read) for ``negative_ttl`` seconds, so a burst of
      requests for the same pod makes one LINSTOR call, not many; then the next request reads again
      and finds a resource that appeared meanwhile (the next poll's index finds it anyway). Expired
      ones are dropped oldest first, so a stream of pods naming resources that never appear holds
      at most the misses of the last ``negative_ttl`` seconds, and never more than ``max_entries``.
    """

    def __init__(
        self,
        client: ResourceReader,
        *,
        timeout: float = 1.0,
        negative_ttl: float = 5.0,
        clock: Callable[[], float] = boottime,
        on_read: Callable[[str], None] | None = None,
        max_entries: int = 4096,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._negative_ttl = negative_ttl
        self._clock = clock
        # One generation for good (FALLBACK_GENERATION): these entries are not tied to a state.
        self.found: GenerationCache[str, ResourceInfo] = GenerationCache("fallback_found", max_entries=max_entries)
        self.missing: GenerationCache[str, float] = GenerationCache("fallback_missing", max_entries=max_entries)
        self._inflight: dict[str, asyncio.Future[ResourceInfo | None]] = {}
        self._on_read = on_read
        self.generation = 0

    @property
    def caches(self) -> list[GenerationCache[Any, Any]]:
        return [self.found, self.missing]

    def forget_known(self, state: ClusterState) -> None:
        for name in [n for n in self.found if n in state.resources]:
            self.found.discard(name)
        self._expire()

    def _expire(self) -> None:
        now, ttl = self._clock(), self._negative_ttl
        self.missing.evict_while(lambda _, at: now - at >= ttl)

    async def get(self, name: str) -> ResourceInfo | None:
        found = self.found.get(name, FALLBACK_GENERATION)
        if found is not None:
            return found
        self._expire()
        if self.missing.get(name, FALLBACK_GENERATION) is not None:
            return None
        pending = self._inflight.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[ResourceInfo | None] = asyncio.get_running_loop().create_future()
        self._inflight[name] = fut
        info: ResourceInfo | None = None
        outcome = "miss"
        try:
            items = await self._client.get_resources_of(name, timeout=self._timeout)
            info = index_resources(items).get(name)
            outcome = "found" if info else "miss"
        except Exception as exc:  # a fallback must never fail the request
            outcome = "error"
            log.warning("fallback read of resource %s failed: %s", name, exc)
        finally:
            if info is not None:
                self.found.put(name, FALLBACK_GENERATION, info)
                self.missing.discard(name)
                self.generation += 1
            else:
                self.missing.put(name, FALLBACK_GENERATION, self._clock())
            del self._inflight[name]
            fut.set_result(info)
            if self._on_read:
                self._on_read(outcome)
        return info
