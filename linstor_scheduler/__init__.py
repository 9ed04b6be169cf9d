"""linstor-scheduler: place pods next to their LINSTOR/DRBD data, sync storage pools, fence lost nodes.

This package is the shared core: the one CLI (``cli``, which finds the components' subcommands
through entry points), flags with env vars (``config``), logging (``logs``), the runtime every
service shares (``runtime``: signals, health port, Lease, graceful shutdown), the one LINSTOR
client (``linstor``), the one Kubernetes access layer (``kube``) and the pod -> volume resolution
(``volumes``). It imports no component. The components live beside it (``scheduler_extender``,
``storage_sync``, ``fencing``, ``admission``); the test doubles and the demo in ``devkit``, which
the product never imports. docs/architecture.md draws the picture.
"""

__version__ = "0.1.0"
