"""The extender's index shares one ``Replica`` among equal ones, and finds a plain item's (no flags, one
volume UpToDate, not resyncing) by a key read from the item, without making it. The key must be every
field of the replica that is not the same for all plain items: a field added to ``Replica`` and left
out of it would make replicas that differ in it one, silently."""

from __future__ import annotations

import dataclasses
import types
import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linstor_scheduler.linstor.compact import ResourceItem
from linstor_scheduler.linstor.models import Resource
from scheduler_extender.state import (
    PLAIN_FROM_ITEM,
    PLAIN_SAME,
    Replica,
    ResourceIndexer,
    check_plain,
    index_resources,
    replica_from,
)

FIELDS = [f.name for f in dataclasses.fields(Replica)]


def test_every_field_of_a_replica_is_named_once_by_the_shortcut():
    check_plain(FIELDS)  # as the module does at import
    with pytest.raises(TypeError, match=r"left out \['allocated_kib'\]"):
        check_plain([*FIELDS, "allocated_kib"])  # a field added to Replica, not to the shortcut
    with pytest.raises(TypeError, match="named twice"):
        check_plain(FIELDS, same={**PLAIN_SAME, "in_use": False})
    with pytest.raises(TypeError, match="not a field"):
        check_plain([f for f in FIELDS if f != "syncing"])


def values(kind: typing.Any, depth: int = 0) -> st.SearchStrategy[typing.Any]:
    """Any value of a record's field type, every field of every record in it varied (a field added to
    the shape is varied too): a few values each, so that items meet on the same key often."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return st.fixed_dictionaries({f.encode_name: values(f.type, depth + 1) for f in msgspec.structs.fields(kind)})
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(values(a, depth) for a in args))
    if origin in (list, dict) and depth > 4:
        return st.just(origin())  # a layer's children's children: deep enough
    if origin is list:
        return st.lists(values(args[0], depth), max_size=2)
    if origin is dict:
        return st.dictionaries(values(args[0], depth), values(args[1], depth), max_size=2)
    return {str: st.sampled_from(["a", "b", "STORAGE", "UpToDate"]), int: st.integers(0, 2),
            float: st.sampled_from([0.0, 42.5]), bool: st.booleans(), type(None): st.none()}[kind]


def plain(item: dict[str, typing.Any], i: int) -> dict[str, typing.Any]:
    """The item made plain (the shortcut's case), on node a or b, its other fields as generated."""
    volumes = item["volumes"] or [{}]
    state = {**(volumes[0].get("state") or {}), "disk_state": "UpToDate", "replication_states": {}}
    return {**item, "name": f"pvc-{i}", "node_name": "b" if item["node_name"] == "b" else "a", "flags": [],
            "volumes": [{**volumes[0], "state": state}]}


@settings(max_examples=60, deadline=None)
@given(st.lists(values(Resource), min_size=2, max_size=8))
def test_a_plain_item_gets_the_replica_it_makes_itself(generated):
    """Indexed together, every plain item gets exactly ``replica_from(item)``: equal to those its key
    shares it with in every field, the ``PLAIN_SAME`` ones the same for all, the others its own."""
    docs = [plain(item, i) for i, item in enumerate(generated)]
    for shape in (Resource, ResourceItem):  # a snapshot's items and the live poll's
        items = msgspec.convert(docs, list[shape])
        index = index_resources(items)
        for item in items:
            want = replica_from(item)
            assert index[item.name].replicas[item.node_name] == want
            assert {f: getattr(want, f) for f in PLAIN_SAME} == dict(PLAIN_SAME)
            assert {f: getattr(want, f) for f in PLAIN_FROM_ITEM} == {
                f: getattr(item, attr) for f, attr in PLAIN_FROM_ITEM.items()}


def test_equal_replicas_are_one_object_across_reads():
    docs = [plain({"node_name": "a", "volumes": []}, i) for i in range(3)]
    first = ResourceIndexer()
    first.add(msgspec.convert(docs, list[ResourceItem]))
    second = ResourceIndexer(previous=first)
    second.add(msgspec.convert(docs, list[ResourceItem]))
    replicas = {id(info.replicas["a"]) for indexer in (first, second) for info in indexer.index.values()}
    assert len(replicas) == 1
