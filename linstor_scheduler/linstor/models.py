"""The LINSTOR REST v1 shapes we read (``third_party/linstor/rest_v1_openapi.yaml``): one record each.

Each shape is one msgspec Struct, written here once: its fields and what is derived from them
(``diskful``, ``in_use``, ``online``, ``reserved_kib``, ...). It is validated where it enters, when a
body is decoded (``msgspec.json.decode``) or a document converted (``Record.parse``: snapshots, tests).
A reader that must decode little of a big answer (the extender's and fencing's polls of 100,000
items) decodes a *projection* of the shape, ``Shape.only(...)`` (``compact.py``): the fields it names,
with this module's types, defaults and LINSTOR names, and the shape's properties; the decoder skips
every other field without building it. A new field is declared here, and named in the projections
of the readers that need it.

Only the fields we use are declared; unknown fields are ignored so newer controllers keep working.
Enums are kept as strings and compared case-insensitively: real controllers answer ``SATELLITE``
where the spec's enum says ``Satellite`` (see third_party/linstor/NOTES.md).
"""

from __future__ import annotations

import functools
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import msgspec

DISKLESS_FLAGS = frozenset({"DISKLESS", "DRBD_DISKLESS"})
IGNORED_RESOURCE_FLAGS = frozenset({"DELETE", "INACTIVE"})
# Provider kinds that hold no data: never a place for a diskful replica.
DISKLESS_PROVIDERS = frozenset({"DISKLESS"})


class Record(msgspec.Struct, frozen=True, gc=False):
    """A LINSTOR shape (or a projection of one). Frozen; not tracked by the cyclic collector (a decoded
    record cannot be part of a cycle), except where a shape says otherwise."""

    # The shape a record is of: the class itself for a shape, its source for a projection (``only``).
    shape: ClassVar[type[Record]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.shape = cls

    @classmethod
    def parse(cls, value: Any) -> Any:
        """``value`` (a JSON document already parsed: a snapshot's item, a test's) as this record,
        validated as pydantic's lax mode did (``"5"`` for an int is 5); ``msgspec.ValidationError``."""
        return msgspec.convert(value, cls, strict=False)

    def dump(self) -> dict[str, Any]:
        """The record as JSON-ready data, without the fields that are None (what a snapshot keeps)."""
        return _without_none(msgspec.to_builtins(self))

    @classmethod
    def only(cls, *names: str, called: str | None = None, **nested: type[Record]) -> Any:
        """A projection of this shape: a record of the fields ``names`` and ``nested`` only, in that
        order, each with this shape's type, default and LINSTOR name; ``nested`` gives a field the
        projection of its own shape to decode instead (``volumes=Volume.only(...)``), or, for a
        ``props`` map, a ``PropsView`` (the keys the reader needs). The shape's properties and methods
        come along (one needing a field left out raises AttributeError when used). ``called``: the
        class's name (default: the shape's + ``View``)."""
        fields = {f.name: f for f in msgspec.structs.fields(cls)}
        unknown = [n for n in (*names, *nested) if n not in fields]
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
        spec: list[tuple[str, Any, Any]] = []
        for field_name in dict.fromkeys((*names, *nested)):
            info = fields[field_name]
            kind, default, factory = info.type, info.default, info.default_factory
            if field_name in nested:
                kind, default, factory = _narrowed(cls, info, nested[field_name])
            kind = _replace(kind, cls, typing.ForwardRef(_ITSELF))  # a tree of the shape: of the projection
            options: dict[str, Any] = {"name": info.encode_name}
            if factory is not msgspec.NODEFAULT:
                options["default_factory"] = factory
            elif default is not msgspec.NODEFAULT:
                options["default"] = default
            spec.append((field_name, kind, msgspec.field(**options)))
        members = {k: v for klass in reversed(cls.__mro__) if issubclass(klass, Record) and klass is not Record
                   for k, v in vars(klass).items()
                   if isinstance(v, property | types.FunctionType | classmethod | staticmethod)
                   and not (k.startswith("__") and k.endswith("__"))}
        config = cls.__struct_config__
        module = sys._getframe(1).f_globals.get("__name__", cls.__module__)  # the caller's, as namedtuple's
        view = msgspec.defstruct(called or f"{cls.__name__}View", spec, bases=(Record,), namespace=members,
                                 module=module, frozen=True, gc=config.gc)
        view.shape = cls.shape
        setattr(view, _ITSELF, view)
        return view


def _narrowed(shape: type[Record], info: msgspec.structs.FieldInfo, view: type[Record]) -> tuple[Any, Any, Any]:
    """A field's type, default and default factory with ``view`` decoded in place of its shape."""
    if isinstance(view, type) and issubclass(view, PropsView) and info.type == dict[str, str]:
        return view, msgspec.NODEFAULT, view
    kind = _replace(info.type, view.shape, view)
    if kind == info.type:
        raise TypeError(f"{shape.__name__}.{info.name} is a {info.type}: {view.__name__} is not a view of it")
    return kind, info.default, info.default_factory


# How a projection of a shape that holds itself (a layer's children) names itself in its own fields:
# msgspec resolves the reference when it first decodes one, in the class's namespace.
_ITSELF = "_itself"


def _replace(kind: Any, old: Any, new: Any) -> Any:
    """``kind`` with ``new`` wherever it has ``old`` (``list[old]``, ``old | None``, ``dict[str, old]``)."""
    if kind is old:
        return new
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        replaced = tuple(_replace(a, old, new) for a in args)
        return kind if replaced == args else typing.Union[replaced]  # noqa: UP007 (may hold a ForwardRef)
    if origin in (list, dict):
        replaced = tuple(_replace(a, old, new) for a in args)
        return kind if replaced == args else origin[replaced]
    return kind


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class PropsView(Record):
    """Of a ``props`` map, the keys a reader needs, each a field whose LINSTOR name is the key
    (``rename``): the decoder skips every other key without building a string of it. Read like the
    map it stands for (``get``, ``in``, ``[]``, iteration over the keys that are set, ``==`` a dict)."""

    def get(self, key: str, default: str | None = None) -> str | None:
        attr = _attributes(type(self)).get(key)
        value = getattr(self, attr) if attr is not None else None
        return default if value is None else value

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return (key for key, attr in _attributes(type(self)).items() if getattr(self, attr) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def keys(self) -> list[str]:
        return list(self)

    def items(self) -> list[tuple[str, str]]:
        return [(key, self[key]) for key in self]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PropsView | Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self.items()))


@functools.cache
def _attributes(view: type[PropsView]) -> dict[str, str]:
    """A props view's LINSTOR keys -> its attributes."""
    return {f.encode_name: f.name for f in msgspec.structs.fields(view)}


class Node(Record):
    name: str
    type: str = ""
    flags: list[str] = []
    props: dict[str, str] = {}
    connection_status: str | None = None
    storage_providers: list[str] = []
    unsupported_providers: dict[str, list[str]] = {}
    uuid: str | None = None

    @property
    def online(self) -> bool:
        """Only ONLINE is usable: CONNECTED means the satellite has not finished its handshake."""
        return (self.connection_status or "").upper() == "ONLINE"

    @property
    def is_satellite(self) -> bool:
        """Nodes that run a satellite (and so can hold or attach volumes)."""
        return self.type.upper() in ("SATELLITE", "COMBINED")

    @property
    def evacuating(self) -> bool:
        return bool({f.upper() for f in self.flags} & {"EVACUATE", "EVICTED"})


class StoragePoolDefinition(Record):
    storage_pool_name: str
    props: dict[str, str] = {}


class StoragePool(Record):
    storage_pool_name: str
    node_name: str = ""
    provider_kind: str = ""
    props: dict[str, str] = {}
    free_capacity: int | None = None  # KiB
    total_capacity: int | None = None  # KiB
    uuid: str | None = None

    @property
    def diskless(self) -> bool:
        return self.provider_kind.upper() in DISKLESS_PROVIDERS


class DrbdConnection(Record):
    connected: bool | None = None
    message: str | None = None


class DrbdResource(Record):
    """The DRBD layer as its own node sees it: peers, whether it may promote, its score."""

    may_promote: bool | None = None
    promotion_score: int | None = None
    connections: dict[str, DrbdConnection] = {}
    flags: list[str] = []


class ResourceLayer(Record, gc=True):  # a tree of itself: tracked, as a recursive type should be
    type: str | None = None
    drbd: DrbdResource | None = None
    children: list[ResourceLayer] = []

    def find_drbd(self) -> Any:
        """The DRBD layer wherever it sits in the layer stack (usually on top)."""
        if self.drbd is not None:
            return self.drbd
        for child in self.children:
            found = child.find_drbd()
            if found is not None:
                return found
        return None


class ReplicationState(Record):
    replication_state: str | None = None
    done_percentage: float | None = None


class VolumeState(Record):
    disk_state: str | None = None
    replication_states: dict[str, ReplicationState] = {}


class LayerSize(Record):
    usable_size_kib: int | None = None


class VolumeLayer(Record):
    type: str = ""
    data: LayerSize | None = None


class Volume(Record):
    volume_number: int | None = None
    storage_pool_name: str | None = None
    provider_kind: str | None = None
    allocated_size_kib: int | None = None
    usable_size_kib: int | None = None
    flags: list[str] = []
    state: VolumeState | None = None
    layer_data_list: list[VolumeLayer] = []

    @property
    def reserved_kib(self) -> int:
        """What LINSTOR reserves of the volume's storage pool for it: the usable size of its storage
        layer (FreeCapacityAutoPoolSelectorUtils ``getReservedSum`` sums ``getUsableSize()`` over the
        pool's storage-layer volume data; REST ``layer_data_list[type=STORAGE].data.usable_size_kib``),
        the first STORAGE entry (the data device; an external DRBD meta-data device in another pool is
        not attributed). The volume's own ``usable_size_kib`` stands in where no storage layer says (the
        spec has it, linstor-server's ``Json.apiToVolume`` does not set it); else 0."""
        for layer in self.layer_data_list:
            data = layer.data
            if layer.type.upper() == "STORAGE" and data is not None and data.usable_size_kib is not None:
                return data.usable_size_kib
        return self.usable_size_kib or 0


class ResourceState(Record):
    in_use: bool | None = None


class Resource(Record):
    """One item of ``GET /v1/view/resources``: a resource on one node, with its volumes."""

    name: str
    node_name: str
    flags: list[str] = []
    props: dict[str, str] = {}
    state: ResourceState | None = None
    layer_object: ResourceLayer | None = None
    volumes: list[Volume] = []

    @property
    def diskful(self) -> bool:
        return not any(f.upper() in DISKLESS_FLAGS for f in self.flags)

    @property
    def ignored(self) -> bool:
        """DELETE/INACTIVE items are leaving or parked: never a reason to place a pod."""
        return any(f.upper() in IGNORED_RESOURCE_FLAGS for f in self.flags)

    @property
    def in_use(self) -> bool:
        return bool(self.state and self.state.in_use)


class ResourceDefinition(Record):
    name: str
    flags: list[str] = []
    props: dict[str, str] = {}
    resource_group_name: str | None = None


class ResourceGroup(Record):
    """Resource groups carry properties (e.g. DRBD quorum options) that their definitions inherit."""

    name: str
    props: dict[str, str] = {}


class ApiCallRc(Record):
    ret_code: int
    message: str = ""
    cause: str | None = None
    details: str | None = None
    correction: str | None = None
    error_report_ids: list[str] = []
    obj_refs: dict[str, str] = {}

    @property
    def is_error(self) -> bool:
        mask = 0xC000000000000000
        return (self.ret_code & mask) == mask
