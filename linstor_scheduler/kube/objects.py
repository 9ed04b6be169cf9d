"""The fields we read of raw Kubernetes objects (dicts as the API server sends them), in one place.

Every component reads objects as decoded JSON: informer items, direct reads, AdmissionReviews,
ExtenderArgs, snapshots, the doubles' store. Any field may be missing or ``null`` in them (a pod
being created has no uid yet and often no namespace; a list item no kind; a test's object only
what the test needs), and the webhook and the extender read what a client sent, which may have any
shape. So each accessor says once what a missing, null or malformed field reads as, and no caller
writes ``(obj.get("metadata") or {}).get(...)`` again (tests/test_kube_objects.py keeps it so).

The rules, the same for every accessor (``kopf``'s ``bodies`` module is the model):
- a string field (``name``, ``namespace``, ``uid``, ...) missing, null or empty reads as ``default``
  (None unless given): Kubernetes itself treats an empty one as unset (``omitempty``);
- a map (``labels``, ``annotations``, ``metadata``, ``spec``, ``status``) that is missing, null or
  not a map reads as ``EMPTY``, one shared empty dict that refuses writes: no dict is made per read
  (the informers' transforms read 100,000 objects at a relist), and a caller that tried to write
  into it fails loudly instead of writing into nothing;
- a list (``ownerReferences``, ``finalizers``) missing, null or not a list reads as ``()``.

Writers use ``writable_meta``. Objects are JSON-decoded, so a map is a ``dict`` (``isinstance`` on
``dict`` is the fast check; ``Mapping`` would ask the ABC machinery at every read).

``key`` and ``key_of`` are the one ``namespace/name`` key (see ``key_of`` for its two forms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

Obj = Mapping[str, Any]


class _Empty(dict):  # type: ignore[type-arg]
    """The empty map every accessor returns for a missing one: one object, never written into.

    A ``dict`` (what JSON decoding makes, so ``isinstance(x, dict)``, ``orjson.dumps`` and ``==``
    treat it as the ``{}`` the callers used to make) whose writes raise; its copies (``dict(x)``,
    ``x.copy()``, ``copy.copy``, ``copy.deepcopy``, ``{**x}``) are plain dicts, the caller's own."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("objects.EMPTY is read-only: copy it, or write into writable_meta(obj)")

    __setitem__ = __delitem__ = setdefault = update = pop = popitem = clear = __ior__ = _refuse  # type: ignore

    def __copy__(self) -> dict[str, Any]:
        return {}

    def __deepcopy__(self, memo: Any) -> dict[str, Any]:
        return {}

    def __reduce__(self) -> Any:
        return (dict, ())


EMPTY: Mapping[str, Any] = _Empty()
DEFAULT_NAMESPACE = "default"
MISSING_NAME = "?"  # a key's name part when the object has none (never so from the API server)


def raw_meta(obj: Obj) -> Any:
    """``metadata`` exactly as sent (None when absent), for the validators that must tell a wrong
    shape (the sender's error: 400) from a missing one; every other reader wants ``meta``."""
    return obj.get("metadata")


def meta(obj: Obj | None) -> Mapping[str, Any]:
    """``metadata``; ``EMPTY`` when the object is None or its metadata missing, null or not a map."""
    m = obj.get("metadata") if obj else None
    return m if isinstance(m, dict) else EMPTY


def writable_meta(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's own ``metadata`` dict, to write into: made (or replaced, when it is null or not a
    map) on the object when it has none."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = obj["metadata"] = {}
    return m


def name(obj: Obj | None, default: Any = None) -> Any:
    """``metadata.name``; ``default`` when missing, null or empty."""
    m = obj.get("metadata") if obj else None
    return (m.get("name") or default) if isinstance(m, dict) else default


def generate_name(obj: Obj | None, default: Any = None) -> Any:
    """``metadata.generateName``: what names a pod being created before the API server has named it."""
    m = obj.get("metadata") if obj else None
    return (m.get("generateName") or default) if isinstance(m, dict) else default


def namespace(obj: Obj | None, default: Any = None) -> Any:
    """``metadata.namespace``; ``default`` when missing, null or empty. Pass ``DEFAULT_NAMESPACE`` for
    a namespaced object sent without one (the API server puts it in ``default``), leave None where
    no namespace means a cluster-scoped object."""
    m = obj.get("metadata") if obj else None
    return (m.get("namespace") or default) if isinstance(m, dict) else default


def uid(obj: Obj | None, default: Any = None) -> Any:
    """``metadata.uid``: what tells an object from another of the same name (a pod recreated by its
    StatefulSet) in preconditions and in the records that outlive a read."""
    m = obj.get("metadata") if obj else None
    return (m.get("uid") or default) if isinstance(m, dict) else default


def resource_version(obj: Obj | None) -> Any:
    """``metadata.resourceVersion`` (None when missing): an object's, for conditional writes, or a
    list answer's, to watch from."""
    m = obj.get("metadata") if obj else None
    return (m.get("resourceVersion") or None) if isinstance(m, dict) else None


def continue_token(doc: Obj | None) -> Any:
    """A list answer's ``metadata.continue``: the next page's token, None on the last page."""
    m = doc.get("metadata") if doc else None
    return (m.get("continue") or None) if isinstance(m, dict) else None


def creation_timestamp(obj: Obj | None) -> Any:
    """``metadata.creationTimestamp`` as sent (RFC 3339 text), None when missing."""
    m = obj.get("metadata") if obj else None
    return (m.get("creationTimestamp") or None) if isinstance(m, dict) else None


def deletion_timestamp(obj: Obj | None) -> Any:
    """``metadata.deletionTimestamp`` (None when missing): set, the object is being deleted and only
    its finalizers hold it."""
    m = obj.get("metadata") if obj else None
    return (m.get("deletionTimestamp") or None) if isinstance(m, dict) else None


def deletion_grace_period_seconds(obj: Obj | None) -> Any:
    """``metadata.deletionGracePeriodSeconds`` as sent, None when missing (0 is a value: the object
    was deleted with grace 0)."""
    m = obj.get("metadata") if obj else None
    return m.get("deletionGracePeriodSeconds") if isinstance(m, dict) else None


def labels(obj: Obj | None) -> Mapping[str, Any]:
    """``metadata.labels``; ``EMPTY`` when missing, null or not a map."""
    m = obj.get("metadata") if obj else None
    value = m.get("labels") if isinstance(m, dict) else None
    return value if isinstance(value, dict) else EMPTY


def annotations(obj: Obj | None) -> Mapping[str, Any]:
    """``metadata.annotations``; ``EMPTY`` when missing, null or not a map."""
    m = obj.get("metadata") if obj else None
    value = m.get("annotations") if isinstance(m, dict) else None
    return value if isinstance(value, dict) else EMPTY


def owner_references(obj: Obj | None) -> Sequence[Any]:
    """``metadata.ownerReferences``; ``()`` when missing, null or not a list (entries as sent: check
    each is a map)."""
    m = obj.get("metadata") if obj else None
    value = m.get("ownerReferences") if isinstance(m, dict) else None
    return value if isinstance(value, list) else ()


def finalizers(obj: Obj | None) -> Sequence[Any]:
    """``metadata.finalizers``; ``()`` when missing, null or not a list."""
    m = obj.get("metadata") if obj else None
    value = m.get("finalizers") if isinstance(m, dict) else None
    return value if isinstance(value, list) else ()


def spec(obj: Obj | None) -> Mapping[str, Any]:
    """``spec``; ``EMPTY`` when the object is None or its spec missing, null or not a map."""
    value = obj.get("spec") if obj else None
    return value if isinstance(value, dict) else EMPTY


def status(obj: Obj | None) -> Mapping[str, Any]:
    """``status``; ``EMPTY`` when the object is None or its status missing, null or not a map."""
    value = obj.get("status") if obj else None
    return value if isinstance(value, dict) else EMPTY


def key_of(namespace: str | None, name: Any, *, default_namespace: str | None = DEFAULT_NAMESPACE) -> str:
    """The one ``namespace/name`` key, of the parts (a record's, a reference's, a flag's).

    A namespace missing, null or empty is ``default_namespace``: ``"default"`` for namespaced
    objects (where the API server puts a namespaced object sent without one: a pod in an
    AdmissionReview or in ExtenderArgs, a claim reference written without it). With
    ``default_namespace=None`` the key is the bare name when there is no namespace: the informers'
    store keys, where one cache holds cluster-scoped objects (Nodes, PVs, StorageClasses) by name
    and namespaced ones by ``namespace/name``. A name missing, null or empty is ``MISSING_NAME``."""
    ns = namespace or default_namespace
    return f"{ns}/{name or MISSING_NAME}" if ns else str(name or MISSING_NAME)


def key(obj: Obj | None, *, default_namespace: str | None = DEFAULT_NAMESPACE) -> str:
    """``key_of`` the object's namespace and name."""
    m = obj.get("metadata") if obj else None
    if isinstance(m, dict):
        return key_of(m.get("namespace"), m.get("name"), default_namespace=default_namespace)
    return key_of(None, None, default_namespace=default_namespace)
