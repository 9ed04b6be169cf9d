"""The project's one LINSTOR client: async httpx, typed reads, retries, controller failover, TLS.

- Idempotent reads (GET) retry with capped exponential backoff and jitter; writes never retry once
  the request may have reached the controller (only connection errors, where it did not).
- Several controllers (``LS_CONTROLLERS``-style list): the last one that worked is tried first.
- Every answer is decoded into its record (``models.py``: one msgspec Struct per REST shape) and
  validated as it is decoded; the polls of big clusters decode projections of them (``compact.py``).
- ``/v1/view/resources`` is streamed: as whole records item by item (ijson, ``iter_resources``), or
  as batches of projections (``iter_resource_batches``, the polls of big clusters), so 100k
  resources never sit in memory as one body or one tree of dicts.
- Every HTTP attempt is counted in ``calls`` (method, path) and reported to ``on_request``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import ijson
import msgspec
import orjson

from .compact import (
    ArraySplitter,
    NodeItem,
    ResourceDefinitionItem,
    ResourceItem,
    StoragePoolDefinitionItem,
    StoragePoolItem,
)
from .errors import EventsNotSupported, LinstorError, LinstorProtocolError, LinstorUnavailable
from .models import (
    ApiCallRc,
    Node,
    Record,
    Resource,
    ResourceDefinition,
    ResourceGroup,
    StoragePool,
    StoragePoolDefinition,
)

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Record)
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
# Said with every "no controller answered": an operator reading it knows which setting to check.
WHERE_TO_SET = " (is the LINSTOR controller URL right? set --controllers or LS_CONTROLLERS)"


def unbound(resp: httpx.Response) -> httpx.Response:
    """The response without httpx's back reference from its stream (encode/httpx#3733, open).

    httpx wraps every response body in a ``BoundAsyncStream`` that points back at the response: a
    reference cycle, freed only by the cyclic collector. A read's body (5-100 MB at 5,000 nodes)
    then lives until the next collection. In the extender, which raises the young-generation
    threshold and keeps the collector off during reads, none ran for minutes: measured at 1,000
    nodes, every poll's node and pool bodies stayed alive (RSS +0.6 MB/s, 339 MB after 25 polls at
    5,000 nodes); and a ``gc.freeze`` after such a read would pin them for good. Once the body is
    read (or the stream closed), the stream is dead weight: replacing it with an empty one breaks
    the cycle, and reference counting frees the response and its body as soon as we drop it."""
    resp.stream = httpx.ByteStream(b"")
    return resp


def _batches_of(path: str, item_type: Any, **sizes: int) -> Callable[[httpx.Response], AsyncIterator[list[Any]]]:
    """How a streamed list is read: its body cut into whole items as it arrives and decoded in
    batches of ``item_type`` (``compact.ArraySplitter``; ``sizes`` its batch and window sizes)."""
    async def batches(resp: httpx.Response) -> AsyncIterator[list[Any]]:
        splitter = ArraySplitter(item_type, **sizes)
        try:
            async for chunk in resp.aiter_bytes():
                batch = splitter.feed(chunk)
                if batch:
                    yield batch
            yield splitter.close()
        except msgspec.ValidationError as exc:
            raise LinstorProtocolError(f"GET {path}: unexpected item: {exc}", status=resp.status_code) from None
        except msgspec.DecodeError as exc:
            raise LinstorProtocolError(f"GET {path}: body is not a valid JSON array: {exc}",
                                       status=resp.status_code) from None

    return batches


def where_to_look(last_error: BaseException | None, timeout: float) -> str:
    """The setting to check after "no controller answered": a controller that was reached but did
    not answer in time points at the timeout (a slow controller, or ``--linstor-timeout`` too short
    for it), not at the URL; anything else (refused, not connected, 5xx) at the URL."""
    if isinstance(last_error, httpx.TimeoutException) and not isinstance(last_error, httpx.ConnectTimeout):
        return (f" (connected, but no answer within {timeout:g} s: a slow or overloaded controller, or too short "
                "a --linstor-timeout / LINSTOR_SCHEDULER_LINSTOR_TIMEOUT)")
    return WHERE_TO_SET


def parse_controllers(text: str | Iterable[str]) -> list[str]:
    """``linstor://a,linstor+ssl://b,http://c:8080,d`` -> base URLs (3370 http, 3371 https by default)."""
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p and p.strip()]
    urls = []
    for part in parts:
        scheme, sep, rest = part.partition("://")
        if not sep:
            scheme, rest = "linstor", part
        scheme = scheme.lower()
        if scheme in ("linstor", "http"):
            proto, port = "http", 3370
        elif scheme in ("linstor+ssl", "https"):
            proto, port = "https", 3371
        else:
            raise ValueError(f"unsupported LINSTOR controller URL scheme {scheme!r} in {part!r}")
        rest = rest.rstrip("/")
        host = rest
        has_port = rest.rsplit(":", 1)[-1].isdigit() and not rest.endswith("]")
        if not has_port and scheme.startswith("linstor"):
            host = f"{rest}:{port}"
        urls.append(f"{proto}://{host}")
    if not urls:
        raise ValueError("no LINSTOR controller URL given")
    return urls


def _decode_replies(body: bytes) -> list[ApiCallRc]:
    try:
        doc = orjson.loads(body) if body else []
        if isinstance(doc, dict):
            doc = [doc]
        return [ApiCallRc.parse(x) for x in doc]
    except (orjson.JSONDecodeError, msgspec.ValidationError, TypeError):
        return []


class _ChunkReader:
    """An async file-like view of a streamed body, for ijson."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""  # ijson probes with read(0) to learn bytes vs. str: consume nothing
        while True:  # an empty chunk would read as end-of-file to ijson
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return b""
            if chunk:
                return chunk


class LinstorClient:
    def __init__(
        self,
        controllers: str | Iterable[str],
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        retries: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_request: Callable[[str, str, int | None, float], None] | None = None,
    ) -> None:
        self._settings = {"timeout": timeout, "connect_timeout": connect_timeout, "retries": retries,
                          "backoff_base": backoff_base, "backoff_cap": backoff_cap, "ca_file": ca_file,
                          "cert_file": cert_file, "key_file": key_file, "verify": verify, "on_request": on_request}
        self.controllers = parse_controllers(controllers)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = max(1, retries)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self.on_request = on_request
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self._current = 0
        verify_arg: Any = verify
        if any(u.startswith("https") for u in self.controllers):
            ctx = ssl.create_default_context(cafile=ca_file) if verify else ssl._create_unverified_context()
            if cert_file:
                ctx.load_cert_chain(cert_file, key_file)
            verify_arg = ctx
        self._http = httpx.AsyncClient(
            verify=verify_arg, timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"Accept": "application/json", "User-Agent": "linstor-scheduler"},
        )

    def sibling(self) -> LinstorClient:
        """A client with the same controllers and settings, for another event loop (an httpx client
        belongs to the loop it was used on): the extender reads LINSTOR in a thread of its own."""
        settings = dict(self._settings, on_request=self.on_request)
        return LinstorClient(self.controllers, **settings)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> LinstorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- transport -----------------------------------------------------------------------------
    def _order(self) -> list[int]:
        n = len(self.controllers)
        return [(self._current + i) % n for i in range(n)]

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2**attempt) * (0.5 + random.random() / 2)

    def _note(self, method: str, path: str, status: int | None, started: float) -> None:
        self.calls[(method, path)] += 1
        if self.on_request:
            self.on_request(method, path, status, time.perf_counter() - started)

    async def _request(self, method: str, path: str, *, params: Any = None, body: Any = None,
                       timeout: float | None = None, retries: int | None = None) -> httpx.Response:
        idempotent = method == "GET"
        attempts = (retries if retries is not None else self.retries) if idempotent else 1
        last: str = "no attempt made"
        last_exc: BaseException | None = None  # the last failure, when it was a transport error
        for attempt in range(attempts):
            for idx in self._order():
                base = self.controllers[idx]
                started = time.perf_counter()
                try:
                    resp = await self._http.request(
                        method, base + path, params=params,
                        content=orjson.dumps(body) if body is not None else None,
                        headers={"Content-Type": "application/json"} if body is not None else None,
                        timeout=httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout)) if timeout
                        else httpx.USE_CLIENT_DEFAULT,  # None would mean *no* timeout at all
                    )
                except httpx.ConnectError as exc:  # nothing reached the controller: safe to try another
                    self._note(method, path, None, started)
                    last, last_exc = f"{base}: cannot connect ({exc})", exc
                    log.warning("LINSTOR %s %s: %s%s", method, path, last,
                                "; trying the next controller" if len(self.controllers) > 1 else "")
                    continue
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    self._note(method, path, None, started)
                    last, last_exc = f"{base}: {type(exc).__name__} ({exc})", exc
                    if not idempotent:
                        raise LinstorUnavailable(f"{method} {path} failed after it may have been sent: {last}") \
                            from None
                    log.warning("LINSTOR %s %s: %s", method, path, last)
                    continue
                self._note(method, path, resp.status_code, started)
                unbound(resp)  # read whole and closed by request()
                if resp.status_code in RETRYABLE_STATUS and idempotent:
                    err = LinstorError("server error", status=resp.status_code, replies=_decode_replies(resp.content))
                    last, last_exc = f"{base}: {err}", None
                    log.warning("LINSTOR %s %s: %s", method, path, last)
                    continue
                if idx != self._current:
                    log.warning("LINSTOR controller failover: now using %s", base)
                    self._current = idx
                return resp
            if attempt + 1 < attempts:
                await self._sleep(self._backoff(attempt))
        raise LinstorUnavailable(f"{method} {path}: no controller answered after {attempts} attempt(s); last: {last}"
                                 f"{where_to_look(last_exc, timeout or self.timeout)}")

    @staticmethod
    def _check(resp: httpx.Response) -> list[ApiCallRc]:
        replies = _decode_replies(resp.content) if resp.content else []
        if resp.status_code >= 400 or any(r.is_error for r in replies):
            cls = LinstorUnavailable if resp.status_code >= 500 else LinstorError
            raise cls(f"HTTP {resp.status_code}", status=resp.status_code, replies=replies)
        return replies

    async def _get_list(self, path: str, model: type[M], params: Any = None, **kw: Any) -> list[M]:
        resp = await self._request("GET", path, params=params, **kw)
        if resp.status_code >= 400:
            self._check(resp)
        try:
            doc = orjson.loads(resp.content)
            if not isinstance(doc, list):
                raise TypeError(f"expected a JSON array, got {type(doc).__name__}")
            return [model.parse(x) for x in doc]
        except (orjson.JSONDecodeError, msgspec.ValidationError, TypeError) as exc:
            raise LinstorProtocolError(f"GET {path}: unexpected body: {exc}", status=resp.status_code) from None

    @staticmethod
    def _filters(**lists: Iterable[str] | None) -> list[tuple[str, str]]:
        return [(key, v) for key, values in lists.items() if values for v in values]

    # --- reads ---------------------------------------------------------------------------------
    async def version(self) -> dict[str, Any]:
        resp = await self._request("GET", "/v1/controller/version")
        self._check(resp)
        return orjson.loads(resp.content)

    async def get_nodes(self, nodes: Iterable[str] | None = None) -> list[Node]:
        return await self._get_list("/v1/nodes", Node, self._filters(nodes=nodes))

    async def get_storage_pools(self, nodes: Iterable[str] | None = None,
                                storage_pools: Iterable[str] | None = None) -> list[StoragePool]:
        return await self._get_list("/v1/view/storage-pools", StoragePool,
                                    self._filters(nodes=nodes, storage_pools=storage_pools))

    async def get_nodes_compact(self) -> list[NodeItem]:
        """``/v1/nodes`` as compact records (name, type, connection, flags): the extender's poll."""
        return await self._get_compact("/v1/nodes", NodeItem)

    async def get_storage_pools_compact(self) -> list[StoragePoolItem]:
        """``/v1/view/storage-pools`` as compact records (where, kind, free and total KiB, props)."""
        return await self._get_compact("/v1/view/storage-pools", StoragePoolItem)

    async def get_storage_pool_definitions_compact(self) -> list[StoragePoolDefinitionItem]:
        """``/v1/storage-pool-definitions`` as compact records (name, props: the over-subscription
        ratios a pool inherits; ``linstor.capacity``)."""
        return await self._get_compact("/v1/storage-pool-definitions", StoragePoolDefinitionItem)

    async def get_resource_definitions_compact(self, item_type: Any = ResourceDefinitionItem) -> list[Any]:
        """``/v1/resource-definitions`` as compact records: by default fencing's (name, group, the
        quorum options); ``item_type`` another msgspec record of the fields a reader needs (each
        reader decodes its own properties, and skips every other one without building it)."""
        return await self._get_compact("/v1/resource-definitions", item_type)

    async def _get_compact(self, path: str, item_type: Any) -> list[Any]:
        """A list as compact records, decoded in batches as it streams in. Decoded whole, the 10,000
        storage pools of 5,000 nodes (4 MB) were one C call of ~8 ms holding the GIL, a stall every
        request of the extender's serving thread waited out (its p99 during polls sat there)."""
        items: list[Any] = []
        async for batch in self._stream(path, None, _batches_of(path, item_type)):
            items.extend(batch)
        return items

    async def get_resource_definitions(self) -> list[ResourceDefinition]:
        return await self._get_list("/v1/resource-definitions", ResourceDefinition)

    async def modify_resource_definition(self, name: str, *, override_props: dict[str, str] | None = None,
                                         delete_props: list[str] | None = None) -> list[ApiCallRc]:
        """``PUT /v1/resource-definitions/{name}`` (ResourceDefinitionModify): set and delete properties.
        Not retried (a write); a lost answer raises ``LinstorUnavailable``."""
        body: dict[str, Any] = {}
        if override_props:
            body["override_props"] = override_props
        if delete_props:
            body["delete_props"] = delete_props
        resp = await self._request("PUT", f"/v1/resource-definitions/{quote(name, safe='')}", body=body)
        return self._check(resp)

    async def get_storage_pool_definitions(self) -> list[StoragePoolDefinition]:
        return await self._get_list("/v1/storage-pool-definitions", StoragePoolDefinition)

    async def get_resource_groups(self) -> list[ResourceGroup]:
        return await self._get_list("/v1/resource-groups", ResourceGroup)

    async def get_controller_properties(self) -> dict[str, str]:
        """Cluster-wide properties: the last level of LINSTOR's property inheritance."""
        resp = await self._request("GET", "/v1/controller/properties")
        self._check(resp)
        try:
            doc = orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise LinstorProtocolError(f"GET /v1/controller/properties: body is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
            raise LinstorProtocolError("GET /v1/controller/properties: expected a string-to-string map")
        return doc

    async def get_resources_of(self, resource_definition: str, *, timeout: float | None = None) -> list[Resource]:
        """One resource's items; ``timeout`` makes it a single bounded attempt (the extender's fallback)."""
        path = f"/v1/resource-definitions/{quote(resource_definition, safe='')}/resources"
        try:
            return await self._get_list(path, Resource, timeout=timeout, retries=1 if timeout else None)
        except LinstorError as exc:
            if exc.status == 404:
                return []
            raise

    async def iter_resources(self, nodes: Iterable[str] | None = None,
                             resources: Iterable[str] | None = None) -> AsyncIterator[Resource]:
        """Stream ``/v1/view/resources``: items are parsed and validated one at a time (whole records)."""
        async def models(resp: httpx.Response) -> AsyncIterator[Resource]:
            async for item in ijson.items(_ChunkReader(resp.aiter_bytes()), "item", use_float=True):
                try:
                    yield Resource.parse(item)
                except msgspec.ValidationError as exc:
                    raise LinstorProtocolError(f"GET /v1/view/resources: unexpected item: {exc}") from None

        async for model in self._stream("/v1/view/resources", self._filters(nodes=nodes, resources=resources),
                                        models):
            yield model

    async def iter_resource_batches(self, item_type: Any = ResourceItem, *, nodes: Iterable[str] | None = None,
                                    resources: Iterable[str] | None = None, batch_bytes: int | None = None,
                                    window: int | None = None) -> AsyncIterator[list[Any]]:
        """Stream ``/v1/view/resources`` as batches of compact records (``compact.ResourceItem`` or
        another msgspec Struct with the fields a caller needs): the body is cut into whole items as it
        arrives and each batch decoded without a dict or model per item (see compact.py).

        ``batch_bytes`` / ``window`` override ArraySplitter's defaults (small batches, chosen for the
        extender's request latency); a throughput reader such as fencing passes bigger ones."""
        path = "/v1/view/resources"
        sizes = {k: v for k, v in (("batch_bytes", batch_bytes), ("window", window)) if v is not None}

        async for batch in self._stream(path, self._filters(nodes=nodes, resources=resources),
                                        _batches_of(path, item_type, **sizes)):
            yield batch

    async def _stream(self, path: str, params: Any,
                      parse: Callable[[httpx.Response], AsyncIterator[Any]]) -> AsyncIterator[Any]:
        """GET ``path`` streamed, with retries and controller failover until the first thing is parsed;
        a stream that breaks after that raises (the caller must never act on half a list)."""
        last = "no attempt made"
        last_exc: BaseException | None = None
        for attempt in range(self.retries):
            yielded = False
            for idx in self._order():
                base = self.controllers[idx]
                started = time.perf_counter()
                resp: httpx.Response | None = None
                try:
                    async with self._http.stream("GET", base + path, params=params) as resp:
                        self._note("GET", path, resp.status_code, started)
                        if resp.status_code >= 400:
                            await resp.aread()
                            if resp.status_code in RETRYABLE_STATUS:
                                last, last_exc = f"{base}: HTTP {resp.status_code}", None
                                continue
                            self._check(resp)
                        self._current = idx
                        async for thing in parse(resp):
                            yielded = True
                            yield thing
                        return
                except ijson.JSONError as exc:
                    raise LinstorProtocolError(f"GET {path}: body is not valid JSON: {exc}") from None
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    self._note("GET", path, None, started)
                    last, last_exc = f"{base}: {type(exc).__name__} ({exc})", exc
                    if yielded:  # the caller has half a list: never hand out a partial view
                        raise LinstorUnavailable(f"GET {path}: stream broke after some items: {last}") from None
                    log.warning("LINSTOR GET %s: %s", path, last)
                finally:
                    if resp is not None:  # closed by the block: free it now, not at the next collection
                        unbound(resp)
            if attempt + 1 < self.retries:
                await self._sleep(self._backoff(attempt))
        raise LinstorUnavailable(f"GET {path}: no controller answered after {self.retries} attempt(s); last: {last}"
                                 f"{where_to_look(last_exc, self.timeout)}")

    async def get_resources(self, nodes: Iterable[str] | None = None,
                            resources: Iterable[str] | None = None) -> list[Resource]:
        return [r async for r in self.iter_resources(nodes=nodes, resources=resources)]

    # --- writes --------------------------------------------------------------------------------
    async def create_storage_pool(self, node: str, name: str, provider_kind: str,
                                  props: dict[str, str]) -> list[ApiCallRc]:
        resp = await self._request("POST", f"/v1/nodes/{quote(node, safe='')}/storage-pools",
                                   body={"storage_pool_name": name, "provider_kind": provider_kind, "props": props})
        return self._check(resp)

    async def delete_storage_pool(self, node: str, name: str) -> list[ApiCallRc]:
        resp = await self._request("DELETE", f"/v1/nodes/{quote(node, safe='')}/storage-pools/{quote(name, safe='')}")
        return self._check(resp)

    # --- events --------------------------------------------------------------------------------
    async def events(self, path: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Server-sent events: yields (event name, data). No read timeout; 404 -> EventsNotSupported."""
        base = self.controllers[self._current]
        timeout = httpx.Timeout(None, connect=self.connect_timeout)
        async with self._http.stream("GET", base + path, timeout=timeout,
                                     headers={"Accept": "text/event-stream"}) as resp:
            self._note("GET", path, resp.status_code, time.perf_counter())
            if resp.status_code == 404:
                raise EventsNotSupported(f"{path}: the controller has no such event stream", status=404)
            if resp.status_code >= 400:
                await resp.aread()
                self._check(resp)
            event, data = "message", []
            async for line in resp.aiter_lines():
                if not line:
                    if data:
                        try:
                            decoded = orjson.loads("\n".join(data))
                        except orjson.JSONDecodeError:
                            decoded = {"raw": "\n".join(data)}
                        yield event, decoded if isinstance(decoded, dict) else {"data": decoded}
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
