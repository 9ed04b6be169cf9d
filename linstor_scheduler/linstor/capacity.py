"""How much a LINSTOR storage pool would still admit: the controller's own rule, mirrored. Pure.

LINSTOR admits a volume of ``size`` KiB on a pool when (LINBIT/linstor-server, controller/src/main/java/
com/linbit/linstor/core/apicallhandler/controller/FreeCapacityAutoPoolSelectorUtils.java,
``isStorPoolUsable`` -> ``getFreeCapacityCurrentEstimationPrivileged``)::

    min(free x MaxFreeCapacityOversubscriptionRatio,
        total x MaxTotalCapacityOversubscriptionRatio - reserved)  >=  size

- ``free``, ``total``: the pool's last reported free and total capacity (REST ``free_capacity``,
  ``total_capacity``, KiB). Either unknown: no estimate, and the volume is allowed
  (``CtrlVlmCrtApiHelper``: ``.orElse(true)``, "allow the volume to be created if the free capacity is
  unknown").
- ``reserved`` (``getReservedCapacityPrivileged``): the usable sizes of the pool's volumes (its storage-layer
  volume data: REST ``/v1/view/resources`` ``volumes[].layer_data_list[type=STORAGE].data.usable_size_kib``)
  plus its snapshots' allocated sizes plus the allocations still pending in the controller.
- each ratio is looked up on the storage pool, then its storage pool definition, then the controller
  (``getRatioPrivileged``: ``PriorityProps(storPool props, definition props, controller props)``), under
  the keys ``MaxFreeCapacityOversubscriptionRatio`` / ``MaxTotalCapacityOversubscriptionRatio``
  (linstor-common consts ``KEY_STOR_POOL_MAX_FREE_CAPACITY_OVERSUBSCRIPTION_RATIO``,
  ``KEY_STOR_POOL_MAX_TOTAL_CAPACITY_OVERSUBSCRIPTION_RATIO``); a missing one falls back to
  ``MaxOversubscriptionRatio`` (``KEY_STOR_POOL_MAX_OVERSUBSCRIPTION_RATIO``), looked up the same way
  (server/.../core/objects/StorPool.java ``getOversubscriptionRatio``), whose default is 20 for the thin
  kinds (``LinStor.OVERSUBSCRIPTION_RATIO_DEFAULT = 20.0``) and 1 for the thick ones.

A thin pool's ``free_capacity`` is its unwritten data space, which a new thin volume does not lower; the
volume counts in ``reserved`` instead, so the total term is what a just-provisioned thin volume lowers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

MAX_RATIO = "MaxOversubscriptionRatio"
MAX_FREE_RATIO = "MaxFreeCapacityOversubscriptionRatio"
MAX_TOTAL_RATIO = "MaxTotalCapacityOversubscriptionRatio"

THIN_KINDS = frozenset({"LVM_THIN", "ZFS_THIN", "FILE_THIN", "STORAGE_SPACES_THIN"})  # StorPool.java
THIN_DEFAULT_RATIO = 20.0  # LinStor.OVERSUBSCRIPTION_RATIO_DEFAULT
THICK_DEFAULT_RATIO = 1.0

class Props(Protocol):
    """A mapping of props, or anything read like one (``compact.RatioProps``)."""

    def get(self, key: str, default: None = None, /) -> str | None: ...


NO_PROPS: Mapping[str, str] = MappingProxyType({})


def _prop(key: str, levels: tuple[Props, ...]) -> float | None:
    """The first level that sets ``key`` wins (LINSTOR's ``PriorityProps``). A value that is not a
    number makes LINSTOR refuse the placement with an error; here it is skipped (the next level, or
    the default, answers), the extender must not stop judging over one bad property."""
    for props in levels:
        raw = props.get(key)
        if raw is not None:
            try:
                return float(raw)
            except ValueError:
                continue
    return None


def ratios(provider_kind: str, pool_props: Props = NO_PROPS, definition_props: Props = NO_PROPS,
           controller_props: Props = NO_PROPS) -> tuple[float, float]:
    """(free ratio, total ratio) of a pool, as LINSTOR looks them up."""
    levels = (pool_props, definition_props, controller_props)
    default = THIN_DEFAULT_RATIO if provider_kind.upper() in THIN_KINDS else THICK_DEFAULT_RATIO
    common = _prop(MAX_RATIO, levels)
    common = default if common is None else common
    free = _prop(MAX_FREE_RATIO, levels)
    total = _prop(MAX_TOTAL_RATIO, levels)
    return (common if free is None else free), (common if total is None else total)


def admissible_kib(free_kib: int | None, total_kib: int | None, reserved_kib: int,
                   free_ratio: float, total_ratio: float) -> int | None:
    """The largest volume (KiB) LINSTOR would admit on the pool now; None when it cannot tell (free or
    total capacity unknown: LINSTOR then allows the volume). Java's ``(long) (space * ratio)``
    truncates toward zero, as ``int`` does; may be negative (reserved beyond the total term)."""
    if free_kib is None or total_kib is None:
        return None
    return min(int(free_kib * free_ratio), int(total_kib * total_ratio) - reserved_kib)
