"""One record per LINSTOR REST shape (``linstor.models``): every reader decodes the shape or a projection
of it (``Record.only``), never a copy written by hand, so the shape's fields and properties cannot
drift apart between readers; what the records read and write is what the pydantic models did."""

from __future__ import annotations

import ast
import types
import typing
from pathlib import Path

import msgspec
import pytest

from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.linstor import compact, models
from linstor_scheduler.linstor.models import (
    Node,
    PropsView,
    Record,
    Resource,
    ResourceDefinition,
    StoragePool,
    Volume,
    VolumeState,
)
from locality import affinity_sync

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("linstor_scheduler", "scheduler_extender", "storage_sync", "fencing", "admission", "locality", "devkit")
# msgspec Structs that are not LINSTOR shapes: the extender's reading of kube-scheduler's requests.
NOT_LINSTOR = {"scheduler_extender/codec.py"}


def projections() -> list[type[Record]]:
    """Every projection the product decodes, nested ones too."""
    found: dict[type, None] = {}

    def visit(kind: typing.Any) -> None:
        if isinstance(kind, type) and issubclass(kind, Record) and not issubclass(kind, PropsView):
            if kind in found or kind.shape is kind:
                return
            found[kind] = None
            for f in msgspec.structs.fields(kind):
                visit(f.type)
        for arg in typing.get_args(kind):
            visit(arg)

    for module in (compact, affinity_sync):
        for value in vars(module).values():
            visit(value)
    return list(found)


def widened(kind: typing.Any) -> typing.Any:
    """A projection's field type with each view in it back to the shape it views."""
    if isinstance(kind, type) and issubclass(kind, PropsView):
        return dict[str, str]
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.shape
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(widened(a) for a in args)]  # noqa: UP007
    if origin in (list, dict):
        return origin[tuple(widened(a) for a in args)]
    return kind


def test_the_projections_read_are_many_and_each_is_of_a_shape():
    found = {p.__name__ for p in projections()}
    assert {"ResourceItem", "VolumeItem", "NodeItem", "StoragePoolItem", "FencingResourceItem", "FencingLayer",
            "FencingDrbd", "ResourceDefinitionItem", "Placed", "SavedIntentDefinition"} <= found
    assert all(p.shape.__module__ == models.__name__ for p in projections())


@pytest.mark.parametrize("view", projections(), ids=lambda v: v.__name__)
def test_a_projection_has_its_shapes_fields_types_defaults_and_properties(view):
    shape = {f.name: f for f in msgspec.structs.fields(view.shape)}
    for f in msgspec.structs.fields(view):
        assert f.name in shape, f"{view.__name__}.{f.name} is not a field of {view.shape.__name__}"
        want = shape[f.name]
        assert f.encode_name == want.encode_name
        assert widened(f.type) == widened(want.type), f"{view.__name__}.{f.name}: {f.type} != {want.type}"
        if not (isinstance(f.type, type) and issubclass(f.type, PropsView)):
            assert (f.default, f.default_factory) == (want.default, want.default_factory), f.name
    for name, member in vars(view.shape).items():
        if isinstance(member, property | classmethod | staticmethod | types.FunctionType) and not name.startswith("__"):
            assert vars(view)[name] is member, f"{view.__name__}.{name} is not {view.shape.__name__}'s"
    assert view.__struct_config__.gc == view.shape.__struct_config__.gc


def test_a_linstor_shape_is_declared_once_in_models():
    """Outside models.py no class derives from msgspec.Struct (or calls defstruct) to read LINSTOR: a
    reader takes a shape or names a projection of it (props views derive from PropsView)."""
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            if where in NOT_LINSTOR or where == "linstor_scheduler/linstor/models.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("msgspec.Struct", "Struct")
                                                          for b in node.bases):
                    found.append(f"{where}: class {node.name}")
                if isinstance(node, ast.Attribute) and node.attr == "defstruct":
                    found.append(f"{where}: defstruct")
    assert found == []


def items() -> list[dict]:
    emu = LinstorEmulator()
    for n in ("w1", "w2", "w3"):
        emu.add_node(n)
        emu.add_storage_pool(n, "thindata", "LVM_THIN")
    emu.add_resource("pvc-a", "w1", volumes=2)
    emu.add_resource("pvc-a", "w2", in_use=True)
    emu.add_resource("pvc-a", "w3", diskful=False, flags=["TIE_BREAKER"])
    emu.add_resource("pvc-b", "w3", flags=["DELETE"])
    emu.set_disk_state("pvc-a", "w2", "Inconsistent", sync_peer="w1", done_percentage=42.5)
    return emu.snapshot()["resources"]


@pytest.mark.parametrize("view", [compact.ResourceItem, compact.FencingResourceItem, affinity_sync.Placed],
                         ids=lambda v: v.__name__)
def test_a_projection_reads_what_its_shape_reads(view):
    body = msgspec.json.encode(items())
    for whole, part in zip(msgspec.json.decode(body, type=list[Resource]), msgspec.json.decode(body, type=list[view]),
                           strict=True):
        assert part == msgspec.convert(msgspec.to_builtins(whole), view)
        assert (part.diskful, part.ignored) == (whole.diskful, whole.ignored)
        if "state" in view.__struct_fields__:
            assert part.in_use == whole.in_use


def test_derived_properties_are_written_once_and_read_alike():
    whole = Volume.parse({"usable_size_kib": 7, "layer_data_list": [
        {"type": "DRBD", "data": {"usable_size_kib": 9}}, {"type": "STORAGE", "data": {"usable_size_kib": 8}}]})
    part = msgspec.convert(msgspec.to_builtins(whole), compact.VolumeItem)
    assert whole.reserved_kib == part.reserved_kib == 8
    node = {"name": "n", "type": "Satellite", "connection_status": "ONLINE", "flags": ["EVACUATE"]}
    for record in (Node.parse(node), compact.NodeItem.parse(node)):
        assert (record.online, record.is_satellite, record.evacuating) == (True, True, True)
    layer = {"type": "LUKS", "children": [{"type": "DRBD", "drbd": {"may_promote": True}, "children": [{}]}]}
    got = compact.FencingLayer.parse(layer).find_drbd()
    assert type(got).__name__ == "FencingDrbd" and got.may_promote is True


def test_a_props_view_reads_like_the_map_it_stands_for():
    props = {"DrbdOptions/Resource/quorum": "majority", "DrbdPrimarySetOn": "N1"}
    view = ResourceDefinition.parse({"name": "r", "props": props}).props
    quorum = compact.ResourceDefinitionItem.parse({"name": "r", "props": props}).props
    assert view == props and quorum == {"DrbdOptions/Resource/quorum": "majority"}
    assert "DrbdOptions/Resource/quorum" in quorum and "DrbdPrimarySetOn" not in quorum
    assert quorum["DrbdOptions/Resource/quorum"] == "majority" and quorum.get("x", "d") == "d"
    assert list(quorum) == ["DrbdOptions/Resource/quorum"] and len(quorum) == 1
    with pytest.raises(KeyError):
        quorum["DrbdOptions/Resource/on-no-quorum"]
    assert compact.RatioProps() == {} and compact.RatioProps() == compact.RatioProps()


def test_a_projection_names_fields_of_its_shape_and_views_of_theirs():
    with pytest.raises(TypeError, match="no field"):
        Resource.only("name", "nodename")
    with pytest.raises(TypeError, match="not a view"):
        Resource.only("name", volumes=VolumeState.only("disk_state"))
    with pytest.raises(TypeError, match="not a view"):
        Resource.only("name", state=compact.RatioProps)


def test_records_read_and_write_as_the_models_did():
    """Lax where pydantic was (a snapshot's ``"5"`` is 5), strict about strings; a dump keeps empty
    lists and maps and drops what is None (a snapshot written by ``snapshot`` is unchanged)."""
    assert StoragePool.parse({"storage_pool_name": "p", "free_capacity": "5"}).free_capacity == 5
    with pytest.raises(msgspec.ValidationError):
        Resource.parse({"name": "r", "node_name": 7})
    assert Node.parse({"name": "n", "connection_status": None}).dump() == {
        "name": "n", "type": "", "flags": [], "props": {}, "storage_providers": [], "unsupported_providers": {}}
    assert Resource.parse({"name": "r", "node_name": "n", "volumes": [{"state": {"disk_state": "UpToDate"}}]}).dump() \
        == {"name": "r", "node_name": "n", "flags": [], "props": {}, "volumes": [
            {"flags": [], "state": {"disk_state": "UpToDate", "replication_states": {}}, "layer_data_list": []}]}
