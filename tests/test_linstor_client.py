"""The LINSTOR client against the emulator over real HTTP: reads, errors, retries, failover, streaming."""

from __future__ import annotations

import asyncio
import gc
import socket

import httpx
import pytest

from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.linstor import (
    LinstorClient,
    LinstorError,
    LinstorProtocolError,
    LinstorUnavailable,
    parse_controllers,
)


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def emu_setup():
    """The served emulator ``emu`` (tests/conftest.py) of this module: w1 up with a thin pool, w2 OFFLINE; pvc-1 on
    w1 with a tie-breaker on w2."""
    def setup(emu: LinstorEmulator) -> None:
        emu.add_node("w1")
        emu.add_node("w2", connection_status="OFFLINE")
        emu.add_storage_pool("w1", "thindata", "LVM_THIN", free_kib=5 * 1024**2)
        emu.add_resource("pvc-1", "w1")
        emu.add_resource("pvc-1", "w2", diskful=False, flags=["TIE_BREAKER"])
    return setup


def run(coro_fn, *args):
    async def main():
        async with LinstorClient(*args, sleep=no_sleep, timeout=2.0) as client:
            return await coro_fn(client)

    return asyncio.run(main())


def dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def test_typed_reads(emu):
    async def reads(c):
        return await c.get_nodes(), await c.get_storage_pools(nodes=["w1"]), await c.get_resources()

    nodes, pools, resources = run(reads, emu.url)
    assert {n.name: n.online for n in nodes} == {"w1": True, "w2": False}
    assert [(p.storage_pool_name, p.free_capacity) for p in pools if not p.diskless] == [("thindata", 5 * 1024**2)]
    by_node = {r.node_name: r for r in resources}
    assert by_node["w1"].diskful and not by_node["w2"].diskful
    assert by_node["w1"].volumes[0].state.disk_state == "UpToDate"
    assert by_node["w1"].layer_object.find_drbd().connections["w2"].connected is True
    assert ("GET", "/v1/nodes") in emu.requests or any(p.startswith("/v1/nodes") for _, p in emu.requests)


def test_streamed_resources_match_plain_read(emu):
    for i in range(3000):
        emu.add_resource(f"pvc-bulk-{i}", "w1", size_kib=i + 1)

    async def both(c):
        streamed = [r async for r in c.iter_resources()]
        return streamed, await c.get_resources_of("pvc-bulk-2999")

    streamed, one = run(both, emu.url)
    assert len(streamed) == 3002
    last = streamed[-1].volumes[0]  # a thin volume: nothing written yet, its gross size reserved
    assert streamed[-1].name == "pvc-bulk-2999" and last.allocated_size_kib == 0 and last.reserved_kib == 4096
    assert [r.node_name for r in one] == ["w1"]


def alive_responses() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, httpx.Response))


def test_a_read_response_is_freed_without_the_cyclic_collector(emu):
    """httpx's stream points back at its response (encode/httpx#3733): unbroken, every read's body
    waits for a cyclic collection, which the extender keeps off during reads and rare otherwise (a
    5,000-node poll's bodies piled up at 0.6 MB/s). Read whole, streamed, failed: nothing stays."""
    emu.inject(fail=1, path_prefix="/v1/nodes")  # retried reads: the failed attempts' responses too
    emu.inject(fail=1, path_prefix="/v1/view/resources")

    async def reads(client):
        for _ in range(5):
            await client.get_nodes_compact()
            await client.get_storage_pools_compact()
            [b async for b in client.iter_resource_batches()]
        with pytest.raises(LinstorError):  # an error reply, decoded
            await client.create_storage_pool("nope", "data", "LVM", {"StorDriver/LvmVg": "vg"})

    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        before = alive_responses()
        run(reads, emu.url)
        assert alive_responses() == before
    finally:
        if collecting:
            gc.enable()


def test_error_replies_are_decoded(emu):
    with pytest.raises(LinstorError) as err:
        run(lambda c: c.create_storage_pool("nope", "data", "LVM", {"StorDriver/LvmVg": "vg"}), emu.url)
    assert err.value.status == 404 and err.value.message == "Node 'nope' not found."
    assert err.value.cause == "The specified node does not exist."
    with pytest.raises(LinstorError) as err:
        run(lambda c: c.create_storage_pool("w1", "Bad Name", "LVM", {}), emu.url)
    assert "Invalid name" in str(err.value) and "cause: Storage pool names are 3..48" in str(err.value)


def test_write_success_returns_replies(emu):
    replies = run(lambda c: c.create_storage_pool("w1", "data", "LVM", {"StorDriver/LvmVg": "vg0"}), emu.url)
    assert replies and not any(r.is_error for r in replies)
    pools = run(lambda c: c.get_storage_pools(storage_pools=["data"]), emu.url)
    assert pools[0].props["StorDriver/LvmVg"] == "vg0"


def test_missing_resource_definition_is_empty(emu):
    assert run(lambda c: c.get_resources_of("pvc-none", timeout=0.5), emu.url) == []


def test_reads_retry_then_succeed_and_count_calls(emu):
    emu.inject(fail=2, path_prefix="/v1/nodes")

    async def read(c):
        nodes = await c.get_nodes()
        return nodes, c.calls[("GET", "/v1/nodes")]

    nodes, calls = run(read, emu.url)
    assert len(nodes) == 2 and calls == 3


def test_reads_give_up_with_unavailable(emu):
    emu.inject(fail=10, status=503, path_prefix="/v1/nodes")
    with pytest.raises(LinstorUnavailable, match="no controller answered after 3 attempt"):
        run(lambda c: c.get_nodes(), emu.url)


def test_writes_are_not_retried(emu):
    emu.inject(fail=1, path_prefix="/v1/nodes/w1/storage-pools")
    with pytest.raises(LinstorUnavailable):
        run(lambda c: c.create_storage_pool("w1", "data", "LVM", {"StorDriver/LvmVg": "vg0"}), emu.url)
    assert emu.count("POST", "/v1/nodes/w1/storage-pools") == 1


def test_failover_to_second_controller_and_remember_it(emu):
    dead = dead_url()

    async def twice(c):
        await c.get_nodes()
        first = c.controllers[c._current]
        await c.get_nodes()
        return first, c.calls

    first, calls = run(twice, f"{dead},{emu.url}")
    assert first == emu.url
    assert emu.count("GET", "/v1/nodes") == 2
    assert calls[("GET", "/v1/nodes")] == 3  # one refused attempt, then two good ones


def test_garbage_is_a_protocol_error(emu):
    emu.inject(garbage=1, path_prefix="/v1/nodes")
    with pytest.raises(LinstorProtocolError):
        run(lambda c: c.get_nodes(), emu.url)
    emu.inject(garbage=1, path_prefix="/v1/view/resources")
    with pytest.raises(LinstorProtocolError):
        run(lambda c: c.get_resources(), emu.url)


def test_dropped_connection_is_retried(emu):
    emu.inject(drop=1, path_prefix="/v1/view/storage-pools")
    pools = run(lambda c: c.get_storage_pools(), emu.url)
    assert pools and emu.count("GET", "/v1/view/storage-pools") == 2


def test_dropped_stream_is_retried_before_any_item(emu):
    emu.inject(drop=1, path_prefix="/v1/view/resources")
    assert len(run(lambda c: c.get_resources(), emu.url)) == 2


def test_timeout(emu):
    emu.inject(latency=1.0, path_prefix="/v1/resource-definitions")
    with pytest.raises(LinstorUnavailable):
        run(lambda c: c.get_resources_of("pvc-1", timeout=0.2), emu.url)
    assert emu.count("GET", "/v1/resource-definitions") == 1  # a bounded read is one attempt


def test_a_timeout_points_at_the_timeout_and_a_refusal_at_the_url(emu):
    """The hint after "no controller answered": a controller that was reached but answered too late
    is not a wrong URL (LINSTOR_SCHEDULER_LINSTOR_TIMEOUT too short for it, or the controller slow)."""
    emu.inject(latency=1.0, path_prefix="/v1/resource-definitions")
    with pytest.raises(LinstorUnavailable) as slow:
        run(lambda c: c.get_resources_of("pvc-1", timeout=0.2), emu.url)
    assert "no answer within 0.2 s" in str(slow.value) and "--linstor-timeout" in str(slow.value)
    assert "URL" not in str(slow.value)
    emu.inject(latency=1.0, path_prefix="/v1/view/resources")

    with pytest.raises(LinstorUnavailable, match=r"no answer within 0\.2 s.*--linstor-timeout"):
        async def short():
            async with LinstorClient(emu.url, sleep=no_sleep, timeout=0.2, retries=1) as client:
                return await client.get_resources()

        asyncio.run(short())
    with pytest.raises(LinstorUnavailable) as refused:
        run(lambda c: c.get_nodes(), dead_url())
    assert "is the LINSTOR controller URL right? set --controllers or LS_CONTROLLERS" in str(refused.value)
    assert "--linstor-timeout" not in str(refused.value)


def test_node_events_stream(emu):
    async def scenario(c):
        stream = c.events("/v1/events/nodes")
        task = asyncio.ensure_future(stream.__anext__())
        while emu.count("GET", "/v1/events/nodes") == 0:
            await asyncio.sleep(0.01)  # wait for the subscription to reach the emulator
        await asyncio.sleep(0.05)
        emu.set_node_status("w1", "OFFLINE")
        name, data = await asyncio.wait_for(task, 5)
        await stream.aclose()
        return name, data

    name, data = run(scenario, emu.url)
    assert name == "node-offline" and data["node"]["name"] == "w1"


def test_events_not_supported():
    from linstor_scheduler.linstor import EventsNotSupported

    emu = LinstorEmulator(supports_events=False)
    with emu.serve() as srv:
        async def scenario(c):
            async for _ in c.events("/v1/events/nodes"):
                pass

        with pytest.raises(EventsNotSupported):
            run(scenario, srv.url)


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("linstor://ctl", ["http://ctl:3370"]),
        ("linstor+ssl://ctl", ["https://ctl:3371"]),
        ("linstor://a:3380, linstor+ssl://b", ["http://a:3380", "https://b:3371"]),
        ("http://ctl:8080/", ["http://ctl:8080"]),
        ("https://ctl", ["https://ctl"]),
        ("ctl", ["http://ctl:3370"]),
    ],
)
def test_parse_controllers(text, urls):
    assert parse_controllers(text) == urls


def test_parse_controllers_rejects_nonsense():
    with pytest.raises(ValueError, match="unsupported"):
        parse_controllers("ftp://x")
    with pytest.raises(ValueError, match="no LINSTOR controller"):
        parse_controllers(" , ")
