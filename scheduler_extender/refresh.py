"""Background sync: LINSTOR polling (+ node events) and Kubernetes caches -> a new ``ClusterState``.

Reads happen here, never on the request path. A failed LINSTOR read keeps the last good state
(its age grows, visible in /readyz and metrics, and past the limit the extender turns neutral);
Kubernetes changes rebuild only the Kubernetes part. Each new state is swapped in whole; one whose
content is unchanged keeps its generation, so the request path's caches stay warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from linstor_scheduler.linstor.client import EventsNotSupported, LinstorClient
from linstor_scheduler.linstor.models import Node, StoragePool

from .judge import FallbackReader, StateHolder
from .metrics import ExtenderMetrics
from .state import ClusterState, KubeView, ResourceInfo, index_replicas, replica_from

log = logging.getLogger(__name__)
EXTENDER_KINDS = ("Node", "PersistentVolumeClaim", "PersistentVolume", "StorageClass")


class Syncer:
    def __init__(
        self,
        holder: StateHolder,
        client: LinstorClient,
        caches: Any,  # linstor_scheduler.kube.KubeCaches (or anything with the same surface)
        *,
        poll_interval: float = 10.0,
        kube_debounce: float = 0.2,
        use_events: bool = True,
        metrics: ExtenderMetrics | None = None,
        fallback: FallbackReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder = holder
        self.client = client
        self.caches = caches
        self.poll_interval = poll_interval
        self.kube_debounce = kube_debounce
        self.use_events = use_events
        self.metrics = metrics
        self.fallback = fallback
        self.clock = clock
        self._generation = 0
        self._linstor: tuple[list[Node], list[StoragePool], dict[str, ResourceInfo], float] | None = None
        self._kube: tuple[KubeView, float] | None = None
        self._poll_now = asyncio.Event()
        self._kube_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._linstor_loop(), name="linstor-poll"),
                       asyncio.create_task(self._kube_loop(), name="kube-view")]
        if self.use_events:
            self._tasks.append(asyncio.create_task(self._events_loop(), name="linstor-node-events"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def kube_changed(self, *_: Any) -> None:
        """Informer callback (runs in informer threads): wake the Kubernetes rebuild."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._kube_changed.set)

    # --- LINSTOR ------------------------------------------------------------------------------
    async def sync_linstor_once(self) -> bool:
        started = time.perf_counter()
        try:
            nodes = await self.client.get_nodes()
            pools = await self.client.get_storage_pools()
            # each item reduced to its replica as it streams in: the REST items are never all held
            resources = index_replicas([(r.name, replica_from(r)) async for r in self.client.iter_resources()
                                        if not r.ignored])
        except Exception as exc:
            self.holder.last_error = f"LINSTOR read failed: {exc}"
            age = self._age()
            log.warning("LINSTOR read failed (%s); serving the last good state%s", exc,
                        f", {age:.0f}s old" if age is not None else " (none yet)")
            self._count("linstor", "error")
            return False
        self._linstor = (nodes, pools, resources, self.clock())
        self._count("linstor", "ok")
        if self.metrics:
            self.metrics.sync_seconds.observe(time.perf_counter() - started)
        self.holder.last_error = None
        self._publish()
        return True

    async def _linstor_loop(self) -> None:
        backoff = 1.0
        while True:
            ok = await self.sync_linstor_once()
            wait = self.poll_interval if ok else min(backoff, self.poll_interval)
            backoff = 1.0 if ok else min(backoff * 2, 60.0)
            self._poll_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), timeout=wait)

    async def _events_loop(self) -> None:
        """Node events make the next poll happen now: an OFFLINE satellite is seen in ~1 s."""
        backoff = 1.0
        while True:
            try:
                async for name, _ in self.client.events("/v1/events/nodes"):
                    log.info("LINSTOR node event %s: polling now", name)
                    self._poll_now.set()
                    backoff = 1.0
            except EventsNotSupported:
                log.info("LINSTOR controller offers no node events stream; polling every %.0fs", self.poll_interval)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("LINSTOR node events stream ended (%s); reconnecting in %.0fs", exc, backoff)
            await asyncio.sleep(backoff)  # reconnect backoff, not synchronisation
            backoff = min(backoff * 2, 60.0)

    # --- Kubernetes ---------------------------------------------------------------------------
    def sync_kube_once(self) -> bool:
        if not self.caches.synced:
            return False
        items: list[dict[str, Any]] = []
        for kind in EXTENDER_KINDS:
            items.extend(self.caches[kind].items())
        self._kube = (KubeView.from_objects(items), self.clock())
        self._count("kubernetes", "ok")
        self._publish()
        return True

    async def _kube_loop(self) -> None:
        while not self.caches.synced:
            await asyncio.to_thread(self.caches.wait_synced, 1.0)
        self.sync_kube_once()
        while True:
            try:
                await asyncio.wait_for(self._kube_changed.wait(), timeout=self.poll_interval)
            except TimeoutError:
                # No change: the view is still current as long as the informers are healthy.
                if self._kube is not None and (self.caches.age() or 0) < self.poll_interval * 3:
                    self._kube = (self._kube[0], self.clock())
                    self._publish()
                continue
            await asyncio.sleep(self.kube_debounce)  # coalesce bursts of changes into one rebuild
            self._kube_changed.clear()
            self.sync_kube_once()

    # --- publishing ---------------------------------------------------------------------------
    def _publish(self) -> None:
        """Swap in the state of the latest reads. When LINSTOR and Kubernetes say what they said
        before, the state keeps its generation (and so every cache of the request path) and only
        its read times move: the caches live until the content changes, not until the next poll."""
        if self._linstor is None or self._kube is None:
            return
        nodes, pools, resources, linstor_at = self._linstor
        kube, kube_at = self._kube
        old: ClusterState = self.holder.state
        ours = self.holder.ready and old.generation == self._generation
        same_kube = ours and (old.kube is kube or old.kube == kube)
        if same_kube and old.kube is not kube:
            kube = old.kube  # the same view: the old object, so the next comparison is by identity
            self._kube = (kube, kube_at)
        state = ClusterState.build(
            generation=self._generation + 1, nodes=nodes, pools=pools, resources=resources, kube=kube,
            linstor_synced_at=linstor_at, kube_synced_at=kube_at, kube_since=old.kube_since if same_kube else None,
        )
        if ours and state.same_content(old):
            state = dataclasses.replace(old, linstor_synced_at=linstor_at, kube_synced_at=kube_at)
            self._linstor = (nodes, pools, old.resources, linstor_at)  # identity next time, too
            self._count_publish("kept")
        else:
            self._generation += 1
            self._count_publish("new")
        self.holder.swap(state)
        if self.fallback:
            self.fallback.forget_known(state)
        if not self.holder.ready:
            log.info("first full sync done: %d LINSTOR nodes, %d resources, %d PVCs; ready",
                     len(state.nodes), len(state.resources), len(kube.pvcs))
        self.holder.ready = True

    def _count_publish(self, result: str) -> None:
        if self.metrics:
            self.metrics.publishes.labels(result).inc()

    def _age(self) -> float | None:
        state: ClusterState = self.holder.state
        return None if state.synced_at == float("-inf") else self.clock() - state.synced_at

    def _count(self, source: str, outcome: str) -> None:
        if self.metrics:
            self.metrics.syncs.labels(source, outcome).inc()
