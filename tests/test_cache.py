"""One cache type for the request path, and the state generation that decides how long it lives:
a poll that finds LINSTOR and Kubernetes unchanged keeps the generation (and so the caches) and
only moves the state's age; a change of content empties them."""

from __future__ import annotations

import asyncio

import pytest

from devkit import kube_objects as k
from devkit.clock import FakeClock
from scheduler_extender.cache import GenerationCache
from scheduler_extender.holder import StateHolder
from scheduler_extender.judge import Extender
from scheduler_extender.metrics import ExtenderMetrics
from scheduler_extender.refresh import Syncer

from .cluster import lres
from .test_refresh import FakeCaches, FakeClient, until


def test_bounded_by_entries_oldest_out_first():
    cache: GenerationCache[str, int] = GenerationCache("t", max_entries=2)
    for i, key in enumerate("abc"):
        cache.put(key, 1, i)
    assert len(cache) == 2 and cache.get("a", 1) is None and cache.get("c", 1) == 2


def test_bounded_by_bytes_and_refuses_one_huge_entry():
    cache: GenerationCache[str, bytes] = GenerationCache("t", max_entries=100, max_bytes=200,
                                                         sizeof=lambda _, v: len(v))
    for key in "abcd":
        cache.put(key, 1, b"x" * 40)
    cache.put("e", 1, b"x" * 50)  # 210 bytes with the others: "a" goes
    assert cache.get("a", 1) is None and cache.bytes == 170 and len(cache) == 4
    cache.put("huge", 1, b"x" * 51)  # over a quarter of the limit: it would push out everything else
    assert cache.get("huge", 1) is None and cache.bytes == 170
    cache.put("e", 1, b"x")  # replacing an entry replaces its size
    assert cache.bytes == 121 and cache.get("e", 1) == b"x"


def test_a_newer_generation_empties_it_an_older_one_changes_nothing():
    cache: GenerationCache[str, int] = GenerationCache("t", max_entries=10)
    cache.put("a", 5, 1)
    assert cache.get("a", 4) is None  # a request still holding an older state: a miss...
    cache.put("b", 4, 2)  # ...and nothing stored for it
    assert cache.get("a", 5) == 1 and cache.get("b", 5) is None and cache.clears == 0
    assert cache.get("a", 6) is None and len(cache) == 0 and cache.clears == 1
    assert cache.hits == 1 and cache.misses == 3 and cache.hit_rate() == 0.25


def test_get_or_compute_computes_once_per_generation():
    cache: GenerationCache[str, int] = GenerationCache("t", max_entries=10)
    calls: list[int] = []
    for generation in (1, 1, 2, 2):
        assert cache.get_or_compute("k", generation, lambda g=generation: calls.append(g) or g) == generation
    assert calls == [1, 2]


def test_max_bytes_needs_sizeof():
    with pytest.raises(ValueError):
        GenerationCache("t", max_entries=1, max_bytes=10)


def live(clock: FakeClock):
    holder, client, caches, metrics = StateHolder(), FakeClient(), FakeCaches(), ExtenderMetrics()
    syncer = Syncer(holder, client, caches, poll_interval=3600, kube_debounce=0.0, use_events=False,
                    metrics=metrics, clock=clock)
    extender = Extender(holder, clock=clock)
    return holder, client, caches, metrics, syncer, extender


def publishes(metrics: ExtenderMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("linstor_scheduler_state_publishes_total", {"result": result}) or 0.0


def test_unchanged_polls_keep_the_generation_and_the_caches_and_refresh_the_age():
    async def scenario():
        clock = FakeClock(100.0)
        holder, client, caches, metrics, syncer, extender = live(clock)
        caches.objects["PersistentVolumeClaim"], caches.objects["PersistentVolume"] = (
            k.bound_volume("c-a", "pvc-a")[0:1], k.bound_volume("c-a", "pvc-a")[1:2])
        await syncer.start()
        await until(lambda: holder.ready)
        first = holder.state
        pod = k.pod("p", claims=["c-a"])
        assert (await extender.decide(pod, ["w1", "w2"])).verdicts[0].score == 10
        assert len(extender.tables) == 1 and extender.tables.misses == 1

        for _ in range(3):  # LINSTOR polled: same nodes, pools and replicas (new objects)
            clock.now += 10
            assert await syncer.sync_linstor_once()
            assert holder.state.generation == first.generation and holder.state.linstor_synced_at == clock.now
            await extender.decide(pod, ["w1", "w2"])
        assert extender.tables.hits == 3 and extender.tables.clears == 0
        assert extender.prepared.hits == 3

        # A Node update that changes nothing the extender reads (kubelet's status heartbeat).
        w1 = k.node("w1", zone="a")
        w1["status"]["conditions"] = [{"type": "Ready", "status": "True", "lastHeartbeatTime": "later"}]
        caches.objects["Node"] = [w1, k.node("w2", zone="b")]
        clock.now += 10
        syncer.kube_changed("MODIFIED", w1)
        await until(lambda: holder.state.kube_synced_at == clock.now)
        assert holder.state.generation == first.generation
        assert publishes(metrics, "kept") == 4 and publishes(metrics, "new") == 1

        # The content changes: a new generation, and the next request starts from empty caches.
        client.resources.append(lres("pvc-a", "w2"))
        assert await syncer.sync_linstor_once()
        assert holder.state.generation == first.generation + 1 and publishes(metrics, "new") == 2
        assert holder.state.kube_since == first.kube_since  # Kubernetes did not change: node sets live on
        assert (await extender.decide(pod, ["w1", "w2"])).verdicts[1].score == 10
        assert extender.tables.clears == 1
        await syncer.stop()

    asyncio.run(scenario())


def test_a_changed_label_is_a_new_generation():
    async def scenario():
        clock = FakeClock(100.0)
        holder, _, caches, _, syncer, _ = live(clock)
        await syncer.start()
        await until(lambda: holder.ready)
        first = holder.state
        caches.objects["Node"] = [k.node("w1", zone="c"), k.node("w2", zone="b")]
        syncer.kube_changed("MODIFIED", {})
        await until(lambda: holder.state.generation != first.generation)
        assert holder.state.kube.topology["w1"].value("zone") == "c"
        assert holder.state.kube_since == holder.state.generation
        await syncer.stop()

    asyncio.run(scenario())


def test_an_entry_grown_in_place_is_charged_anew_and_becomes_the_newest():
    cache: GenerationCache[str, list[int]] = GenerationCache("t", max_entries=10, max_bytes=200,
                                                             sizeof=lambda _, v: 10 * len(v))
    grows = [1]
    cache.put("other", 1, [0] * 5)
    cache.put("third", 1, [0] * 5)
    cache.put("grows", 1, grows)
    grows.extend([1, 1])  # the same object, now 3 long: stored again, charged anew
    cache.put("grows", 1, grows)
    assert cache.bytes == 130 and list(cache) == ["other", "third", "grows"]
    cache.put("fourth", 1, [0] * 5)
    cache.put("fifth", 1, [0] * 2)
    assert cache.bytes == 200
    grows.extend([1, 1])  # 220 with the others: the oldest goes, not the entry that grew
    cache.put("grows", 1, grows)
    assert list(cache) == ["third", "fourth", "fifth", "grows"] and cache.bytes == 170
    grows.append(1)  # now over a quarter of the limit: refused, and its old charge goes with it
    cache.put("grows", 1, grows)
    assert "grows" not in cache and cache.bytes == 120 and len(cache) == 3


def test_evict_while_drops_the_oldest_until_one_is_not_stale_and_discard():
    cache: GenerationCache[str, float] = GenerationCache("t", max_entries=10)
    for key, at in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        cache.put(key, 0, at)
    cache.evict_while(lambda _, at: at < 2.5)
    assert list(cache) == ["c"]
    cache.discard("c")
    cache.discard("never there")
    assert len(cache) == 0
    cache.evict_while(lambda *_: True)  # empty: nothing to do
