"""Informer-style list+watch caches of raw Kubernetes objects (the JSON form, as dicts).

Like client-go's reflector (k8s.io/client-go/tools/cache/reflector.go, ``ListAndWatch``,
``watchHandler``): list in pages, then watch from the list's resourceVersion; a watch the server
ends at its ``timeoutSeconds`` resumes from the last resourceVersion (no relist); an ERROR event
with code 410 (the version was compacted away: after an API server restart, an etcd compaction,
a quiet kind whose version fell behind) or a 410 on a list's continue token relists; other errors
back off (capped, jittered) and resume.

We read the watch stream ourselves instead of through ``kubernetes.watch.Watch``: with
``deserialize=False`` (we keep dicts, the models are slow) its ERROR branch reads
``event['raw_object']``, which it only sets when it deserializes (kubernetes/watch/watch.py,
``Watch.stream``, kubernetes 36-37), so every 410 became a ``KeyError`` and the informer resumed
from the same expired version for ever, blind, while it looked merely "retrying".

Freshness is what the server confirmed, not what we last heard: ``confirmed_at`` moves when a list
completes, an event or a bookmark arrives, or the server ends a watch at its timeout (it had
nothing more to say up to then). An open but silent stream confirms nothing, so the age grows;
the read deadline (``watch_timeout`` + ``read_slack``) ends a watch whose server went quiet past
its own timeout (a half-open connection, a hung backend) and starts another. ``beat`` moves
whenever the loop does anything at all: liveness (``/healthz``) is "the loop still turns",
readiness (``/readyz``) is "the view is fresh". Both on ``CLOCK_BOOTTIME`` (linstor_scheduler.clock).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube import objects
from linstor_scheduler.kube.client import retry_after_seconds

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
    "Lease": (k8s.CoordinationV1Api, "list_lease_for_all_namespaces", "list_namespaced_lease"),
}

OnChange = Callable[[str, dict[str, Any]], None]
CONNECT_TIMEOUT = 10.0
# Items per list page for a component that keeps records (a transform): a page's objects, decoded to
# dicts before they become records, are the lists' transient peak (500 bound PVCs with their
# managedFields are ~9 MB as dicts, 500 pods ~15 MB), and what the allocator keeps of it afterwards.
# Measured (bench/locality_bench.py, 20,000 pods): 500 -> 100 took the exporter from 133.8 to
# 124.4 MiB. More requests per list (a cheap page each from the API server's watch cache).
RECORD_PAGE_SIZE = 100


def object_key(obj: dict[str, Any]) -> str:
    """The stores' key: ``namespace/name``, a cluster-scoped object's bare name."""
    return objects.key(obj, default_namespace=None)


class Expired(Exception):
    """The server no longer has the version we resume from (HTTP 410 / an ERROR event with code 410)."""


def _lines(resp: Any) -> Iterator[bytes]:
    """The stream's lines as they arrive (one JSON watch event each). A read that waits past the
    response's read timeout raises (urllib3 ``ReadTimeoutError``): the caller restarts the watch."""
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


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
        watch_timeout: float = 60.0,
        read_slack: float = 10.0,
        list_timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        page_size: int = 500,
    ) -> None:
        """``transform`` turns each object into what the store keeps (None: skip it): a component that
        needs a few fields of 100,000 pods keeps those, not the objects. ``on_change`` still sees the object,
        but only when what is kept changed: a MODIFIED whose record equals the stored one keeps that
        record (the same object) and tells no one.

        ``watch_timeout``: the server ends each watch after this long (``timeoutSeconds``), which
        confirms a quiet view; a component sets it to a fraction of the staleness it tolerates.
        ``read_slack``: how long past that the stream may stay silent before we call it dead.
        ``list_timeout``: the read deadline of one list page."""
        if kind not in KINDS:
            raise ValueError(f"no informer for kind {kind!r}; known: {', '.join(KINDS)}")
        api_cls, cluster_fn, ns_fn = KINDS[kind]
        api = api_cls(api_client)
        if namespace and ns_fn:
            fn = getattr(api, ns_fn)
            self._list_fn: Callable[..., Any] = lambda **kw: fn(namespace, **kw)
        else:
            self._list_fn = getattr(api, cluster_fn)
        self.kind = kind
        self.selectors = {k: v for k, v in (("label_selector", label_selector), ("field_selector", field_selector))
                          if v}
        self.on_change = on_change
        self.watch_timeout = max(1.0, float(watch_timeout))
        self.read_slack = read_slack
        self.list_timeout = list_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.transform = transform
        self.page_size = page_size  # items per list page (0: one page); client-go's reflector uses 500
        self._store: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resp: Any = None  # the open watch or list response, shut down by stop()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        self.generation = 0
        self.confirmed_at: float | None = None  # boottime() when the server last confirmed the view
        self.beat = boottime()  # boottime() when the loop last did anything (liveness)
        self.healthy = False  # listed and watching without error
        self.error: str | None = None  # why the view is not being kept up to date, while it is not
        self.failing_since: float | None = None  # boottime() of the first failure in a row
        self.resource_version: str | None = None
        self.lists = 0
        self.relists: Counter[str] = Counter()  # reason -> count: start, expired, error
        # watch restarts by reason: timeout, silent, error, early (ended cleanly before its timeout)
        self.restarts: Counter[str] = Counter()

    # --- reading -------------------------------------------------------------------------------
    def items(self) -> list[Any]:
        with self._lock:
            return list(self._store.values())

    def snapshot(self) -> dict[str, Any]:
        """The store as it is now, keyed as ``object_key`` keys objects (``ns/name`` or ``name``): a
        copy of the dict (its keys and values shared), made in C, for a view built at every change."""
        with self._lock:
            return dict(self._store)

    def get(self, name: str, namespace: str | None = None) -> Any:
        with self._lock:
            return self._store.get(objects.key_of(namespace, name, default_namespace=None))

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the server last confirmed this view; None before the first list."""
        if self.confirmed_at is None:
            return None
        return max(0.0, (boottime() if now is None else now) - self.confirmed_at)

    @property
    def liveness_bound(self) -> float:
        """The longest the loop can go without a beat while it works: the longest back-off, then a
        connection, then the longer of a watch's read deadline and a list page's, with a margin.
        Past it, the loop is stuck."""
        return (self.backoff_cap + CONNECT_TIMEOUT + max(self.watch_timeout + self.read_slack, self.list_timeout)
                + 30.0)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop promptly: shut the open stream's socket, again if a new one opened meanwhile, until the
        thread ends."""
        self._stop.set()
        deadline = boottime() + timeout
        while True:
            _shutdown(self._resp)
            if self._thread is None or not self._thread.is_alive() or boottime() > deadline:
                return
            self._thread.join(0.05)

    # --- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        need_list = "start"
        while not self._stop.is_set():
            self.beat = boottime()
            try:
                if need_list:
                    self.relists[need_list] += 1
                    self._relist()
                    need_list = ""
                self._watch_once()
                failures = 0
            except Expired as exc:
                if self._stop.is_set():
                    return
                log.info("%s informer: %s; relisting", self.kind, exc)
                need_list = "expired"
            except ApiException as exc:
                if self._stop.is_set():
                    return
                if exc.status == 410 and not need_list:
                    # A watch refused with HTTP 410 (not an ERROR event) is as expired as the event:
                    # resuming from the same version would get the same answer for ever. client-go's
                    # reflector relists on every watch error but 429 and connection refused
                    # (reflector.go ``isWatchErrorRetriable``), a 410 above all (``isExpiredError``).
                    # Backed off all the same: a server that answers every watch so must not get a list
                    # per loop.
                    need_list = "expired"
                elif exc.status == 504 and "too large resource version" in str(exc).lower():
                    # The cacher's answer to a version it has not reached: after an etcd restore, or
                    # from an HA API server that lags (apiserver cacher ``NewTooLargeResourceVersionError``,
                    # "Too large resource version"). Resuming would miss every change up to it: relist.
                    need_list = need_list or "expired"
                failures += 1
                self._failed(f"API error {exc.status}: {exc.reason}", failures, retry_after(exc))
                if exc.status in (401, 403, 404):
                    need_list = need_list or "error"
            except Exception as exc:  # connection refused, reset, read deadline, bad JSON
                if self._stop.is_set():
                    return
                failures += 1
                self._failed(f"{type(exc).__name__}: {exc}", failures)

    def _failed(self, reason: str, failures: int, at_least: float = 0.0) -> None:
        """Back off (doubling, capped, jittered), and at least ``at_least`` seconds: the server's
        ``Retry-After`` of a 429, as client-go's ``WithRetry`` honours it (a throttled server asked
        for that pause; coming back sooner only adds to the load it is shedding)."""
        self.error = reason
        self.healthy = False
        now = boottime()
        if self.failing_since is None:
            self.failing_since = now
        self.restarts["error"] += 1
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1)) * (0.5 + random.random() / 2)
        delay = max(delay, min(at_least, self.backoff_cap))
        age = self.age(now)
        log.warning("%s informer: %s; retrying in %.1fs (view confirmed %s)", self.kind, reason, delay,
                    "never" if age is None else f"{age:.0f}s ago")
        self._stop.wait(delay)

    def _relist(self) -> None:
        """List in pages of ``page_size`` (as client-go's reflector does), so the whole list is never one
        JSON document in memory; with a ``transform`` only what is kept accumulates. The callback hears
        of each change after the swap, with the stored value (the object, or what ``transform`` kept).
        A continue token that expired (410, after a compaction) restarts the list from the top: a list
        whose pages come from two snapshots is not one state."""
        started = boottime()
        with self._lock:
            old = self._store
        kept: dict[str, Any] = {}
        token: str | None = None
        resource_version = None
        while True:
            paging: dict[str, Any] = {"limit": self.page_size} if self.page_size else {}
            if token:
                paging["_continue"] = token
            try:
                resp = self._list_fn(_preload_content=False, _request_timeout=(CONNECT_TIMEOUT, self.list_timeout),
                                     **self.selectors, **paging)
            except ApiException as exc:
                if exc.status == 410 and token:
                    log.info("%s informer: the list's continue token expired (410); listing again from the top",
                             self.kind)
                    self.relists["expired"] += 1
                    kept, token, started = {}, None, boottime()
                    continue
                raise
            self._resp = resp  # stop() can shut a body that is slow to come
            try:
                if self._stop.is_set():
                    _shutdown(resp)
                doc = orjson.loads(resp.data)
            finally:
                self._resp = None
            self.beat = boottime()
            for obj in doc.get("items") or []:
                obj.setdefault("kind", self.kind)  # the API server leaves kind out of list items
                value = obj if self.transform is None else self.transform(obj)
                if value is not None:
                    kept[object_key(obj)] = value
            resource_version = objects.resource_version(doc)
            token = objects.continue_token(doc)
            del doc, resp  # one page at a time
            if not token:
                break
        changed = [("ADDED" if key not in old else "MODIFIED", key) for key, value in kept.items()
                   if key not in old or old[key] != value] if self.on_change else []
        with self._lock:
            self._store = kept
            self.generation += 1
        self.resource_version = resource_version
        self.lists += 1
        self._confirmed(started)
        self.synced.set()
        if self.on_change:
            for kind, key in changed:
                self._notify(kind, kept[key])
            for key, value in old.items():
                if key not in kept:
                    self._notify("DELETED", value)

    def _watch_once(self) -> None:
        """One watch, from ``resource_version`` until the server ends it at ``watch_timeout``. The
        read deadline is the server's own end plus ``read_slack``: a stream silent past it is dead."""
        resp = self._list_fn(
            watch=True, resource_version=self.resource_version, timeout_seconds=int(self.watch_timeout),
            allow_watch_bookmarks=True, _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, self.watch_timeout + self.read_slack), **self.selectors)
        self._resp = resp
        if self._stop.is_set():  # stop() ran between the request and now: it could not shut this one
            _shutdown(resp)
        opened = boottime()
        events = 0
        try:
            for line in _lines(resp):
                if self._stop.is_set():
                    return
                self._apply(orjson.loads(line))
                events += 1
        except Exception as exc:
            if self._stop.is_set():
                return
            if "Read timed out" in str(exc) or type(exc).__name__ in ("ReadTimeoutError", "TimeoutError"):
                self.restarts["silent"] += 1
                raise TimeoutError(f"watch silent for {boottime() - opened:.0f}s, past its "
                                   f"{self.watch_timeout:.0f}s timeout (a half-open connection or a hung "
                                   "API server)") from None
            raise
        finally:
            self._resp = None
            _close(resp)
        if self._stop.is_set():
            return
        lasted = boottime() - opened
        if lasted >= 0.9 * int(self.watch_timeout):
            self.restarts["timeout"] += 1
            self._confirmed(boottime())  # the server ended the watch at its timeout: nothing missed
            return
        # Ended early and cleanly: a server shutting down ends every watch at once, new ones included
        # (apiserver watch.go ``HandleHTTP``: ``<-s.ServerShuttingDownCh``), and so does a proxy that
        # cuts long requests. That end confirms nothing: the events since our version may be unsent.
        # Without an event at all it is an error that backs off, as client-go's "very short watch"
        # (reflector.go ``handleWatch``); otherwise we resume at once, unconfirmed.
        self.restarts["early"] += 1
        if events == 0:
            raise ConnectionError(f"watch ended after {lasted:.1f}s without any event, before its "
                                  f"{int(self.watch_timeout)}s timeout (an API server shutting down, or a "
                                  "proxy cutting the stream)")

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        if kind == "ERROR":
            code = obj.get("code") or 500
            message = obj.get("message") or obj.get("reason") or "watch error"
            if code == 410:
                raise Expired(f"watch from resourceVersion {self.resource_version} expired (410 Gone: {message})")
            raise ApiException(status=code, reason=f"{obj.get('reason')}: {message}")
        rv = objects.resource_version(obj)
        if rv:
            self.resource_version = rv
        self._confirmed(boottime())
        if kind == "BOOKMARK":
            return
        key = object_key(obj)
        kept = obj if self.transform is None or kind == "DELETED" else self.transform(obj)
        with self._lock:
            before = self._store.get(key)
            if kind == "DELETED" or kept is None:
                self._store.pop(key, None)
            elif self.transform is not None and before is not None and before == kept:
                # A change to what we do not keep (a claim's other annotations, a Node's heartbeat):
                # the stored record stays the same object and nobody is told (nothing changed for us).
                return
            else:
                self._store[key] = kept
            self.generation += 1
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._notify(kind, obj)

    def _notify(self, kind: str, obj: dict[str, Any]) -> None:
        """The component's callback; one that raises is logged and loses nothing else (the store is
        already up to date, and the next change or list is delivered as usual)."""
        if self.on_change is None:
            return
        try:
            self.on_change(kind, obj)
        except Exception:
            log.exception("%s informer: the change callback failed on %s %s", self.kind, kind,
                          object_key(obj) if isinstance(obj, dict) else obj)  # a relist tells the kept record

    def _confirmed(self, at: float) -> None:
        if self.error is not None:
            log.info("%s informer: recovered after %s", self.kind, self.error)
        self.confirmed_at = at
        self.beat = boottime()
        self.healthy = True
        self.error = None
        self.failing_since = None


def retry_after(exc: ApiException) -> float:
    """Seconds of a 429's (or 503's) ``Retry-After`` header; 0 when there is none or it is a date."""
    return (retry_after_seconds(exc) or 0.0) if exc.status in (429, 503) else 0.0


def _shutdown(resp: Any) -> None:
    """Shut a blocked read down at once: since urllib3 holds the socket, closing the response alone
    would wait for the read to return."""
    if resp is None:
        return
    try:
        import socket

        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        pass


def _close(resp: Any) -> None:
    try:
        resp.close()
        resp.release_conn()
    except Exception:
        pass


def bounded_by(max_age: float, call_timeout: float, *, floor: float = 0.1) -> dict[str, float]:
    """Informer settings for a component that must not answer from a view older than ``max_age``,
    given to ``KubeCaches`` beside ``max_age`` (which sets the watch timeout W to a third of it).

    With the defaults alone a silent watch is ended only ``read_slack`` (10 s) past its timeout, a
    hung list page after 60 s, and a retry after a long outage waits up to 30 s: a small bound
    would pass in any of them. Here the slack is a sixth of the bound (at most 10 s), the longest
    back-off a third (at most 30 s), a list page's read deadline ``call_timeout``
    (``--api-timeout``). So a half-open watch is ended half the bound after it opened (W + slack)
    and the next watch confirms the view W later: 5/6 of the bound since the last confirmation,
    still inside it; and once the API server answers again after an outage, the view is listed and
    confirmed within a third of the bound plus one list. ``floor``: the least slack and back-off cap
    (a component with a small bound may want more room than a sixth of it)."""
    return {"read_slack": min(10.0, max(floor, max_age / 6)), "backoff_cap": min(30.0, max(floor, max_age / 3)),
            "list_timeout": max(0.1, min(60.0, call_timeout))}


class KubeCaches:
    """The informers a component needs, started and judged together."""

    def __init__(self, api_client: k8s.ApiClient, kinds: Iterable[str], *, on_change: OnChange | None = None,
                 label_selectors: dict[str, str] | None = None,
                 transforms: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
                 max_age: float | None = None, **informer_kwargs: Any) -> None:
        """``label_selectors``: kind -> server-side label selector (e.g. only the pods that ask for fencing);
        ``transforms``: kind -> what to keep of each object (see ``Informer``). ``max_age``: the
        staleness the component tolerates; each watch is ended by the server every third of it, so a
        quiet kind is confirmed often enough to stay under it."""
        selectors = label_selectors or {}
        shapes = transforms or {}
        if max_age is not None and "watch_timeout" not in informer_kwargs:
            informer_kwargs["watch_timeout"] = min(300.0, max(1.0, max_age / 3))
        self.max_age = max_age
        self.informers = {kind: Informer(api_client, kind, on_change=on_change, label_selector=selectors.get(kind),
                                         transform=shapes.get(kind), **informer_kwargs) for kind in kinds}

    def __getitem__(self, kind: str) -> Informer:
        return self.informers[kind]

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Every informer told to stop first, then each waited for within one shared ``timeout``: one
        shutdown, not one per kind. An informer whose list request hangs before its answer's headers
        cannot be interrupted (urllib3 does not hand the socket out until then); waiting 5 s for each
        in turn made a shutdown against a hung API server last kinds x 5 s (fencing: 25 s, against
        its 2 s promise and past the kubelet's 30 s grace). Such a thread ends by itself at its list's
        read deadline, or with the process (daemon threads, ``runtime.exit_now``); every other
        informer ends within milliseconds (its stream's socket is shut), so 1 s is ample."""
        deadline = boottime() + timeout
        for informer in self.informers.values():
            informer._stop.set()
        for informer in self.informers.values():
            informer.stop(max(0.0, deadline - boottime()))

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    def wait_synced(self, timeout: float) -> bool:
        deadline = boottime() + timeout
        return all(i.wait_synced(max(0.0, deadline - boottime())) for i in self.informers.values())

    def age(self) -> float | None:
        """Seconds since the server last confirmed the stalest informer's view (None before every
        informer has listed once)."""
        now = boottime()
        ages = [i.age(now) for i in self.informers.values()]
        if not ages or any(a is None for a in ages):
            return None
        return max(a for a in ages if a is not None)

    def errors(self) -> dict[str, str]:
        return {k: i.error for k, i in self.informers.items() if i.error}

    def stalest(self) -> str:
        """Which informer is oldest and why, for a probe's text and a log line."""
        now = boottime()
        parts = []
        for kind, informer in self.informers.items():
            age = informer.age(now)
            seen = "never listed" if age is None else f"confirmed {age:.0f}s ago"
            parts.append(f"{kind} {seen}" + (f" ({informer.error})" if informer.error else ""))
        return "; ".join(parts)

    def readiness(self, bound: float) -> tuple[bool, str]:
        """For ``/readyz``: ready while the stalest informer's view is younger than ``bound``."""
        age = self.age()
        if age is None:
            return False, f"Kubernetes view not listed yet: {self.stalest()}"
        if age > bound:
            return False, f"Kubernetes view {age:.0f}s old (bound {bound:.0f}s): {self.stalest()}"
        return True, f"Kubernetes view {age:.0f}s old"

    def liveness(self) -> tuple[bool, str]:
        """For ``/healthz``: every informer loop still turns (it may be failing: that is readiness)."""
        stuck = self.stuck()
        return (False, "; ".join(stuck)) if stuck else (True, "informers running")

    def stuck(self) -> list[str]:
        """Informers whose loop made no progress past its bound (a hung call, a dead thread)."""
        now = boottime()
        out = []
        for kind, informer in self.informers.items():
            thread = informer._thread
            if thread is not None and not thread.is_alive() and not informer._stop.is_set():
                out.append(f"{kind} informer thread ended")
            elif now - informer.beat > informer.liveness_bound:
                out.append(f"{kind} informer loop idle for {now - informer.beat:.0f}s "
                           f"(bound {informer.liveness_bound:.0f}s)")
        return out
