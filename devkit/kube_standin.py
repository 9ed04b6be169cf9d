"""A small Kubernetes API server stand-in that the official ``kubernetes`` client talks to unchanged.

list/get/create (201)/replace/patch/delete (with uid/resourceVersion preconditions), watch with
resourceVersions (410 Gone once history is compacted), ``labelSelector`` and ``fieldSelector``,
the pod eviction subresource, and fault injection. One global resourceVersion counter, as etcd's.
Objects are plain dicts; mutations from test threads wake watchers on the server's loop.

The API server's bad days, each as the real one behaves (sources: the Kubernetes "API Concepts"
page, kubernetes.io/docs/reference/using-api/api-concepts/, and k8s.io/apiserver, cited as
``apiserver:<path>``):

- ``restart()`` / ``down()`` + ``up()``: open watches end at once (watch.go ``serveWatch`` returns
  on ``ServerShuttingDownCh``); while down every request is answered 503 ServiceUnavailable
  "apiserver is shutting down" with ``Retry-After: 1`` (apiserver:pkg/server/filters/waitgroup.go
  ``waitGroupWriteRetryAfterToResponse``, the default without ``--shutdown-send-retry-after``).
  The new process's watch caches start from a fresh list at the current resourceVersion, so a
  watch resumed from an older one gets the cacher's 410: HTTP 200, then one ERROR event, Status
  reason ``Expired``, "too old resource version: X (Y)" (apiserver:pkg/storage/cacher/
  watch_cache_history.go ``GetIntervalLocked``; "Efficient detection of changes").
- ``compact(kinds=None, at=None)``: etcd compaction (``--etcd-compaction-interval``, default 5m,
  apiserver:pkg/storage/storagebackend/config.go ``DefaultCompactInterval``), of every kind or of
  some: a quiet kind's informer holds a resourceVersion older than the compaction point and gets
  410 on its next watch although other kinds moved on ("Resource versions": 410 Gone).
- continue tokens carry the list's resourceVersion (apiserver:pkg/storage/continue.go
  ``EncodeContinue``, ``{"v","rv","start"}``); one older than the compaction point (or every one
  issued before ``expire_continue_tokens()``) answers 410 ``Expired`` with the inconsistent-continue
  message and a fresh token (rv -1) in ``metadata.continue`` (apiserver:pkg/storage/etcd3/
  errors.go ``handleCompactedErrorForPaging``; "Retrieving large results sets in chunks").
- ``hang()`` / ``silent_watches()`` / ``release_hangs()``: requests accepted and never answered; a
  watch that stays open and sends nothing, no bookmark, not even its end at ``timeoutSeconds`` (a
  half-open connection as the client sees it; nothing the real server does on purpose).
- ``short_watches()``: every watch is answered HTTP 200 and ends at once, no event, no bookmark: a
  server shutting down ends every watch it serves, new ones included, for as long as it still takes
  requests (apiserver:pkg/endpoints/handlers/watch.go ``WatchServer.HandleHTTP``: ``case
  <-s.ServerShuttingDownCh: return``, "all active watch request(s) should return immediately"),
  as does a proxy or load balancer in between that cuts long requests. client-go's reflector calls
  such a watch an error and backs off (reflector.go ``handleWatch``: "very short watch: Unexpected
  watch close - watch lasted less than a second and no items received"). Until ``reset_faults()``.
- ``slow(seconds)``: answers delayed (an overloaded server or a slow etcd).
- a DELETE (or an eviction) of an object with ``metadata.finalizers`` only marks it
  (``deletionTimestamp``, ``deletionGracePeriodSeconds``) and it stays until they are removed
  (apiserver:pkg/registry/generic/registry/store.go ``Store.Delete``); without finalizers a pod is
  removed at once (there is no kubelet).
- ``inject(status=429)`` answers as API Priority and Fairness and max-inflight do: plain text "Too
  many requests, please try again later." with ``Retry-After`` (apiserver:pkg/server/filters/
  priority-and-fairness.go ``tooManyRequests``), except on the eviction subresource, whose 429 is
  a Status (the PodDisruptionBudget refusal); ``inject(status=503)`` answers the shutdown 503 above.
- ``lose_answers()``: the write is carried out, then its answer is lost (the connection is cut
  after the status line, or the answer never comes): the client sees an error, the object changed.
- bookmarks: a watch with ``allowWatchBookmarks=true`` gets a BOOKMARK every ``bookmark_interval``
  seconds (60 as the cacher's ``defaultBookmarkFrequency``) and one just before ``timeoutSeconds``
  ends it cleanly (apiserver:pkg/storage/cacher/cache_watcher.go ``nextBookmarkTime``: "roughly
  every minute" and "right before the watcher timeout"; "Watch bookmarks").
- counters: ``open_watches()``, ``hung_requests()``.
- names: a create (and ``add``, so no test seeds what no cluster can hold) is refused with the API
  server's 422 Invalid Status when the kind's name rule refuses the name (``NAME_RULES``: a DNS-1123
  subdomain for most kinds, a DNS-1123 label for a Namespace, any path segment for core/v1 Events
  and PodDisruptionBudgets), with its message and ``details.causes``.
- an update that leaves an object being deleted without finalizers deletes it
  (apiserver:pkg/registry/generic/registry/store.go ``Update``, ``shouldDeleteDuringUpdate``).
- ``pv_rules`` (``devkit/pv_rules.py``): what the API server and kube-controller-manager do to
  PVs and their claims (pv-protection, immutable affinity before 1.35, a claim Lost while its PV is
  gone), applied to writes through HTTP, per PV and its claim (so a write costs the same at 10 or
  10,000 volumes).

Lists page through each kind's objects sorted once per write of that kind (an Event written does
not re-sort 10,000 PVs): ``bench/affinity_bench.py`` replaces 100 of 10,000 PVs in seconds here.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from kubernetes import client as k8s
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from devkit.base import HttpDouble, Subscriber
from linstor_scheduler.aio import within
from linstor_scheduler.kube import objects

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
    "volumesnapshots": ("VolumeSnapshot", "snapshot.storage.k8s.io/v1", True),
}
KIND_TO_PLURAL = {kind: plural for plural, (kind, _, _) in RESOURCES.items()}
# The API server's name rules (k8s.io/kubernetes and k8s.io/apimachinery, cited as ``k8s:<path>``),
# kind by kind: the kind's ``Validate`` calls ``ValidateObjectMeta`` with its name function
# (k8s:staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go), then ``rest.BeforeCreate``
# runs the generic rule on every kind (k8s:staging/src/k8s.io/apiserver/pkg/registry/rest/create.go:
# ``ValidateObjectMetaAccessor(..., path.ValidatePathSegmentName, ...)``).
#
# - "subdomain": ``NameIsDNSSubdomain`` -> ``IsDNS1123Subdomain`` (apimachinery
#   pkg/util/validation/validation.go): Pod (``ValidatePodName``), Node (``ValidateNodeName``),
#   PersistentVolume and PersistentVolumeClaim (``ValidatePersistentVolumeName``), Secret
#   (``ValidateSecretName``), all in k8s:pkg/apis/core/validation/validation.go; StorageClass and
#   VolumeAttachment (``ValidateClassName``), CSINode (``ValidateNodeName``) in
#   k8s:pkg/apis/storage/validation/validation.go; Lease (k8s:pkg/apis/coordination/validation);
#   MutatingWebhookConfiguration (k8s:pkg/apis/admissionregistration/validation).
# - "label": ``NameIsDNSLabel`` -> ``IsDNS1123Label``: Namespace (``ValidateNamespaceName``). (Service
#   names are DNS-1035 labels, ``ValidateServiceName``; the stand-in serves no Service.)
# - "segment": only the generic rule (not ".", "..", no "/" or "%"): a core/v1 Event
#   (k8s:pkg/apis/core/validation/events.go ``ValidateEventCreate``: "No further validation for
#   backwards compatibility" for v1) and a PodDisruptionBudget (k8s:pkg/apis/policy/validation:
#   ``ValidatePodDisruptionBudget`` checks the spec only).
# A namespaced object's namespace is a DNS-1123 label (``ValidateObjectMeta``, ``ValidateNamespaceName``).
NAME_RULES: dict[str, str] = {
    "Node": "subdomain", "Pod": "subdomain", "PersistentVolumeClaim": "subdomain", "PersistentVolume": "subdomain",
    "Namespace": "label", "Event": "segment", "StorageClass": "subdomain", "VolumeAttachment": "subdomain",
    "CSINode": "subdomain", "Lease": "subdomain", "PodDisruptionBudget": "segment", "Secret": "subdomain",
    "MutatingWebhookConfiguration": "subdomain",
    # a custom resource (apiextensions-apiserver pkg/registry/customresource/validator.go: its
    # ValidateObjectMetaAccessor with NameIsDNSSubdomain)
    "VolumeSnapshot": "subdomain",
}
DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1123_LABEL = re.compile(f"^{DNS1123_LABEL_FMT}$")
DNS1123_SUBDOMAIN = re.compile(f"^{DNS1123_SUBDOMAIN_FMT}$")
LABEL_MESSAGE = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                 f"validation is '{DNS1123_LABEL_FMT}')")
SUBDOMAIN_MESSAGE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                     "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                     f"validation is '{DNS1123_SUBDOMAIN_FMT}')")


def is_dns1123_label(value: str) -> list[str]:
    """apimachinery ``IsDNS1123Label``: its messages, in its order."""
    errs = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not DNS1123_LABEL.match(value):
        # "It was a valid subdomain and not a valid label. Since we already checked length, it must be dots."
        errs.append("must not contain dots" if DNS1123_SUBDOMAIN.match(value) else LABEL_MESSAGE)
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """apimachinery ``IsDNS1123Subdomain``."""
    errs = ["must be no more than 253 characters"] if len(value) > 253 else []
    if not DNS1123_SUBDOMAIN.match(value):
        errs.append(SUBDOMAIN_MESSAGE)
    return errs


def is_path_segment(value: str) -> list[str]:
    """apimachinery api/validation/path ``IsValidPathSegmentName``."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def _mask_trailing_dash(name: str) -> str:
    """apimachinery ``maskTrailingDash``: a generateName may end with '-'."""
    return name[:-2] + "a" if len(name) > 1 and name.endswith("-") else name


def name_causes(kind: str, meta: dict[str, Any], namespaced: bool) -> list[dict[str, str]]:
    """The ``details.causes`` of the API server's 422 for this object's name (and namespace); [] when
    accepted. ``meta`` as the create will store it: a generateName already turned into a name."""
    rule = NAME_RULES[kind]
    check = {"subdomain": is_dns1123_subdomain, "label": is_dns1123_label}.get(rule)

    def invalid(field_path: str, value: str, message: str) -> dict[str, str]:
        return {"reason": "FieldValueInvalid", "message": f"Invalid value: {orjson.dumps(value).decode()}: {message}",
                "field": field_path}

    required = {"reason": "FieldValueRequired", "message": "Required value: name or generateName is required",
                "field": "metadata.name"}
    causes: list[dict[str, str]] = []
    name, generate = meta.get("name"), meta.get("generateName")
    if check is not None:
        if isinstance(generate, str) and generate:
            causes += [invalid("metadata.generateName", generate, m) for m in check(_mask_trailing_dash(generate))]
        if not isinstance(name, str) or not name:
            causes.append(required)
        else:
            causes += [invalid("metadata.name", name, m) for m in check(name)]
        namespace = meta.get("namespace")
        if namespaced and isinstance(namespace, str) and namespace:
            causes += [invalid("metadata.namespace", namespace, m) for m in is_dns1123_label(namespace)]
    if not causes:  # rest.BeforeCreate's generic rule, after the kind's own
        if not isinstance(name, str) or not name:
            causes.append(required)
        else:
            causes += [invalid("metadata.name", name, m) for m in is_path_segment(name)]
        namespace = meta.get("namespace")
        if check is None and namespaced and isinstance(namespace, str) and namespace:
            causes += [invalid("metadata.namespace", namespace, m) for m in is_dns1123_label(namespace)]
    return causes


def invalid_body(kind: str, group: str, name: str | None, causes: list[dict[str, str]]) -> dict[str, Any]:
    """apimachinery pkg/api/errors ``NewInvalid``: 422, reason Invalid, ``<Kind>[.<group>] "<name>" is
    invalid: <field errors>`` (one error bare, several as ``[a, b]``: ``ToAggregate``), the causes in
    ``details``."""
    errors = list(dict.fromkeys(f"{c['field']}: {c['message']}" for c in causes))
    aggregate = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details: dict[str, Any] = {"kind": kind, "causes": causes}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'{qualified} {orjson.dumps(name or "").decode()} is invalid: {aggregate}', "reason": "Invalid",
            "details": details, "code": 422}


class InvalidName(ValueError):
    """An object the API server would refuse (the 422 body in ``status``): ``KubeStandin.add`` raises it,
    so a test cannot seed a cluster with objects no real one can hold."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.status = body


PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Who writes each kind's spec in a real cluster: the manager its managedFields entry names.
WRITERS = {"PersistentVolume": "csi-provisioner", "PersistentVolumeClaim": "kube-controller-manager",
           "Pod": "kube-controller-manager", "Node": "kubelet"}


def fields_v1(value: Any) -> dict[str, Any]:
    """The field set of ``value`` as the API server spells it in ``managedFields[].fieldsV1``
    (structured-merge-diff's FieldsV1: ``f:<name>`` per map key, ``.`` for a map that is itself
    owned, ``k:``/``v:`` list keys folded into one entry here): what every object carries."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, Any] = {".": {}} if value else {}
    for key, item in value.items():
        out[f"f:{key}"] = fields_v1(item) if isinstance(item, dict) else {}
    return out


def managed_fields(obj: dict[str, Any], when: str) -> list[dict[str, Any]]:
    """``metadata.managedFields`` as the API server records them on every write
    (apiserver:pkg/endpoints/handlers/fieldmanager, ``FieldManager.UpdateNoErrors``): one entry for
    the writer of metadata and spec, one for the status subresource when the object has a status."""
    meta = objects.meta(obj)
    owned = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    owned["metadata"] = {k: meta[k] for k in ("labels", "annotations", "finalizers", "ownerReferences") if k in meta}
    entries = [{"manager": WRITERS.get(str(obj.get("kind")), "kubectl-client-side-apply"), "operation": "Update",
                "apiVersion": obj.get("apiVersion"), "time": when, "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(owned)}]
    if obj.get("status"):
        entries.append({"manager": "kube-controller-manager", "operation": "Update",
                        "apiVersion": obj.get("apiVersion"), "time": when, "fieldsType": "FieldsV1",
                        "fieldsV1": fields_v1({"status": obj["status"]}),
                        "subresource": "status"})
    return entries


def status(code: int, reason: str, message: str, retry_after: int = 1,
           meta: dict[str, Any] | None = None) -> Response:
    """A ``Status`` answer; 429 and 503 carry ``Retry-After`` as the API server sets it."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": meta or {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    headers = {"Retry-After": str(retry_after)} if code in (429, 503) else None
    return Response(orjson.dumps(body), status_code=code, media_type="application/json", headers=headers)


def throttled(retry_after: int = 1) -> Response:
    """429 as API Priority and Fairness (and max-inflight) answer it: Go's ``http.Error``, so plain
    text and no Status (apiserver:pkg/server/filters/priority-and-fairness.go ``tooManyRequests``)."""
    return Response("Too many requests, please try again later.\n", status_code=429, media_type="text/plain",
                    headers={"Retry-After": str(retry_after), "X-Content-Type-Options": "nosniff"})


def shutting_down() -> Response:
    """503 of a server going down: apiserver:pkg/server/filters/waitgroup.go
    ``waitGroupWriteRetryAfterToResponse`` (``Retry-After: 1``, "apiserver is shutting down")."""
    return status(503, "ServiceUnavailable", "apiserver is shutting down", 1)


def too_old(since: int, oldest: int) -> dict[str, Any]:
    """The cacher's 410 as a watch ERROR event's object (watch_cache_history.go ``GetIntervalLocked``)."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
            "code": 410, "message": f"too old resource version: {since} ({oldest})"}


# apiserver:pkg/storage/etcd3/errors.go ``inconsistentContinue``, answered with a token at rv -1
CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list.")


def encode_continue(start_key: str, rv: int) -> str:
    """A continue token as apiserver:pkg/storage/continue.go ``EncodeContinue`` writes it."""
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start_key})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[str, int]:
    """(start key, resourceVersion) of a token; ``ValueError`` when it is not one of ours."""
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        start, rv = doc["start"], int(doc["rv"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"continue key is not valid: {exc}") from None
    if doc.get("v") != "meta.k8s.io/v1" or not isinstance(start, str) or not start or rv == 0:
        raise ValueError("continue key is not valid")
    return start, rv


def _claim_of(pv: dict[str, Any]) -> tuple[str, str] | None:
    ref = objects.spec(pv).get("claimRef") or {}
    return (ref.get("namespace") or objects.DEFAULT_NAMESPACE, ref["name"]) if ref.get("name") else None


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


def deletes_during_update(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """apiserver:pkg/registry/generic/registry/store.go ``shouldDeleteDuringUpdate``: no finalizers
    left in the new object, a delete already requested on the existing one (an update cannot start a
    deletion), and its grace period nil or 0. A pod's grace (its containers stopping) is over at once
    here: the stand-in has no kubelet."""
    if objects.finalizers(new) or not objects.deletion_timestamp(old):
        return False
    return old.get("kind") == "Pod" or not objects.deletion_grace_period_seconds(old)


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
    """An open watch: fed events (``(type, obj)``), bookmark markers and ``None`` (end now)."""

    plural: str = ""
    namespace: str | None = None
    path: str = ""
    agent: str = ""  # the client's User-Agent: which instance of a component opened it
    silent: bool = False  # a half-open connection: sends nothing, ends only when released


@dataclass
class _Gate(Subscriber):
    """A request held by a fault; ``release_hangs()`` puts "release", server stop puts "stop"."""

    async def wait(self, timeout: float | None = None) -> str | None:
        """What released it, or ``None`` when ``timeout`` passed first."""
        try:
            return await within(self.queue.get(), timeout)
        except TimeoutError:
            return None


@dataclass
class _Match:
    """Which requests a fault takes: a path prefix, a method (``None``: any), the next ``count``
    of them (``None``: every one until ``reset_faults()``)."""

    path_prefix: str = "/"
    method: str | None = None
    count: int | None = None
    writes_only: bool = False
    agent: str | None = None  # only requests whose User-Agent contains this (one client among several)

    def take(self, method: str, path: str, agent: str = "") -> bool:
        if not path.startswith(self.path_prefix) or self.method not in (None, method):
            return False
        if self.agent is not None and self.agent not in agent:
            return False
        if self.writes_only and method == "GET":
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        return True


@dataclass
class _Fault:
    fail: int
    status: int
    path_prefix: str
    method: str | None
    retry_after: int = 1  # the Retry-After header of an injected 429


@dataclass
class _Faults:
    """The bad-day rules besides ``inject``: one of each kind at a time, a new call replaces it."""

    hang: _Match | None = None
    slow: tuple[float, _Match] | None = None
    lose: tuple[Literal["drop", "hang"], _Match] | None = None
    silent: _Match | None = None
    short: _Match | None = None
    down: bool = False
    gates: list[_Gate] = field(default_factory=list)  # requests held now (hang, lost answers)
    pauses: list[_Gate] = field(default_factory=list)  # requests answered late now (slow)


class _CutAnswer(Response):
    """An answer lost on the way: the status line and headers go out, promising the body, then the
    connection is cut. The client's read fails although the server carried the write out."""

    def __init__(self, answer: Response) -> None:
        super().__init__(answer.body, status_code=answer.status_code, media_type=answer.media_type)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        raise ConnectionAbortedError("injected lost answer: the connection is cut before the body")


class KubeStandin(HttpDouble):
    def __init__(self, *, history_limit: int = 10_000, bookmark_interval: float = 60.0,
                 pv_rules: Any = None) -> None:
        """``pv_rules``: a ``devkit.pv_rules.PvRules`` to model what the API server and
        kube-controller-manager do to PVs and their claims (off: PVs are plain objects)."""
        super().__init__()
        self.pv_rules = pv_rules
        self._objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        # plural -> (writes when built, keys in etcd order, objects): what lists page through, as the
        # API server's watch cache serves pages from its sorted store without walking every object
        self._writes: dict[str, int] = {}  # per plural: an Event written does not re-sort the PVs
        self._ordered: dict[str, tuple[int, list[str], list[dict[str, Any]]]] = {}
        self._history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, plural, type, obj)
        self._history_limit = history_limit
        # Per plural, as the cacher keeps one watch cache per resource: a watch from below this
        # resourceVersion gets 410; a continue token from below ``_compacted`` (etcd's) gets 410.
        self._oldest: dict[str, int] = {}
        self._compacted: dict[str, int] = {}
        self._rv = 1
        self._fault: _Fault | None = None
        self._faults = _Faults()
        self.bookmark_interval = bookmark_interval
        self.writes: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of every write, faulted or not
        self.app = self._build_app()

    # --- state ---------------------------------------------------------------------------------
    def _plural(self, kind: str) -> str:
        try:
            return KIND_TO_PLURAL[kind]
        except KeyError:
            raise ValueError(f"the stand-in does not serve kind {kind!r}") from None

    def _record(self, plural: str, event: str, obj: dict[str, Any]) -> None:
        self._writes[plural] = self._writes.get(plural, 0) + 1
        rv = int(objects.resource_version(obj))
        self._history.append((rv, plural, event, copy.deepcopy(obj)))
        if len(self._history) > self._history_limit:
            dropped_rv, dropped_plural, _, _ = self._history.pop(0)
            self._oldest[dropped_plural] = max(self._oldest.get(dropped_plural, 0), dropped_rv)
        for w in list(self._subscribers):
            if w.plural == plural and (w.namespace is None or w.namespace == objects.namespace(obj)):
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
            meta = objects.writable_meta(stored)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if namespaced:
                meta.setdefault("namespace", "default")
            else:
                meta.pop("namespace", None)
            causes = name_causes(stored["kind"], meta, namespaced)
            if causes:
                group = api_version.rpartition("/")[0]
                raise InvalidName(invalid_body(stored["kind"], group, meta.get("name"), causes))
            key = (plural, meta.get("namespace"), meta["name"])
            if key in self._objects:
                raise KeyError(f'{plural} "{meta["name"]}" already exists')
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = self._next_rv()
            meta["managedFields"] = managed_fields(stored, meta["creationTimestamp"])
            self._objects[key] = stored
            self._record(plural, "ADDED", stored)
            return copy.deepcopy(stored)

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            plural = self._plural(obj["kind"])
            key = (plural, objects.namespace(obj) if RESOURCES[plural][2] else None, objects.name(obj))
            old = self._objects[key]
            stored = copy.deepcopy(obj)
            meta = objects.writable_meta(stored)
            meta["uid"] = objects.uid(old)
            meta["creationTimestamp"] = objects.creation_timestamp(old)
            meta["resourceVersion"] = self._next_rv()
            stored.setdefault("apiVersion", old.get("apiVersion"))
            meta["managedFields"] = managed_fields(stored, _now())
            if deletes_during_update(old, stored):
                # apiserver:pkg/registry/generic/registry/store.go ``Update``: the last finalizer of an
                # object being deleted is gone, so the update deletes it (``shouldDeleteDuringUpdate``)
                del self._objects[key]
                self._record(plural, "DELETED", stored)
                return copy.deepcopy(stored)
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
                objects.writable_meta(obj)["resourceVersion"] = self._next_rv()
                self._record(plural, "DELETED", obj)
            return copy.deepcopy(obj) if obj else None

    def held_by_finalizers(self, kind: str, current: dict[str, Any], grace: int | None) -> dict[str, Any] | None:
        """A DELETE of an object that carries finalizers only marks it: ``deletionTimestamp`` and
        ``deletionGracePeriodSeconds`` (the smaller of the old and the asked one) are set and the
        object stays until its finalizers are removed (apiserver:pkg/registry/generic/registry/
        store.go, ``Store.Delete`` -> ``updateForGracefulDeletionAndFinalizers``). Returns the object
        so marked, or None when nothing holds it (it is deleted). Pods are removed at once otherwise:
        the stand-in has no kubelet."""
        if not objects.finalizers(current):
            return None
        with self._lock:
            marked = copy.deepcopy(current)
            marked["kind"] = kind
            mmeta = objects.writable_meta(marked)
            mmeta.setdefault("deletionTimestamp", _now())
            # Only pods delete gracefully; for every other kind the grace is 0 whatever was asked
            # (apiserver:pkg/registry/rest/delete.go ``BeforeDelete``: no graceful-delete strategy)
            asked = (30 if grace is None else int(grace)) if kind == "Pod" else 0
            old = mmeta.get("deletionGracePeriodSeconds")
            mmeta["deletionGracePeriodSeconds"] = asked if old is None else min(int(old), asked)
            return self.update(marked)

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

    def compact(self, kinds: list[str] | None = None, at: int | None = None) -> None:
        """etcd compaction at resourceVersion ``at`` (default: the current one), of every kind or of
        ``kinds`` only: a watch from below it gets 410 Expired, and so does a continue token.

        etcd forgets every revision below the compaction point (``--etcd-compaction-interval``, 5m);
        the watch cache per resource covers a bounded window. An informer of a quiet kind keeps the
        resourceVersion of its last list or event, older than that point even while other kinds move
        on, so its next watch gets 410 and it must list again ("Resource versions", 410 Gone).
        """
        with self._lock:
            point = self._rv if at is None else at
            plurals = set(RESOURCES) if kinds is None else {self._plural(kind) for kind in kinds}
            self._history = [h for h in self._history if h[1] not in plurals or h[0] > point]
            for plural in plurals:
                self._oldest[plural] = max(self._oldest.get(plural, 0), point)
                self._compacted[plural] = max(self._compacted.get(plural, 0), point)

    def expire_continue_tokens(self) -> None:
        """Every continue token issued so far answers 410 Expired from now on, as after an etcd
        compaction past their resourceVersion. The compactor's own write moves the revision on
        (apiserver:pkg/storage/etcd3/compact.go: an ``OpPut`` of its key), so lists made after this
        call carry a newer resourceVersion and their tokens stay good. Watches are not touched."""
        with self._lock:
            self._rv += 1
            for plural in RESOURCES:
                self._compacted[plural] = max(self._compacted.get(plural, 0), self._rv)

    def _in_order(self, plural: str) -> tuple[list[str], list[dict[str, Any]]]:
        """The kind's objects in etcd key order (``namespace/name``), sorted once per write, not per
        page: 67 pages of 33,334 claims each sorting 75,000 objects took longer than a client's read
        deadline on a loaded machine. Under ``_lock``."""
        cached = self._ordered.get(plural)
        writes = self._writes.get(plural, 0)
        if cached is None or cached[0] != writes:
            keyed = sorted((objects.key_of(o_ns, name, default_namespace=None), o)
                           for (p, o_ns, name), o in self._objects.items() if p == plural)
            cached = self._ordered[plural] = (writes, [key for key, _ in keyed], [o for _, o in keyed])
        return cached[1], cached[2]

    def _watch_oldest(self, plural: str) -> int:
        return self._oldest.get(plural, 0)

    # --- faults and accounting -----------------------------------------------------------------
    def inject(self, *, fail: int = 0, status: int = 500, path_prefix: str = "/", method: str | None = None,
               retry_after: int = 1) -> None:
        """The next ``fail`` requests matching answer ``status``: 429 as APF does (plain text with
        ``Retry-After``; a Status on the eviction subresource), 503 as a server shutting down,
        others as a Status with the reason the API server gives that code."""
        with self._lock:
            self._fault = _Fault(fail, status, path_prefix, method, retry_after)

    def reset_faults(self) -> None:
        """No more faults for new requests; requests held now stay held (``release_hangs()``)."""
        with self._lock:
            self._fault = None
            self._faults = _Faults(gates=self._faults.gates, pauses=self._faults.pauses)

    def backup(self) -> tuple[dict[Any, dict[str, Any]], int]:
        """An etcd snapshot: every object and the resourceVersion, as they are now."""
        with self._lock:
            return copy.deepcopy(self._objects), self._rv

    def restore(self, snapshot: tuple[dict[Any, dict[str, Any]], int]) -> None:
        """etcd restored from ``snapshot`` and the API server restarted on it: objects and the
        resourceVersion go back to the snapshot's, every watch ends, history starts afresh. A client
        that resumes from a version it saw after the snapshot gets the cacher's 504 "Too large
        resource version" until it lists again (Kubernetes docs, "Operating etcd clusters for
        Kubernetes", restoring: "... watches ... may see an unexpected resource version")."""
        objects, rv = snapshot
        with self._lock:
            self._objects = copy.deepcopy(objects)
            self._writes = {plural: n + 1 for plural, n in self._writes.items()}
            self._ordered.clear()
            self._rv = rv
            self._history.clear()
        self.restart()

    def restart(self) -> None:
        """The API server restarts: every open watch ends at once, without a final event, and the new
        process's watch caches start from a list at the current resourceVersion, so a watch resumed
        from an older one gets an ERROR event 410 "too old resource version: X (Y)" (watch.go
        ``serveWatch`` returns on ``ServerShuttingDownCh``; watch_cache_history.go
        ``GetIntervalLocked``). Continue tokens survive (they are served from etcd)."""
        self.down()
        self.up()

    def down(self) -> None:
        """The API server goes down as in a rolling restart: open watches end now, and until ``up()``
        every request is answered 503 "apiserver is shutting down" with ``Retry-After: 1``
        (apiserver:pkg/server/filters/waitgroup.go, the default: no ``--shutdown-send-retry-after``)."""
        with self._lock:
            self._faults.down = True
            watchers = [w for w in self._subscribers if isinstance(w, _Watcher)]
        for w in watchers:
            w.put(None)

    def up(self) -> None:
        """The new process serves: its watch caches start at the current resourceVersion."""
        with self._lock:
            self._faults.down = False
            for plural in RESOURCES:
                self._oldest[plural] = max(self._oldest.get(plural, 0), self._rv)

    def hang(self, path_prefix: str = "/", method: str | None = None, count: int | None = None) -> None:
        """Requests matching are accepted and never answered (a stuck backend) until
        ``release_hangs()``, when they are carried out and answered late, or the server stops (503)."""
        with self._lock:
            self._faults.hang = _Match(path_prefix, method, count)

    def silent_watches(self, path_prefix: str = "/", agent: str | None = None) -> None:
        """Watches matching, open now or opened later, stay open and send nothing: no event, no
        bookmark, no end at ``timeoutSeconds`` (a half-open connection as the client sees it). They
        end, cleanly and without a final event, at ``release_hangs()``, ``restart()`` or server stop.
        ``agent``: only the watches of the client whose User-Agent contains it (one instance's
        connections are broken, another's are not: a NAT on one node)."""
        with self._lock:
            self._faults.silent = _Match(path_prefix, agent=agent)
            for w in self._subscribers:
                if isinstance(w, _Watcher) and w.path.startswith(path_prefix) and (agent is None or agent in w.agent):
                    w.silent = True

    def short_watches(self, path_prefix: str = "/") -> None:
        """Watches matching, opened from now on, are answered 200 and end at once without an event (a
        server shutting down, a proxy cutting long requests); see the module's docstring."""
        with self._lock:
            self._faults.short = _Match(path_prefix)

    def release_hangs(self) -> None:
        """Held requests go on (carried out, answered late); silent watches end; no new ones."""
        with self._lock:
            self._faults.hang = self._faults.silent = None
            gates, self._faults.gates = self._faults.gates, []
            silent = [w for w in self._subscribers if isinstance(w, _Watcher) and w.silent]
        for gate in gates:
            gate.put("release")
        for w in silent:
            w.put(None)

    def slow(self, seconds: float, path_prefix: str = "/", method: str | None = None,
             count: int | None = None) -> None:
        """Requests matching are answered ``seconds`` late (server stop cuts the wait short)."""
        with self._lock:
            self._faults.slow = (seconds, _Match(path_prefix, method, count))

    def lose_answers(self, path_prefix: str = "/", method: str | None = None, count: int | None = 1,
                     how: Literal["drop", "hang"] = "drop") -> None:
        """Writes matching are carried out, then their answer is lost: ``drop`` cuts the connection
        after the status line (the client's read fails), ``hang`` never answers (until
        ``release_hangs()``: the client's read times out). GETs are not touched."""
        with self._lock:
            self._faults.lose = (how, _Match(path_prefix, method, count, writes_only=True))

    def open_watches(self, path_prefix: str = "/") -> int:
        """Watch streams open now (silent ones included) whose path starts with ``path_prefix``."""
        with self._lock:
            return sum(1 for w in self._subscribers if isinstance(w, _Watcher) and w.path.startswith(path_prefix))

    def hung_requests(self) -> int:
        """Requests held now by ``hang()`` or ``lose_answers(how="hang")``, not yet answered."""
        with self._lock:
            return len(self._faults.gates)

    def close_streams(self) -> None:
        """Server stop: open watches end and held requests are let go, so uvicorn stops promptly."""
        super().close_streams()
        with self._lock:
            gates, self._faults.gates = self._faults.gates, []
            gates += self._faults.pauses
        for gate in gates:
            gate.put("stop")

    @staticmethod
    def api_client(url: str, timeout: float = 10.0) -> k8s.ApiClient:
        """A client as the components build theirs (``make_api_client``: a deadline on every call,
        no urllib3 retries), so what a test sees is what production sees."""
        from linstor_scheduler.kube.client import make_api_client

        return make_api_client(host=url, timeout=timeout)

    # --- HTTP ----------------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        ks = self

        def ok(doc: Any, code: int = 200) -> Response:
            return Response(orjson.dumps(doc), status_code=code, media_type="application/json")

        async def version(_: Request) -> Response:
            if ks._faults.down:
                return shutting_down()
            return ok({"major": "1", "minor": "31", "gitVersion": "v1.31.0-standin", "platform": "linux/amd64"})

        def injected(f: _Fault, path: str) -> Response:
            if f.status == 429 and path.endswith("/eviction"):
                return status(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption "
                              "budget.", f.retry_after)
            if f.status == 429:
                return throttled(f.retry_after)
            if f.status == 503:
                return status(503, "ServiceUnavailable", "apiserver is shutting down", f.retry_after)
            reason = {403: "Forbidden", 404: "NotFound", 409: "Conflict", 410: "Expired",
                      504: "Timeout"}.get(f.status, "InternalError")
            return status(f.status, reason, "injected fault", f.retry_after)

        def hold() -> _Gate | None:
            """A gate for a request to wait on, or ``None`` when the server is stopping."""
            if ks._closing:
                return None
            gate = _Gate(asyncio.get_running_loop())
            ks._faults.gates.append(gate)
            return gate

        def let_go(gate: _Gate) -> None:
            with ks._lock:
                if gate in ks._faults.gates:
                    ks._faults.gates.remove(gate)

        async def handle(request: Request) -> Response:
            """Records the request, then applies the bad days before and after ``serve``."""
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
                faults = ks._faults
                if faults.down:
                    return shutting_down()
                gate = hold() if faults.hang and faults.hang.take(method, path) else None
                delay = faults.slow[0] if faults.slow and faults.slow[1].take(method, path) else 0.0
            if gate is not None:
                released = await gate.wait()
                let_go(gate)
                if released == "stop":
                    return shutting_down()
            if delay:
                pause = _Gate(asyncio.get_running_loop())
                with ks._lock:
                    ks._faults.pauses.append(pause)
                    closing = ks._closing
                if not closing:
                    await pause.wait(delay)  # the fault under test; server stop cuts it short
                with ks._lock:
                    ks._faults.pauses.remove(pause)
            with ks._lock:
                f = ks._fault
                if f and f.fail > 0 and path.startswith(f.path_prefix) and (f.method in (None, method)):
                    f.fail -= 1
                    return injected(f, path)
                lose = ks._faults.lose
                how = lose[0] if lose and lose[1].take(method, path) else None
            response = await serve(request, path, method)
            if how == "drop":
                return _CutAnswer(response)
            if how == "hang":
                with ks._lock:
                    gate = hold()
                if gate is not None:
                    await gate.wait()
                    let_go(gate)
            return response

        async def serve(request: Request, path: str, method: str) -> Response:
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
            """A list, paginated as the API server does with ``limit``/``continue``: items in etcd key
            order (``namespace/name``), ``metadata.continue`` while more remain. The token is etcd3's:
            the list's resourceVersion and the next key (continue.go ``EncodeContinue``); once that
            resourceVersion is compacted it answers 410 Expired with a token at rv -1 to go on
            inconsistently (etcd3/errors.go ``handleCompactedErrorForPaging``). Unlike etcd's snapshot,
            later pages see changes made meanwhile (enough for our clients)."""
            token = params.get("continue")
            start = ""
            if token:
                try:
                    start, token_rv = decode_continue(token)
                except ValueError as exc:
                    return status(400, "BadRequest", str(exc))
            labels, fields = params.get("labelSelector"), params.get("fieldSelector")
            limit = int(params.get("limit") or 0)
            with ks._lock:
                keys, objs = ks._in_order(plural)
                first = bisect.bisect_left(keys, start)
                if ns or labels or fields:
                    keyed = [(key, o) for key, o in zip(keys[first:], objs[first:], strict=True)
                             if (ns is None or key.startswith(ns + "/"))
                             and label_matches(labels, objects.labels(o))
                             and field_matches(fields, o)]
                    total = len(keyed)
                else:  # one page of the sorted store, not a copy of the rest of it
                    end = first + limit if limit > 0 else len(keys)
                    keyed = list(zip(keys[first:end + 1], objs[first:end + 1], strict=True))
                    total = len(keys) - first
                list_rv = ks._rv
                compacted = ks._compacted.get(plural, 0)
            if token:
                if 0 < token_rv < compacted:
                    return status(410, "Expired", CONTINUE_EXPIRED, meta={"continue": encode_continue(start, -1)})
                list_rv = token_rv if token_rv > 0 else list_rv
            meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
            if 0 < limit < total:
                meta["continue"] = encode_continue(keyed[limit - 1][0] + "\x00", list_rv)
                meta["remainingItemCount"] = total - limit
                keyed = keyed[:limit]
            return ok({"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta,
                       "items": [o for _, o in keyed]})

        async def body_of(request: Request) -> Any:
            raw = await request.body()
            return orjson.loads(raw) if raw else {}

        async def create(request: Request, plural: str, ns: str | None) -> Response:
            obj = await body_of(request)
            if not isinstance(obj, dict) or not isinstance(objects.raw_meta(obj) or {}, dict):
                return status(400, "BadRequest", "the body is not an object")
            obj["kind"] = RESOURCES[plural][0]
            if ns:
                objects.writable_meta(obj)["namespace"] = ns
            rules = ks.pv_rules if plural == "persistentvolumes" else None
            if rules is not None:
                obj = rules.prepare_create(obj)
            try:
                with ks._lock:
                    created = ks.add(obj)
                    if rules is not None:
                        rules.settle(ks, objects.name(created))
                        created = ks.get("PersistentVolume", objects.name(created)) or created
                return ok(created, 201)
            except InvalidName as exc:  # 422 Invalid, the API server's Status (InvalidName's docstring)
                return Response(orjson.dumps(exc.status), status_code=422, media_type="application/json")
            except KeyError as exc:
                return status(409, "AlreadyExists", str(exc).strip("'\""))

        async def replace(request: Request, plural: str, kind: str, current: dict[str, Any]) -> Response:
            obj = await body_of(request)
            rv = objects.resource_version(obj)
            if rv and rv != objects.resource_version(current):
                name = objects.name(current)
                return status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object '
                              "has been modified; please apply your changes to the latest version")
            obj["kind"] = kind
            objects.writable_meta(obj)["namespace"] = objects.namespace(current)
            return written(plural, current, obj)

        async def patch(request: Request, plural: str, kind: str, current: dict[str, Any]) -> Response:
            body = await body_of(request)
            # A merge or strategic merge patch that carries metadata.resourceVersion is conditional:
            # the API server answers 409 when the object changed since (optimistic concurrency, as for
            # an update; Kubernetes API concepts, "Patch operations" / "Resource versions").
            rv = objects.resource_version(body) if isinstance(body, dict) else None
            if rv and rv != objects.resource_version(current):
                name = objects.name(current)
                return status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object '
                              "has been modified; please apply your changes to the latest version")
            try:
                merged = json_patch(current, body) if isinstance(body, list) else merge_patch(current, body)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                return status(422, "Invalid", f"patch does not apply: {exc}")
            merged["kind"] = kind
            objects.writable_meta(merged)["resourceVersion"] = objects.resource_version(current)
            return written(plural, current, merged)

        def written(plural: str, current: dict[str, Any], new: dict[str, Any]) -> Response:
            """An update through the main resource; a PV's under ``pv_rules`` (devkit/pv_rules.py)."""
            rules = ks.pv_rules if plural == "persistentvolumes" else None
            if rules is None:
                return ok(ks.update(new))
            from devkit.pv_rules import Invalid

            try:
                new = rules.prepare_update(current, new)
            except Invalid as exc:
                return status(422, "Invalid", str(exc))
            with ks._lock:
                stored = ks.update(new)
                name = objects.name(current)
                rules.settle(ks, name, _claim_of(current))
                return ok(ks.get("PersistentVolume", name) or stored)

        def precondition_failed(options: dict[str, Any], current: dict[str, Any]) -> Response | None:
            pre = options.get("preconditions") or {}
            meta = objects.meta(current)
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
            options = options if isinstance(options, dict) else {}
            failed = precondition_failed(options, current)
            if failed:
                return failed
            held = ks.held_by_finalizers(kind, current, options.get("gracePeriodSeconds"))
            answer = held if held is not None else ks.delete(kind, name, ns)
            if kind == "PersistentVolume" and ks.pv_rules is not None:
                ks.pv_rules.settle(ks, name, _claim_of(current))
            return ok(answer)

        async def evict(request: Request, ns: str | None, name: str) -> Response:
            body = await body_of(request)
            with ks._lock:
                current = ks._objects.get(("pods", ns, name))
                if current is None:
                    return status(404, "NotFound", f'pods "{name}" not found')
                options = body.get("deleteOptions") or {}
                failed = precondition_failed(options, current)
                if failed:
                    return failed
                if ks.held_by_finalizers("Pod", current, options.get("gracePeriodSeconds")) is None:
                    ks.delete("Pod", name, ns)
            return ok({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

        async def watch(request: Request, plural: str, ns: str | None) -> Response:
            """A watch: the history after ``resourceVersion``, then live events; bookmarks when asked;
            a clean end at ``timeoutSeconds`` (watch.go ``serveWatch``: ``timeoutCh``). From below the
            watch cache's oldest resourceVersion: HTTP 200 and one ERROR event 410."""
            params = request.query_params
            since = int(params.get("resourceVersion") or 0)
            timeout = float(params.get("timeoutSeconds") or 1800)
            bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
            labels, fields = params.get("labelSelector"), params.get("fieldSelector")
            kind, api_version, _ = RESOURCES[plural]
            watcher = _Watcher(asyncio.get_running_loop(), plural=plural, namespace=ns, path=request.url.path)
            with ks._lock:
                if since > ks._rv:
                    # The cacher waits (3 s) for a version it has not reached, then answers 504 (apiserver
                    # pkg/storage/cacher/watch_cache.go ``waitUntilFreshAndBlock``, storage/errors.go
                    # ``NewTooLargeResourceVersionError``): after an etcd restore, or from a lagging HA
                    # API server. Answered at once here.
                    return status(504, "Timeout", f"Too large resource version: {since}, current: {ks._rv}")
                oldest = ks._watch_oldest(plural)
                expired = bool(since) and since < oldest
                backlog = [] if expired else [(e, o) for rv, p, e, o in ks._history
                                              if p == plural and rv > since
                                              and (ns is None or objects.namespace(o) == ns)]
                silent = ks._faults.silent
                watcher.agent = request.headers.get("user-agent", "")
                watcher.silent = bool(silent and silent.take("GET", watcher.path, watcher.agent))
                short = bool(ks._faults.short and ks._faults.short.take("GET", watcher.path))
                if short:
                    return StreamingResponse(iter(()), media_type="application/json")
                if not expired:
                    ks._subscribers.append(watcher)

            def line(event: str, obj: dict[str, Any]) -> bytes:
                return orjson.dumps({"type": event, "object": obj}) + b"\n"

            def wanted(obj: dict[str, Any]) -> bool:
                return label_matches(labels, objects.labels(obj)) and field_matches(fields, obj)

            def mark(marker: str) -> None:
                """Queue a bookmark (or the timeout's end) behind every event already queued, so its
                resourceVersion never runs ahead of an event the client has not seen yet."""
                with ks._lock:
                    watcher.put((marker, {"kind": kind, "apiVersion": api_version,
                                          "metadata": {"resourceVersion": str(ks._rv)}}))

            async def stream() -> AsyncIterator[bytes]:
                loop = watcher.loop
                deadline = loop.time() + timeout
                next_bookmark = loop.time() + ks.bookmark_interval if bookmarks else float("inf")
                try:
                    if expired:
                        yield line("ERROR", too_old(since, oldest))
                        return
                    for event, obj in backlog:
                        if wanted(obj) and not watcher.silent:
                            yield line(event, obj)
                    while not ks._closing:
                        now = loop.time()
                        if not watcher.silent and now >= deadline:
                            mark("BOOKMARK" if bookmarks else "END")  # the cacher's bookmark before the timeout
                            if bookmarks:
                                mark("END")
                            deadline = float("inf")
                        elif not watcher.silent and now >= next_bookmark:
                            mark("BOOKMARK")
                            next_bookmark = now + ks.bookmark_interval
                        # a silent watch keeps no clock; 0.5 s bounds the wait so a stop is seen
                        wake = 0.5 if watcher.silent else min(deadline, next_bookmark, now + 0.5) - now
                        try:
                            item = await within(watcher.queue.get(), max(0.01, wake))
                        except TimeoutError:
                            continue
                        if item is None or item[0] == "END":
                            return
                        if watcher.silent:
                            continue  # a half-open connection carries nothing
                        event, obj = item
                        if event == "BOOKMARK" or wanted(obj):
                            yield line(event, obj)
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
