"""Background sync: LINSTOR polling (+ node events) and Kubernetes caches -> a new ``ClusterState``.

Reads happen here, never on the request path. A failed LINSTOR read keeps the last good state
(its age grows, visible in /readyz and metrics, and past the limit the extender turns neutral);
a read that does not end within ``read_deadline`` is abandoned and counts as failed (a controller
that answers a byte at a time must not hold the poll for ever). Kubernetes changes rebuild only
the Kubernetes part. Each new state is swapped in whole; one whose content is unchanged keeps its
generation, so the request path's caches stay warm.

The Kubernetes part's age is what the API server confirmed (``kube_age``: the informers' age, or
the time since a change the state does not hold yet), read live by every request, so a silent
watch or a hung API server ages the view although nothing is read. Both loops beat; ``liveness``
says when one ended or stopped turning (``/healthz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from linstor_scheduler.aio import wait_set, within
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.gcpolicy import LEAVE, GcPolicy
from linstor_scheduler.health import loop_liveness
from linstor_scheduler.linstor.client import EventsNotSupported, LinstorClient
from linstor_scheduler.lost_storage import Lost

from .fallback import FallbackReader
from .grouping import node_class_ids
from .holder import StateHolder
from .metrics import ExtenderMetrics
from .state import (
    EXTENDER_TRANSFORMS,
    ClusterState,
    ExtenderKubeView,
    NodeInfo,
    ResourceIndexer,
    ResourceInfo,
    index_nodes,
    keep_unchanged_nodes,
    max_free_by_pool,
    resolve_pools,
    with_pools,
)

log = logging.getLogger(__name__)
EXTENDER_KINDS = tuple(EXTENDER_TRANSFORMS)  # Node, StorageClass, PersistentVolumeClaim, PersistentVolume
LOOP_MARGIN = 30.0  # seconds a loop may overrun its own bound before /healthz calls it stuck (as the informers')



def _describe(exc: BaseException) -> str:
    """An error for a log line or ``last_error``: a bare ``TimeoutError`` has no text of its own."""
    return str(exc) or type(exc).__name__


async def read_index(client: LinstorClient, previous: ResourceIndexer | None,
                     previous_nodes: Mapping[str, NodeInfo] | None = None,
                     ) -> tuple[Mapping[str, NodeInfo], ResourceIndexer, float]:
    """Nodes, pools (with their definitions' and the controller's props: the over-subscription
    ratios) and resources of one LINSTOR read, indexed as the resources stream in; with
    the CPU seconds this thread spent on it (in the read thread: the read's own cost, nothing else).
    Unchanged nodes and resources come back as the previous read's objects (the previous mapping
    itself when no node changed), so the publish tells an unchanged poll by identity."""
    cpu = time.thread_time()
    # the nodes indexed now (their pools after the stream), so their records are not held across it
    skeletons = index_nodes(await client.get_nodes_compact(), ())
    definitions = {d.storage_pool_name: d.props for d in await client.get_storage_pool_definitions_compact()}
    # the pools reduced to what their room is computed from (their records dropped before the stream)
    pools = resolve_pools(await client.get_storage_pools_compact(), definitions,
                          await client.get_controller_properties())
    indexer = ResourceIndexer(previous=previous)
    async for batch in client.iter_resource_batches():
        indexer.add(batch)  # also sums what LINSTOR reserves per (node, pool) for the volumes listed
        await asyncio.sleep(0)  # on the serving loop: let waiting requests in between batches
    # Each pool's room as LINSTOR would admit a volume there (``linstor.capacity``), once per read, here.
    nodes = keep_unchanged_nodes(
        with_pools(skeletons, pools, indexer.reserved), previous_nodes)
    indexer.reserved = {}  # counted in the pools' room now; the indexer lives on as the next read's previous
    names = list(indexer.index)
    for start in range(0, len(names), 2000):
        indexer.keep_unchanged(names[start:start + 2000])
        await asyncio.sleep(0)
    indexer.forget_previous()
    return nodes, indexer, time.thread_time() - cpu


def lost_of(view: ExtenderKubeView) -> Lost:
    """What of fencing's record a view holds (compared with the record's reading now)."""
    return Lost(view.lost, view.lost_replicas)


class _ReadThread:
    """A thread with its own event loop (and its own LINSTOR client) where reads are decoded and
    indexed, so the serving loop only waits for the GIL, never for a batch's turn in its queue."""

    def __init__(self, client: LinstorClient) -> None:
        self.client = client.sibling()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="linstor-read", daemon=True)
        self.thread.start()

    async def run(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        """Ends what still runs on the read loop there (a read abandoned at its deadline), closes the
        client and the loop: a task left pending would be finalised by the garbage collector in
        whatever thread runs next (httpserver.ServerThread._finish says what that broke)."""
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()

    async def _close(self) -> None:
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=2)
        await self.client.aclose()


class Syncer:
    def __init__(
        self,
        holder: StateHolder,
        client: LinstorClient,
        caches: Any,  # linstor_scheduler.kube.KubeCaches (or anything with the same surface)
        *,
        poll_interval: float = 10.0,
        poll_min_factor: float = 4.0,
        kube_debounce: float = 0.2,
        use_events: bool = True,
        metrics: ExtenderMetrics | None = None,
        fallback: FallbackReader | None = None,
        clock: Callable[[], float] = boottime,
        read_in_thread: bool = False,
        read_deadline: float | None = None,
        gc_policy: GcPolicy = LEAVE,
    ) -> None:
        """``read_deadline``: seconds one whole LINSTOR read may take before it is abandoned (None:
        only the client's own per-request timeouts). ``gc_policy``: what the process's collector is
        told around each read and publish (``linstor_scheduler.gcpolicy``; the live service's wiring
        gives ``SERVICE``, anything else leaves the collector alone)."""
        self.holder = holder
        self.client = client
        self.caches = caches
        self.poll_interval = poll_interval
        self.poll_min_factor = poll_min_factor
        self.sync_duration = 0.0  # wall seconds of the last LINSTOR read + index build
        self.kube_debounce = kube_debounce
        self.use_events = use_events
        self.metrics = metrics
        self.fallback = fallback
        self.clock = clock
        self._generation = 0
        self._linstor: tuple[Mapping[str, NodeInfo], Mapping[str, ResourceInfo], Mapping[str, int], float] | None = None
        # (nodes, topology, classes, lost): the classes, kept while the first two are the same objects
        self._classes: tuple[object, object, dict[str, int], frozenset[str]] | None = None
        self._publishing = asyncio.Lock()
        self.read_in_thread = read_in_thread
        self._reader: _ReadThread | None = None
        self._indexer: ResourceIndexer | None = None  # the last read's, whose objects the next one reuses
        self._kube: tuple[ExtenderKubeView, float] | None = None
        self._poll_now = asyncio.Event()
        self._kube_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.read_deadline = read_deadline
        self.gc_policy = gc_policy
        self.poll_beat = self.kube_beat = clock()  # when each loop last did something (liveness)
        self._changed_at: float | None = None  # first change the informers heard that the state lacks
        self.on_publish: Callable[[ClusterState], None] | None = None  # after each swap (reservations)
        # The nodes fencing judges lost now (``lost_storage.lost_nodes`` over its Lease's informer);
        # None: not read (no fencing Lease configured, a snapshot). Read at each rebuild, and at each
        # restamp, since a record ages out without any change the informers would hear.
        self.lost_source: Callable[[], Lost] | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.read_in_thread and self._reader is None:
            self.gc_policy.reading_in_thread()  # the serving thread gets the GIL back sooner
            self._reader = _ReadThread(self.client)
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
        if self._reader is not None:
            await asyncio.to_thread(self._reader.stop)
            self._reader = None

    def kube_changed(self, *_: Any) -> None:
        """Informer callback (runs in informer threads): wake the Kubernetes rebuild. Until it lands,
        the state's Kubernetes part is as old as this change (``kube_age``)."""
        if self._changed_at is None:
            self._changed_at = self.clock()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._kube_changed.set)

    def lost_changed(self, *_: Any) -> None:
        """Informer callback for fencing's Lease (informer threads): a rebuild only when the nodes its
        record names now differ from the view's. Every renewal brings a record with a new
        ``observed`` time, which alone changes nothing the extender uses (aging in and out is
        checked at each restamp), and must not rebuild the whole view every few seconds."""
        kube = self._kube
        if self.lost_source is None or kube is None or self.lost_source() != lost_of(kube[0]):
            self.kube_changed()

    # --- freshness and liveness ------------------------------------------------------------------
    def kube_age(self) -> float | None:
        """Seconds since the API server confirmed the Kubernetes view the state holds: the stalest
        informer's age, or, while a change it heard is not in the state yet, the time since that
        change (whichever is older); None before the first list."""
        age = self.caches.age()
        pending = self._changed_at
        if pending is not None:
            behind = self.clock() - pending
            age = behind if age is None else max(age, behind)
        return age

    def kube_detail(self) -> str:
        """Which informer is stalest and why (for the probe and the neutral answer)."""
        return self.caches.stalest()

    def poll_bound(self) -> float:
        """The longest the LINSTOR loop may go without a beat: a read (its deadline), a wait, a margin."""
        return (self.read_deadline or 0.0) + self.next_poll_in() + LOOP_MARGIN

    def kube_bound(self) -> float:
        return self.next_poll_in() + self.kube_debounce + LOOP_MARGIN

    def liveness(self) -> tuple[bool, str]:
        """For ``/healthz``: both loops still run and turn (failing reads are readiness, not this)."""
        if not self._tasks:
            return True, "sync not started"
        problems = [f"{task.get_name()} loop ended: {_ended(task)}" for task in self._tasks[:2] if task.done()]
        now = self.clock()
        for name, beat, bound in (("LINSTOR poll", self.poll_beat, self.poll_bound()),
                                  ("Kubernetes view rebuild", self.kube_beat, self.kube_bound())):
            ok, text = loop_liveness(name, beat, now, bound)
            if not ok:
                problems.append(text)
        return (False, "; ".join(problems)) if problems else (True, "sync loops turning")

    # --- LINSTOR ------------------------------------------------------------------------------
    async def sync_linstor_once(self) -> bool:
        """One LINSTOR read, indexed as it streams in, then published.

        Nodes and pools arrive as compact records; resources in batches of compact records, each
        batch indexed and dropped before the next is read, so neither the body nor a list of items
        is ever whole, and requests are answered between batches (each is well under 1 ms of work).
        The read and the publish are one ``gc_policy.big_read()`` (the live service: no cyclic
        collection meanwhile, ``linstor_scheduler.gcpolicy``).
        """
        started = time.perf_counter()
        with self.gc_policy.big_read():
            if not await self._read_linstor():
                return False
            await self._publish()
        self.sync_duration = time.perf_counter() - started
        if self.metrics:
            self.metrics.sync_seconds.observe(self.sync_duration)
        return True

    async def _read_linstor(self) -> bool:
        try:
            previous_nodes = self._linstor[0] if self._linstor is not None else None
            if self._reader is not None:
                read = self._reader.run(read_index(self._reader.client, self._indexer, previous_nodes))
            else:
                read = read_index(self.client, self._indexer, previous_nodes)
            started = boottime()
            try:
                nodes, indexer, cpu = await within(read, self.read_deadline)
            except TimeoutError:
                if self.read_deadline is None or boottime() - started < self.read_deadline:
                    raise  # the client's own timeout, not our deadline
                raise TimeoutError(f"no complete answer within {self.read_deadline:g}s") from None
            if self._reader is not None and self.metrics:
                self.metrics.sync_cpu.inc(cpu)
        except Exception as exc:
            self.holder.last_error = f"LINSTOR read failed: {_describe(exc)}"
            age = self._age()
            log.warning("LINSTOR read failed (%s); serving the last good state%s", _describe(exc),
                        f", {age:.0f}s old" if age is not None else " (none yet)")
            self._count("linstor", "error")
            return False
        self._indexer = indexer
        same_nodes = self._linstor is not None and nodes is self._linstor[0]
        max_free = self._linstor[2] if same_nodes else max_free_by_pool(nodes)  # type: ignore[index]
        self._linstor = (nodes, indexer.index, max_free, self.clock())
        self._count("linstor", "ok")
        self.holder.last_error = None
        return True

    def next_poll_in(self) -> float:
        """``--poll-interval``, but never below ``poll_min_factor`` x the last sync's duration, so
        the sync takes at most 1/factor of a core however big the cluster (a 5,000-node read is
        seconds of work, which a fixed short interval would repeat back to back)."""
        return max(self.poll_interval, self.poll_min_factor * self.sync_duration)

    async def _linstor_loop(self) -> None:
        backoff = 1.0
        while True:
            self.poll_beat = self.clock()
            try:
                ok = await self.sync_linstor_once()
            except Exception:  # a bug of ours must not end the loop: logged, counted, retried
                log.exception("LINSTOR sync failed")
                self._count("linstor", "error")
                ok = False
            self.poll_beat = self.clock()
            wait = self.next_poll_in() if ok else min(backoff, self.next_poll_in())
            if self.metrics:
                self.metrics.poll_interval.set(wait)
            backoff = 1.0 if ok else min(backoff * 2, 60.0)
            self._poll_now.clear()
            ended = boottime()
            await wait_set(self._poll_now, wait)
            if self._poll_now.is_set():
                # A node event: poll now, unless the last poll ended less than its own duration ago
                # (a burst of events then keeps the sync to half a core, not a whole one).
                rest = self.sync_duration - (boottime() - ended)
                if rest > 0:
                    await asyncio.sleep(rest)

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
    def _kube_confirmed_at(self) -> float:
        """When the API server last confirmed the caches' view, on our clock."""
        return self.clock() - (self.caches.age() or 0.0)

    async def sync_kube_once(self) -> bool:
        """The Kubernetes part rebuilt from the caches, stamped with the time the server confirmed them."""
        if not self.caches.synced:
            return False
        self._changed_at = None  # a change heard from here on is read below or rebuilt next time
        confirmed = self._kube_confirmed_at()
        self._kube = (self._view(), confirmed)
        self._count("kubernetes", "ok")
        await self._publish()
        return True

    def _view(self) -> ExtenderKubeView:
        """The view from the informers' stores when they keep the extender's records (the live
        service: copies of the stores); from their items otherwise (objects, read into records)."""
        informers = {kind: self.caches[kind] for kind in EXTENDER_KINDS}
        if all(getattr(i, "transform", None) is EXTENDER_TRANSFORMS[k] for k, i in informers.items()):
            view = ExtenderKubeView.from_stores({kind: informer.snapshot() for kind, informer in informers.items()})
        else:
            view = ExtenderKubeView.from_objects([item for informer in informers.values() for item in informer.items()])
        if self.lost_source is not None:
            lost = self.lost_source()
            view = dataclasses.replace(view, lost=lost.nodes, lost_replicas=lost.replicas)
        return view

    async def _kube_loop(self) -> None:
        while not self.caches.synced:
            self.kube_beat = self.clock()
            await asyncio.to_thread(self.caches.wait_synced, 1.0)
        await self._rebuild()
        while True:
            self.kube_beat = self.clock()
            if not await wait_set(self._kube_changed, self.next_poll_in()):
                await self._restamp()
                continue
            await asyncio.sleep(self.kube_debounce)  # coalesce bursts of changes into one rebuild
            self._kube_changed.clear()
            await self._rebuild()

    async def _rebuild(self) -> None:
        try:
            await self.sync_kube_once()
        except Exception:  # a bug of ours must not end the loop (the view ages meanwhile: kube_age)
            log.exception("rebuilding the Kubernetes view failed")
            self._count("kubernetes", "error")

    async def _restamp(self) -> None:
        """No change: the same view, as recently as the server confirmed it (never moved back, and
        not while a change is pending)."""
        if self._kube is None or self._changed_at is not None:
            return
        if self.lost_source is not None and self.lost_source() != lost_of(self._kube[0]):
            await self._rebuild()  # fencing's record aged out (or in): a new view, as for a change
            return
        confirmed = self._kube_confirmed_at()
        if confirmed > self._kube[1]:
            self._kube = (self._kube[0], confirmed)
            await self._publish()

    # --- publishing ---------------------------------------------------------------------------
    async def _publish(self) -> None:
        """Swap in the state of the latest reads. When LINSTOR and Kubernetes say what they said
        before, the state keeps its generation (and so every cache of the request path) and only
        its read times move: the caches live until the content changes, not until the next poll.

        The comparison is cheap on the serving loop at scale: the read (``read_index``, in the read
        thread) hands back the previous read's objects wherever nothing changed (the nodes mapping
        itself, each ``NodeInfo``, each ``ResourceInfo`` via ``ResourceIndexer.keep_unchanged``), so
        comparing equal reads is identity checks; an equal Kubernetes view or node mapping is
        replaced by the old object (identity next time; the node classes are kept). Node classes
        are computed only for a new generation."""
        async with self._publishing:  # one at a time: a state built from older data never lands last
            if self._linstor is None or self._kube is None:
                return
            nodes, resources, max_free, linstor_at = self._linstor
            kube, kube_at = self._kube
            old: ClusterState = self.holder.state
            ours = self.holder.ready and old.generation == self._generation
            same_kube = ours and (old.kube is kube or old.kube == kube)
            if same_kube and old.kube is not kube:
                kube = old.kube  # the same view: the old object, so the next comparison is by identity
                self._kube = (kube, kube_at)
            if ours and old.nodes is not nodes and old.nodes == nodes:
                nodes, max_free = old.nodes, old.pool_max_free  # the same nodes: keep their classes too
                self._linstor = (nodes, resources, max_free, linstor_at)
            state = ClusterState.build(
                generation=self._generation + 1, nodes=nodes, pools=(), resources=resources, kube=kube,
                linstor_synced_at=linstor_at, kube_synced_at=kube_at, pool_max_free=max_free,
                kube_since=old.kube_since if same_kube else None,
            )
            if ours and state.same_content(old):
                state = dataclasses.replace(old, linstor_synced_at=linstor_at, kube_synced_at=kube_at)
                self._linstor = (old.nodes, old.resources, old.pool_max_free, linstor_at)  # identity next time
                self._count_publish("kept")
            else:
                # In slices between requests; the lock keeps self.holder.state and the generation ours.
                state = dataclasses.replace(state, node_classes=await self._node_classes(nodes, kube))
                self._generation += 1
                self._count_publish("new")
            self.gc_policy.published(self.holder.swap(state))  # the live service: a new index is frozen
            if self.on_publish is not None:
                self.on_publish(state)
            if self.fallback:
                self.fallback.forget_known(state)
            if not self.holder.ready:
                log.info("first full sync done: %d LINSTOR nodes, %d resources, %d PVCs; ready",
                         len(state.nodes), len(state.resources), len(kube.pvcs))
            self.holder.ready = True

    async def _node_classes(self, nodes: Mapping[str, NodeInfo], kube: ExtenderKubeView,
                            step: int = 500) -> dict[str, int]:
        """Node classes for the next state, computed here in slices between requests (at 5,000 nodes
        they cost ~12 ms, which the first request after each poll used to pay), and kept while
        neither the LINSTOR nodes nor the Kubernetes topology changed."""
        if self._classes is not None and self._classes[0] is nodes and self._classes[1] is kube.topology \
                and self._classes[3] == kube.lost:
            return self._classes[2]
        names = list(set(nodes) | set(kube.topology))
        probe = ClusterState(0, nodes, {}, kube, 0.0, 0.0, {})
        ids: dict[object, int] = {}
        classes: dict[str, int] = {}
        for start in range(0, len(names), step):
            classes.update(node_class_ids(names[start:start + step], probe, ids))
            await asyncio.sleep(0)
        self._classes = (nodes, kube.topology, classes, kube.lost)
        return classes

    def _count_publish(self, result: str) -> None:
        if self.metrics:
            self.metrics.publishes.labels(result).inc()

    def _age(self) -> float | None:
        state: ClusterState = self.holder.state
        return None if state.synced_at == float("-inf") else self.clock() - state.synced_at

    def _count(self, source: str, outcome: str) -> None:
        if self.metrics:
            self.metrics.syncs.labels(source, outcome).inc()


def _ended(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return _describe(exc) if exc is not None else "returned"
