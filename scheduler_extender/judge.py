"""The extender's decisions: state in, verdicts out. HTTP lives in http.py, data loading in refresh.py.

Each request reads ``holder.state`` once, so it judges against one consistent index even while a
sync swaps in the next. Verdict tables are cached per (state generation, the pod's volumes):
kube-scheduler asks ``filter`` then ``prioritize`` for the same pod, and the pods of a StatefulSet
share shapes, so most requests are dictionary look-ups.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.volumes import Claim, pod_claims, resolve_claim

from .cache import GenerationCache
from .reservations import Hold, Ledger, promised_state
from .scoring import ClaimContext, NodeVerdict, Weights, judge_many, judged_per_node, node_class_ids, prepare
from .state import EMPTY_STATE, ClusterState, ResourceInfo, index_resources

log = logging.getLogger(__name__)
GC_YOUNG_THRESHOLD = 20_000
POD_BYTES_LIMIT = 32 * 1024 * 1024  # pods as kube-scheduler sends them, a few KB each
# Verdict tables: 64 MiB is ~130 tables at 5,000 nodes (~30 where every node has its own verdict).
TABLES_LIMIT = 64 * 1024 * 1024
TABLE_BYTES = 2048  # a table's contexts and the dict itself
# Per node entry (measured at 1,000 nodes: a dict slot ~35 B and the node name's string, which the
# table keeps); nodes of a class share one verdict, but with an unbound claim judged by free space
# each node has its own (~350 B more).
NODE_ENTRY_BYTES = 100
OWN_VERDICT_BYTES = 350
FALLBACK_GENERATION = 0  # the fallback's memories are not tied to a state generation (FallbackReader)


class ResourceReader(Protocol):
    async def get_resources_of(self, resource_definition: str, *, timeout: float | None = None) -> list[Any]: ...


class KubeFreshness(Protocol):
    """How old the Kubernetes part of the state is, measured live (the live sync: ``refresh.Syncer``)."""

    def kube_age(self) -> float | None: ...

    def kube_detail(self) -> str: ...


def stale_reason(linstor_age: float, kube_age: float, bound: float, *, last_error: str | None,
                 kube_detail: str = "") -> str | None:
    """Why the state is too old to judge from, naming each source older than ``bound``; None while
    both are within it. Pure: the probe, the log and the neutral answer all say the same."""
    parts = []
    if linstor_age > bound:
        parts.append(f"LINSTOR state {linstor_age:.0f}s old (last error: {last_error or 'none'})")
    if kube_age > bound:
        parts.append(f"Kubernetes view {kube_age:.0f}s old" + (f" ({kube_detail})" if kube_detail else ""))
    return f"{'; '.join(parts)}; limit {bound:.0f}s" if parts else None


@dataclass
class StateHolder:
    """Where the current ``ClusterState`` lives; swapped whole by the sync, read by requests."""

    state: ClusterState = EMPTY_STATE
    ready: bool = False
    static: bool = False  # snapshot mode: the state never ages
    last_error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def swap(self, state: ClusterState) -> None:
        new_content = state.generation != self.state.generation
        self.state = state  # one reference assignment: atomic for readers
        # The index is big, long-lived and acyclic (refcounting frees old states): keep the cyclic
        # GC from rescanning it on every collection, which showed as 80 ms request stalls. Only
        # when the content is new: an unchanged poll (same generation) brings no new index to
        # freeze, and each freeze also pins whatever request cycles happen to be alive.
        if new_content:
            gc.freeze()
        # Requests allocate few cycles; the default threshold (700) ran a young collection every
        # few requests and cost 30% of a new pod's answer (measured: 658 -> 461 us at 1,000 nodes).
        if gc.get_threshold()[0] < GC_YOUNG_THRESHOLD:
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class FallbackReader:
    """One bounded read of a resource the index does not know yet (a volume created seconds ago).

    Both memories are bounded ``GenerationCache``s (``max_entries`` each), oldest out first:
    - ``found``: resources read here, kept until the index knows them (``forget_known``, on each
      published state). They outlive state generations on purpose: a volume bound before LINSTOR's
      next poll shows it must not cost a LINSTOR call per request whenever a Kubernetes change
      makes a new generation. One pushed out is read again (one call), never answered wrong.
    - ``missing``: "not found" (or a failed read) for ``negative_ttl`` seconds, so a burst of
      requests for the same pod makes one LINSTOR call, not many; then the next request reads again
      and finds a resource that appeared meanwhile (the next poll's index finds it anyway). Expired
      ones are dropped oldest first, so a stream of pods naming resources that never appear holds
      at most the misses of the last ``negative_ttl`` seconds, and never more than ``max_entries``.
    """

    def __init__(
        self,
        client: ResourceReader,
        *,
        timeout: float = 1.0,
        negative_ttl: float = 5.0,
        clock: Callable[[], float] = boottime,
        on_read: Callable[[str], None] | None = None,
        max_entries: int = 4096,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._negative_ttl = negative_ttl
        self._clock = clock
        # One generation for good (FALLBACK_GENERATION): these entries are not tied to a state.
        self.found: GenerationCache[str, ResourceInfo] = GenerationCache("fallback_found", max_entries=max_entries)
        self.missing: GenerationCache[str, float] = GenerationCache("fallback_missing", max_entries=max_entries)
        self._inflight: dict[str, asyncio.Future[ResourceInfo | None]] = {}
        self._on_read = on_read
        self.generation = 0

    @property
    def caches(self) -> list[GenerationCache[Any, Any]]:
        return [self.found, self.missing]

    def forget_known(self, state: ClusterState) -> None:
        for name in [n for n in self.found if n in state.resources]:
            self.found.discard(name)
        self._expire()

    def _expire(self) -> None:
        now, ttl = self._clock(), self._negative_ttl
        self.missing.evict_while(lambda _, at: now - at >= ttl)

    async def get(self, name: str) -> ResourceInfo | None:
        found = self.found.get(name, FALLBACK_GENERATION)
        if found is not None:
            return found
        self._expire()
        if self.missing.get(name, FALLBACK_GENERATION) is not None:
            return None
        pending = self._inflight.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[ResourceInfo | None] = asyncio.get_running_loop().create_future()
        self._inflight[name] = fut
        info: ResourceInfo | None = None
        outcome = "miss"
        try:
            items = await self._client.get_resources_of(name, timeout=self._timeout)
            info = index_resources(items).get(name)
            outcome = "found" if info else "miss"
        except Exception as exc:  # a fallback must never fail the request
            outcome = "error"
            log.warning("fallback read of resource %s failed: %s", name, exc)
        finally:
            if info is not None:
                self.found.put(name, FALLBACK_GENERATION, info)
                self.missing.discard(name)
                self.generation += 1
            else:
                self.missing.put(name, FALLBACK_GENERATION, self._clock())
            del self._inflight[name]
            fut.set_result(info)
            if self._on_read:
                self._on_read(outcome)
        return info


@dataclass(slots=True)
class Decision:
    """Verdicts for the requested nodes, or a neutral answer with the reason why."""

    pod: str
    names: Sequence[str]
    verdicts: list[NodeVerdict] | None  # None: neutral (every node passes, score 0)
    neutral_reason: str | None
    claims: list[Claim]


@dataclass(slots=True)
class Prepared:
    """The pod's side of a decision. ``key`` names its verdict table (None: neutral)."""

    ref: str
    claims: list[Claim]
    neutral_reason: str | None
    key: tuple[Any, ...] | None
    state: ClusterState
    resources: list[ResourceInfo | None] = field(default_factory=list)
    static_neutral: bool = False  # neutral whatever the time: the pod has no LINSTOR volumes


class Extender:
    def __init__(
        self,
        holder: StateHolder,
        *,
        weights: Weights | None = None,
        max_staleness: float = 120.0,
        fallback: FallbackReader | None = None,
        clock: Callable[[], float] = boottime,
        cache_size: int = 512,
        tables_bytes: int = TABLES_LIMIT,
        kube: KubeFreshness | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        """``kube``: the live age of the Kubernetes view (the informers' confirmation, read at each
        request); without it the state's own Kubernetes read time stands in (tests, snapshots).
        ``ledger``: capacity promised to unbound WaitForFirstConsumer claims (reservations.py);
        None: free space is the last poll's alone (snapshots, explain)."""
        self.holder = holder
        self.ledger = ledger
        self.kube = kube
        self.weights = weights or Weights()
        self.max_staleness = max_staleness
        self.fallback = fallback
        self.clock = clock
        # Every cache is a GenerationCache (cache.py): emptied when the state's content changes.
        # Verdict tables per (the pod's volumes as resolved); filled node by node as names arrive,
        # stored again after each growth so their bytes are charged as they grow (_table_size).
        self.tables: GenerationCache[tuple[Any, ...], tuple[list[ClaimContext], dict[str, NodeVerdict]]] = \
            GenerationCache("tables", max_entries=cache_size, max_bytes=tables_bytes, sizeof=_table_size)
        # The pod's side by its claims (resolved PVC/PV/StorageClass), and by its exact bytes.
        self.prepared: GenerationCache[tuple[Any, ...], Prepared] = GenerationCache(
            "prepared", max_entries=4 * cache_size)
        self.pod_bytes: GenerationCache[bytes, Prepared] = GenerationCache(
            "pod_bytes", max_entries=4 * cache_size, max_bytes=POD_BYTES_LIMIT, sizeof=_pod_bytes_size)
        # Node sets of affinity and access rules: they depend on Kubernetes only (state.kube_since).
        self.node_sets: GenerationCache[tuple[Any, ...], frozenset[str]] = GenerationCache(
            "node_sets", max_entries=4096)
        self._classes: Mapping[str, int] = {}
        self._classes_generation = -1
        self._last_stale_log = float("-inf")

    @property
    def caches(self) -> list[GenerationCache[Any, Any]]:
        fallback = self.fallback.caches if self.fallback else []
        return [self.tables, self.prepared, self.pod_bytes, self.node_sets, *fallback]

    def ages(self, state: ClusterState | None = None) -> tuple[float, float] | None:
        """(LINSTOR, Kubernetes) ages in seconds: since the last good LINSTOR read, and since the API
        server last confirmed the Kubernetes view the state holds; None before the first sync or for
        snapshots."""
        state = state or self.holder.state
        if self.holder.static or state.synced_at == float("-inf"):
            return None
        now = self.clock()
        kube = self.kube.kube_age() if self.kube is not None else None
        if kube is None:
            kube = now - state.kube_synced_at
        return max(0.0, now - state.linstor_synced_at), max(0.0, kube)

    def staleness(self, state: ClusterState | None = None) -> float | None:
        """Seconds since the stalest source was read; None before the first sync or for snapshots."""
        ages = self.ages(state)
        return None if ages is None else max(ages)

    def stale_reason(self, state: ClusterState | None = None) -> str | None:
        """Which source is older than ``max_staleness`` and why; None while the state is fresh enough."""
        ages = self.ages(state)
        if ages is None:
            return None
        return stale_reason(*ages, self.max_staleness, last_error=self.holder.last_error,
                            kube_detail=self.kube.kube_detail() if self.kube is not None and
                            ages[1] > self.max_staleness else "")

    def neutral_reason(self, state: ClusterState) -> str | None:
        if not self.holder.ready:
            return "no LINSTOR/Kubernetes state yet (first sync not finished): not steering"
        stale = self.stale_reason(state)
        if stale is not None:
            reason = f"{stale}: not steering on stale data"
            now = self.clock()
            if now - self._last_stale_log > 30:
                log.warning("extender is neutral: %s", reason)
                self._last_stale_log = now
            return reason
        return None

    async def prepare(self, pod: dict[str, Any]) -> Prepared:
        """Everything about the pod that does not depend on the candidate nodes.

        Resolved claims are cached per (state generation, namespace, claim names): kube-scheduler
        sends filter then prioritize for each pod, and the second needs no PVC/PV/class look-ups.
        """
        state = self.holder.state
        meta = pod.get("metadata") or {}
        ref = f"{meta.get('namespace') or 'default'}/{meta.get('name') or '?'}"
        refs = pod_claims(pod)
        fallback_generation = self.fallback.generation if self.fallback else 0
        signature = None
        if all(r.template is None for r in refs):  # an ephemeral template's content is part of the answer
            signature = (fallback_generation, tuple((r.namespace, r.name, r.volume) for r in refs))
            hit = self.prepared.get(signature, state.generation)
            if hit is not None:
                if hit.static_neutral:
                    return Prepared(ref, hit.claims, hit.neutral_reason, None, state, static_neutral=True)
                neutral = self.neutral_reason(state)  # time passes: the state may have gone stale
                if neutral:
                    return Prepared(ref, hit.claims, neutral, None, state)
                return Prepared(ref, hit.claims, None, hit.key, state, hit.resources)
        claims = [c for c in (resolve_claim(r, state.get_pvc, state.get_pv, state.get_sc) for r in refs)
                  if c.is_linstor]
        if not claims:
            prepared = Prepared(ref, claims, "pod has no LINSTOR volumes", None, state, static_neutral=True)
            self._remember(signature, prepared)
            return prepared
        neutral = self.neutral_reason(state)
        if neutral:
            return Prepared(ref, claims, neutral, None, state)
        resources: list[ResourceInfo | None] = []
        for claim in claims:
            info = state.resources.get(claim.resource) if claim.resource else None
            if claim.resource and info is None and self.fallback is not None:
                info = await self.fallback.get(claim.resource)
            resources.append(info)
        key = (
            state.generation,
            self.fallback.generation if self.fallback else 0,
            tuple((c.ref.key, c.resource, id(c.storage_class), c.size_bytes, c.pending, id(r))
                  for c, r in zip(claims, resources, strict=True)),
        )
        prepared = Prepared(ref, claims, None, key, state, resources)
        if all(r is not None or not c.resource for c, r in zip(claims, resources, strict=True)):
            self._remember(signature, prepared)  # never cache a miss of the fallback read
        return prepared

    def prepared_for(self, raw_pod: bytes) -> Prepared | None:
        """The pod's side as computed for these exact Pod bytes in this state (kube-scheduler sends
        filter, then prioritize, with the same Pod), staleness re-checked; None if not known."""
        state = self.holder.state
        hit = self.pod_bytes.get(raw_pod, state.generation)
        if hit is None:
            return None
        if hit.static_neutral or hit.key is None:
            return hit
        neutral = self.neutral_reason(state)
        if neutral:
            return Prepared(hit.ref, hit.claims, neutral, None, state)
        return hit

    def remember_bytes(self, raw_pod: bytes, prepared: Prepared) -> None:
        """Only complete answers: never a neutral one for staleness, never one missing a resource."""
        if prepared.key is None and not prepared.static_neutral:
            return
        if any(r is None and c.resource for c, r in zip(prepared.claims, prepared.resources, strict=False)):
            return
        self.pod_bytes.put(raw_pod, prepared.state.generation, prepared)

    def _remember(self, signature: tuple[Any, ...] | None, prepared: Prepared) -> None:
        if signature is not None:
            self.prepared.put(signature, prepared.state.generation, prepared)

    def key_of(self, prepared: Prepared) -> tuple[Any, ...] | None:
        """The name of the pod's verdict table (and answers): ``prepared.key``, plus the ledger's
        version when the pod has an unbound claim judged by free space, whose verdicts change
        with every hold taken, moved or released. Expired holds are dropped first (oldest first:
        this costs nothing while none expire)."""
        key, ledger = prepared.key, self.ledger
        if key is None or ledger is None or not _promising(prepared.claims):
            return key
        if len(ledger):
            ledger.expire(self.clock())
        return (*key, ledger.version)

    def _judging_state(self, prepared: Prepared) -> ClusterState:
        """The state with other claims' holds taken from the pools' free space (never the pod's
        own: its claims are promised where it was ranked, which must not push it away)."""
        ledger = self.ledger
        if ledger is None or not len(ledger) or not _promising(prepared.claims):
            return prepared.state
        return promised_state(prepared.state, ledger.held_excluding(c.ref.key for c in prepared.claims))

    def promise(self, prepared: Prepared, top: str | None) -> None:
        """``prioritize`` ranked ``top`` first: hold each unbound claim's size on its pool there."""
        ledger = self.ledger
        if ledger is None or top is None or not _promising(prepared.claims):
            return
        node = prepared.state.nodes.get(top)
        if node is None:
            return
        now = self.clock()
        for claim in prepared.claims:
            if claim.bound or claim.pending or claim.storage_class is None or not claim.size_bytes:
                continue
            pool = claim.storage_class.storage_pool or max(
                node.pools, key=lambda p: node.pools[p].free_kib or 0, default=None)
            if pool is not None and pool in node.pools:
                ledger.rank(claim.ref.key, top, pool, claim.size_bytes, now)

    def reconcile(self, state: ClusterState) -> None:
        """After each published state: a hold moves to the node kube-scheduler chose (the claim's
        ``selected-node`` annotation), and ends when LINSTOR's part of the state has the claim's
        volume (its free space counts it now) or the claim is gone; old ones expire."""
        ledger = self.ledger
        if ledger is None or not len(ledger):
            return
        now = self.clock()

        def over(hold: Hold) -> bool:
            pvc = state.get_pvc(hold.claim)
            if pvc is None:
                return True
            return bool(pvc.volume) and pvc.volume in state.resources

        ledger.settle(over)
        for hold in ledger.holds():
            pvc = state.get_pvc(hold.claim)
            chosen = pvc.selected_node if pvc is not None else None
            if chosen and (chosen != hold.node or hold.source != "selected"):
                node = state.nodes.get(chosen)
                pool = hold.pool if node is None or hold.pool in node.pools else next(iter(node.pools), hold.pool)
                ledger.selected(hold.claim, chosen, pool, hold.size_bytes, now)
        ledger.expire(now)

    def judge(self, prepared: Prepared, names: Sequence[str]) -> Decision:
        """Verdicts for ``names``: from the pod's verdict table, judging only nodes it lacks."""
        if prepared.key is None:
            return Decision(prepared.ref, names, None, prepared.neutral_reason, prepared.claims)
        state = prepared.state
        if state.generation != self._classes_generation:
            self._new_classes(state)
        table_key = self.key_of(prepared)
        assert table_key is not None
        cached = self.tables.get(table_key, state.generation)
        if cached is None:
            kube_since, node_sets = state.kube_since, self.node_sets

            def node_set(key: tuple[Any, ...], compute: Callable[[], frozenset[str]]) -> frozenset[str]:
                return node_sets.get_or_compute(key, kube_since, compute)

            cached = (prepare(prepared.claims, prepared.resources, state, node_set), {})
        contexts, table = cached
        verdicts = list(map(table.get, names))  # C-level loop: the common case is all hits
        if None in verdicts:
            table.update(judge_many([n for n in names if n not in table], contexts, self._judging_state(prepared),
                                    self.weights, self._classes))
            verdicts = list(map(table.__getitem__, names))
            self.tables.put(table_key, state.generation, cached)  # new, or grown: charged anew
        return Decision(prepared.ref, names, verdicts, None, prepared.claims)

    async def decide(self, pod: dict[str, Any], names: Sequence[str]) -> Decision:
        return self.judge(await self.prepare(pod), names)

    def _new_classes(self, state: ClusterState) -> None:
        """Node classes are computed once per state generation: by the live sync, off the request
        path (``state.node_classes``), or here on first use (snapshots, tests)."""
        self._classes_generation = state.generation
        if state.node_classes is not None:
            self._classes = state.node_classes
        else:
            self._classes = node_class_ids(set(state.nodes) | set(state.kube.topology), state, {})


def _promising(claims: Sequence[Claim]) -> bool:
    """An unbound claim judged by free space: the one kind a hold is taken for and changes."""
    return any(not c.bound and c.pending is None for c in claims)


def _table_size(_: tuple[Any, ...], cached: tuple[list[ClaimContext], dict[str, NodeVerdict]]) -> int:
    contexts, table = cached
    return TABLE_BYTES + len(table) * (NODE_ENTRY_BYTES + (OWN_VERDICT_BYTES if judged_per_node(contexts) else 0))


def _pod_bytes_size(raw_pod: bytes, _: Prepared) -> int:
    return len(raw_pod) + 200  # the key's bytes and the entry's own few objects
