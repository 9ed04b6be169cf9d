"""kube-scheduler's extender v1 wire format (k8s.io/kube-scheduler/extender/v1), decoded once.

The Go types carry no json tags, so keys are the Go field names (``Pod``, ``NodeNames``,
``FailedNodes``, ``Host``, ``Score``); Go's decoder matches keys case-insensitively, so we accept any
case on input and always emit the exact names. Bodies are decoded with one ``orjson.loads``; the
Pod and Node objects stay plain dicts (Node objects are returned unchanged in full-object mode).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson


class BadRequest(Exception):
    """A request we cannot answer; the message is for the person reading kube-scheduler's log."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class ExtenderArgs:
    pod: dict[str, Any]
    node_names: list[str]
    nodes: dict[str, Any] | None  # the NodeList as sent, when nodeCacheCapable is false
    node_items: list[dict[str, Any]] | None

    @property
    def cache_capable(self) -> bool:
        return self.nodes is None

    def pod_ref(self) -> str:
        meta = self.pod.get("metadata") or {}
        return f"{meta.get('namespace') or 'default'}/{meta.get('name') or '?'}"


def _fold(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Keys lower-cased; an exact-case key wins over a differently-cased duplicate, as in Go."""
    folded: dict[str, Any] = {}
    for key, value in doc.items():
        lk = key.lower()
        if lk not in folded or key in ("Pod", "Nodes", "NodeNames", "items"):
            folded[lk] = value
    return folded


def decode_args(body: bytes) -> ExtenderArgs:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"ExtenderArgs must be a JSON object, got {type(doc).__name__}")
    args = _fold(doc)
    pod = args.get("pod")
    if pod is None:
        raise BadRequest("ExtenderArgs.Pod is missing")
    if not isinstance(pod, dict):
        raise BadRequest(f"ExtenderArgs.Pod must be an object, got {type(pod).__name__}")
    meta = pod.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise BadRequest("ExtenderArgs.Pod.metadata must be an object")
    spec = pod.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise BadRequest("ExtenderArgs.Pod.spec must be an object")
    if spec is not None and spec.get("volumes") is not None and not isinstance(spec.get("volumes"), list):
        raise BadRequest("ExtenderArgs.Pod.spec.volumes must be a list")

    names = args.get("nodenames")
    nodes = args.get("nodes")
    if nodes is not None:
        if not isinstance(nodes, dict):
            raise BadRequest(f"ExtenderArgs.Nodes must be a NodeList object, got {type(nodes).__name__}")
        items = _fold(nodes).get("items") or []
        if not isinstance(items, list):
            raise BadRequest("ExtenderArgs.Nodes.items must be a list")
        node_names: list[str] = []
        for i, item in enumerate(items):
            name = (item.get("metadata") or {}).get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name:
                raise BadRequest(f"ExtenderArgs.Nodes.items[{i}] has no metadata.name")
            node_names.append(name)
        return ExtenderArgs(pod, node_names, nodes, items)
    if names is None:
        raise BadRequest("ExtenderArgs has neither NodeNames nor Nodes: no candidate nodes to judge")
    if not isinstance(names, list) or not set(map(type, names)) <= {str}:  # map(type): C speed
        raise BadRequest("ExtenderArgs.NodeNames must be a list of strings")
    return ExtenderArgs(pod, names, None, None)


def encode_filter(
    args: ExtenderArgs,
    passing: list[str],
    failed: Mapping[str, str],
    unresolvable: Mapping[str, str],
    error: str = "",
) -> bytes:
    """ExtenderFilterResult in the mode we were asked: names, or the Node objects unchanged."""
    if args.nodes is None:
        result: dict[str, Any] = {"Nodes": None, "NodeNames": passing}
    else:
        keep = set(passing)
        items = args.node_items or []
        kept = [item for item, name in zip(items, args.node_names, strict=True) if name in keep]
        nodes = {k: v for k, v in args.nodes.items() if k.lower() != "items"}
        nodes["items"] = kept
        result = {"Nodes": nodes, "NodeNames": None}
    result["FailedNodes"] = dict(failed)
    result["FailedAndUnresolvableNodes"] = dict(unresolvable)
    result["Error"] = error
    return orjson.dumps(result)


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

    def encode(self, names: Iterable[str], scores: Iterable[int]) -> bytes:
        get = self._frags.get
        make = self._make
        return b"[" + b",".join([(get(n) or make(n))[s] for n, s in zip(names, scores, strict=True)]) + b"]"


def encode_error(message: str) -> bytes:
    return orjson.dumps({"Error": message})
