"""Informer-style list+watch caches of raw Kubernetes objects (the JSON form, as dicts).

Like client-go's informers: list once, then watch from the list's resourceVersion; a watch that
times out resumes from the last resourceVersion (no relist); 410 Gone relists; other errors back
off (capped, jittered) and resume. Objects stay dicts: the official client's model deserialisation
is slow and we read only a few fields. One daemon thread per informer; ``stop()`` is prompt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

# kind -> (API class, cluster-wide list function, namespaced list function or None)
KINDS: dict[str, tuple[type, str, str | None]] = {
    "Node": (k8s.CoreV1Api, "list_node", None),
    "Pod": (k8s.CoreV1Api, "list_pod_for_all_namespaces", "list_namespaced_pod"),
    "PersistentVolumeClaim": (k8s.CoreV1Api, "list_persistent_volume_claim_for_all_namespaces",
                              "list_namespaced_persistent_volume_claim"),
    "PersistentVolume": (k8s.CoreV1Api, "list_persistent_volume", None),
    "StorageClass": (k8s.StorageV1Api, "list_storage_class", None),
    "VolumeAttachment": (k8s.StorageV1Api, "list_volume_attachment", None),
}

OnChange = Callable[[str, dict[str, Any]], None]


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class Informer:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_change: OnChange | None = None,
        watch_timeout: int = 300,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        page_size: int = 500,
    ) -> None:
        """``transform`` turns each object into what the store keeps (None: skip it): a component that
        needs a few fields of 100,000 pods keeps those, not the objects. ``on_change`` still sees the object."""
        if kind not in KINDS:
            raise ValueError(f"no informer for kind {kind!r}; known: {', '.join(KINDS)}")
        api_cls, cluster_fn, ns_fn = KINDS[kind]
        api = api_cls(api_client)
        if namespace and ns_fn:
            fn = getattr(api, ns_fn)
            self._list_fn: Callable[..., Any] = lambda **kw: fn(namespace, **kw)
            self._list_fn.__doc__ = fn.__doc__
        else:
            self._list_fn = getattr(api, cluster_fn)
        self._api_client = api_client
        self.kind = kind
        self.selectors = {k: v for k, v in (("label_selector", label_selector), ("field_selector", field_selector))
                          if v}
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.transform = transform
        self.page_size = page_size  # items per list page (0: one page); client-go's reflector uses 500
        self._store: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        self.generation = 0
        self.last_success: float | None = None
        self.healthy = False  # listed and watching without error: a quiet watch is not a stale one
        self.error: str | None = None
        self.resource_version: str | None = None
        self.lists = 0

    # --- reading -------------------------------------------------------------------------------
    def items(self) -> list[Any]:
        with self._lock:
            return list(self._store.values())

    def get(self, name: str, namespace: str | None = None) -> Any:
        with self._lock:
            return self._store.get(f"{namespace}/{name}" if namespace else name)

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop promptly: interrupt the watch, again if a new one started meanwhile, until the thread ends."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while True:
            watch = self._watch
            if watch is not None:
                # Since kubernetes 36.0.0 (pyproject's minimum) Watch.stop() shuts the stream's socket
                # down, so a read blocked on a quiet watch returns at once instead of at its timeout.
                watch.stop()
            if self._thread is None or not self._thread.is_alive() or time.monotonic() > deadline:
                return
            self._thread.join(0.05)

    # --- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                self._watch_once()
                failures = 0
            except ApiException as exc:
                if self._stop.is_set():
                    return
                if exc.status == 410:
                    log.info("%s watch: resourceVersion %s expired (410 Gone); relisting", self.kind,
                             self.resource_version)
                    need_list = True
                    continue
                failures += 1
                self._failed(f"API error {exc.status}: {exc.reason}", failures)
                need_list = need_list or exc.status in (401, 403, 404)
            except Exception as exc:  # connection refused, reset, timeouts, bad JSON
                if self._stop.is_set():
                    return
                failures += 1
                self._failed(f"{type(exc).__name__}: {exc}", failures)

    def _failed(self, reason: str, failures: int) -> None:
        self.error = reason
        self.healthy = False
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1)) * (0.5 + random.random() / 2)
        log.warning("%s informer: %s; retrying in %.1fs", self.kind, reason, delay)
        self._stop.wait(delay)

    def _relist(self) -> None:
        """List in pages of ``page_size`` (as client-go's reflector does), so the whole list is never one
        JSON document in memory; with a ``transform`` only what is kept accumulates. The callback hears
        of each change after the swap, with the stored value (the object, or what ``transform`` kept)."""
        with self._lock:
            old = self._store
        kept: dict[str, Any] = {}
        changed: list[tuple[str, str]] = []
        token: str | None = None
        resource_version = None
        while True:
            paging: dict[str, Any] = {"limit": self.page_size} if self.page_size else {}
            if token:
                paging["_continue"] = token
            resp = self._list_fn(_preload_content=False, **self.selectors, **paging)
            doc = orjson.loads(resp.data)
            meta = doc.get("metadata") or {}
            for obj in doc.get("items") or []:
                obj.setdefault("kind", self.kind)  # the API server leaves kind out of list items
                key = object_key(obj)
                value = obj if self.transform is None else self.transform(obj)
                if value is None:
                    continue
                kept[key] = value
                if self.on_change and (key not in old or old[key] != value):
                    changed.append(("ADDED" if key not in old else "MODIFIED", key))
            resource_version = meta.get("resourceVersion")
            token = meta.get("continue")
            del doc, resp  # one page at a time
            if not token:
                break
        with self._lock:
            self._store = kept
            self.generation += 1
        self.resource_version = resource_version
        self.lists += 1
        self._ok()
        self.synced.set()
        if self.on_change:
            for kind, key in changed:
                self.on_change(kind, kept[key])
            for key, value in old.items():
                if key not in kept:
                    self.on_change("DELETED", value)

    def _watch_once(self) -> None:
        self._watch = k8s_watch.Watch()
        stream = self._watch.stream(
            self._list_fn, resource_version=self.resource_version, timeout_seconds=self.watch_timeout,
            allow_watch_bookmarks=True, deserialize=False, **self.selectors,
            # a dead connection (no RST) is noticed when the read times out past the server's own end
            _request_timeout=(10, self.watch_timeout + 30),
        )
        for event in stream:
            if self._stop.is_set():
                return
            self._apply(event)
        self._ok()  # the server ended the watch at its timeout: resume from the last version

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("raw_object") or event.get("object")
        if isinstance(obj, str | bytes):
            obj = orjson.loads(obj)
        if not isinstance(obj, dict):
            return
        if kind == "ERROR":
            raise ApiException(status=obj.get("code") or 500, reason=obj.get("reason") or obj.get("message"))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        self._ok()
        if kind == "BOOKMARK":
            return
        key = object_key(obj)
        kept = obj if self.transform is None or kind == "DELETED" else self.transform(obj)
        with self._lock:
            if kind == "DELETED" or kept is None:
                self._store.pop(key, None)
            else:
                self._store[key] = kept
            self.generation += 1
        if self.on_change and kind in ("ADDED", "MODIFIED", "DELETED"):
            self.on_change(kind, obj)

    def _ok(self) -> None:
        self.last_success = time.monotonic()
        self.healthy = True
        self.error = None


class KubeCaches:
    """The informers a component needs, started and judged together."""

    def __init__(self, api_client: k8s.ApiClient, kinds: Iterable[str], *, on_change: OnChange | None = None,
                 label_selectors: dict[str, str] | None = None,
                 transforms: dict[str, Callable[[dict[str, Any]], Any]] | None = None, **informer_kwargs: Any) -> None:
        """``label_selectors``: kind -> server-side label selector (e.g. only the pods that ask for fencing);
        ``transforms``: kind -> what to keep of each object (see ``Informer``)."""
        selectors = label_selectors or {}
        shapes = transforms or {}
        self.informers = {kind: Informer(api_client, kind, on_change=on_change, label_selector=selectors.get(kind),
                                         transform=shapes.get(kind), **informer_kwargs) for kind in kinds}

    def __getitem__(self, kind: str) -> Informer:
        return self.informers[kind]

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    def stop(self) -> None:
        """Every informer told to stop first, then each waited for: one shutdown, not one per kind."""
        for informer in self.informers.values():
            informer._stop.set()
        for informer in self.informers.values():
            informer.stop()

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(i.wait_synced(max(0.0, deadline - time.monotonic())) for i in self.informers.values())

    def age(self) -> float | None:
        """0 while every informer is listed and watching; else seconds since the failing one last
        succeeded (None before every informer has listed once)."""
        now = time.monotonic()
        ages = []
        for informer in self.informers.values():
            if informer.last_success is None:
                return None
            ages.append(0.0 if informer.healthy else now - informer.last_success)
        return max(ages, default=None)

    def errors(self) -> dict[str, str]:
        return {k: i.error for k, i in self.informers.items() if i.error}
