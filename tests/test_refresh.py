"""The background sync with in-process fakes: LINSTOR failures keep the last good state, changes
swap in whole, node events trigger a poll. (Over real HTTP: tests/test_extender_live.py.)"""

from __future__ import annotations

import asyncio

from devkit import kube_objects as k
from linstor_scheduler.linstor.client import EventsNotSupported
from scheduler_extender.holder import StateHolder
from scheduler_extender.refresh import Syncer

from .cluster import lnode, lpool, lres


class FakeClient:
    def __init__(self) -> None:
        self.nodes = [lnode("w1"), lnode("w2")]
        self.pools = [lpool("w1")]
        self.resources = [lres("pvc-a", "w1")]
        self.fail = False
        self.reads = 0
        self.events_queue: asyncio.Queue[str] | None = None

    async def get_nodes(self):
        self.reads += 1
        if self.fail:
            raise ConnectionError("connection refused")
        return list(self.nodes)

    async def get_storage_pools(self):
        return list(self.pools)

    async def get_nodes_compact(self):
        return await self.get_nodes()

    async def get_storage_pools_compact(self):
        return await self.get_storage_pools()

    async def get_storage_pool_definitions_compact(self):
        return []

    async def get_controller_properties(self):
        return {}

    async def iter_resource_batches(self):
        yield list(self.resources)

    async def events(self, path):
        if self.events_queue is None:
            raise EventsNotSupported("no events")
        while True:
            yield await self.events_queue.get(), {}


class FakeInformer:
    def __init__(self, items):
        self._items = items

    def items(self):
        return list(self._items)


class FakeCaches:
    def __init__(self):
        self.objects = {"Node": [k.node("w1", zone="a"), k.node("w2", zone="b")], "PersistentVolumeClaim": [],
                        "PersistentVolume": [], "StorageClass": [k.storage_class("r2")]}
        self.synced = True

    def __getitem__(self, kind):
        return FakeInformer(self.objects[kind])

    def wait_synced(self, timeout):
        return self.synced

    def age(self):
        return 0.0


async def until(predicate, timeout=5.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)  # yield to the sync tasks; bounded by wait_for below

    await asyncio.wait_for(poll(), timeout)


def test_first_sync_makes_ready_and_linstor_failure_keeps_last_state():
    async def scenario():
        holder = StateHolder()
        client = FakeClient()
        syncer = Syncer(holder, client, FakeCaches(), poll_interval=3600, use_events=False)
        await syncer.start()
        await until(lambda: holder.ready)
        first = holder.state
        assert set(first.nodes) == {"w1", "w2"} and "pvc-a" in first.resources
        client.fail = True
        assert await syncer.sync_linstor_once() is False
        assert holder.state is first  # nothing half-updated, nothing dropped
        assert holder.last_error == "LINSTOR read failed: connection refused"
        client.fail = False
        client.resources.append(lres("pvc-b", "w2"))
        assert await syncer.sync_linstor_once() is True
        assert holder.state.generation > first.generation and "pvc-b" in holder.state.resources
        assert holder.last_error is None
        await syncer.stop()

    asyncio.run(scenario())


def test_not_ready_until_both_sources_synced():
    async def scenario():
        holder = StateHolder()
        caches = FakeCaches()
        caches.synced = False
        syncer = Syncer(holder, FakeClient(), caches, poll_interval=3600, use_events=False)
        await syncer.start()
        await until(lambda: syncer._linstor is not None)
        assert not holder.ready
        caches.synced = True
        await until(lambda: holder.ready)
        await syncer.stop()

    asyncio.run(scenario())


def test_kube_change_rebuilds_the_view():
    async def scenario():
        holder = StateHolder()
        caches = FakeCaches()
        syncer = Syncer(holder, FakeClient(), caches, poll_interval=3600, kube_debounce=0.0, use_events=False)
        await syncer.start()
        await until(lambda: holder.ready)
        caches.objects["PersistentVolumeClaim"] = [k.pvc("c-new")]
        syncer.kube_changed("ADDED", {})
        await until(lambda: "default/c-new" in holder.state.kube.pvcs)
        await syncer.stop()

    asyncio.run(scenario())


def test_node_event_triggers_an_immediate_poll():
    async def scenario():
        holder = StateHolder()
        client = FakeClient()
        client.events_queue = asyncio.Queue()
        syncer = Syncer(holder, client, FakeCaches(), poll_interval=3600)
        await syncer.start()
        await until(lambda: holder.ready)
        reads = client.reads
        client.nodes = [lnode("w1"), lnode("w2", "OFFLINE")]
        client.events_queue.put_nowait("node-offline")
        await until(lambda: client.reads > reads and not holder.state.nodes["w2"].online)
        await syncer.stop()

    asyncio.run(scenario())


def test_poll_interval_is_never_below_a_few_times_the_sync_duration():
    """A 5,000-node read takes seconds: a fixed short interval would repeat it back to back."""
    syncer = Syncer(StateHolder(), FakeClient(), FakeCaches(), poll_interval=10, poll_min_factor=4,
                    use_events=False)
    assert syncer.next_poll_in() == 10
    syncer.sync_duration = 6.0
    assert syncer.next_poll_in() == 24
    syncer.poll_min_factor = 0
    assert syncer.next_poll_in() == 10


def test_sync_duration_is_measured_and_the_wait_published():
    from scheduler_extender.metrics import ExtenderMetrics

    async def scenario():
        metrics = ExtenderMetrics()
        syncer = Syncer(StateHolder(), FakeClient(), FakeCaches(), poll_interval=3600, use_events=False,
                        metrics=metrics)
        await syncer.start()
        try:
            await until(lambda: metrics.registry.get_sample_value("linstor_scheduler_poll_interval_seconds") == 3600)
            assert syncer.sync_duration > 0
        finally:
            await syncer.stop()

    asyncio.run(scenario())


class SilentClient(FakeClient):
    """A LINSTOR controller that accepts the connection and never answers."""

    async def get_nodes_compact(self):
        self.reads += 1
        await asyncio.Event().wait()


def test_a_read_that_never_ends_is_abandoned_at_its_deadline():
    """The live extender gives one LINSTOR read ``read_deadline`` (its --max-staleness): past it the
    read is abandoned, counted as failed, and the loop polls again: it keeps turning (/healthz)."""
    async def scenario():
        holder = StateHolder()
        client = SilentClient()
        syncer = Syncer(holder, client, FakeCaches(), poll_interval=0.05, use_events=False, read_deadline=0.2)
        await syncer.start()
        try:
            await until(lambda: client.reads >= 2)
            assert holder.last_error == "LINSTOR read failed: no complete answer within 0.2s"
            assert syncer.liveness() == (True, "sync loops turning")
        finally:
            await syncer.stop()

    asyncio.run(scenario())


def test_liveness_fails_when_a_loop_stops_turning():
    """Without a deadline a read that never ends holds the poll loop: once it made no progress for its
    bound (read deadline + poll wait + 30 s), /healthz says so and the kubelet restarts the container."""
    from devkit.clock import FakeClock

    async def scenario():
        clock = FakeClock(0.0)
        client = SilentClient()
        syncer = Syncer(StateHolder(), client, FakeCaches(), poll_interval=10, use_events=False, clock=clock)
        await syncer.start()
        try:
            await until(lambda: client.reads == 1)
            assert syncer.liveness()[0]
            clock.now = 41.0
            ok, text = syncer.liveness()
            assert not ok and "LINSTOR poll made no progress for 41s (bound 40s)" in text
        finally:
            await syncer.stop()

    asyncio.run(scenario())


def test_the_kubernetes_age_counts_a_change_not_yet_in_the_state():
    """The state's Kubernetes part is as old as the first change the informers heard that it lacks."""
    from devkit.clock import FakeClock

    clock = FakeClock(100.0)
    syncer = Syncer(StateHolder(), FakeClient(), FakeCaches(), use_events=False, clock=clock)
    assert syncer.kube_age() == 0.0  # the caches' own age
    syncer.kube_changed("MODIFIED", {})
    clock.now = 103.0
    assert syncer.kube_age() == 3.0
    asyncio.run(syncer.sync_kube_once())
    assert syncer.kube_age() == 0.0
