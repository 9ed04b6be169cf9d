"""The sync-node agent against the LINSTOR emulator over real HTTP (and the API stand-in for Events)."""

from __future__ import annotations

import asyncio

import pytest

from devkit.clock import FakeClock
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.linstor.client import LinstorClient
from storage_sync.agent import NodeAgent
from storage_sync.lvm import LogicalVolume, LvmError, LvmInventory, VolumeGroup
from storage_sync.plan import MANAGED_PROP, UUID_PROP


class FakeLvm:
    """An LVM whose objects the test changes between passes (re-tagging without a restart)."""

    def __init__(self) -> None:
        self.vgs = {"vg0": ("uuid-vg0", ("linstor-data",)), "vg1": ("uuid-vg1", ())}
        self.thin = {"thin": ("uuid-thin", ("linstor-thindata",))}
        self.fail: str | None = None

    def scan(self) -> LvmInventory:
        if self.fail:
            raise LvmError(self.fail)
        return LvmInventory(
            tuple(VolumeGroup(n, u, t, 1 << 40, 1 << 39) for n, (u, t) in self.vgs.items()),
            tuple(LogicalVolume(n, u, "vg1", "uuid-vg1", t, "twi-aotz--", 1 << 39) for n, (u, t) in self.thin.items()))


@pytest.fixture
def emu_setup():
    """The served emulator ``emu`` (tests/conftest.py) of this module: two satellites, n1 and n2, with no pools."""
    def setup(emu: LinstorEmulator) -> None:
        emu.add_node("n1")
        emu.add_node("n2")
    return setup


def run(coro):
    return asyncio.run(coro)


def agent_pass(emu, lvm, *, node="n1", retries=2, timeout=2.0, **kw):
    async def go():
        async with LinstorClient(emu.url, retries=retries, timeout=timeout, backoff_base=0.01) as client:
            agent = NodeAgent(node, lvm, client, **kw)
            return await agent.run_pass()
    return run(go())


def writes(emu):
    return [(m, p) for m, p in emu.requests if m != "GET"]


def test_creates_missing_pools_then_steady_state_is_read_only(emu):
    lvm = FakeLvm()
    result = agent_pass(emu, lvm)
    assert result.ok and [i.pool for i in result.applied] == ["data", "thindata"]
    assert writes(emu) == [("POST", "/v1/nodes/n1/storage-pools")] * 2
    pools = {p["storage_pool_name"]: p for p in emu.snapshot()["storage_pools"] if p["node_name"] == "n1"}
    assert pools["data"]["provider_kind"] == "LVM" and pools["data"]["props"]["StorDriver/LvmVg"] == "vg0"
    assert pools["data"]["props"][MANAGED_PROP] == "linstor-scheduler"
    assert pools["thindata"]["provider_kind"] == "LVM_THIN"
    assert pools["thindata"]["props"]["StorDriver/ThinPool"] == "thin"
    assert pools["thindata"]["props"][UUID_PROP] == "uuid-thin"
    emu.clear_requests()
    again = agent_pass(emu, lvm)
    assert again.in_sync and again.applied == []
    assert writes(emu) == [], "a steady state makes no write calls"
    assert sorted(p.split("?")[0] for _, p in emu.requests) == ["/v1/nodes", "/v1/view/storage-pools"]


def test_retagging_is_noticed_on_the_next_pass(emu):
    lvm = FakeLvm()
    assert agent_pass(emu, lvm).ok
    lvm.vgs["vg2"] = ("uuid-vg2", ("linstor-fast",))
    result = agent_pass(emu, lvm)
    assert [i.pool for i in result.applied] == ["fast"]


def test_mismatch_is_reported_and_nothing_is_written(emu):
    emu.add_storage_pool("n1", "data", "LVM", props={"StorDriver/LvmVg": "other_vg"})
    emu.clear_requests()
    lvm = FakeLvm()
    lvm.thin.clear()
    result = agent_pass(emu, lvm)
    assert [(i.action, i.pool) for i in result.plan.items] == [("mismatch", "data")]
    assert writes(emu) == [] and not result.in_sync


def test_orphan_kept_without_prune_deleted_with_prune_only_when_empty(emu):
    lvm = FakeLvm()
    assert agent_pass(emu, lvm).ok
    emu.add_resource("pvc-1", "n1", storage_pool="thindata")
    lvm.vgs["vg0"] = ("uuid-vg0", ())  # both tags removed
    lvm.thin["thin"] = ("uuid-thin", ())
    emu.clear_requests()
    kept = agent_pass(emu, lvm)
    assert {(i.action, i.pool) for i in kept.plan.items} == {("orphan", "data"), ("orphan", "thindata")}
    assert writes(emu) == []
    assert any(p.startswith("/v1/view/resources?") and "nodes=n1" in p for _, p in emu.requests)
    pruned = agent_pass(emu, lvm, prune=True)
    assert [(i.action, i.pool) for i in pruned.applied] == [("prune", "data")]
    assert writes(emu) == [("DELETE", "/v1/nodes/n1/storage-pools/data")]
    assert {p["storage_pool_name"] for p in emu.snapshot()["storage_pools"] if p["node_name"] == "n1"} == {
        "thindata", "DfltDisklessStorPool"}, "the pool with a resource in it stays"


def test_pools_we_did_not_create_are_never_orphans(emu):
    emu.add_storage_pool("n1", "manual", "LVM", props={"StorDriver/LvmVg": "vgm"})
    lvm = FakeLvm()
    result = agent_pass(emu, lvm, prune=True)
    assert "manual" not in {i.pool for i in result.plan.items}
    assert ("DELETE", "/v1/nodes/n1/storage-pools/manual") not in writes(emu)


def test_offline_node_and_unsupported_provider_block_creation(emu):
    emu.set_node_status("n1", "OFFLINE")
    result = agent_pass(emu, FakeLvm())
    assert [i.action for i in result.plan.items] == ["blocked", "blocked"] and writes(emu) == []
    emu.add_node("n3", providers=("DISKLESS", "LVM"))
    result = agent_pass(emu, FakeLvm(), node="n3")
    assert [(i.action, i.pool) for i in result.plan.items] == [("create", "data"), ("blocked", "thindata")]
    assert [i.pool for i in result.applied] == ["data"]


def test_linstor_500_or_timeout_means_no_write_and_an_error(emu):
    emu.inject(fail=10, status=500)
    result = agent_pass(emu, FakeLvm())
    assert result.error and result.error.startswith("LINSTOR: ") and writes(emu) == []
    emu.reset_faults()
    emu.inject(latency=1.0)
    result = agent_pass(emu, FakeLvm(), timeout=0.2)
    assert result.error and writes(emu) == []
    emu.reset_faults()
    assert agent_pass(emu, FakeLvm()).ok, "recovers on the next pass"


def test_pool_figures_absent_until_a_good_read_then_kept_with_their_age(emu):
    """Issue 18: no pool counts and no age before a good read; after a failed one the counts stay and
    the age (from the last good read) says how old they are."""
    pools, age = "linstor_scheduler_pool_sync_pools", "linstor_scheduler_pool_sync_state_age_seconds"
    now = [100.0]

    async def go():
        async with LinstorClient(emu.url, retries=1, timeout=2.0, backoff_base=0.01) as client:
            agent = NodeAgent("n1", FakeLvm(), client, clock=lambda: now[0], dry_run=True)
            registry = agent.metrics.registry
            emu.inject(fail=10, status=500)
            assert (await agent.run_pass()).error
            assert registry.get_sample_value(age) is None
            assert registry.get_sample_value(pools, {"state": "create"}) is None
            emu.reset_faults()
            assert (await agent.run_pass()).ok
            assert registry.get_sample_value(pools, {"state": "create"}) == 2
            assert registry.get_sample_value(age) == 0
            now[0] += 30
            emu.inject(fail=10, status=500)
            assert (await agent.run_pass()).error
            assert registry.get_sample_value(age) == 30, "failed reads never reset the age"
            assert registry.get_sample_value(pools, {"state": "create"}) == 2
    run(go())


def test_a_failing_write_is_reported_and_the_rest_goes_on(emu):
    lvm = FakeLvm()
    emu.inject(fail=1, status=500, path_prefix="/v1/nodes/n1/storage-pools")
    result = agent_pass(emu, lvm)
    assert [i.pool for i, _ in result.failed] == ["data"] and [i.pool for i in result.applied] == ["thindata"]
    assert result.ok and not result.in_sync, "a refused write is the pool's problem, not a failed pass"
    assert [i.pool for i in agent_pass(emu, lvm).applied] == ["data"], "retried on the next pass"


def test_a_pool_named_like_an_existing_one_but_for_case_is_reported_not_sent(emu):
    """An admin made pool 'Data' by hand; the tag linstor-data asks for 'data'. LINSTOR compares names
    case-insensitively and would refuse it (the emulator does too): the plan says so instead."""
    emu.add_storage_pool("n1", "Data", "LVM", props={"StorDriver/LvmVg": "vg9"})
    result = agent_pass(emu, FakeLvm())
    items = {i.pool: i for i in result.plan.items}
    assert (items["data"].action, items["data"].reason) == ("blocked", "PoolNameTaken")
    assert "LINSTOR already has pool Data on node n1" in items["data"].message
    assert [p for m, p in writes(emu)] == ["/v1/nodes/n1/storage-pools"], "only thindata is created"


def test_a_pool_linstor_refuses_backs_off_alone_and_the_agent_stays_ready(emu):
    """The controller refuses the create of 'data' (400). That pool waits out its own backoff; the thin
    pool is created, the passes are good ones (the loop keeps its interval), and /readyz stays
    ready, saying which pool LINSTOR refuses and why."""
    emu.inject(fail=1, status=400, path_prefix="/v1/nodes/n1/storage-pools")
    clock = FakeClock(1000.0)

    async def go():
        async with LinstorClient(emu.url, retries=1, backoff_base=0.01) as client:
            agent = NodeAgent("n1", FakeLvm(), client, clock=clock)
            first = await agent.run_pass()
            posts = len(writes(emu))
            clock.advance(10)
            second = await agent.run_pass()
            held = len(writes(emu)) == posts
            readiness = agent.readiness(100)
            clock.advance(30)
            third = await agent.run_pass()
            return agent, first, second, held, readiness, third
    agent, first, second, held, (ready, text), third = run(go())
    assert [i.pool for i in first.applied] == ["thindata"] and [i.pool for i, _ in first.failed] == ["data"]
    assert "HTTP 400" in first.failed[0][1]
    assert first.ok and not first.in_sync, "a good pass (no agent backoff) that is not in sync"
    assert [i.pool for i, _ in second.deferred] == ["data"] and held, "within its backoff: not sent again"
    assert ready and "LINSTOR refuses pool data (1 time(s)): HTTP 400" in text
    assert [i.pool for i in third.applied] == ["data"], "tried again after its own backoff"
    assert agent.refused == {} and third.in_sync


def test_a_create_whose_answer_was_lost_is_done_not_retried(emu):
    emu.inject(lose_answer=1, path_prefix="/v1/nodes/n1/storage-pools")
    lvm = FakeLvm()
    result = agent_pass(emu, lvm)
    assert result.failed == [] and [i.pool for i in result.applied] == ["data", "thindata"]
    posts = [w for w in writes(emu) if w[0] == "POST"]
    assert len(posts) == 2, "the lost create was settled by a read, not sent again"
    assert agent_pass(emu, lvm).in_sync


def test_lvm_failure_means_no_linstor_call(emu):
    lvm = FakeLvm()
    lvm.fail = "vgs exited 5: device-mapper gone"
    result = agent_pass(emu, lvm)
    assert result.error == "LVM: vgs exited 5: device-mapper gone" and emu.requests == []


def test_dry_run_plans_and_writes_nothing(emu):
    result = agent_pass(emu, FakeLvm(), dry_run=True)
    assert [i.action for i in result.plan.items] == ["create", "create"]
    assert result.applied == [] and writes(emu) == []


def test_run_loop_backs_off_and_keeps_going(emu):
    lvm = FakeLvm()
    lvm.fail = "lvm busy"

    async def go():
        async with LinstorClient(emu.url, retries=1, backoff_base=0.01) as client:
            agent = NodeAgent("n1", lvm, client)
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop, interval=0.01, max_backoff=0.05))
            while agent.metrics.consecutive_failures._value.get() < 3:
                await asyncio.sleep(0)  # yield to the agent's loop (no timing assumption)
            lvm.fail = None
            while agent.last_success is None:
                await asyncio.sleep(0.005)
            stop.set()
            await task
            return agent
    agent = run(go())
    assert agent.last_result.ok and agent.metrics.consecutive_failures._value.get() == 0


def test_problems_become_node_events_once_per_repeat_interval(emu):
    ks = KubeStandin()
    with ks.serve() as srv:
        recorder = EventRecorder(ks.api_client(srv.url), "linstor-scheduler-sync-node")
        clock = FakeClock()
        lvm = FakeLvm()
        lvm.vgs["vg9"] = ("uuid-vg9", ("linstor-data",))  # duplicate tag

        async def go():
            async with LinstorClient(emu.url) as client:
                agent = NodeAgent("n1", lvm, client, events=recorder, clock=clock, repeat_seconds=600,
                                  kube_node_name="n1.k8s")
                await agent.run_pass()
                await agent.run_pass()
                clock.now += 601
                await agent.run_pass()
                return agent
        agent = run(go())
        assert recorder.flush(10), "the Events are queued (EventRecorder): sent before the test looks"
        events = ks.list("Event")
        warnings = [e for e in events if e["reason"] == "DuplicatePoolTag"]
        assert len(warnings) == 1 and warnings[0]["count"] == 2, "reported at first and after 10 minutes only"
        assert warnings[0]["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "n1.k8s",
                                                "uid": "n1.k8s"}
        assert warnings[0]["type"] == "Warning" and "tag linstor-data is on 2 objects" in warnings[0]["message"]
        created = [e for e in events if e["reason"] == "PoolCreated"]
        assert len(created) == 1 and "create LVM_THIN pool thindata on vg1/thin" in created[0]["message"]
        assert agent.metrics.problems.labels("DuplicatePoolTag")._value.get() == 2


def test_a_node_name_linstor_spells_otherwise_is_the_same_node(emu):
    """The Kubernetes node is 'N1' (or --linstor-node-name was typed so), LINSTOR's is 'n1': LINSTOR
    compares node names case-insensitively, so this is its node, not 'not registered'."""
    result = agent_pass(emu, FakeLvm(), node="N1")
    assert [i.pool for i in result.applied] == ["data", "thindata"]
    assert {(p["node_name"], p["storage_pool_name"]) for p in emu.snapshot()["storage_pools"]} >= {
        ("n1", "data"), ("n1", "thindata")}
