"""Look-ups of PVCs, PVs and StorageClasses for one review: from the informer caches while they are
fresh, read from the API server when they are not, and never a guess.

- A kind whose cache the API server confirmed within ``max_staleness`` (``--max-staleness``) is
  answered from the cache. A PVC it lacks costs one direct read: a StatefulSet controller creates a
  pod's PVC a moment before the pod, and our watch may lag that by a few milliseconds.
- A kind whose cache is older than that (a hung or restarting API server, silent watches, a cache
  never listed) is read directly for every look-up: the answer is then as fresh as the read.
- The direct reads of one review share one deadline (``read_timeout``, ``--pvc-read-timeout``),
  so the review is answered well within the API server's ``timeoutSeconds``. A read that gets no
  answer in time, or an error status (429, 5xx), raises ``LookupFailed``: the mutator then does
  not say "no LINSTOR volume" for a claim it could not look at (review.py), and the API server
  applies the webhook's failurePolicy. Only a 404 means "not there".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from linstor_scheduler.claims import TRANSFORMS as CLAIM_TRANSFORMS
from linstor_scheduler.claims import ClaimRecord, VolumeRecord, as_claim, as_volume
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube.informer import KubeCaches
from linstor_scheduler.volumes import Obj, StorageClassInfo

from .review import LookupFailed, Lookups, is_default_class

log = logging.getLogger(__name__)

WEBHOOK_KINDS = ("PersistentVolumeClaim", "PersistentVolume", "StorageClass")
# The caches keep claims and volumes as records (a PVC + PV pair as the API server sends them was
# ~18 KB as dicts, ~0.6 KB as records); StorageClasses whole (few; the default-class annotations).
WEBHOOK_TRANSFORMS = dict(CLAIM_TRANSFORMS)
MISS, STALE = "miss", "stale"  # why a direct read was made (the metric's ``reason``)
OnRead = Callable[[str, str], None]  # (reason, outcome: found | not_found | error)


class KubeLookups:
    """The webhook's look-ups: ``for_review()`` gives one review its own deadline and memory."""

    def __init__(self, caches: KubeCaches, api_client: k8s.ApiClient | None, *, read_timeout: float = 1.0,
                 max_staleness: float = 60.0, on_direct_read: OnRead | None = None) -> None:
        self.caches = caches
        self.core = k8s.CoreV1Api(api_client) if api_client is not None else None
        self.storage = k8s.StorageV1Api(api_client) if api_client is not None else None
        self.read_timeout = read_timeout
        self.max_staleness = max_staleness
        self.on_direct_read = on_direct_read

    def fresh(self, kind: str) -> bool:
        """Whether the API server confirmed this kind's cache within the bound."""
        age = self.caches[kind].age()
        return age is not None and age <= self.max_staleness

    def for_review(self) -> Lookups:
        return _Review(self, boottime() + self.read_timeout).lookups()


class _Review:
    """The look-ups of one review: one deadline for its direct reads, each object read at most once."""

    def __init__(self, source: KubeLookups, deadline: float) -> None:
        self.source = source
        self.deadline = deadline
        self.read: dict[tuple[str, str], Any] = {}  # (kind, key) -> object, None, or the LookupFailed

    def lookups(self) -> Lookups:
        return Lookups(self.get_pvc, self.get_pv, self.get_sc, self.default_class)

    def get_pvc(self, key: str) -> ClaimRecord | None:
        namespace, _, name = key.partition("/")
        kind = "PersistentVolumeClaim"
        if self.source.fresh(kind):
            cached = as_claim(self.source.caches[kind].get(name, namespace))
            if cached is not None:
                return cached
            return as_claim(self._direct(kind, key, MISS))
        return as_claim(self._direct(kind, key, STALE))

    def get_pv(self, name: str) -> VolumeRecord | None:
        kind = "PersistentVolume"
        if self.source.fresh(kind):
            return as_volume(self.source.caches[kind].get(name))
        return as_volume(self._direct(kind, name, STALE))

    def get_sc(self, name: str) -> StorageClassInfo | None:
        kind = "StorageClass"
        obj = self.source.caches[kind].get(name) if self.source.fresh(kind) else self._direct(kind, name, STALE)
        return StorageClassInfo.from_object(obj) if obj else None

    def default_class(self) -> str | None:
        kind = "StorageClass"
        if self.source.fresh(kind):
            return newest_default(self.source.caches[kind].items())
        return newest_default(self._direct(kind, "", STALE) or [])

    def _direct(self, kind: str, key: str, reason: str) -> Any:
        """One read of ``kind`` ``key`` ("": the list) within what is left of the review's deadline."""
        if (kind, key) in self.read:
            found = self.read[(kind, key)]
            if isinstance(found, LookupFailed):
                raise found
            return found
        what = f"{kind} {key}" if key else f"the {kind} list"
        try:
            doc = self._fetch(kind, key, what)
            outcome = "found" if doc is not None else "not_found"
        except LookupFailed as exc:
            self.read[(kind, key)] = exc
            self._count(reason, "error")
            log.warning("direct read of %s (%s): %s", what, "cache stale" if reason == STALE else "not cached", exc)
            raise
        self.read[(kind, key)] = doc
        self._count(reason, outcome)
        return doc

    def _fetch(self, kind: str, key: str, what: str) -> Any:
        left = self.deadline - boottime()
        if self.source.core is None or self.source.storage is None:
            raise LookupFailed(f"{what}: no API client")
        if left <= 0:
            raise LookupFailed(f"{what}: no time left in this review's {self.source.read_timeout:g}s for a read")
        call = self._call(kind, key)
        try:
            resp = call(_preload_content=False, _request_timeout=(left, left))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise LookupFailed(f"{what}: API error {exc.status} {exc.reason}") from None
        except Exception as exc:  # no answer in time, refused, reset
            raise LookupFailed(f"{what}: {type(exc).__name__}: {exc}") from None
        doc = orjson.loads(resp.data)
        return (doc.get("items") or []) if not key else doc

    def _call(self, kind: str, key: str) -> Callable[..., Any]:
        core, storage = self.source.core, self.source.storage
        assert core is not None and storage is not None
        if kind == "PersistentVolumeClaim":
            namespace, _, name = key.partition("/")
            return lambda **kw: core.read_namespaced_persistent_volume_claim(name, namespace, **kw)
        if kind == "PersistentVolume":
            return lambda **kw: core.read_persistent_volume(key, **kw)
        if key:
            return lambda **kw: storage.read_storage_class(key, **kw)
        return storage.list_storage_class

    def _count(self, reason: str, outcome: str) -> None:
        if self.source.on_direct_read:
            self.source.on_direct_read(reason, outcome)


def newest_default(classes: list[Obj]) -> str | None:
    """Like the API server's DefaultStorageClass admission: the newest default class wins."""
    defaults = sorted((o for o in classes if is_default_class(o)),
                      key=lambda o: ((o.get("metadata") or {}).get("creationTimestamp") or "",
                                     (o.get("metadata") or {}).get("name") or ""))
    return (defaults[-1].get("metadata") or {}).get("name") if defaults else None


def kube_lookups(caches: KubeCaches, api_client: k8s.ApiClient | None = None, *, read_timeout: float = 1.0,
                 max_staleness: float = 60.0, on_direct_read: OnRead | None = None) -> KubeLookups:
    return KubeLookups(caches, api_client, read_timeout=read_timeout, max_staleness=max_staleness,
                       on_direct_read=on_direct_read)
