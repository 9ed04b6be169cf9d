"""From LVM tags to the storage pools a node should have: pure, no I/O.

``linstor-<pool>`` on a volume group asks for an LVM pool ``<pool>`` on it; on a thin pool, for an
LVM_THIN pool ``<pool>`` (the VG needs no tag). Anything ambiguous is a ``Problem`` and yields no
pool: we report, we never guess. In particular a pool tag used by two objects of one node blocks
the pool altogether (registering either could put data on the one the operator did not mean).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .backing import INVALID_VG_NAME, LINSTOR_LVM_NAME, vg_refusal
from .lvm import LogicalVolume, LvmInventory, VolumeGroup

TAG_PREFIX = "linstor-"
LVM, LVM_THIN = "LVM", "LVM_THIN"
# LINSTOR's rule for storage pool names (third_party/linstor/NOTES.md): 3..48 chars, a letter or '_',
# then [A-Za-z0-9_-].
LINSTOR_POOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{2,47}$")
# StorageClass names are DNS-1123 subdomains: lowercase letters, digits, '-' and '.'.
DNS1123_CHARS = re.compile(r"^[a-z0-9.-]+$")

# Problem kinds (also the `kind` label of the metric and the Event reason suffix)
DUPLICATE_TAG = "DuplicatePoolTag"
MULTIPLE_TAGS = "MultiplePoolTags"
BARE_TAG = "BarePoolTag"
INVALID_NAME = "InvalidPoolName"
NOT_A_CLASS_NAME = "PoolNameNotAStorageClassName"
NOT_THIN_POOL = "TagOnNonThinLV"


@dataclass(frozen=True)
class LvmObject:
    """A VG or a thin pool, identified by UUID (names can change under us: vgrename, lvrename)."""

    kind: str  # "vg" or "lv"
    name: str  # "vg" or "vg/lv"
    uuid: str

    def describe(self) -> str:
        return f"volume group {self.name}" if self.kind == "vg" else f"logical volume {self.name}"


@dataclass(frozen=True)
class DesiredPool:
    name: str
    provider_kind: str  # LVM or LVM_THIN
    vg: str
    vg_uuid: str
    thin_pool: str | None = None
    lv_uuid: str | None = None
    size: int = 0

    @property
    def props(self) -> dict[str, str]:
        props = {"StorDriver/LvmVg": self.vg}
        if self.thin_pool:
            props["StorDriver/ThinPool"] = self.thin_pool
        return props

    @property
    def backing(self) -> str:
        return f"{self.vg}/{self.thin_pool}" if self.thin_pool else self.vg

    @property
    def uuid(self) -> str:
        return self.lv_uuid or self.vg_uuid


@dataclass(frozen=True)
class Problem:
    kind: str
    pool: str | None
    objects: tuple[LvmObject, ...]
    message: str


@dataclass(frozen=True)
class TagVerdict:
    pools: dict[str, DesiredPool]
    problems: tuple[Problem, ...]
    tagged_names: frozenset[str]  # every pool name some tag asks for, valid or not (never an orphan)
    inventory: LvmInventory = field(default_factory=LvmInventory)  # what the verdict was made from


def pool_name_problem(pool: str) -> tuple[str, str] | None:
    """Why ``pool`` cannot be a pool with StorageClasses, as (kind, reason); None when it can."""
    if not LINSTOR_POOL_NAME.match(pool):
        return INVALID_NAME, (
            f"LINSTOR refuses the storage pool name {pool!r}: it must be 3 to 48 characters, start with a "
            "letter or '_', and contain only letters, digits, '_' and '-'")
    if not DNS1123_CHARS.match(pool):
        reasons = []
        if any(c.isupper() for c in pool):
            reasons.append("uppercase letters")
        if "_" in pool:
            reasons.append("'_'")
        return NOT_A_CLASS_NAME, (
            f"pool name {pool!r} cannot form the StorageClass name linstor-{pool}-r1: StorageClass names are "
            f"lowercase DNS-1123 names (a-z, 0-9, '-'), and {pool!r} contains {' and '.join(reasons)}; "
            f"use e.g. linstor-{pool.lower().replace('_', '-')}")
    return None


def _pool_tags(tags: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(pool names from ``linstor-<pool>`` tags, bare ``linstor``/``linstor-`` tags)."""
    pools, bare = [], []
    for tag in tags:
        if tag in ("linstor", TAG_PREFIX):
            bare.append(tag)
        elif tag.startswith(TAG_PREFIX):
            pools.append(tag[len(TAG_PREFIX):])
    return pools, bare


def desired_pools(inventory: LvmInventory) -> TagVerdict:
    problems: list[Problem] = []
    claims: dict[str, list[tuple[LvmObject, DesiredPool | None]]] = {}
    tagged: set[str] = set()
    seen: set[str] = set()

    def consider(obj: LvmObject, tags: tuple[str, ...], make: Callable[[str], DesiredPool],
                 refused: tuple[str, str] | None = None) -> None:
        pools, bare = _pool_tags(tags)
        for tag in bare:
            problems.append(Problem(BARE_TAG, None, (obj,), (
                f"{obj.describe()} has the tag {tag!r}, which names no pool: use linstor-<pool>, "
                "e.g. linstor-data")))
        tagged.update(pools)
        if len(pools) > 1:
            problems.append(Problem(MULTIPLE_TAGS, None, (obj,), (
                f"{obj.describe()} has {len(pools)} pool tags ({', '.join(TAG_PREFIX + p for p in pools)}); "
                "one object can back only one pool: remove all but one")))
            return
        if not pools:
            return
        pool = pools[0]
        bad = pool_name_problem(pool)
        if bad:
            problems.append(Problem(bad[0], pool, (obj,), f"{obj.describe()}: {bad[1]}"))
            return
        if refused:  # LVM's own word on the VG: no pool on it (and the tag keeps a pool from being orphaned)
            problems.append(Problem(refused[0], pool, (obj,), f"{obj.describe()} is tagged {TAG_PREFIX}{pool} but "
                                    f"cannot back a pool: {refused[1]}"))
            return
        claims.setdefault(pool, []).append((obj, make(pool)))

    for vg in inventory.volume_groups:
        if vg.uuid in seen:  # the same VG reported twice (several PV paths): one object
            continue
        seen.add(vg.uuid)
        consider(LvmObject("vg", vg.name, vg.uuid), vg.tags, lambda pool, vg=vg: _vg_pool(pool, vg),
                 vg_refusal(inventory, vg))
    for lv in inventory.logical_volumes:
        if lv.uuid in seen or not lv.tags:
            continue
        seen.add(lv.uuid)
        obj = LvmObject("lv", f"{lv.vg_name}/{lv.name}", lv.uuid)
        if not lv.is_thin_pool and _pool_tags(lv.tags)[0]:
            kind = "a thin volume" if lv.attr.startswith("V") else f"not a thin pool (lv_attr {lv.attr})"
            problems.append(Problem(NOT_THIN_POOL, _pool_tags(lv.tags)[0][0], (obj,), (
                f"{obj.describe()} is tagged {', '.join(t for t in lv.tags if t.startswith(TAG_PREFIX))} but is "
                f"{kind}: only volume groups and thin pools can back a pool (tag the VG for an LVM pool)")))
            tagged.update(_pool_tags(lv.tags)[0])
            continue
        consider(obj, lv.tags, lambda pool, lv=lv: _thin_pool(pool, lv), _thin_refusal(inventory, lv))

    pools: dict[str, DesiredPool] = {}
    for pool, owners in sorted(claims.items()):
        if len(owners) > 1:
            objs = tuple(o for o, _ in owners)
            problems.append(Problem(DUPLICATE_TAG, pool, objs, (
                f"tag {TAG_PREFIX}{pool} is on {len(objs)} objects of this node "
                f"({', '.join(o.describe() for o in objs)}); a pool tag must be unique on a node: "
                "neither is registered until all but one tag are removed")))
            continue
        desired = owners[0][1]
        if desired is not None:
            pools[pool] = desired
    return TagVerdict(pools, tuple(problems), frozenset(tagged), inventory)


def _thin_refusal(inventory: LvmInventory, lv: LogicalVolume) -> tuple[str, str] | None:
    """A thin pool can back a pool only in a VG that can, and under a name LINSTOR accepts."""
    for vg in inventory.volume_groups:
        if vg.uuid == lv.vg_uuid or (not lv.vg_uuid and vg.name == lv.vg_name):
            refused = vg_refusal(inventory, vg)
            if refused:
                return refused
    if not LINSTOR_LVM_NAME.match(lv.name):
        return INVALID_VG_NAME, (
            f"LINSTOR refuses the thin pool name {lv.name!r} as StorDriver/ThinPool (only letters, digits, '_' "
            f"and '-'): rename it with lvrename {lv.vg_name} {lv.name} <new name>")
    return None


def _vg_pool(pool: str, vg: VolumeGroup) -> DesiredPool:
    return DesiredPool(pool, LVM, vg.name, vg.uuid, size=vg.size)


def _thin_pool(pool: str, lv: LogicalVolume) -> DesiredPool:
    return DesiredPool(pool, LVM_THIN, lv.vg_name, lv.vg_uuid, thin_pool=lv.name, lv_uuid=lv.uuid, size=lv.size)
