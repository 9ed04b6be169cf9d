"""The one Kubernetes access layer: API client construction, list+watch caches, Events, Leases.

Names are imported on first use: the ``kubernetes`` package takes ~1.5 s to import, which every
``linstor-scheduler --help`` would otherwise pay.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"add_kube_options": "client", "api_client_from_args": "client", "make_api_client": "client",
          "EventRecorder": "events",
          "KubeCalls": "calls", "KubeCollector": "metrics", "KINDS": "informer", "Informer": "informer",
          "KubeCaches": "informer"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
