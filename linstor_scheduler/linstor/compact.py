"""What the polls decode of LINSTOR's list answers (projections of ``models.py``'s shapes), and the
splitter that cuts a streamed JSON array into batches of whole items.

Why: ``/v1/view/resources`` is ~1 KB of JSON per item and 100,000 items at 5,000 nodes. One
pydantic model per item (with its layer tree, volumes and props) cost ~8.5 KB each and ~70 us of
CPU; these records keep only the fields a reader reads (everything else is skipped by the decoder
without building it), and the splitter lets the caller index each batch and drop it, so neither the
body nor the list of items is ever held whole.

Each record here is a projection of its shape (``Record.only``): it names fields, nothing more. The
types, defaults and LINSTOR names, and the properties (``diskful``, ``ignored``, ``in_use``,
``online``, ``reserved_kib``, ...) are the shape's, written once in ``models.py``, so code written
against a shape reads its projections too. Unknown fields are ignored, enums are plain strings
compared case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec

from ..drbd_quorum import AUTO_QUORUM_KEY, MINIMUM_REDUNDANCY_KEY, ON_NO_QUORUM_KEY, QUORUM_KEY
from . import capacity
from .models import (
    DrbdConnection,
    DrbdResource,
    Node,
    PropsView,
    ReplicationState,
    Resource,
    ResourceDefinition,
    ResourceLayer,
    StoragePool,
    StoragePoolDefinition,
    Volume,
    VolumeState,
)


class RatioProps(PropsView, rename={"max_ratio": capacity.MAX_RATIO, "max_free_ratio": capacity.MAX_FREE_RATIO,
                                    "max_total_ratio": capacity.MAX_TOTAL_RATIO}):
    """Of a pool's (or a pool definition's) props, the three over-subscription ratios
    (``linstor.capacity``), each under its LINSTOR key; every other key is skipped by the decoder, so
    a read of 10,000 pools keeps no dict of ``StorDriver/...`` strings while the resources stream."""

    max_ratio: str | None = None
    max_free_ratio: str | None = None
    max_total_ratio: str | None = None


# --- the extender's records (and fencing's nodes and pools) ------------------------------------
# One ``/v1/nodes`` item: name, kind, connection and flags (no props, interfaces, providers).
NodeItem = Node.only("name", "type", "flags", "connection_status", called="NodeItem")
# One ``/v1/view/storage-pools`` item: where, what kind, how much is free (KiB), the ratios of its props.
StoragePoolItem = StoragePool.only("storage_pool_name", "node_name", "provider_kind", "free_capacity",
                                   "total_capacity", props=RatioProps, called="StoragePoolItem")
# One ``/v1/storage-pool-definitions`` item: the name and the ratios its pools inherit.
StoragePoolDefinitionItem = StoragePoolDefinition.only("storage_pool_name", props=RatioProps,
                                                       called="StoragePoolDefinitionItem")
# A volume of a ``/v1/view/resources`` item: its disk state and resync progress, and where it sits and
# how much of its pool LINSTOR counts as reserved for it (``reserved_kib``).
VolumeItem = Volume.only(
    "state", "storage_pool_name", "usable_size_kib", "layer_data_list", called="VolumeItem",
    state=VolumeState.only("disk_state", called="VolumeStateItem",
                           replication_states=ReplicationState.only("done_percentage", called="ReplicationStateItem")))
# One ``/v1/view/resources`` item as the extender needs it: who, where, flags, in use, its volumes.
ResourceItem = Resource.only("name", "node_name", "flags", "state", volumes=VolumeItem, called="ResourceItem")


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
# Kept apart from the extender's records above: neither decodes what the other needs.
# The DRBD layer as its own node sees it (wherever it sits in the layer stack: ``find_drbd``): its
# peers and whether each is connected, whether it may promote, its score.
FencingLayer = ResourceLayer.only(
    "drbd", "children", called="FencingLayer",
    drbd=DrbdResource.only("may_promote", "promotion_score", called="FencingDrbd",
                           connections=DrbdConnection.only("connected", called="FencingDrbdConnection")))
# One ``/v1/view/resources`` item as fencing judges it: flags, in use, disk states, DRBD peers.
FencingResourceItem = Resource.only(
    "name", "node_name", "flags", "state", called="FencingResourceItem",
    volumes=Volume.only(called="FencingVolume", state=VolumeState.only("disk_state", called="FencingVolumeState")),
    layer_object=FencingLayer)


class QuorumPropsItem(PropsView, rename={
        "quorum": QUORUM_KEY, "on_no_quorum": ON_NO_QUORUM_KEY, "auto_quorum": AUTO_QUORUM_KEY,
        "minimum_redundancy": MINIMUM_REDUNDANCY_KEY}):
    """Of a definition's properties, the DRBD quorum options (``drbd_quorum``): the decoder skips every
    other property without building it (a definition carries a dozen; 33,000 dicts of them were
    ~24 MB of every fencing read, for four keys)."""

    quorum: str | None = None
    on_no_quorum: str | None = None
    auto_quorum: str | None = None
    minimum_redundancy: str | None = None


# One ``/v1/resource-definitions`` item: its name, group and DRBD quorum options (``props``: those of
# its properties, read by their LINSTOR keys).
ResourceDefinitionItem = ResourceDefinition.only("name", "props", "resource_group_name", props=QuorumPropsItem,
                                                 called="ResourceDefinitionItem")
