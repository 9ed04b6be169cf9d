"""The extender's service layer: readiness, staleness, the bounded fallback read, state swaps."""

from __future__ import annotations

import asyncio
import dataclasses

from devkit import kube_objects as k
from devkit.clock import FakeClock
from scheduler_extender.fallback import FallbackReader
from scheduler_extender.holder import StateHolder
from scheduler_extender.judge import (
    NODE_ENTRY_BYTES,
    OWN_VERDICT_BYTES,
    TABLE_BYTES,
    Extender,
    _table_size,
)

from .cluster import build, lnode, lpool, lres, standard


class FakeLinstor:
    """Answers get_resources_of like the client; counts calls; can be made to fail or block."""

    def __init__(self, items=None, fail: bool = False) -> None:
        self.items = items or {}
        self.fail = fail
        self.calls: list[tuple[str, float | None]] = []
        self.gate: asyncio.Event | None = None

    async def get_resources_of(self, name, *, timeout=None):
        self.calls.append((name, timeout))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("controller unreachable")
        return self.items.get(name, [])


def live_holder(clock: FakeClock, state=None) -> StateHolder:
    holder = StateHolder(ready=True)
    holder.swap(state or standard())  # standard() is synced at t=0
    return holder


def test_not_ready_is_neutral():
    ext = Extender(StateHolder(), clock=FakeClock())
    d = asyncio.run(ext.decide(k.pod("p", claims=["c-a"]), ["w1"]))
    assert d.verdicts is None and d.neutral_reason.startswith("no LINSTOR/Kubernetes state yet")


def test_stale_state_turns_neutral_and_recovers(caplog):
    clock = FakeClock(100.0)
    holder = live_holder(clock)
    ext = Extender(holder, max_staleness=120, clock=clock)
    pod = k.pod("p", claims=["c-a"])
    assert asyncio.run(ext.decide(pod, ["w1"])).verdicts is not None
    clock.now = 121.0
    holder.last_error = "LINSTOR read failed: connection refused"
    d = asyncio.run(ext.decide(pod, ["w1", "w2"]))
    assert d.verdicts is None
    assert d.neutral_reason == ("LINSTOR state 121s old (last error: LINSTOR read failed: connection refused); "
                                "Kubernetes view 121s old; limit 120s: not steering on stale data")
    assert "extender is neutral" in caplog.text
    holder.swap(dataclasses.replace(standard(), generation=2, linstor_synced_at=121.0, kube_synced_at=121.0))
    assert asyncio.run(ext.decide(pod, ["w1"])).verdicts[0].score == 10


def test_staleness_is_the_older_source():
    state = dataclasses.replace(standard(), linstor_synced_at=50.0, kube_synced_at=10.0)
    ext = Extender(live_holder(FakeClock(), state), clock=FakeClock(100.0))
    assert ext.freshness().age == 90.0


def test_snapshot_state_never_ages():
    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    ext = Extender(holder, max_staleness=1, clock=FakeClock(1e9))
    assert ext.freshness().age is None
    assert asyncio.run(ext.decide(k.pod("p", claims=["c-a"]), ["w1"])).verdicts[0].score == 10


def fresh_volume_state():
    """pvc-new is bound in Kubernetes but missing from the LINSTOR index (created seconds ago)."""
    state = standard()
    kube = [k.node("w1"), k.node("w2"), k.storage_class("r2"), *k.bound_volume("c-new", "pvc-new", storage_class="r2")]
    return build([lnode("w1"), lnode("w2")], [], [], kube, generation=state.generation)


def test_fresh_volume_gets_one_bounded_read_then_cached():
    clock = FakeClock(1.0)
    fake = FakeLinstor({"pvc-new": [lres("pvc-new", "w2")]})
    fallback = FallbackReader(fake, timeout=0.5, clock=clock)
    ext = Extender(live_holder(clock, fresh_volume_state()), fallback=fallback, clock=clock)
    pod = k.pod("p", claims=["c-new"])
    for _ in range(3):
        d = asyncio.run(ext.decide(pod, ["w1", "w2"]))
        assert [v.score for v in d.verdicts] == [1, 10]
    assert fake.calls == [("pvc-new", 0.5)]


def test_concurrent_requests_share_one_fallback_read():
    clock = FakeClock(1.0)
    fake = FakeLinstor({"pvc-new": [lres("pvc-new", "w1")]})
    fake.gate = asyncio.Event()
    fallback = FallbackReader(fake, clock=clock)
    ext = Extender(live_holder(clock, fresh_volume_state()), fallback=fallback, clock=clock)

    async def burst():
        tasks = [asyncio.create_task(ext.decide(k.pod(f"p{i}", claims=["c-new"]), ["w1"])) for i in range(5)]
        while not fake.calls:  # wait until the first read is in flight
            await asyncio.sleep(0)
        fake.gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(burst())
    assert len(fake.calls) == 1
    assert all(r.verdicts[0].score == 10 for r in results)


def test_failed_fallback_read_is_not_judged_and_retried_after_ttl():
    clock = FakeClock(1.0)
    fake = FakeLinstor(fail=True)
    seen: list[str] = []
    fallback = FallbackReader(fake, negative_ttl=5.0, clock=clock, on_read=seen.append)
    ext = Extender(live_holder(clock, fresh_volume_state()), fallback=fallback, clock=clock)
    pod = k.pod("p", claims=["c-new"])
    d = asyncio.run(ext.decide(pod, ["w1"]))
    assert d.verdicts[0].fits and d.verdicts[0].score == 0
    assert d.verdicts[0].reasons("w1") == ["volume pvc-new: not judged, resource not known to LINSTOR yet"]
    asyncio.run(ext.decide(pod, ["w1"]))
    assert len(fake.calls) == 1  # the miss is remembered for negative_ttl
    clock.now = 7.0
    asyncio.run(ext.decide(pod, ["w1"]))
    assert len(fake.calls) == 2 and seen == ["error", "error"]


def test_fallback_cache_dropped_once_the_index_knows_the_resource():
    clock = FakeClock(1.0)
    fallback = FallbackReader(FakeLinstor({"pvc-new": [lres("pvc-new", "w1")]}), clock=clock)
    asyncio.run(fallback.get("pvc-new"))
    assert "pvc-new" in fallback.found
    fallback.forget_known(build([lnode("w1")], [], [lres("pvc-new", "w1")], []))
    assert "pvc-new" not in fallback.found


def test_fallback_memory_is_bounded_under_a_flood_of_missing_names():
    """Pods naming resources that never appear: the misses held are those of the last
    negative_ttl seconds, never more than max_entries, and none once they all expired."""
    clock = FakeClock(0.0)
    fake = FakeLinstor()
    fallback = FallbackReader(fake, negative_ttl=5.0, clock=clock, max_entries=300)

    async def flood(count: int, step: float) -> int:
        most = 0
        for i in range(count):
            assert await fallback.get(f"pvc-never-{i}") is None
            most = max(most, len(fallback.missing))
            clock.now += step
        return most

    assert asyncio.run(flood(2_000, 0.0)) == 300  # all within the TTL: the entry bound holds
    assert len(fake.calls) == 2_000 and len(fallback.found) == 0
    clock.now += 5.0
    assert asyncio.run(flood(2_000, 0.01)) <= 501  # 100 a second for 20 s: ~5 s of them held
    assert len(fallback.missing) <= 501
    clock.now += 5.0
    fallback.forget_known(standard())  # each published state also drops the expired ones
    assert len(fallback.missing) == 0


def test_a_remembered_miss_does_not_hide_a_resource_that_appears_later():
    clock = FakeClock(1.0)
    fake = FakeLinstor()
    fallback = FallbackReader(fake, negative_ttl=5.0, clock=clock)
    holder = live_holder(clock, fresh_volume_state())
    ext = Extender(holder, fallback=fallback, clock=clock)
    pod = k.pod("p", claims=["c-new"])
    assert asyncio.run(ext.decide(pod, ["w1", "w2"])).verdicts[1].score == 0  # not known anywhere yet
    fake.items["pvc-new"] = [lres("pvc-new", "w2")]  # LINSTOR has it now
    assert asyncio.run(ext.decide(pod, ["w1", "w2"])).verdicts[1].score == 0  # the miss is remembered...
    assert len(fake.calls) == 1
    clock.now += 5.0  # ...for negative_ttl: then read again, and found
    assert [v.score for v in asyncio.run(ext.decide(pod, ["w1", "w2"])).verdicts] == [1, 10]
    assert len(fake.calls) == 2 and "pvc-new" in fallback.found and "pvc-new" not in fallback.missing

    # The next poll's index finds a resource at once, whatever the fallback remembers.
    other = FallbackReader(FakeLinstor(), negative_ttl=5.0, clock=clock)
    holder = live_holder(clock, fresh_volume_state())
    ext = Extender(holder, fallback=other, clock=clock)
    assert asyncio.run(ext.decide(pod, ["w1", "w2"])).verdicts[1].score == 0
    base = fresh_volume_state()
    kube = [k.node("w1"), k.node("w2"), k.storage_class("r2"), *k.bound_volume("c-new", "pvc-new", storage_class="r2")]
    polled = build([lnode("w1"), lnode("w2")], [], [lres("pvc-new", "w1")], kube, generation=base.generation + 1)
    holder.swap(dataclasses.replace(polled, linstor_synced_at=clock.now, kube_synced_at=clock.now))
    other.forget_known(polled)
    assert [v.score for v in asyncio.run(ext.decide(pod, ["w1", "w2"])).verdicts] == [10, 1]
    assert "pvc-new" in other.missing  # still remembered (within the TTL), and not in the way


def many_nodes_state(nodes: int, volumes: int):
    """``nodes`` nodes in 4 zones with pools of different free space; ``volumes`` bound volumes
    (2 replicas each) and as many unbound claims (judged per node by free space)."""
    names = [f"n{i:04d}" for i in range(nodes)]
    kube = [k.node(n, zone=f"z{i % 4}") for i, n in enumerate(names)] + [k.storage_class("r2")]
    resources = []
    for v in range(volumes):
        kube += k.bound_volume(f"c-{v}", f"pvc-{v}", storage_class="r2")
        kube.append(k.pvc(f"u-{v}", storage_class="r2", size=f"{v + 1}Gi"))
        resources += [lres(f"pvc-{v}", names[v % nodes]), lres(f"pvc-{v}", names[(7 * v + 1) % nodes])]
    pools = [lpool(n, free_gib=(i * 37) % 90) for i, n in enumerate(names)]
    return names, build([lnode(n) for n in names], pools, resources, kube)


def test_verdict_tables_stay_under_their_byte_bound_and_eviction_keeps_verdicts():
    names, state = many_nodes_state(300, 40)
    limit = 600_000  # about 18 tables of 300 nodes with shared verdicts, 4 with per-node ones
    small = Extender(live_holder(FakeClock(), state), clock=FakeClock(), tables_bytes=limit)
    roomy = Extender(live_holder(FakeClock(), state), clock=FakeClock())
    pods = [k.pod(f"b{v}", claims=[f"c-{v}"]) for v in range(40)] + \
           [k.pod(f"u{v}", claims=[f"u-{v}"]) for v in range(40)]

    def verdicts(ext: Extender, pod, nodes):
        d = asyncio.run(ext.decide(pod, nodes))
        return [(v.fits, v.score, v.reasons(n)) for n, v in zip(nodes, d.verdicts, strict=True)]

    for _ in range(2):  # the second round finds most tables evicted: recomputed, the same verdicts
        for pod in pods:
            for nodes in (names[:50], names[:200], names):  # each table grows as names arrive
                assert verdicts(small, pod, nodes) == verdicts(roomy, pod, nodes)
                assert small.tables.bytes <= limit
    tables = small.tables
    assert tables.bytes == sum(_table_size(key, tables._items[key]) for key in tables)  # charged as they grew
    # Each round computes each table once: a table is not pushed out while it grows.
    assert tables.misses == 2 * len(pods) and tables.hits == 4 * len(pods) and len(tables) < len(pods) // 4
    assert len(roomy.tables) == len(pods) and roomy.tables.bytes > 10 * limit and roomy.tables.misses == len(pods)
    own = max(_table_size(key, roomy.tables._items[key]) for key in roomy.tables)
    shared = min(_table_size(key, roomy.tables._items[key]) for key in roomy.tables)
    assert own == TABLE_BYTES + 300 * (NODE_ENTRY_BYTES + OWN_VERDICT_BYTES)
    assert shared == TABLE_BYTES + 300 * NODE_ENTRY_BYTES


def test_new_state_generation_is_used_by_the_next_request():
    holder = live_holder(FakeClock())
    ext = Extender(holder, clock=FakeClock(1.0))
    pod = k.pod("p", claims=["c-local"])
    assert asyncio.run(ext.decide(pod, ["w2"])).verdicts[0].score == 10
    base = standard()
    kube = [k.node("w1"), k.node("w2"), k.storage_class("local", remote=False),
            *k.bound_volume("c-local", "pvc-local", storage_class="local", size="1Gi")]
    moved = build([lnode("w1"), lnode("w2")], [], [lres("pvc-local", "w1")], kube, generation=base.generation + 1)
    holder.swap(moved)
    d = asyncio.run(ext.decide(pod, ["w1", "w2"]))
    assert [v.fits for v in d.verdicts] == [True, False]


class StaleKubernetes:
    """The live Kubernetes age as the sync reports it: the informers' view unconfirmed for 200 s."""

    def kube_age(self):
        return 200.0

    def kube_detail(self):
        return "PersistentVolumeClaim confirmed 200s ago (TimeoutError: watch silent for 50s)"


def test_a_stale_kubernetes_view_alone_turns_neutral_and_is_named():
    """LINSTOR read 10 s ago, but the API server has not confirmed the Kubernetes view for 200 s: the
    extender does not judge from it, and says which source and why."""
    ext = Extender(live_holder(FakeClock()), max_staleness=120, clock=FakeClock(10.0), kube=StaleKubernetes())
    fresh = ext.freshness()
    assert fresh.ages == (10.0, 200.0) and fresh.age == 200.0 and fresh.stale
    d = asyncio.run(ext.decide(k.pod("p", claims=["c-a"]), ["w1"]))
    assert d.verdicts is None
    assert d.neutral_reason == ("Kubernetes view 200s old (PersistentVolumeClaim confirmed 200s ago (TimeoutError: "
                                "watch silent for 50s)); limit 120s: not steering on stale data")
