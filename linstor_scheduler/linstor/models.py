"""Typed models of the LINSTOR REST v1 shapes we read (``third_party/linstor/rest_v1_openapi.yaml``).

Only the fields we use are declared; unknown fields are ignored so newer controllers keep working.
Enums are kept as strings and compared case-insensitively: real controllers answer ``SATELLITE``
where the spec's enum says ``Satellite`` (see third_party/linstor/NOTES.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

DISKLESS_FLAGS = frozenset({"DISKLESS", "DRBD_DISKLESS"})
IGNORED_RESOURCE_FLAGS = frozenset({"DELETE", "INACTIVE"})
# Provider kinds that hold no data: never a place for a diskful replica.
DISKLESS_PROVIDERS = frozenset({"DISKLESS"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Node(_Model):
    name: str
    type: str = ""
    flags: list[str] = Field(default_factory=list)
    props: dict[str, str] = Field(default_factory=dict)
    connection_status: str | None = None
    storage_providers: list[str] = Field(default_factory=list)
    unsupported_providers: dict[str, list[str]] = Field(default_factory=dict)
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
        flags = {f.upper() for f in self.flags}
        return bool(flags & {"EVACUATE", "EVICTED"})


class StoragePoolDefinition(_Model):
    storage_pool_name: str
    props: dict[str, str] = Field(default_factory=dict)


class StoragePool(_Model):
    storage_pool_name: str
    node_name: str = ""
    provider_kind: str = ""
    props: dict[str, str] = Field(default_factory=dict)
    free_capacity: int | None = None  # KiB
    total_capacity: int | None = None  # KiB
    uuid: str | None = None

    @property
    def diskless(self) -> bool:
        return self.provider_kind.upper() in DISKLESS_PROVIDERS


class DrbdConnection(_Model):
    connected: bool | None = None
    message: str | None = None


class DrbdResource(_Model):
    may_promote: bool | None = None
    promotion_score: int | None = None
    connections: dict[str, DrbdConnection] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)


class ResourceLayer(_Model):
    type: str | None = None
    drbd: DrbdResource | None = None
    children: list[ResourceLayer] = Field(default_factory=list)

    def find_drbd(self) -> DrbdResource | None:
        """The DRBD layer wherever it sits in the layer stack (usually on top)."""
        if self.drbd is not None:
            return self.drbd
        for child in self.children:
            found = child.find_drbd()
            if found is not None:
                return found
        return None


class ReplicationState(_Model):
    replication_state: str | None = None
    done_percentage: float | None = None


class VolumeState(_Model):
    disk_state: str | None = None
    replication_states: dict[str, ReplicationState] = Field(default_factory=dict)


class LayerSize(_Model):
    usable_size_kib: int | None = None


class VolumeLayer(_Model):
    type: str = ""
    data: LayerSize | None = None


class Volume(_Model):
    volume_number: int | None = None
    storage_pool_name: str | None = None
    provider_kind: str | None = None
    allocated_size_kib: int | None = None
    usable_size_kib: int | None = None
    flags: list[str] = Field(default_factory=list)
    state: VolumeState | None = None
    layer_data_list: list[VolumeLayer] = Field(default_factory=list)

    @property
    def reserved_kib(self) -> int:
        """What LINSTOR reserves of the volume's pool for it (``reserved_kib``)."""
        return reserved_kib(self)


class _Sized(Protocol):
    usable_size_kib: int | None

    @property
    def layer_data_list(self) -> Sequence[Any]: ...


def reserved_kib(volume: _Sized) -> int:
    """What LINSTOR reserves of a volume's storage pool for it: the usable size of its storage layer
    (FreeCapacityAutoPoolSelectorUtils ``getReservedSum`` sums ``getUsableSize()`` over the pool's
    storage-layer volume data; REST ``layer_data_list[type=STORAGE].data.usable_size_kib``), the first
    STORAGE entry (the data device; an external DRBD meta-data device in another pool is not
    attributed). The volume's own ``usable_size_kib`` stands in where no storage layer says (the spec
    has it, linstor-server's ``Json.apiToVolume`` does not set it); else 0."""
    for layer in volume.layer_data_list:
        if layer.type.upper() == "STORAGE" and layer.data is not None and layer.data.usable_size_kib is not None:
            return layer.data.usable_size_kib
    return volume.usable_size_kib or 0


class ResourceState(_Model):
    in_use: bool | None = None


class Resource(_Model):
    """One item of ``GET /v1/view/resources``: a resource on one node, with its volumes."""

    name: str
    node_name: str
    flags: list[str] = Field(default_factory=list)
    props: dict[str, str] = Field(default_factory=dict)
    state: ResourceState | None = None
    layer_object: ResourceLayer | None = None
    volumes: list[Volume] = Field(default_factory=list)

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


class ResourceDefinition(_Model):
    name: str
    flags: list[str] = Field(default_factory=list)
    props: dict[str, str] = Field(default_factory=dict)
    resource_group_name: str | None = None


class ResourceGroup(_Model):
    """Resource groups carry properties (e.g. DRBD quorum options) that their definitions inherit."""

    name: str
    props: dict[str, str] = Field(default_factory=dict)


class ApiCallRc(_Model):
    ret_code: int
    message: str = ""
    cause: str | None = None
    details: str | None = None
    correction: str | None = None
    error_report_ids: list[str] = Field(default_factory=list)
    obj_refs: dict[str, str] = Field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        mask = 0xC000000000000000
        return (self.ret_code & mask) == mask
