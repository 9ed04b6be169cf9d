"""Whether a volume group can back a LINSTOR pool on this node, as LVM itself says. Pure, no I/O.

LVM reports a VG it cannot safely use through ``vg_attr`` (vgs(8)), the system ID (lvmsystemid(7))
and its warnings; LINSTOR names a VG by name only (``StorDriver/LvmVg``, whose values the REST spec
restricts to ``[a-zA-Z0-9_-]+``). A VG that is partial, exported, foreign, shares its name with
another VG or has a name LINSTOR refuses gets no pool, and a pool already on it is never judged
orphaned (and so never pruned): its tag may be on it still, merely out of sight. "Not visible" is
likewise never "untagged": a VG missing from the scan (a vanished device, the host's filter or
devices file, another host's system ID) is reported, not acted on.
"""

from __future__ import annotations

import re

from .lvm import LvmInventory, VolumeGroup

# StorDriver/LvmVg and StorDriver/ThinPool in rest_v1_openapi.yaml (PUT /v1/nodes/{node}/storage-pools/...)
LINSTOR_LVM_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")

# Reasons (the `reason` label of the problems metric, Event reasons; "PoolBacking" + reason for a pool
# already registered on such a VG)
VG_PARTIAL, VG_EXPORTED, VG_FOREIGN, DUPLICATE_VG_NAME, INVALID_VG_NAME, VG_MISSING = (
    "VgPartial", "VgExported", "VgForeign", "DuplicateVgName", "InvalidVgName", "VgNotVisible")


def vg_refusal(inventory: LvmInventory, vg: VolumeGroup) -> tuple[str, str] | None:
    """Why ``vg`` (and every thin pool in it) can back no pool, as (reason, what it means and what to
    do); None when it can."""
    if inventory.is_foreign(vg):
        mine = inventory.host_system_id or "none"
        return VG_FOREIGN, (
            f"volume group {vg.name} has the system ID {vg.system_id} and this host's is {mine}: LVM treats it "
            "as another host's (lvmsystemid(7)) and will not use it here; if it is really this host's, run "
            f"vgchange --systemid {inventory.host_system_id or '<this host>'} {vg.name} on the host (after "
            "making sure the other host no longer uses it)")
    if vg.exported:
        return VG_EXPORTED, (
            f"volume group {vg.name} is exported (vg_attr {vg.attr}): it was prepared to move to another "
            f"host; run vgimport {vg.name} on this host if it is to stay here")
    if vg.partial:
        return VG_PARTIAL, (
            f"volume group {vg.name} is partial (vg_attr {vg.attr}): one of its PVs is missing, so LVs with "
            "extents on it are unusable and new ones may not be placeable; bring the device back, or "
            f"vgreduce --removemissing {vg.name} once its data is given up")
    if len(inventory.vgs_named(vg.name)) > 1:
        others = ", ".join(v.uuid for v in inventory.vgs_named(vg.name))
        return DUPLICATE_VG_NAME, (
            f"{len(inventory.vgs_named(vg.name))} volume groups are named {vg.name} ({others}): LVM skips "
            "both (\"Multiple VGs found with the same name\") and LINSTOR names a VG by name only; rename "
            f"one with vgrename <uuid> <new name>, or hide one with a device filter or a system ID")
    if not LINSTOR_LVM_NAME.match(vg.name):
        return INVALID_VG_NAME, (
            f"LINSTOR refuses the volume group name {vg.name!r} as StorDriver/LvmVg (only letters, digits, '_' "
            f"and '-'): rename it with vgrename {vg.name} <new name>")
    return None


def backing_refusal(inventory: LvmInventory, vg_name: str | None, thin: str | None) -> tuple[str, str] | None:
    """Why the backing a LINSTOR pool points at is not plainly there: missing from the scan, or a VG
    ``vg_refusal`` refuses (its pool is then reported, never judged orphaned); None when it is."""
    found = inventory.vgs_named(vg_name or "")
    if not found:
        missing = f"; devices named for the scan are gone: {', '.join(inventory.missing_devices)}" if (
            inventory.missing_devices) else ""
        return VG_MISSING, (
            f"volume group {vg_name} is not visible to LVM on this node (a vanished device, the host's "
            f"filter or devices file, another host's system ID){missing}: its pool is not judged orphaned "
            "and never pruned while it cannot be seen")
    for vg in found:
        refused = vg_refusal(inventory, vg)
        if refused:
            return refused
    if thin and not any(lv.vg_name == vg_name and lv.name == thin and lv.is_thin_pool
                        for lv in inventory.logical_volumes):
        return VG_MISSING, (
            f"thin pool {vg_name}/{thin} is not visible to LVM on this node: its pool is not judged orphaned "
            "and never pruned while it cannot be seen")
    return None
