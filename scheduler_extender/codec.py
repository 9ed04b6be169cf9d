"""kube-scheduler's extender v1 wire format (k8s.io/kube-scheduler/extender/v1), decoded once.

The Go types carry no json tags, so keys are the Go field names (``Pod``, ``NodeNames``,
``FailedNodes``, ``Host``, ``Score``); Go's decoder matches keys case-insensitively, so we accept any
case on input and always emit the exact names. One msgspec pass splits the body into raw slices:
the Pod is decoded (it is small), Node objects of full-object mode stay raw bytes and go back out
unchanged. msgspec is the one library that decodes to raw slices at C speed: measured, building
1,000 Node dicts with orjson cost more than the whole rest of a request (docs/performance.md).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from linstor_scheduler.kube import objects


class BadRequest(Exception):
    """A request we cannot answer; the message is for the person reading kube-scheduler's log."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class ExtenderArgs:
    _pod: dict[str, Any] | None  # decoded on first use: a pod seen a moment ago (filter, then prioritize) is not
    _names: list[str] | None  # decoded on first use: a cached answer never needs them
    nodes: dict[str, msgspec.Raw] | None  # the NodeList's other keys, raw, when nodeCacheCapable is false
    node_items: list[msgspec.Raw] | None  # each Node object exactly as sent
    raw_names: bytes | None = None  # the NodeNames array exactly as sent (names mode)
    raw_pod: bytes = b"null"  # the Pod object exactly as sent

    @property
    def pod(self) -> dict[str, Any]:
        if self._pod is None:
            self._pod = decode_pod(self.raw_pod)
        return self._pod

    @property
    def node_names(self) -> list[str]:
        if self._names is None:
            self._names = decode_names(self.raw_names or b"[]")
        return self._names


class _Meta(msgspec.Struct):
    name: Any = None


class _NodeHead(msgspec.Struct):
    """All we read of a Node object: its name. msgspec skips the rest without building it."""

    metadata: _Meta | None = None


_RAW_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_NAMES = msgspec.json.Decoder(list[str])
_NODE_HEAD = msgspec.json.Decoder(_NodeHead)
_EXACT = ("Pod", "Nodes", "NodeNames", "items")


def _fold(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Keys lower-cased; an exact-case key wins over a differently-cased duplicate, as in Go."""
    folded: dict[str, Any] = {}
    for key, value in doc.items():
        lk = key.lower()
        if lk not in folded or key in _EXACT:
            folded[lk] = value
    return folded


def _is_null(raw: Any) -> bool:
    """Without copying the value: a NodeList is megabytes."""
    return len(raw) == 4 and bytes(raw) == b"null"


def _type_name(raw: bytes) -> str:
    try:
        return type(orjson.loads(memoryview(raw))).__name__
    except orjson.JSONDecodeError:
        return "invalid JSON"


_NAMES_KEY = b'"NodeNames":['


def _split_names(body: bytes) -> tuple[bytes, bytes] | None:
    """kube-scheduler's own encoding ends with ``,"NodeNames":[...]}`` (Go writes the fields in
    struct order, no spaces). Cut that array out by byte search, so the JSON scan covers only the
    small rest (measured: 16.5 µs to scan a body with 1,000 names, most of a cached answer's
    cost). Safe because the array must be the last top-level value: its first ``]`` must be the
    byte before the final ``}``, which no nested key and no string holding ``]`` can satisfy.
    The array itself is validated when it is decoded (on every cache miss); a cache hit means
    bytes identical to an array that was. Anything else takes the general path."""
    if not body.endswith(b"]}"):
        return None  # e.g. full Node objects ("NodeNames":null): no 3 MB search for a key that is not there
    start = body.rfind(_NAMES_KEY)
    if start < 1 or body[start - 1:start] != b",":
        return None
    end = body.find(b"]", start)
    if end != len(body) - 2 or body[-1:] != b"}":
        return None
    return body[:start - 1] + b"}", body[start + len(_NAMES_KEY) - 1:end + 1]


_NULL = msgspec.Raw(b"null")


class _FastNodeList(msgspec.Struct, forbid_unknown_fields=True):
    items: list[msgspec.Raw] | None = None
    kind: msgspec.Raw = _NULL  # Raw takes any JSON value, null included: "Raw | None" would not
    apiVersion: msgspec.Raw = _NULL
    metadata: msgspec.Raw = _NULL


class _FastArgs(msgspec.Struct, forbid_unknown_fields=True):
    """ExtenderArgs spelled exactly as kube-scheduler writes it: one scan of a multi-megabyte body
    gives the raw Pod, the NodeList's parts and each raw Node (the general path scans it three
    times). Any other spelling fails here (unknown field) and takes the general path."""

    Pod: msgspec.Raw = _NULL
    Nodes: _FastNodeList | None = None
    NodeNames: msgspec.Raw = _NULL


_FAST_ARGS = msgspec.json.Decoder(_FastArgs)


def _decode_full_nodes(body: bytes) -> ExtenderArgs | None:
    try:
        fast = _FAST_ARGS.decode(body)
    except msgspec.DecodeError:  # also ValidationError: another spelling or shape, the general path decides
        return None
    if fast.Nodes is None or _is_null(fast.Pod):
        return None
    rest = {key: raw for key, raw in (("kind", fast.Nodes.kind), ("apiVersion", fast.Nodes.apiVersion),
                                      ("metadata", fast.Nodes.metadata)) if raw is not _NULL}
    items = fast.Nodes.items or []
    return ExtenderArgs(None, _node_names(items), rest, items, None, bytes(fast.Pod))


def _node_names(items: list[msgspec.Raw]) -> list[str]:
    names: list[str] = []
    for i, item in enumerate(items):
        try:
            head = _NODE_HEAD.decode(item)
        except msgspec.ValidationError:
            head = None
        name = head.metadata.name if head is not None and head.metadata is not None else None
        if not isinstance(name, str) or not name:
            raise BadRequest(f"ExtenderArgs.Nodes.items[{i}] has no metadata.name")
        names.append(name)
    return names


def _why(exc: BaseException) -> str:
    """What a decoder said, in words for kube-scheduler's log (a RecursionError says nothing useful)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def decode_args(body: bytes) -> ExtenderArgs:
    """One pass over the body: the Pod is decoded (small), node names are read, and full Node
    objects are kept as raw byte slices, never turned into Python objects. Whatever the bytes,
    the answer is ExtenderArgs or BadRequest (400): invalid UTF-8, nesting deeper than the
    decoders allow and numbers beyond a double are the sender's errors, not ours."""
    try:
        return _decode_any(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"request body is not valid JSON: {_why(exc)}") from None


def _decode_any(body: bytes) -> ExtenderArgs:
    split = _split_names(body)
    if split is None:  # not the names form: the full-Node form as kube-scheduler writes it?
        full = _decode_full_nodes(body)
        if full is not None:
            return full
    if split is not None:
        try:  # the rest as kube-scheduler writes it ({"Pod":{...},"Nodes":null}): no dict, no key folding
            exact = _FAST_ARGS.decode(split[0])
        except msgspec.DecodeError:  # another spelling or shape, or broken: the paths below decide
            exact = None
        if exact is not None and exact.Nodes is None and exact.NodeNames is _NULL and not _is_null(exact.Pod):
            return ExtenderArgs(None, None, None, None, split[1], bytes(exact.Pod))
        try:
            top = _fold(_RAW_OBJECT.decode(split[0]))
        except msgspec.DecodeError:
            split = None  # let the general path give the error for the whole body
        else:
            if "nodenames" in top:  # a second, differently-cased NodeNames: Go's rules, general path
                split = None
            else:
                top["nodenames"] = split[1]
    if split is None:
        return _decode_args(body)
    return _finish(top)


def _decode_args(body: bytes) -> ExtenderArgs:
    try:
        top = _fold(_RAW_OBJECT.decode(body))
    except msgspec.ValidationError:
        raise BadRequest(f"ExtenderArgs must be a JSON object, got {_type_name(body)}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    return _finish(top)


def _finish(top: dict[str, Any]) -> ExtenderArgs:
    raw = top.get("pod")
    raw_pod = bytes(raw) if raw is not None else b"null"
    if raw_pod == b"null":
        raise BadRequest("ExtenderArgs.Pod is missing")
    return _nodes_part(top, raw_pod)


def decode_names(raw_names: bytes) -> list[str]:
    """The NodeNames array as sent (``ExtenderArgs.raw_names``), checked: a list of strings."""
    try:
        return _NAMES.decode(raw_names)
    except msgspec.ValidationError:
        raise BadRequest("ExtenderArgs.NodeNames must be a list of strings") from None
    except (msgspec.DecodeError, RecursionError) as exc:  # e.g. invalid UTF-8 in a name
        raise BadRequest(f"ExtenderArgs.NodeNames is not valid JSON: {_why(exc)}") from None


def decode_pod(raw_pod: bytes) -> dict[str, Any]:
    """The Pod, checked for the shapes we read (a wrong shape is the sender's error: 400)."""
    try:
        pod = orjson.loads(raw_pod)
    except (orjson.JSONDecodeError, RecursionError) as exc:  # invalid UTF-8, 1e999999, > 1,024 levels deep
        raise BadRequest(f"ExtenderArgs.Pod is not valid JSON: {_why(exc)}") from None
    if not isinstance(pod, dict):
        raise BadRequest(f"ExtenderArgs.Pod must be an object, got {type(pod).__name__}")
    meta = objects.raw_meta(pod)
    if meta is not None and not isinstance(meta, dict):
        raise BadRequest("ExtenderArgs.Pod.metadata must be an object")
    for field in ("name", "namespace"):  # they name the pod's claims (an ephemeral volume's PVC)
        if meta is not None and meta.get(field) is not None and not isinstance(meta.get(field), str):
            raise BadRequest(f"ExtenderArgs.Pod.metadata.{field} must be a string")
    spec = pod.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise BadRequest("ExtenderArgs.Pod.spec must be an object")
    if spec is not None and spec.get("volumes") is not None and not isinstance(spec.get("volumes"), list):
        raise BadRequest("ExtenderArgs.Pod.spec.volumes must be a list")
    return pod


def _nodes_part(top: dict[str, Any], raw_pod: bytes) -> ExtenderArgs:
    raw_nodes = top.get("nodes")
    if raw_nodes is not None and not _is_null(raw_nodes):
        try:
            nodes = _RAW_OBJECT.decode(raw_nodes)
        except msgspec.ValidationError:
            raise BadRequest(f"ExtenderArgs.Nodes must be a NodeList object, got {_type_name(raw_nodes)}") from None
        rest = {k: v for k, v in nodes.items() if k.lower() != "items"}
        raw_items = _fold(nodes).get("items")
        try:
            items = _RAW_LIST.decode(raw_items) if raw_items is not None and not _is_null(raw_items) else []
        except msgspec.ValidationError:
            raise BadRequest("ExtenderArgs.Nodes.items must be a list") from None
        return ExtenderArgs(None, _node_names(items), rest, items, None, raw_pod)
    raw_names = top.get("nodenames")
    names_bytes = bytes(raw_names) if raw_names is not None else b"null"
    if names_bytes == b"null":
        raise BadRequest("ExtenderArgs has neither NodeNames nor Nodes: no candidate nodes to judge")
    if not names_bytes.startswith(b"["):
        raise BadRequest("ExtenderArgs.NodeNames must be a list of strings")
    return ExtenderArgs(None, None, None, None, names_bytes, raw_pod)


def encode_filter(
    args: ExtenderArgs,
    passing: list[str],
    failed: Mapping[str, str],
    unresolvable: Mapping[str, str],
    error: str = "",
) -> bytes:
    """ExtenderFilterResult in the mode we were asked: names, or the Node objects byte-for-byte."""
    tail = (b'"FailedNodes":' + orjson.dumps(failed) + b',"FailedAndUnresolvableNodes":'
            + orjson.dumps(unresolvable) + b',"Error":' + orjson.dumps(error) + b"}")
    if args.nodes is None:
        return b'{"Nodes":null,"NodeNames":' + orjson.dumps(passing) + b"," + tail
    keep = set(passing)
    items = args.node_items or []
    kept = [item for item, name in zip(items, args.node_names, strict=True) if name in keep]
    parts: list[Any] = [b'{"Nodes":{']
    for k, v in args.nodes.items():
        parts += [orjson.dumps(k), b":", v, b","]
    parts += [b'"items":[', b",".join(kept), b']},"NodeNames":null,', tail]
    return b"".join(parts)  # one copy of the megabytes, not one per concatenation


class PriorityEncoder:
    """HostPriorityList ``[{"Host": ..., "Score": ...}]`` from byte fragments cached per node name.

    Building 1,000 dicts per request and serialising them costs more than joining precomputed
    fragments: each node name is JSON-escaped once (by orjson) into its 11 possible entries.
    """

    def __init__(self, max_names: int = 100_000) -> None:
        self._frags: dict[str, tuple[bytes, ...]] = {}
        self._max = max_names

    def _make(self, name: str) -> tuple[bytes, ...]:
        prefix = b'{"Host":' + orjson.dumps(name) + b',"Score":'
        frags = tuple(prefix + str(i).encode() + b"}" for i in range(11))
        if len(self._frags) < self._max:
            self._frags[name] = frags
        return frags

    def encode(self, names: list[str], scores: list[int]) -> bytes:
        if len(names) != len(scores):
            raise ValueError("one score per node name")
        frags = list(map(self._frags.get, names))  # C-level loops throughout: ~25 ns per node
        if None in frags:
            frags = [f or self._make(n) for f, n in zip(frags, names, strict=True)]
        return b"[" + b",".join(map(operator.getitem, frags, scores)) + b"]"


def encode_error(message: str) -> bytes:
    return orjson.dumps({"Error": message})
