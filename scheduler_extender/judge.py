"""The extender's decisions: state in, verdicts out. HTTP lives in http.py, the wire format in
codec.py and answers.py, data loading in refresh.py.

``Extender.decide(pod, names)`` is the one way in: it reads ``holder.state`` once, so it judges
against one consistent index even while a sync swaps in the next, checks the view's freshness
(freshness.py), and owns every cache of the request path: the pod's side by its bytes and by its
claims, verdict tables per the pod's volumes, finished answers per candidate list. kube-scheduler
asks ``filter`` then ``prioritize`` for the same pod, and the pods of a StatefulSet share shapes, so
most requests are dictionary look-ups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube import objects
from linstor_scheduler.volumes import Claim, pod_claims, resolve_claim

from .cache import GenerationCache
from .codec import decode_names, decode_pod
from .fallback import FallbackReader
from .freshness import Freshness, measure
from .grouping import judge_many, judged_per_node, node_class_ids
from .holder import StateHolder
from .reservations import Ledger, hold_filtered, promised_state, reconcile
from .scoring import ClaimContext, NodeVerdict, Weights, prepare
from .state import ClusterState, ResourceInfo

log = logging.getLogger(__name__)
POD_BYTES_LIMIT = 32 * 1024 * 1024  # pods as kube-scheduler sends them, a few KB each
# Verdict tables: 64 MiB is ~130 tables at 5,000 nodes (~30 where every node has its own verdict).
TABLES_LIMIT = 64 * 1024 * 1024
TABLE_BYTES = 2048  # a table's contexts and the dict itself
# Per node entry (measured at 1,000 nodes: a dict slot ~35 B and the node name's string, which the
# table keeps); nodes of a class share one verdict, but with an unbound claim judged by free space
# each node has its own (~350 B more).
NODE_ENTRY_BYTES = 100
OWN_VERDICT_BYTES = 350
ANSWERS_LIMIT = 64 * 1024 * 1024  # answers at 1,000 nodes are 15-40 KB
NO_LINSTOR_VOLUMES = "pod has no LINSTOR volumes"
NEVER = float("-inf")


class KubeFreshness(Protocol):
    """How old the Kubernetes part of the state is, measured live (the live sync: ``refresh.Syncer``)."""

    def kube_age(self) -> float | None: ...

    def kube_detail(self) -> str: ...


@dataclass(slots=True)
class Prepared:
    """The pod's side of a decision, whatever the candidates: its LINSTOR claims resolved against one
    state, then their resources looked up. ``key`` names the pod's verdict table; None until the
    resources are looked up. ``not_ours`` says why the pod is not ours to judge whatever the time
    (no LINSTOR volumes, another profile's pod): then it has no claims and no table."""

    ref: str
    claims: list[Claim]
    state: ClusterState
    resources: list[ResourceInfo | None] = field(default_factory=list)
    key: tuple[Any, ...] | None = None
    not_ours: str | None = None

    @property
    def complete(self) -> bool:
        """Worth remembering: nothing left to look up. Never a pod whose resource the fallback read
        did not find: the next request must look again."""
        if self.not_ours is not None:
            return True
        return self.key is not None and all(
            r is not None or not c.resource for c, r in zip(self.claims, self.resources, strict=True))


class Encoded(Protocol):
    """What a decision's answers are kept as: bytes for the wire and what goes with them, whose
    size bounds the cache."""

    @property
    def size(self) -> int: ...


E = TypeVar("E", bound=Encoded)


class Decision:
    """The extender's word on one pod and its candidate nodes: a verdict per node, or neutral (every
    node passes with score 0) with ``neutral_reason`` saying why: the pod has no LINSTOR volumes,
    or the view is not synced or too old to steer from (``Extender.freshness``).

    Lazy where a repeat can skip work: for names given as kube-scheduler's bytes, ``names`` are
    decoded and ``verdicts`` looked up in the pod's verdict table on first use, and ``answer``
    builds what the caller derives from the decision (answers.py: the encoded extender answer) once
    per (verb, the pod's verdict table, the candidate list's exact bytes): a repeat is one look-up,
    no per-node work. Names given decoded are judged at once.
    """

    __slots__ = ("_extender", "_given", "_kept", "_names", "_side", "_table_key", "_verdicts", "neutral_reason")

    def __init__(self, extender: Extender, side: Prepared, names: Sequence[str] | bytes, neutral_reason: str | None,
                 table_key: tuple[Any, ...] | None, kept: bool) -> None:
        """``kept``: answers may be kept by the candidates' bytes (``names`` are bytes, and the answer
        does not depend on the time)."""
        self._extender = extender
        self._side = side
        self._given = names
        self._names: Sequence[str] | None = None
        self.neutral_reason = neutral_reason
        self._table_key = table_key
        self._kept = kept
        self._verdicts: list[NodeVerdict] | None = None

    @property
    def pod(self) -> str:
        """namespace/name"""
        return self._side.ref

    @property
    def claims(self) -> list[Claim]:
        return self._side.claims

    @property
    def resources(self) -> list[ResourceInfo | None]:
        """The claims' LINSTOR resources, in the claims' order (None: unknown, or not looked up when neutral)."""
        return self._side.resources

    @property
    def state(self) -> ClusterState:
        return self._side.state

    @property
    def names(self) -> Sequence[str]:
        if self._names is None:
            given = self._given
            self._names = decode_names(given) if isinstance(given, bytes) else given
        return self._names

    @property
    def verdicts(self) -> list[NodeVerdict] | None:
        """One per name, in order; None when neutral."""
        if self.neutral_reason is not None:
            return None
        if self._verdicts is None:
            self._verdicts = self.verdicts_on(self.names)
        return self._verdicts

    def verdicts_on(self, names: Sequence[str]) -> list[NodeVerdict]:
        """Verdicts for other nodes from the same table (the replica nodes of a pod the candidates
        may lack: placements.py). Only for a decision that is not neutral."""
        assert self._table_key is not None, "a neutral decision has no verdicts"
        return self._extender._verdicts(self._side, self._table_key, names)

    def answer(self, verb: str, build: Callable[[], E]) -> E:
        """``build()``'s result, kept per (verb, the pod's verdict table, the candidate list's exact
        bytes) while the state's content is the same: pods of a wave share a candidate list, and a
        pending pod is retried with the same one. Never kept: a neutral answer for staleness (time
        passes), nor one for candidates given as decoded names (explain, full Node objects)."""
        if not self._kept:
            return build()
        answers, generation = self._extender.answers, self._side.state.generation
        key = (verb, self._table_key, self._given)
        found = answers.get(key, generation)
        if found is None:
            found = build()
            answers.put(key, generation, found)
        return found  # type: ignore[return-value]  # what build() made for this key


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
        scheduler_name: str | None = None,
    ) -> None:
        """``kube``: the live age of the Kubernetes view (the informers' confirmation, read at each
        request); without it the state's own Kubernetes read time stands in (tests, snapshots).
        ``ledger``: capacity promised to unbound WaitForFirstConsumer claims (reservations.py);
        None: free space is the last poll's alone (snapshots, explain). ``scheduler_name``: judge only
        pods of that profile (the main kube-scheduler shows its extenders the pods of every profile,
        k8s.io/kube-scheduler config/v1 ``Extender``: extenders are shared by all profiles); the
        others pass every node with score 0. None: every pod (our own scheduler has one profile)."""
        self.scheduler_name = scheduler_name
        self.holder = holder
        self.ledger = ledger
        self.kube = kube
        self.weights = weights or Weights()
        self.max_staleness = max_staleness
        self.fallback = fallback
        self.clock = clock
        # Every cache is a GenerationCache (cache.py): emptied when the state's content changes.
        # Finished answers (Decision.answer), by (verb, the pod's verdict table, the raw NodeNames).
        self.answers: GenerationCache[tuple[Any, ...], Encoded] = GenerationCache(
            "answers", max_entries=100_000, max_bytes=ANSWERS_LIMIT, sizeof=_answer_size)
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
        self._last_stale_log = NEVER
        self._kube_detail: Callable[[], str] = kube.kube_detail if kube is not None else str

    @property
    def caches(self) -> list[GenerationCache[Any, Any]]:
        fallback = self.fallback.caches if self.fallback else []
        return [self.answers, self.tables, self.prepared, self.pod_bytes, self.node_sets, *fallback]

    # --- how old the view is: one value for /readyz, the metrics and the decisions -----------------
    def freshness(self, state: ClusterState | None = None) -> Freshness:
        """The view's age now: LINSTOR since its last good read, Kubernetes since the API server last
        confirmed the view the state holds (``kube``, else the state's own read time); no ages before
        the first sync or for snapshots."""
        holder = self.holder
        if state is None:
            state = holder.state
        ages = None
        if not holder.static and state.synced_at != NEVER:
            now = self.clock()
            kube = self.kube.kube_age() if self.kube is not None else None
            if kube is None:
                kube = now - state.kube_synced_at
            ages = (max(0.0, now - state.linstor_synced_at), max(0.0, kube))
        return measure(holder.ready, ages, self.max_staleness, holder.last_error, self._kube_detail)

    # --- the decision ------------------------------------------------------------------------------
    async def decide(self, pod: Mapping[str, Any] | bytes, names: Sequence[str] | bytes) -> Decision:
        """The extender's word on ``pod`` for the candidate ``names``, from one read of the state.

        Both may come as kube-scheduler sent them (the Pod object's and the NodeNames array's exact
        JSON bytes: a repeat is then a hash and a look-up, nothing decoded) or decoded (explain, the
        locality report). The pod's side is kept by the Pod's bytes and by its claims (prioritize
        follows filter with the same Pod; pods of a StatefulSet share shapes), verdicts in a table per
        the pod's volumes, answers per candidate list (``Decision.answer``); all for one state
        generation. Freshness is checked on every call, never kept. Raises ``BadRequest`` for a Pod
        or names it cannot read.
        """
        state = self.holder.state  # once: one consistent view for the whole decision
        raw_pod = pod if isinstance(pod, bytes) else None
        side = self.pod_bytes.get(raw_pod, state.generation) if raw_pod is not None else None
        known, signature = side is not None, None
        if side is None:
            side, signature = self._resolve(decode_pod(pod) if isinstance(pod, bytes) else pod, state)
        neutral = side.not_ours
        if neutral is None:
            fresh = self.freshness(state)
            neutral = fresh.neutral_reason
            if neutral is None:
                if side.key is None:
                    side = await self._locate(side, signature)
            elif fresh.stale:
                self._say_neutral(fresh.reason)
        if raw_pod is not None and not known and side.complete:
            self.pod_bytes.put(raw_pod, state.generation, side)
        if neutral is not None:  # kept by the candidates' bytes only if it does not depend on the time
            return Decision(self, side, names, neutral, None, side.not_ours is not None and isinstance(names, bytes))
        if isinstance(names, bytes):
            return Decision(self, side, names, None, self._table_key(side), True)  # answers kept by the bytes
        decision = Decision(self, side, names, None, self._table_key(side), False)
        decision._verdicts = decision.verdicts_on(names)  # no answer to find by bytes: the verdicts are asked for
        return decision

    def _say_neutral(self, stale: str | None) -> None:
        """At most every 30 s: the log says why the extender stopped steering, not once per request."""
        now = self.clock()
        if now - self._last_stale_log > 30:
            log.warning("extender is neutral: %s: not steering on stale data", stale)
            self._last_stale_log = now

    def _resolve(self, pod: Mapping[str, Any], state: ClusterState) -> tuple[Prepared, tuple[Any, ...] | None]:
        """The pod's LINSTOR claims, resolved (PVC, PV, StorageClass); the whole side when a pod with
        the same claims was prepared in this state. Also the claims' signature, None when an
        ephemeral volume's template makes the content part of the answer."""
        ref = objects.key(pod)
        if self.scheduler_name is not None:
            profile = objects.spec(pod).get("schedulerName") or "default-scheduler"
            if profile != self.scheduler_name:
                not_ours = f"pod's scheduler is {profile}, not {self.scheduler_name}"
                return Prepared(ref, [], state, not_ours=not_ours), None
        refs = pod_claims(pod)
        signature = None
        if all(r.template is None for r in refs):
            fallback_generation = self.fallback.generation if self.fallback else 0
            signature = (fallback_generation, tuple((r.namespace, r.name, r.volume) for r in refs))
            hit = self.prepared.get(signature, state.generation)
            if hit is not None:
                return Prepared(ref, hit.claims, state, hit.resources, hit.key, hit.not_ours), signature
        claims = [c for c in (resolve_claim(r, state.get_pvc, state.get_pv, state.get_sc) for r in refs)
                  if c.is_linstor]
        side = Prepared(ref, claims, state, not_ours=None if claims else NO_LINSTOR_VOLUMES)
        if not claims and signature is not None:
            self.prepared.put(signature, state.generation, side)
        return side, signature

    async def _locate(self, side: Prepared, signature: tuple[Any, ...] | None) -> Prepared:
        """The claims' resources from the index (one bounded read for one it lacks: a volume bound
        seconds ago), and the name of the pod's verdict table."""
        state, claims = side.state, side.claims
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
        located = Prepared(side.ref, claims, state, resources, key)
        if signature is not None and located.complete:
            self.prepared.put(signature, state.generation, located)
        return located

    def _table_key(self, side: Prepared) -> tuple[Any, ...] | None:
        """The name of the pod's verdict table (and answers): ``side.key``, plus the ledger's version
        when the pod has an unbound claim judged by free space, whose verdicts change with every
        hold of another claim taken, moved or released. Expired holds are dropped first (oldest
        first: this costs nothing while none expire)."""
        key, ledger = side.key, self.ledger
        if key is None or ledger is None or not _promising(side.claims):
            return key
        if len(ledger):
            ledger.expire(self.clock())
        return (*key, ledger.version_for(c.ref.key for c in side.claims))

    def _judging_state(self, side: Prepared) -> ClusterState:
        """The state with other claims' holds taken from the pools' free space (never the pod's
        own: its claims are promised where it was ranked, which must not push it away)."""
        ledger = self.ledger
        if ledger is None or not len(ledger) or not _promising(side.claims):
            return side.state
        return promised_state(side.state, ledger.held_excluding(c.ref.key for c in side.claims))

    def _verdicts(self, side: Prepared, table_key: tuple[Any, ...], names: Sequence[str]) -> list[NodeVerdict]:
        """Verdicts for ``names`` from the pod's verdict table, judging only nodes it lacks."""
        state = side.state
        if state.generation != self._classes_generation:
            self._new_classes(state)
        cached = self.tables.get(table_key, state.generation)
        if cached is None:
            kube_since, node_sets = state.kube_since, self.node_sets

            def node_set(key: tuple[Any, ...], compute: Callable[[], frozenset[str]]) -> frozenset[str]:
                return node_sets.get_or_compute(key, kube_since, compute)

            cached = (prepare(side.claims, side.resources, state, node_set), {})
        contexts, table = cached
        verdicts = list(map(table.get, names))  # C-level loop: the common case is all hits
        if None in verdicts:
            table.update(judge_many([n for n in names if n not in table], contexts, self._judging_state(side),
                                    self.weights, self._classes))
            verdicts = list(map(table.__getitem__, names))
            self.tables.put(table_key, state.generation, cached)  # new, or grown: charged anew
        return verdicts  # type: ignore[return-value]  # no None left

    def _new_classes(self, state: ClusterState) -> None:
        """Node classes are computed once per state generation: by the live sync, off the request
        path (``state.node_classes``), or here on first use (snapshots, tests)."""
        self._classes_generation = state.generation
        if state.node_classes is not None:
            self._classes = state.node_classes
        else:
            self._classes = node_class_ids(set(state.nodes) | set(state.kube.topology), state, {})

    # --- capacity promised (reservations.py) -------------------------------------------------------
    def promise(self, decision: Decision, nodes: Sequence[str]) -> None:
        """``filter`` let the pod through to ``nodes``: each unbound claim's size is held on all of
        them until kube-scheduler says which (reservations.py)."""
        if self.ledger is not None and _promising(decision.claims):
            hold_filtered(self.ledger, decision.claims, decision.state, nodes, self.clock())

    def reconcile(self, state: ClusterState) -> None:
        """After each published state: holds settle, move and expire (reservations.py)."""
        if self.ledger is not None:
            reconcile(self.ledger, state, self.clock())


def _promising(claims: Sequence[Claim]) -> bool:
    """An unbound claim judged by free space: the one kind a hold is taken for and changes."""
    return any(not c.bound and c.pending is None for c in claims)


def _table_size(_: tuple[Any, ...], cached: tuple[list[ClaimContext], dict[str, NodeVerdict]]) -> int:
    contexts, table = cached
    return TABLE_BYTES + len(table) * (NODE_ENTRY_BYTES + (OWN_VERDICT_BYTES if judged_per_node(contexts) else 0))


def _pod_bytes_size(raw_pod: bytes, _: Prepared) -> int:
    return len(raw_pod) + 200  # the key's bytes and the entry's own few objects


def _answer_size(key: tuple[Any, ...], answer: Encoded) -> int:
    names = key[-1]
    return answer.size + (len(names) if isinstance(names, bytes) else 0)
