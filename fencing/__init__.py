"""The fencing controller (``fencing``): its public face.

The layers above (``locality``'s drill, ``devkit``'s story) import these names from the package
itself, never from its modules (tests/test_structure.py); each is loaded from its module on first use
(``linstor_scheduler.face``).

- judging as the controller does it: LINSTOR and Kubernetes objects (``LinstorView``, its replicas
  folded by ``add_replicas`` and ``with_policies``; ``KubeObjects``, the pods labelled ``LABEL``) ->
  ``build_observed``, ``resource_states``, ``faults`` -> ``judge`` -> verdicts (``Observed``,
  ``ResourceState``, ``FENCE``, ``REFUSE``, ``WAITING``, ``NOTICES``, ``NO_QUORUM_POLICY``);
- the storm rule and its guard: ``storage_nodes``, ``lost_storage_nodes``, ``storm_sentence``,
  ``StormGuard``, ``GuardContext``, ``apply``;
- the controller with its Kubernetes reads and writes: ``FencingController``, ``Settings``,
  ``ListedKube``, ``KubeActions``.
"""

from typing import TYPE_CHECKING

from linstor_scheduler.face import face

if TYPE_CHECKING:
    from .actions import KubeActions
    from .controller import FencingController, Settings
    from .guards import GuardContext, StormGuard, apply, lost_storage_nodes, storm_sentence
    from .kubeview import ListedKube
    from .observe import (
        LABEL,
        KubeObjects,
        LinstorView,
        add_replicas,
        build_observed,
        faults,
        resource_states,
        storage_nodes,
        with_policies,
    )
    from .verdict import FENCE, NO_QUORUM_POLICY, NOTICES, REFUSE, WAITING, Observed, ResourceState, judge

__getattr__, __dir__, __all__ = face(__name__, __file__)
