"""Compact records of LINSTOR answers: the splitter cuts a streamed array into whole items wherever
the chunks end, agrees with the full models on every field the extender reads, and refuses bodies
that are not what LINSTOR sends; the client's compact reads over real HTTP."""

from __future__ import annotations

import asyncio

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.linstor import LinstorClient, LinstorProtocolError
from linstor_scheduler.linstor.compact import ArraySplitter, ResourceItem, split_array
from linstor_scheduler.linstor.models import Resource
from scheduler_extender.state import index_resources


def emulator_items() -> list[dict]:
    """Items as the emulator serves them, with the awkward cases: a syncing replica, a diskless
    tie-breaker, a leaving one, two volumes, and props whose values contain '},{' and '"name":'."""
    emu = LinstorEmulator()
    for n in ("w1", "w2", "w3"):
        emu.add_node(n)
        emu.add_storage_pool(n, "thindata", "LVM_THIN")
    emu.add_resource("pvc-a", "w1", volumes=2)
    emu.add_resource("pvc-a", "w2", props={"Aux/x": '}, {"name": "evil", "node_name": "w9"}'})
    emu.add_resource("pvc-a", "w3", diskful=False, flags=["TIE_BREAKER"])
    emu.add_resource("pvc-b", "w2", in_use=True)
    emu.add_resource("pvc-b", "w3", flags=["DELETE"])
    emu.set_disk_state("pvc-b", "w2", "Inconsistent", sync_peer="w3", done_percentage=42.5)
    return emu.snapshot()["resources"]


def fields(item) -> tuple:
    return (item.name, item.node_name, item.diskful, item.ignored, item.in_use,
            [(v.state.disk_state, {p: r.done_percentage for p, r in v.state.replication_states.items()})
             for v in item.volumes])


ITEMS = emulator_items()


@settings(max_examples=60, deadline=None)
@given(chunk=st.integers(1, 700), batch=st.integers(1, 3000), pretty=st.booleans(), copies=st.integers(0, 40))
def test_any_chunking_gives_the_items_the_models_give(chunk, batch, pretty, copies):
    items = ITEMS * (1 + copies)
    body = orjson.dumps(items, option=orjson.OPT_INDENT_2 if pretty else 0)
    splitter = ArraySplitter(ResourceItem, batch_bytes=batch)
    got = []
    for start in range(0, len(body), chunk):
        got += splitter.feed(body[start:start + chunk])
    got += splitter.close()
    assert [fields(i) for i in got] == [fields(Resource.parse(x)) for x in items]


def test_the_index_is_the_same_from_records_and_from_models():
    records = [i for batch in split_array(orjson.dumps(ITEMS), ResourceItem, batch_bytes=64) for i in batch]
    assert index_resources(records) == index_resources(Resource.parse(x) for x in ITEMS)
    twin = dict(ITEMS[0], name="pvc-twin")  # pvc-a's replica on w1, under another name
    index = index_resources(msgspec.convert([ITEMS[0], twin], list[ResourceItem]))
    assert index["pvc-twin"].replicas["w1"] is index["pvc-a"].replicas["w1"], "equal replicas are one object"


@pytest.mark.parametrize("body", [b"", b"  ", b'{"name": "x"}', b"[{", b'[{"name": "a", "node_name": "b"}',
                                  b"garbage"])
def test_what_is_not_an_array_of_items_is_refused(body):
    with pytest.raises(msgspec.DecodeError):
        list(split_array(body, ResourceItem))


def test_an_item_of_the_wrong_shape_is_refused_at_once():
    body = orjson.dumps([{"name": "a", "node_name": "w1"}] * 50 + [{"name": 7, "node_name": "w1"}] * 50)
    with pytest.raises(msgspec.ValidationError):
        list(split_array(body, ResourceItem, batch_bytes=64))


def test_empty_array():
    assert [i for b in split_array(b" [ ] ", ResourceItem) for i in b] == []


def test_client_compact_reads_over_http():
    emu = LinstorEmulator()
    emu.add_node("w1")
    emu.add_node("w2", connection_status="OFFLINE", flags=["EVACUATE"])
    emu.add_storage_pool("w1", "thindata", "LVM_THIN", free_kib=5 * 1024**2)
    for r in range(300):
        emu.add_resource(f"pvc-{r}", "w1")
    emu.add_resource("pvc-0", "w2", diskful=False, flags=["TIE_BREAKER"])

    async def reads(url):
        async with LinstorClient(url, timeout=5.0) as c:
            batches = [b async for b in c.iter_resource_batches()]
            return await c.get_nodes_compact(), await c.get_storage_pools_compact(), batches

    with emu.serve() as srv:
        nodes, pools, batches = asyncio.run(reads(srv.url))
        emu.inject(garbage=1, path_prefix="/v1/view/resources")
        with pytest.raises(LinstorProtocolError):
            asyncio.run(reads(srv.url))
    assert {n.name: (n.online, n.is_satellite, n.evacuating) for n in nodes} == {
        "w1": (True, True, False), "w2": (False, True, True)}
    assert {(p.node_name, p.storage_pool_name, p.free_capacity) for p in pools if not p.diskless} == {
        ("w1", "thindata", 5 * 1024**2)}
    items = [i for b in batches for i in b]
    assert len(items) == 301
    assert len(batches) > 1, "a 300 KB body comes in more than one batch"
    assert {i.node_name for i in items if not i.diskful} == {"w2"}


def test_a_second_read_keeps_the_objects_of_unchanged_resources():
    from scheduler_extender.state import ResourceIndexer

    records = msgspec.convert(ITEMS, list[ResourceItem])
    first = ResourceIndexer()
    first.add(records)
    changed = [dict(x, state={"in_use": True}) if x["name"] == "pvc-a" and x["node_name"] == "w1" else x
               for x in ITEMS]
    second = ResourceIndexer(previous=first)
    second.add(msgspec.convert(changed, list[ResourceItem]))
    second.keep_unchanged(list(second.index))
    assert second.index["pvc-b"] is first.index["pvc-b"]
    assert second.index["pvc-a"] is not first.index["pvc-a"]
    assert second.index["pvc-a"].replicas["w1"].in_use and not first.index["pvc-a"].replicas["w1"].in_use
    assert second.index == index_resources(msgspec.convert(changed, list[ResourceItem]))
    second.forget_previous()
    assert second.index is not first.index  # pvc-a changed
    third = ResourceIndexer(previous=second)  # nothing changed since: the very same index
    third.add(msgspec.convert(changed, list[ResourceItem]))
    third.keep_unchanged(list(third.index))
    third.forget_previous()
    assert third.index is second.index
    fourth = ResourceIndexer(previous=third)  # a resource went away: a new index, the rest shared
    fourth.add(msgspec.convert([x for x in changed if x["name"] != "pvc-b"], list[ResourceItem]))
    fourth.keep_unchanged(list(fourth.index))
    fourth.forget_previous()
    assert fourth.index is not third.index and set(fourth.index) == {"pvc-a"}
    assert fourth.index["pvc-a"] is third.index["pvc-a"]


def test_a_second_read_keeps_the_node_objects_and_the_mapping_when_nothing_changed():
    """What makes the publish's unchanged-poll check an identity check (refresh.read_index)."""
    from linstor_scheduler.linstor.compact import NodeItem, StoragePoolItem
    from scheduler_extender.state import index_nodes, keep_unchanged_nodes

    def read(free_w2: int, extra: bool = False):
        nodes = [NodeItem("w1", "SATELLITE", [], "ONLINE"), NodeItem("w2", "SATELLITE", [], "ONLINE")]
        nodes += [NodeItem("w3", "SATELLITE", [], "ONLINE")] if extra else []
        ratio_1 = {"MaxOversubscriptionRatio": "1"}  # room = free space (linstor.capacity)
        pools = [StoragePoolItem("thindata", "w1", "LVM_THIN", 100, 200, ratio_1),
                 StoragePoolItem("thindata", "w2", "LVM_THIN", free_w2, 200, ratio_1)]
        return index_nodes(nodes, pools)

    first = read(50)
    assert keep_unchanged_nodes(read(50), None) == first
    assert keep_unchanged_nodes(read(50), first) is first
    changed = keep_unchanged_nodes(read(40), first)  # w2's pool filled up: a new mapping
    assert changed is not first and changed["w1"] is first["w1"] and changed["w2"] != first["w2"]
    assert changed["w2"].pools["thindata"].free_kib == 40
    grown = keep_unchanged_nodes(read(50, extra=True), first)  # a node joined
    assert grown is not first and set(grown) == {"w1", "w2", "w3"} and grown["w2"] is first["w2"]
    shrunk = keep_unchanged_nodes(read(50), grown)  # and left again
    assert shrunk is not grown and set(shrunk) == {"w1", "w2"}
