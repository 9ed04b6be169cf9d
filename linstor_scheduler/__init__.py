"""linstor-scheduler: place pods next to their LINSTOR/DRBD data, sync storage pools, fence lost nodes.

This package is the shared core (CLI, configuration, logging, metrics, the LINSTOR client, the
Kubernetes access layer and the test doubles); the components live beside it in
``scheduler_extender``, ``storage_sync`` and ``fencing``.
"""

__version__ = "0.1.0"
