"""LVM tags -> LINSTOR storage pools -> StorageClasses (``sync-node``, ``sync-classes``): its public face.

The layers above (``locality``'s affinity-sync, ``devkit``'s story, ``bench``) import these names from
the package itself, never from its modules (tests/test_structure.py); each is loaded from its module
on first use (``linstor_scheduler.face``).

- sync-node: ``NodeAgent``, and one node's LVM as it reads it (``LvmInventory``, ``VolumeGroup``,
  ``LogicalVolume``);
- sync-classes: ``ClassReconciler``; its Lease-held worker's readiness (``leader_view``) and elector
  (``classes_elector``), which affinity-sync shares.
"""

from typing import TYPE_CHECKING

from linstor_scheduler.face import face

if TYPE_CHECKING:
    from .agent import NodeAgent
    from .class_sync import ClassReconciler, leader_view
    from .lvm import LogicalVolume, LvmInventory, VolumeGroup
    from .wiring import classes_elector

__getattr__, __dir__, __all__ = face(__name__, __file__)
