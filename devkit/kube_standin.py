"""A small Kubernetes API server stand-in that the official ``kubernetes`` client talks to unchanged.

list/get/create (201)/replace/patch/delete (with uid/resourceVersion preconditions), watch with
resourceVersions (410 Gone once history is compacted), ``labelSelector`` and ``fieldSelector``,
the pod eviction subresource, and fault injection. One global resourceVersion counter, as etcd's.
Objects are plain dicts; mutations from test threads wake watchers on the server's loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client as k8s
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from devkit.base import HttpDouble, Subscriber

# plural -> (kind, apiVersion, namespaced); adding a kind is one line
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "nodes": ("Node", "v1", False),
    "pods": ("Pod", "v1", True),
    "persistentvolumeclaims": ("PersistentVolumeClaim", "v1", True),
    "persistentvolumes": ("PersistentVolume", "v1", False),
    "namespaces": ("Namespace", "v1", False),
    "events": ("Event", "v1", True),
    "storageclasses": ("StorageClass", "storage.k8s.io/v1", False),
    "volumeattachments": ("VolumeAttachment", "storage.k8s.io/v1", False),
    "csinodes": ("CSINode", "storage.k8s.io/v1", False),
    "leases": ("Lease", "coordination.k8s.io/v1", True),
    "poddisruptionbudgets": ("PodDisruptionBudget", "policy/v1", True),
    "secrets": ("Secret", "v1", True),
    "mutatingwebhookconfigurations": ("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", False),
}
KIND_TO_PLURAL = {kind: plural for plural, (kind, _, _) in RESOURCES.items()}
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, retry_after: int = 1) -> Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    headers = {"Retry-After": str(retry_after)} if code == 429 else None
    return Response(orjson.dumps(body), status_code=code, media_type="application/json", headers=headers)


def _get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def label_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """labelSelector: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``."""
    if not selector:
        return True
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", selector):
        term = term.strip()
        if not term:
            continue
        if m := re.match(r"^(\S+)\s+(in|notin)\s+\(([^)]*)\)$", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
        elif "!=" in term:
            key, value = (x.strip() for x in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (x.strip() for x in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        negate = "!=" in term
        key, value = (x.strip() for x in term.replace("==", "=").replace("!=", "=").split("=", 1))
        actual = _get_path(obj, key)
        actual = "" if actual is None else str(actual)
        if (actual == value) == negate:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patches are treated the same here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove/test (enough for labels, annotations, taints)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ValueError(f"test failed at {op['path']}")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last)
        elif isinstance(parent, list):
            if last == "-":
                parent.append(op["value"])
            elif kind == "add":
                parent.insert(int(last), op["value"])
            else:
                parent[int(last)] = op["value"]
        else:
            parent[last] = op["value"]
    return doc


@dataclass
class _Watcher(Subscriber):
    plural: str = ""
    namespace: str | None = None


@dataclass
class _Fault:
    fail: int
    status: int
    path_prefix: str
    method: str | None
    retry_after: int = 1  # the Retry-After header of an injected 429


class KubeStandin(HttpDouble):
    def __init__(self, *, history_limit: int = 10_000) -> None:
        super().__init__()
        self._objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self._history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, plural, type, obj)
        self._history_limit = history_limit
        self._oldest_rv = 0  # watches from below this get 410 Gone
        self._rv = 1
        self._fault: _Fault | None = None
        self.writes: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of every write, faulted or not
        self.app = self._build_app()

    # --- state ---------------------------------------------------------------------------------
    def _plural(self, kind: str) -> str:
        try:
            return KIND_TO_PLURAL[kind]
        except KeyError:
            raise ValueError(f"the stand-in does not serve kind {kind!r}") from None

    def _record(self, plural: str, event: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self._history.append((rv, plural, event, copy.deepcopy(obj)))
        if len(self._history) > self._history_limit:
            dropped = self._history.pop(0)
            self._oldest_rv = dropped[0]
        for w in list(self._subscribers):
            if w.plural == plural and (w.namespace is None or w.namespace == obj["metadata"].get("namespace")):
                w.put((event, copy.deepcopy(obj)))

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            plural = self._plural(obj["kind"])
            _, api_version, namespaced = RESOURCES[plural]
            stored = copy.deepcopy(obj)
            stored.setdefault("apiVersion", api_version)
            meta = stored.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if namespaced:
                meta.setdefault("namespace", "default")
            else:
                meta.pop("namespace", None)
            key = (plural, meta.get("namespace"), meta["name"])
            if key in self._objects:
                raise KeyError(f'{plural} "{meta["name"]}" already exists')
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = self._next_rv()
            self._objects[key] = stored
            self._record(plural, "ADDED", stored)
            return copy.deepcopy(stored)

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            plural = self._plural(obj["kind"])
            meta = obj["metadata"]
            key = (plural, meta.get("namespace") if RESOURCES[plural][2] else None, meta["name"])
            old = self._objects[key]
            stored = copy.deepcopy(obj)
            stored["metadata"]["uid"] = old["metadata"]["uid"]
            stored["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            stored["metadata"]["resourceVersion"] = self._next_rv()
            stored.setdefault("apiVersion", old.get("apiVersion"))
            self._objects[key] = stored
            self._record(plural, "MODIFIED", stored)
            return copy.deepcopy(stored)

    def patch(self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        with self._lock:
            current = self.get(kind, name, namespace)
            if current is None:
                raise KeyError(f"{kind} {name} not found")
            merged = merge_patch(current, patch)
            merged["kind"] = kind
            return self.update(merged)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            plural = self._plural(kind)
            key = (plural, namespace if RESOURCES[plural][2] else None, name)
            if RESOURCES[plural][2] and namespace is None:
                key = (plural, "default", name)
            obj = self._objects.pop(key, None)
            if obj is not None:
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self._record(plural, "DELETED", obj)
            return copy.deepcopy(obj) if obj else None

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            plural = self._plural(kind)
            ns = (namespace or "default") if RESOURCES[plural][2] else None
            obj = self._objects.get((plural, ns, name))
            return copy.deepcopy(obj) if obj else None

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            plural = self._plural(kind)
            return [copy.deepcopy(o) for (p, ns, _), o in self._objects.items()
                    if p == plural and (namespace is None or ns == namespace)]

    def compact(self) -> None:
        with self._lock:
            self._history.clear()
            self._oldest_rv = self._rv

    # --- faults and accounting -----------------------------------------------------------------
    def inject(self, *, fail: int = 0, status: int = 500, path_prefix: str = "/", method: str | None = None,
               retry_after: int = 1) -> None:
        with self._lock:
            self._fault = _Fault(fail, status, path_prefix, method, retry_after)

    def reset_faults(self) -> None:
        with self._lock:
            self._fault = None



    @staticmethod
    def api_client(url: str) -> k8s.ApiClient:
        configuration = k8s.Configuration()
        configuration.host = url
        return k8s.ApiClient(configuration)

    # --- HTTP ----------------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        ks = self

        def ok(doc: Any, code: int = 200) -> Response:
            return Response(orjson.dumps(doc), status_code=code, media_type="application/json")

        async def version(_: Request) -> Response:
            return ok({"major": "1", "minor": "31", "gitVersion": "v1.31.0-standin", "platform": "linux/amd64"})

        async def handle(request: Request) -> Response:
            path = request.url.path
            method = request.method
            body = await request.body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
            with ks._lock:
                query = request.url.query
                ks.requests.append((method, path + (f"?{query}" if query else "")))
                if method != "GET":
                    try:
                        ks.writes.append((method, path, orjson.loads(body) if body else None))
                    except orjson.JSONDecodeError:
                        ks.writes.append((method, path, body))
                f = ks._fault
                if f and f.fail > 0 and path.startswith(f.path_prefix) and (f.method in (None, method)):
                    f.fail -= 1
                    return status(f.status, {429: "TooManyRequests", 404: "NotFound", 409: "Conflict",
                                             410: "Expired"}.get(f.status, "InternalError"), "injected fault",
                                  f.retry_after)
            m = PATH.match(path)
            if not m or m.group("plural") not in RESOURCES:
                return status(404, "NotFound", f"the server could not find the requested resource ({path})")
            plural, ns, name, sub = m.group("plural"), m.group("ns"), m.group("name"), m.group("sub")
            kind, api_version, namespaced = RESOURCES[plural]
            if namespaced and name is None and ns is None and method == "POST":
                return status(404, "NotFound", "create needs a namespace")
            if not namespaced:
                ns = None
            params = request.query_params
            if name is None:
                if method == "GET":
                    if params.get("watch") in ("true", "1"):
                        return await watch(request, plural, ns)
                    return list_(plural, kind, api_version, ns, params)
                if method == "POST":
                    return await create(request, plural, ns)
                return status(405, "MethodNotAllowed", f"{method} on a collection")
            if sub == "eviction" and plural == "pods" and method == "POST":
                return await evict(request, ns, name)
            with ks._lock:
                key = (plural, ns, name)
                current = ks._objects.get(key)
                if current is None and method != "POST":
                    return status(404, "NotFound", f'{plural} "{name}" not found')
                if method == "GET":
                    return ok(current)
                if method == "PUT":
                    return await replace(request, plural, kind, current)
                if method == "PATCH":
                    return await patch(request, plural, kind, current)
                if method == "DELETE":
                    return await delete(request, kind, ns, name, current)
            return status(405, "MethodNotAllowed", method)

        def list_(plural: str, kind: str, api_version: str, ns: str | None, params: Any) -> Response:
            """A list, paginated as the API server does with ``limit``/``continue``: items in key order
            (namespace, name), ``metadata.continue`` while more remain. The token carries the last key;
            unlike etcd's snapshot, later pages see changes made meanwhile (enough for our clients)."""
            with ks._lock:
                keyed = sorted(((o_ns or "", name), o) for (p, o_ns, name), o in ks._objects.items()
                               if p == plural and (ns is None or o_ns == ns)
                               and label_matches(params.get("labelSelector"), (o["metadata"].get("labels") or {}))
                               and field_matches(params.get("fieldSelector"), o))
                meta: dict[str, Any] = {"resourceVersion": str(ks._rv)}
            token = params.get("continue")
            if token:
                try:
                    after = tuple(orjson.loads(base64.urlsafe_b64decode(token)))
                except (ValueError, TypeError):
                    return status(400, "BadRequest", f"continue token {token!r} is not valid")
                keyed = [(key, o) for key, o in keyed if key > after]
            limit = int(params.get("limit") or 0)
            if 0 < limit < len(keyed):
                meta["continue"] = base64.urlsafe_b64encode(orjson.dumps(list(keyed[limit - 1][0]))).decode()
                meta["remainingItemCount"] = len(keyed) - limit
                keyed = keyed[:limit]
            return ok({"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta,
                       "items": [o for _, o in keyed]})

        async def body_of(request: Request) -> Any:
            raw = await request.body()
            return orjson.loads(raw) if raw else {}

        async def create(request: Request, plural: str, ns: str | None) -> Response:
            obj = await body_of(request)
            obj["kind"] = RESOURCES[plural][0]
            if ns:
                obj.setdefault("metadata", {})["namespace"] = ns
            try:
                return ok(ks.add(obj), 201)
            except KeyError as exc:
                return status(409, "AlreadyExists", str(exc).strip("'\""))

        async def replace(request: Request, plural: str, kind: str, current: dict[str, Any]) -> Response:
            obj = await body_of(request)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                name = current["metadata"]["name"]
                return status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object '
                              "has been modified; please apply your changes to the latest version")
            obj["kind"] = kind
            obj.setdefault("metadata", {})["namespace"] = current["metadata"].get("namespace")
            return ok(ks.update(obj))

        async def patch(request: Request, plural: str, kind: str, current: dict[str, Any]) -> Response:
            body = await body_of(request)
            # A merge or strategic merge patch that carries metadata.resourceVersion is conditional:
            # the API server answers 409 when the object changed since (optimistic concurrency, as for
            # an update; Kubernetes API concepts, "Patch operations" / "Resource versions").
            rv = ((body.get("metadata") or {}) if isinstance(body, dict) else {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                name = current["metadata"]["name"]
                return status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object '
                              "has been modified; please apply your changes to the latest version")
            try:
                merged = json_patch(current, body) if isinstance(body, list) else merge_patch(current, body)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                return status(422, "Invalid", f"patch does not apply: {exc}")
            merged["kind"] = kind
            merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return ok(ks.update(merged))

        def precondition_failed(options: dict[str, Any], current: dict[str, Any]) -> Response | None:
            pre = options.get("preconditions") or {}
            meta = current["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                return status(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}, "
                              f"UID in object meta: {meta.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                return status(409, "Conflict", "Precondition failed: resourceVersion in precondition: "
                              f"{pre['resourceVersion']}, resourceVersion in object meta: "
                              f"{meta.get('resourceVersion')}")
            return None

        async def delete(request: Request, kind: str, ns: str | None, name: str,
                         current: dict[str, Any]) -> Response:
            options = await body_of(request)
            failed = precondition_failed(options if isinstance(options, dict) else {}, current)
            if failed:
                return failed
            return ok(ks.delete(kind, name, ns))

        async def evict(request: Request, ns: str | None, name: str) -> Response:
            body = await body_of(request)
            with ks._lock:
                current = ks._objects.get(("pods", ns, name))
                if current is None:
                    return status(404, "NotFound", f'pods "{name}" not found')
                failed = precondition_failed(body.get("deleteOptions") or {}, current)
                if failed:
                    return failed
                ks.delete("Pod", name, ns)
            return ok({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

        async def watch(request: Request, plural: str, ns: str | None) -> Response:
            params = request.query_params
            since = int(params.get("resourceVersion") or 0)
            timeout = float(params.get("timeoutSeconds") or 1800)
            labels, fields = params.get("labelSelector"), params.get("fieldSelector")
            watcher = _Watcher(asyncio.get_running_loop(), plural=plural, namespace=ns)
            with ks._lock:
                expired = since and since < ks._oldest_rv
                backlog = [] if expired else [(e, o) for rv, p, e, o in ks._history
                                              if p == plural and rv > since
                                              and (ns is None or o["metadata"].get("namespace") == ns)]
                ks._subscribers.append(watcher)

            def line(event: str, obj: dict[str, Any]) -> bytes:
                return orjson.dumps({"type": event, "object": obj}) + b"\n"

            def wanted(obj: dict[str, Any]) -> bool:
                return label_matches(labels, obj["metadata"].get("labels") or {}) and field_matches(fields, obj)

            async def stream() -> AsyncIterator[bytes]:
                deadline = watcher.loop.time() + timeout
                try:
                    if expired:
                        yield line("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                             "status": "Failure", "reason": "Expired", "code": 410,
                                             "message": f"too old resource version: {since} ({ks._oldest_rv})"})
                        return
                    for event, obj in backlog:
                        if wanted(obj):
                            yield line(event, obj)
                    while not ks._closing:
                        remaining = deadline - watcher.loop.time()
                        if remaining <= 0:
                            return
                        with contextlib.suppress(TimeoutError):
                            item = await asyncio.wait_for(watcher.queue.get(), timeout=min(remaining, 0.5))
                            if item is None:
                                return
                            if wanted(item[1]):
                                yield line(*item)
                finally:
                    with ks._lock:
                        if watcher in ks._subscribers:
                            ks._subscribers.remove(watcher)

            return StreamingResponse(stream(), media_type="application/json")

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            ks._closing = False
            yield
            ks._closing = True  # open watches end, so the server can stop

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/version", version), Route("/{path:path}", handle, methods=methods)],
                         lifespan=lifespan)
