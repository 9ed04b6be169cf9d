"""The one Kubernetes access layer: API client construction, list+watch caches, Events."""

from .client import add_kube_options, api_client_from_args, make_api_client
from .events import EventRecorder
from .informer import KINDS, Informer, KubeCaches

__all__ = ["KINDS", "EventRecorder", "Informer", "KubeCaches", "add_kube_options", "api_client_from_args",
           "make_api_client"]
