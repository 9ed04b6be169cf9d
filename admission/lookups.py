"""Look-ups of PVCs, PVs and StorageClasses for one review: from the informer caches while they are
fresh, read from the API server when they are not, and never a guess.

- A kind whose cache the API server confirmed within ``max_staleness`` (``--max-staleness``) is
  answered from the cache. A PVC it lacks costs one direct read: a StatefulSet controller creates a
  pod's PVC a moment before the pod, and our watch may lag that by a few milliseconds.
- A kind whose cache is older than that (a hung or restarting API server, silent watches, a cache
  never listed) is read directly for every look-up: the answer is then as fresh as the read.
- A review is judged on the event loop from the caches (``ReviewReads``): a look-up that needs a
  direct read is noted (``NotReadYet``) instead of made. The reads the judgement needs are then made
  together, in parallel, on the webhook's own bounded executor (``--lookup-workers``; never the
  event loop's shared one, so slow reads cannot hold up a review the cache answers), each object at
  most once per review and once only (the client never retries: kube/client.py), and the
  judgement is made again with their answers (a claim's volume and class may need a second round).
  Every read of the review shares its deadline (``--review-deadline``, below the configuration's
  ``timeoutSeconds``). A read with no answer by then, or an error status (429, 5xx), is
  ``LookupFailed``: the mutator does not say "no LINSTOR volume" for a claim it could not look at
  (review.py). Only a 404 means "not there".
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from linstor_scheduler.claims import TRANSFORMS as CLAIM_TRANSFORMS
from linstor_scheduler.claims import ClaimRecord, VolumeRecord, as_claim, as_volume
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube import objects
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
    """The webhook's look-ups: ``begin(deadline)`` gives one review its reads, memory and deadline."""

    def __init__(self, caches: KubeCaches, api_client: k8s.ApiClient | None, *, read_timeout: float | None = None,
                 max_staleness: float = 60.0, on_direct_read: OnRead | None = None, workers: int = 8) -> None:
        """``read_timeout``: a cap on each direct read (None: what is left of the review's deadline)."""
        self.caches = caches
        self.core = k8s.CoreV1Api(api_client) if api_client is not None else None
        self.storage = k8s.StorageV1Api(api_client) if api_client is not None else None
        self.read_timeout = read_timeout
        self.max_staleness = max_staleness
        self.on_direct_read = on_direct_read
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The direct reads' own threads (``--lookup-workers``), made on first use."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="webhook-read")
            return self._executor

    def close(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def fresh(self, kind: str) -> bool:
        """Whether the API server confirmed this kind's cache within the bound."""
        age = self.caches[kind].age()
        return age is not None and age <= self.max_staleness

    def begin(self, deadline: float) -> ReviewReads:
        """The reads of one review that must end by ``deadline`` (``clock.now()`` seconds)."""
        return ReviewReads(self, deadline)

    def for_review(self, budget: float = 4.0) -> Lookups:
        """Look-ups that read directly where they must, one after another (no event loop: the CLI's
        ``explain``-like callers and tests); the webhook's reviews use ``begin``."""
        return ReviewReads(self, boottime() + budget, blocking=True).lookups()


class NotReadYet(LookupFailed):
    """A look-up needs a direct read that the review has not made yet (``ReviewReads.wanted``)."""


class ReviewReads:
    """The look-ups of one review: answered from the caches, or from the direct reads made so far."""

    def __init__(self, source: KubeLookups, deadline: float, *, blocking: bool = False) -> None:
        self.source = source
        self.deadline = deadline
        self.blocking = blocking  # read at once, in the caller's thread (``for_review``)
        self.read: dict[tuple[str, str], Any] = {}  # (kind, key) -> object, None, or the LookupFailed
        self.wanted: dict[tuple[str, str], str] = {}  # reads needed, not made yet -> reason

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
        """What the direct read of ``kind`` ``key`` ("": the list) answered; not made yet: noted and
        ``NotReadYet`` (``fetch`` makes it), or made at once when ``blocking``."""
        if (kind, key) in self.read:
            found = self.read[(kind, key)]
            if isinstance(found, LookupFailed):
                raise found
            return found
        if self.blocking:
            self._settle(kind, key, reason, self._read_one(kind, key, reason))
            return self._direct(kind, key, reason)
        self.wanted.setdefault((kind, key), reason)
        raise NotReadYet(f"{_what(kind, key)}: not read yet")

    async def fetch(self) -> None:
        """Make every wanted read, in parallel on the webhook's executor, and wait for them until the
        review's deadline; a read still out then is ``LookupFailed`` for this review (its thread ends
        by its own timeout, which is the same deadline)."""
        wanted, self.wanted = self.wanted, {}
        loop = asyncio.get_running_loop()
        futures = {loop.run_in_executor(self.source.executor, self._read_one, kind, key, reason): (kind, key, reason)
                   for (kind, key), reason in wanted.items()}
        left = self.deadline - boottime()
        done, pending = await asyncio.wait(futures, timeout=max(left, 0.0)) if left > 0 else (set(), set(futures))
        for future in done:
            kind, key, reason = futures[future]
            self._settle(kind, key, reason, future.result())
        for future in pending:
            kind, key, reason = futures[future]
            self._settle(kind, key, reason, LookupFailed(
                f"{_what(kind, key)}: no answer within the review's deadline"))

    def _settle(self, kind: str, key: str, reason: str, found: Any) -> None:
        self.read[(kind, key)] = found
        if isinstance(found, LookupFailed):
            log.warning("direct read of %s (%s): %s", _what(kind, key), "cache stale" if reason == STALE
                        else "not cached", found)

    def _read_one(self, kind: str, key: str, reason: str) -> Any:
        """One read (in an executor thread): the object, None (404), or the ``LookupFailed``; counted."""
        try:
            doc = self._fetch(kind, key, _what(kind, key))
        except LookupFailed as exc:
            self._count(reason, "error")
            return exc
        self._count(reason, "found" if doc is not None else "not_found")
        return doc

    def _fetch(self, kind: str, key: str, what: str) -> Any:
        left = self.deadline - boottime()
        if self.source.read_timeout is not None:
            left = min(left, self.source.read_timeout)
        if self.source.core is None or self.source.storage is None:
            raise LookupFailed(f"{what}: no API client")
        if left <= 0:
            raise LookupFailed(f"{what}: no time left in this review's deadline for a read")
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


def _what(kind: str, key: str) -> str:
    return f"{kind} {key}" if key else f"the {kind} list"


def newest_default(classes: list[Obj]) -> str | None:
    """Like the API server's DefaultStorageClass admission: the newest default class wins."""
    defaults = sorted((o for o in classes if is_default_class(o)),
                      key=lambda o: (objects.creation_timestamp(o) or "", objects.name(o, "")))
    return objects.name(defaults[-1]) if defaults else None


def kube_lookups(caches: KubeCaches, api_client: k8s.ApiClient | None = None, *, read_timeout: float | None = None,
                 max_staleness: float = 60.0, on_direct_read: OnRead | None = None, workers: int = 8) -> KubeLookups:
    return KubeLookups(caches, api_client, read_timeout=read_timeout, max_staleness=max_staleness,
                       on_direct_read=on_direct_read, workers=workers)
