"""linstor-scheduler: place pods next to their LINSTOR/DRBD data, sync storage pools, fence lost nodes.

This package is the shared core: the one CLI (``cli``, which finds the components' subcommands
through entry points), flags with env vars (``config``), logging (``logs``), the runtime every
service shares (``runtime``: signals, health port, Lease, graceful shutdown; ``health``: the side
port's app; ``httpserver``: uvicorn settings and threads; ``allocator``: glibc malloc settings of
the HTTP services), the one LINSTOR client (``linstor``), the one Kubernetes access layer
(``kube``), the pod -> volume resolution (``volumes``) and the snapshot format with its capture
(``snapshot``, ``capture``). It imports no component. The components sit on it
(``scheduler_extender``, ``storage_sync``, ``fencing``, ``admission``), the tools on them
(``locality``), which see each component only through its face (``face``); the test doubles and the
demo in ``devkit``, which the product never imports. docs/architecture.md draws the picture;
tests/test_structure.py holds it to it.
"""

__version__ = "0.1.0"
