"""LVM tags -> LINSTOR storage pools -> StorageClasses (``sync-node``, ``sync-classes``): its public face.

The layers above (``locality``'s affinity-sync, ``devkit``'s story, ``bench``) import these names from
the package itself, never from its modules (tests/test_structure.py); each is loaded from its module
on first use (``linstor_scheduler.face``).

- sync-node: ``NodeAgent``, and one node's LVM as it reads it (``LvmInventory``, ``VolumeGroup``,
  ``LogicalVolume``);
- sync-classes: ``ClassReconciler`` (its Lease-held worker's elector and readiness are the core's
  ``leader_worker``, which affinity-sync shares).
"""

from typing import TYPE_CHECKING

from linstor_scheduler.face import face

if TYPE_CHECKING:
    from .agent import NodeAgent
    from .class_sync import ClassReconciler
    from .lvm import LogicalVolume, LvmInventory, VolumeGroup

__getattr__, __dir__, __all__ = face(__name__, __file__)
