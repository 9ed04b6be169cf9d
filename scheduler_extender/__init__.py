"""The kube-scheduler extender (``extender``, ``explain``, ``snapshot``): its public face.

The layers above (``locality``, ``devkit``, ``bench``) import these names from the package itself,
never from its modules (tests/test_structure.py); each is loaded from its module on first use
(``linstor_scheduler.face``). The snapshot format and its capture are the core's
(``linstor_scheduler.snapshot``, ``linstor_scheduler.capture``).

- judging: ``snapshot_extender`` (an ``Extender`` over a snapshot; ``state_from_snapshot`` the state it
  judges), ``ranking`` (where it would place a pod now), ``render_explain_table`` (``explain``'s table),
  ``Weights``, ``all_node_names``;
- the state and the live sync that keeps it (the locality exporter runs one): ``ClusterState``,
  ``NodeInfo``, ``ResourceInfo``, ``ResourceIndexer`` (a snapshot's resource items into the index as
  they are read), ``EXTENDER_TRANSFORMS``, ``EXTENDER_KINDS``, ``StateHolder``, ``Syncer``;
- the service as the CLI assembles it (the demo, the benchmarks): ``create_app``, ``build_live_app``;
- the parts the benchmarks time on their own: ``Answerer``, ``ExtenderMetrics``, ``PriorityEncoder``,
  ``decode_args``, ``prepare``, ``node_class``, ``judge_many``, ``ExtenderKubeView``, ``index_resources``.
"""

from typing import TYPE_CHECKING

from linstor_scheduler.face import face

if TYPE_CHECKING:
    from .answers import Answerer
    from .codec import PriorityEncoder, decode_args
    from .explain import ranking, render_explain_table
    from .grouping import judge_many, node_class
    from .holder import StateHolder
    from .http import create_app
    from .judge import Extender
    from .metrics import ExtenderMetrics
    from .refresh import EXTENDER_KINDS, Syncer
    from .scoring import Weights, all_node_names, prepare
    from .snapshot_mode import snapshot_extender, state_from_snapshot
    from .state import (
        EXTENDER_TRANSFORMS,
        ClusterState,
        ExtenderKubeView,
        NodeInfo,
        ResourceIndexer,
        ResourceInfo,
        index_resources,
    )
    from .wiring import build_live_app

__getattr__, __dir__, __all__ = face(__name__, __file__)
