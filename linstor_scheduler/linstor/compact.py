"""Compact records of LINSTOR's list answers, decoded straight from the body (msgspec), and the
splitter that cuts a streamed JSON array into batches of whole items.

Why: ``/v1/view/resources`` is ~1 KB of JSON per item and 100,000 items at 5,000 nodes. One
pydantic model per item (with its layer tree, volumes and props) cost ~8.5 KB each and ~70 us of
CPU; these structs keep only the fields the extender reads (everything else is skipped by the
decoder without building it), and the splitter lets the caller index each batch and drop it, so
neither the body nor the list of items is ever held whole.

The field names, optionality and the helper properties mirror ``models.py`` (``diskful``,
``ignored``, ``in_use``, ``online``, ...), so code written against the models reads these too.
Unknown fields are ignored, enums are plain strings compared case-insensitively, as in models.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec

from ..drbd_quorum import AUTO_QUORUM_KEY, MINIMUM_REDUNDANCY_KEY, ON_NO_QUORUM_KEY, QUORUM_KEY
from . import capacity
from .models import DISKLESS_FLAGS, DISKLESS_PROVIDERS, IGNORED_RESOURCE_FLAGS, reserved_kib


class ReplicationStateItem(msgspec.Struct, frozen=True, gc=False):
    done_percentage: float | None = None


class VolumeStateItem(msgspec.Struct, frozen=True, gc=False):
    disk_state: str | None = None
    replication_states: dict[str, ReplicationStateItem] = {}


class LayerSizeItem(msgspec.Struct, frozen=True, gc=False):
    usable_size_kib: int | None = None


class VolumeLayerItem(msgspec.Struct, frozen=True, gc=False):
    type: str = ""
    data: LayerSizeItem | None = None


class VolumeItem(msgspec.Struct, frozen=True, gc=False):
    """A volume of a ``/v1/view/resources`` item: its disk state, and where it sits and how much of its
    pool LINSTOR counts as reserved for it (``reserved_kib``)."""

    state: VolumeStateItem | None = None
    storage_pool_name: str | None = None
    usable_size_kib: int | None = None
    layer_data_list: list[VolumeLayerItem] = []

    @property
    def reserved_kib(self) -> int:
        """What LINSTOR reserves of the volume's pool for it: its storage layer's usable size
        (FreeCapacityAutoPoolSelectorUtils ``getReservedSum``: ``getUsableSize()`` of the pool's
        storage-layer volume data; ``layer_data_list[type=STORAGE].data.usable_size_kib`` in REST).
        The volume's own ``usable_size_kib`` (in the spec, not set by linstor-server's
        ``Json.apiToVolume``) stands in where no storage layer says; else 0."""
        return reserved_kib(self)


class ResourceStateItem(msgspec.Struct, frozen=True, gc=False):
    in_use: bool | None = None


class ReplicaItem(msgspec.Struct, frozen=True, gc=False):
    """What every compact ``/v1/view/resources`` record has: who, where, flags, in use. The
    extender's and fencing's records add the rest they read, each decoding nothing more."""

    name: str
    node_name: str
    flags: list[str] = []
    state: ResourceStateItem | None = None

    @property
    def diskful(self) -> bool:
        return not any(f.upper() in DISKLESS_FLAGS for f in self.flags)

    @property
    def ignored(self) -> bool:
        return any(f.upper() in IGNORED_RESOURCE_FLAGS for f in self.flags)

    @property
    def in_use(self) -> bool:
        return bool(self.state and self.state.in_use)


class ResourceItem(ReplicaItem, frozen=True, gc=False):
    """One ``/v1/view/resources`` item as the extender needs it: who, where, flags, disk states."""

    volumes: list[VolumeItem] = []


class NodeItem(msgspec.Struct, frozen=True, gc=False):
    """One ``/v1/nodes`` item: name, kind, connection and flags (no props, interfaces, providers)."""

    name: str
    type: str = ""
    flags: list[str] = []
    connection_status: str | None = None

    @property
    def online(self) -> bool:
        return (self.connection_status or "").upper() == "ONLINE"

    @property
    def is_satellite(self) -> bool:
        return self.type.upper() in ("SATELLITE", "COMBINED")

    @property
    def evacuating(self) -> bool:
        return bool({f.upper() for f in self.flags} & {"EVACUATE", "EVICTED"})


class RatioProps(msgspec.Struct, frozen=True, gc=False):
    """Of a pool's (or a pool definition's) props, the three over-subscription ratios
    (``linstor.capacity``), each under its LINSTOR key; every other key is skipped by the decoder, so
    a read of 10,000 pools keeps no dict of ``StorDriver/...`` strings while the resources stream.
    Read like the props mapping (``get``)."""

    max_ratio: str | None = msgspec.field(name=capacity.MAX_RATIO, default=None)
    max_free_ratio: str | None = msgspec.field(name=capacity.MAX_FREE_RATIO, default=None)
    max_total_ratio: str | None = msgspec.field(name=capacity.MAX_TOTAL_RATIO, default=None)

    def get(self, key: str, default: str | None = None) -> str | None:
        value = {capacity.MAX_RATIO: self.max_ratio, capacity.MAX_FREE_RATIO: self.max_free_ratio,
                 capacity.MAX_TOTAL_RATIO: self.max_total_ratio}.get(key)
        return default if value is None else value


class StoragePoolItem(msgspec.Struct, frozen=True, gc=False):
    """One ``/v1/view/storage-pools`` item: where, what kind, how much is free (KiB)."""

    storage_pool_name: str
    node_name: str = ""
    provider_kind: str = ""
    free_capacity: int | None = None
    total_capacity: int | None = None
    props: RatioProps = RatioProps()  # of the pool's own props, the over-subscription ratios only

    @property
    def diskless(self) -> bool:
        return self.provider_kind.upper() in DISKLESS_PROVIDERS


class StoragePoolDefinitionItem(msgspec.Struct, frozen=True, gc=False):
    """One ``/v1/storage-pool-definitions`` item: the name and the properties its pools inherit."""

    storage_pool_name: str
    props: RatioProps = RatioProps()


# Where one item of a top-level array may end and the next begin. Nested arrays of objects
# (volumes, layer_data_list) and strings can hold the same bytes: a cut there leaves an open string
# or bracket, which the decoder rejects, and the splitter tries an earlier cut. Cuts before an
# object that starts with "name" (how LINSTOR and the emulator write resources) are tried first.
_CUT = re.compile(rb"\}\s*,\s*(?=\{)")
_NAMED = re.compile(rb'\{\s*"name"\s*:')


class ArraySplitter:
    """Feed the chunks of a streamed JSON array; get back batches of whole items, decoded.

    ``feed`` returns the items complete so far (cut once ``batch_bytes`` have gathered), ``close``
    the rest. A ``msgspec.ValidationError`` (an item of the wrong shape) propagates at once; a body
    that is not a JSON array raises ``msgspec.DecodeError`` at the latest on ``close``. The buffer
    always starts with the array's ``[``; a batch is decoded in place (the byte after the cut is
    made ``]`` for the decode and put back), so no batch is copied.
    """

    def __init__(self, item_type: Any, *, batch_bytes: int = 64 * 1024, max_tries: int = 8,
                 window: int = 16 * 1024) -> None:
        self._decoder = msgspec.json.Decoder(list[item_type])
        self._buf = bytearray()
        self._started = False
        self._batch = batch_bytes
        self._tries = max_tries
        self._window = max(window, 4096)
        self.bytes = 0

    def feed(self, chunk: bytes) -> list[Any]:
        self.bytes += len(chunk)
        self._buf += chunk
        if not self._started:
            stripped = self._buf.lstrip()
            if not stripped:
                self._buf = bytearray()
                return []
            if stripped[:1] != b"[":
                raise msgspec.DecodeError("expected a JSON array")
            self._buf = bytearray(stripped)
            self._started = True
        if len(self._buf) < self._batch:
            return []
        return self._cut()

    def _cut(self) -> list[Any]:
        buf = self._buf
        cuts = list(_CUT.finditer(buf, max(1, len(buf) - self._window)))
        named = [m for m in reversed(cuts) if _NAMED.match(buf, m.end())][: self._tries]
        others = [m for m in reversed(cuts[-self._tries:]) if not _NAMED.match(buf, m.end())]
        for m in (named + others)[: self._tries]:
            end = m.start() + 1
            saved = buf[end]
            buf[end] = 0x5D  # "]"
            try:
                with memoryview(buf) as view:
                    items = self._decoder.decode(view[: end + 1])
            except msgspec.ValidationError:
                raise
            except msgspec.DecodeError:
                continue  # a cut inside a nested array or a string: try another
            finally:
                buf[end] = saved
            del buf[1: m.end()]
            return items
        return []  # no cut worked in this window: wait for more bytes

    def close(self) -> list[Any]:
        if not self._started:
            raise msgspec.DecodeError("empty body, expected a JSON array")
        items = self._decoder.decode(self._buf)
        self._buf = bytearray()
        return items


def split_array(body: bytes, item_type: Any, **kwargs: Any) -> Iterator[list[Any]]:
    """The splitter over a body already in memory (tests, and small answers)."""
    splitter = ArraySplitter(item_type, **kwargs)
    step = 64 * 1024
    for start in range(0, len(body), step):
        batch = splitter.feed(body[start:start + step])
        if batch:
            yield batch
    yield splitter.close()


# --- fencing's records: what ``fencing/observe.py`` reads, nothing more --------------------------
# The shape mirrors models.Resource (``layer_object.find_drbd()``, ``volumes[].state.disk_state``,
# ``state.in_use``), so the fencing code reads a compact item and a model alike. Kept apart from
# the extender's records above: neither decodes what the other needs.
class FencingDrbdConnection(msgspec.Struct, frozen=True, gc=False):
    connected: bool | None = None


class FencingDrbd(msgspec.Struct, frozen=True, gc=False):
    """The DRBD layer as its own node sees it: peers, whether it may promote, its score."""

    may_promote: bool | None = None
    promotion_score: int | None = None
    connections: dict[str, FencingDrbdConnection] = {}


class FencingLayer(msgspec.Struct, frozen=True):
    drbd: FencingDrbd | None = None
    children: list[FencingLayer] = []

    def find_drbd(self) -> FencingDrbd | None:
        """The DRBD layer wherever it sits in the layer stack (usually on top), as models.ResourceLayer."""
        if self.drbd is not None:
            return self.drbd
        for child in self.children:
            found = child.find_drbd()
            if found is not None:
                return found
        return None


class FencingVolumeState(msgspec.Struct, frozen=True, gc=False):
    disk_state: str | None = None


class FencingVolume(msgspec.Struct, frozen=True, gc=False):
    state: FencingVolumeState | None = None


class FencingResourceItem(ReplicaItem, frozen=True, gc=False):
    """One ``/v1/view/resources`` item as fencing judges it: flags, in use, disk states, DRBD peers."""

    volumes: list[FencingVolume] = []
    layer_object: FencingLayer | None = None


class QuorumPropsItem(msgspec.Struct, frozen=True, gc=False, rename={
        "quorum": QUORUM_KEY, "on_no_quorum": ON_NO_QUORUM_KEY, "auto_quorum": AUTO_QUORUM_KEY,
        "minimum_redundancy": MINIMUM_REDUNDANCY_KEY}):
    """Of a definition's properties, the DRBD quorum options (``drbd_quorum``): the decoder skips every
    other property without building it (a definition carries a dozen; 33,000 dicts of them were
    ~24 MB of every fencing read, for four keys)."""

    quorum: str | None = None
    on_no_quorum: str | None = None
    auto_quorum: str | None = None
    minimum_redundancy: str | None = None


_QUORUM_PROPS = tuple(zip(("quorum", "on_no_quorum", "auto_quorum", "minimum_redundancy"),
                          (QUORUM_KEY, ON_NO_QUORUM_KEY, AUTO_QUORUM_KEY, MINIMUM_REDUNDANCY_KEY), strict=True))


class ResourceDefinitionItem(msgspec.Struct, frozen=True, gc=False):
    """One ``/v1/resource-definitions`` item: its name, group and DRBD quorum options (``props``: those
    of its properties, by their LINSTOR keys)."""

    name: str
    quorum_props: QuorumPropsItem = msgspec.field(name="props", default_factory=QuorumPropsItem)
    resource_group_name: str | None = None

    @property
    def props(self) -> dict[str, str]:
        q = self.quorum_props
        return {key: value for attr, key in _QUORUM_PROPS if (value := getattr(q, attr)) is not None}
