"""Capacity promised but not yet in LINSTOR: a small ledger of holds. Pure: no I/O, no clock of its own.

Free capacity comes from the last LINSTOR poll only, so in a burst of WaitForFirstConsumer pods
every pod would see the same emptiest node (topolvm/topolvm#119, longhorn/longhorn#12591). A hold
says "this unbound claim's size will land in one of these pools", and lives in two steps:

- **filtered** (``hold_filtered``): ``/filter`` let the pod through to some nodes. kube-scheduler
  chooses among exactly those (an extender's filter is binding: schedule_one.go
  ``findNodesThatPassExtenders``), but adds its own score plugins to ours (``prioritizeNodes``:
  our score is only weighted), so until it says which, the claim's size is held on the pool of
  EVERY node it passed. The next pod's filter then sees each pool as if every claim still in
  flight lands there: whichever node each one really gets, no pool is promised more than it has.
- **selected** (``heard_claim``): kube-scheduler's choice, as the claim shows it. VolumeBinding's
  Reserve (volume_binding.go ``Reserve`` -> binder.go ``AssumePodVolumes``) sets
  ``volume.kubernetes.io/selected-node`` on its in-memory copy; its PreBind (volume_binding.go
  ``PreBind`` -> binder.go ``BindPodVolumes`` -> ``bindAPIUpdate``, a PVC Update) writes it to
  the API server from the binding cycle, which runs in its own goroutine while the next pod is
  already being scheduled (schedule_one.go ``ScheduleOne``: "bind the pod to its host
  asynchronously"). The hold shrinks to that node's pool the moment the informer hears it.

It ends when LINSTOR shows the volume (``reconcile``: the same read counts it in its pool's room,
``linstor.capacity``: in the space reserved for the volumes LINSTOR lists, thin or thick, and for a
thick pool in its free capacity too; a thin pool's free capacity, its unwritten data, a new volume
leaves as it was: ``test_a_thin_volume_just_provisioned_still_counts_against_its_pool``), when
the claim is deleted, when the selection is withdrawn (the provisioner removes the annotation to
make the scheduler retry: binder.go ``checkBindings``), or after a TTL: a filter hold after the TTL
(``expire``: a pod deleted mid-scheduling), a selection only once the state no longer shows it for
the TTL (``reconcile``). A selection the claim still carries is kept however long provisioning
takes: external-provisioner creates the volume from the annotation, pod or not (a burst queued
behind LINSTOR can take minutes), so the pod's fate does not end it. Scoring and the filter
subtract ``held`` from each pool's free space (``promised_state``; scoring.py reads
``ClusterState.held``).

Bounded: at most ``max_holds`` holds and ``max_places`` (node, pool) places over all of them, the
oldest filter hold dropped first, a selection (kube-scheduler's choice, one place) only when no
filter hold is left (a hold lost early only makes a pool look emptier than it is, as before this
ledger existed). ``version`` changes with every change, so whatever was computed from the holds
can be keyed by it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Literal

from linstor_scheduler.claims import ClaimRecord, as_claim
from linstor_scheduler.volumes import Claim, StorageClassInfo

from .state import ClusterState, NodeInfo

DEFAULT_TTL = 120.0
DEFAULT_MAX_HOLDS = 10_000
DEFAULT_MAX_PLACES = 1_000_000  # ~8 MB of references to node names already interned by the state

Source = Literal["filtered", "selected"]


@dataclass(frozen=True, slots=True)
class Hold:
    claim: str  # "namespace/name" of the PVC
    nodes: tuple[str, ...]  # filtered: every node the claim may still land on; selected: the one chosen
    pools: tuple[str, ...]  # the pool on each of ``nodes`` the volume would be created in; one: on all
    size_bytes: int
    since: float  # clock() when taken (or changed: a change starts the TTL again)
    source: Source

    def places(self) -> Iterable[tuple[str, str]]:
        if len(self.pools) == 1:
            return zip(self.nodes, repeat(self.pools[0]), strict=False)  # repeat never ends
        return zip(self.nodes, self.pools, strict=True)

    def pool_on(self, node: str) -> str:
        return self.pools[0] if len(self.pools) == 1 else self.pools[self.nodes.index(node)]


class Ledger:
    def __init__(self, *, ttl: float = DEFAULT_TTL, max_holds: int = DEFAULT_MAX_HOLDS,
                 max_places: int = DEFAULT_MAX_PLACES) -> None:
        self.ttl = ttl
        self.max_holds = max_holds
        self.max_places = max_places
        self._holds: dict[str, Hold] = {}  # claim -> hold, oldest first
        self._filtered: dict[str, None] = {}  # the claims of filter holds, oldest first (expire, _first_out)
        self._held: dict[str, dict[str, int]] = {}  # pool -> node -> bytes
        self._places = 0
        self.version = 0
        self._changes: dict[str, int] = {}  # claim -> changes of ``version`` its hold made (while it has one)

    def __len__(self) -> int:
        return len(self._holds)

    def holds(self) -> list[Hold]:
        return list(self._holds.values())

    def get(self, claim: str) -> Hold | None:
        return self._holds.get(claim)

    def version_for(self, claims: Iterable[str]) -> int:
        """A version that changes with every change of the holds of claims other than ``claims``
        (and never goes back), not with theirs: a pod's verdicts, which leave its own holds out,
        stay valid across the hold its own filter answer takes (its prioritize follows)."""
        return self.version - sum(self._changes.get(claim, 0) for claim in claims)

    def held(self, node: str, pool: str) -> int:
        """Bytes promised on ``node``'s ``pool`` and not yet in LINSTOR's free space."""
        return self._held.get(pool, {}).get(node, 0)

    def held_excluding(self, claims: Iterable[str]) -> Mapping[str, Mapping[str, int]]:
        """pool -> node -> bytes held by every claim but ``claims``: a pod's own claims must not push
        it away from the nodes they are promised to. Without own holds this is the ledger's own
        table (no copy): read it at once, never keep it."""
        own = [hold for hold in map(self._holds.get, claims) if hold is not None]
        if not own:
            return self._held
        out = dict(self._held)
        for hold in own:
            for node, pool in hold.places():
                nodes = out[pool] = dict(out[pool]) if out[pool] is self._held[pool] else out[pool]
                left = nodes[node] - hold.size_bytes
                if left > 0:
                    nodes[node] = left
                else:
                    del nodes[node]
        return {pool: nodes for pool, nodes in out.items() if nodes}

    def filtered(self, claim: str, nodes: Sequence[str], pools: Sequence[str], size_bytes: int, now: float) -> bool:
        """The filter let ``claim``'s pod through to ``nodes``: hold its size on each, in the pool
        ``pools`` names for it (a single pool: on every node). No node: the pod lands nowhere this
        cycle, nothing is held. Kube-scheduler's choice, once known, is never replaced by a
        filter's. True when the ledger changed."""
        hold = self._holds.get(claim)
        if hold is not None and hold.source == "selected":
            return False
        nodes, pools = tuple(nodes), tuple(pools)
        if not nodes:
            return self.release(claim)
        if len(pools) > 1 and pools.count(pools[0]) == len(pools):
            pools = pools[:1]  # one pool on every node: kept once
        if hold is not None and hold.nodes == nodes and hold.pools == pools and hold.size_bytes == size_bytes:
            return False
        self._put(Hold(claim, nodes, pools, size_bytes, now, "filtered"))
        return True

    def selected(self, claim: str, node: str, pool: str, size_bytes: int, now: float) -> bool:
        """kube-scheduler chose ``node`` for ``claim``: the hold shrinks to it (or is taken there).
        True when the ledger changed."""
        hold = self._holds.get(claim)
        if hold is not None and hold.source == "selected" and hold.nodes == (node,) and hold.pools == (pool,):
            return False
        self._put(Hold(claim, (node,), (pool,), size_bytes, now, "selected"))
        return True

    def release(self, claim: str) -> bool:
        hold = self._holds.pop(claim, None)
        if hold is None:
            return False
        self._filtered.pop(claim, None)
        self._unheld(hold)
        self._changes.pop(claim, None)
        self.version += 1
        return True

    def settle(self, done: Callable[[Hold], bool]) -> list[Hold]:
        """Drops the holds ``done`` says are over (LINSTOR shows the volume, or the claim is gone)."""
        over = [h for h in self._holds.values() if done(h)]
        for hold in over:
            self.release(hold.claim)
        return over

    def expire(self, now: float) -> list[Hold]:
        """Drops filter holds older than the TTL (a selection is kept while the claim shows it:
        ``reconcile``). They are kept in the order they were taken or changed, so this stops at the
        first one still young: nothing to do costs one look."""
        old: list[Hold] = []
        for claim in self._filtered:
            hold = self._holds[claim]
            if now - hold.since < self.ttl:
                break
            old.append(hold)
        for hold in old:
            self.release(hold.claim)
        return old

    def totals(self) -> Mapping[str, tuple[int, int]]:
        """source -> (holds, bytes): for the metric (bytes once per hold, however many nodes)."""
        out = {"filtered": (0, 0), "selected": (0, 0)}
        for hold in self._holds.values():
            count, size = out[hold.source]
            out[hold.source] = (count + 1, size + hold.size_bytes)
        return out

    def _put(self, hold: Hold) -> None:
        old = self._holds.pop(hold.claim, None)
        if old is not None:
            self._unheld(old)
            self._filtered.pop(hold.claim, None)
        while self._holds and (len(self._holds) >= self.max_holds
                               or self._places + len(hold.nodes) > self.max_places):
            self.release(self._first_out())
        self._holds[hold.claim] = hold
        if hold.source == "filtered":
            self._filtered[hold.claim] = None
        self._places += len(hold.nodes)
        size = hold.size_bytes
        if len(hold.pools) == 1:  # the common case, in one loop without look-ups of the pool
            nodes = self._held.setdefault(hold.pools[0], {})
            get = nodes.get
            for node in hold.nodes:
                nodes[node] = get(node, 0) + size
        else:
            for node, pool in hold.places():
                nodes = self._held.setdefault(pool, {})
                nodes[node] = nodes.get(node, 0) + size
        self._changes[hold.claim] = self._changes.get(hold.claim, 0) + 1
        self.version += 1

    def _first_out(self) -> str:
        """The hold a full ledger drops: the oldest filter hold (spread over every node passed, the
        claim lands on one at most), else the oldest selection (kube-scheduler's choice: certain)."""
        return next(iter(self._filtered), None) or next(iter(self._holds))

    def _unheld(self, hold: Hold) -> None:
        self._places -= len(hold.nodes)
        size = hold.size_bytes
        for pool in set(hold.pools):
            nodes = self._held.get(pool)
            if nodes is None:
                continue
            on = hold.nodes if len(hold.pools) == 1 else [n for n, p in hold.places() if p == pool]
            for node in on:
                left = nodes.get(node, 0) - size
                if left > 0:
                    nodes[node] = left
                else:
                    nodes.pop(node, None)
            if not nodes:
                del self._held[pool]


def promised_state(state: ClusterState, held: Mapping[str, Mapping[str, int]]) -> ClusterState:
    """``state`` as the filter and scores judge it: what is held counts as used (scoring.py subtracts
    ``ClusterState.held`` from each pool's free space). ``pool_max_free`` (the scale of the
    free-space score) stays the poll's, so a held pool scores lower without moving every other
    node's score."""
    if not held:
        return state
    return dataclasses.replace(state, held=held)


def hold_rows(ledger: Ledger, names: Iterable[str], now: float) -> list[dict[str, Any]]:
    """``/explain``'s ``reservations``: one row per hold and judged node it is on (what the free
    space in the verdicts already lacks)."""
    wanted = set(names)
    return [{"claim": h.claim, "node": node, "pool": pool, "bytes": h.size_bytes, "source": h.source,
             "age_seconds": round(now - h.since, 3)} for h in ledger.holds() for node, pool in h.places()
            if node in wanted]


# --- what each event means for the holds: pure decisions on the ledger ---------------------------------
def promising(claim: Claim) -> bool:
    """An unbound WaitForFirstConsumer claim judged by free space, of known size: the one kind held."""
    return not claim.bound and claim.pending is None and claim.storage_class is not None and bool(claim.size_bytes)


def pool_for(storage_class: StorageClassInfo, node: NodeInfo,
             held: Mapping[str, Mapping[str, int]] | None = None,
             taken: Mapping[str, int] | None = None) -> str | None:
    """The pool on ``node`` a new volume of the class goes to: the class's ``storagePool``, else
    the node's roomiest once ``held`` (other claims' holds) and ``taken`` (KiB the pod's earlier
    claims take of this node's pools) are taken off, as ``scoring.judge_unbound`` judges it; None
    when the node has none. (By the poll's free space alone every hold would pile on the same pool,
    and the filter would find the others free for ever.)"""
    if storage_class.storage_pool:
        return storage_class.storage_pool if storage_class.storage_pool in node.pools else None
    held = held or {}
    taken = taken or {}

    def room(pool: str) -> int:
        return (node.pools[pool].free_kib or 0) - held.get(pool, {}).get(node.name, 0) // 1024 - taken.get(pool, 0)

    return max(node.pools, key=room, default=None)


def hold_filtered(ledger: Ledger, claims: Sequence[Claim], state: ClusterState, nodes: Sequence[str],
                  now: float) -> None:
    """The filter's answer let the pod through to ``nodes``: each unbound claim is held on the pool
    of every one of them (nodes without such a pool take no volume of it: a remote-access class
    sends the volume elsewhere, and no hold can say where). A class without a ``storagePool`` holds
    on the pool the filter found room in: the roomiest once other claims' holds and the pod's own
    earlier claims on the node are counted, in the pod's order, as ``scoring.judge_node`` judges."""
    known = state.nodes
    promised = [c for c in claims if promising(c)]
    anywhere = any(not c.storage_class.storage_pool for c in promised if c.storage_class is not None)
    taken: dict[str, dict[str, int]] = {}  # node -> pool -> KiB of the pod's claims held so far
    for claim in promised:
        sc = claim.storage_class
        assert sc is not None and claim.size_bytes
        if sc.storage_pool:  # one pool: the common case, a plain membership test per node
            pool = sc.storage_pool
            held = [n for n in nodes if (node := known.get(n)) is not None and pool in node.pools]
            ledger.filtered(claim.ref.key, held, [pool], claim.size_bytes, now)
            if anywhere:
                for n in held:
                    on = taken.setdefault(n, {})
                    on[pool] = on.get(pool, 0) + claim.size_bytes // 1024
            continue
        held_others = ledger.held_excluding(c.ref.key for c in claims)  # as the filter judged it
        places = [(n, pool) for n in nodes if (node := known.get(n)) is not None
                  and (pool := pool_for(sc, node, held_others, taken.get(n))) is not None]
        for n, pool in places:
            on = taken.setdefault(n, {})
            on[pool] = on.get(pool, 0) + claim.size_bytes // 1024
        ledger.filtered(claim.ref.key, [n for n, _ in places], [p for _, p in places], claim.size_bytes, now)


def selected_node(pvc: ClaimRecord | Mapping[str, Any] | None) -> str | None:
    """The node kube-scheduler chose for the claim (VolumeBinding's annotation), if any."""
    record = as_claim(pvc)
    return record.selected_node if record is not None else None


def heard_claim(ledger: Ledger, key: str, pvc: ClaimRecord | Mapping[str, Any] | None, state: ClusterState,
                now: float) -> bool | None:
    """The informer's news of claim ``key`` (``pvc`` None: deleted). A selection moves the hold to
    the chosen node, or takes one there (a claim no filter answer holds: an extender restarted
    mid-burst, a hold pushed out or expired before the choice came); a withdrawn selection drops
    it. True when the ledger changed; None when ``state`` cannot tell
    the pool yet (its StorageClass or node not seen): ask again with a later state."""
    record = as_claim(pvc)
    if record is None:
        return ledger.release(key)
    hold = ledger.get(key)
    chosen = record.selected_node
    if record.volume and record.volume in state.resources:
        return ledger.release(key)  # LINSTOR already counts it
    if chosen is None:
        return ledger.release(key) if hold is not None and hold.source == "selected" else False
    if hold is not None and chosen in hold.nodes:
        pool, size = hold.pool_on(chosen), hold.size_bytes
    else:
        sc = state.get_sc(record.storage_class or "")
        node = state.nodes.get(chosen)
        if sc is None or node is None:
            return None
        size = record.size_bytes or 0
        found = pool_for(sc, node, ledger.held_excluding([key])) if sc.is_linstor and sc.wait_for_first_consumer \
            and size else None
        if found is None:
            return ledger.release(key)  # not a volume this node's pools take
        pool = found
    return ledger.selected(key, chosen, pool, size, now)


def reconcile(ledger: Ledger, state: ClusterState, now: float) -> None:
    """After each published state: a hold ends when LINSTOR's part of the state has the claim's
    volume (the pool's room, read with it, counts it now: ``state.PoolInfo``) or the claim is gone;
    a selection the informer's news did not bring yet is taken from the state's copy of the claim;
    old filter holds expire, and so does a selection the state has not shown for the TTL (the
    informer's news of it was never confirmed, or its withdrawal was missed). A selection the state
    shows is kept: the volume is being provisioned there, however long that takes."""
    if not len(ledger):
        return

    def over(hold: Hold) -> bool:
        pvc = as_claim(state.get_pvc(hold.claim))
        if pvc is None:
            return True
        if pvc.volume and pvc.volume in state.resources:
            return True
        return (hold.source == "selected" and now - hold.since >= ledger.ttl
                and selected_node(pvc) != hold.nodes[0])

    ledger.settle(over)
    for hold in ledger.holds():
        pvc = state.get_pvc(hold.claim)
        chosen = selected_node(pvc)
        if chosen and (hold.source != "selected" or hold.nodes != (chosen,)):
            heard_claim(ledger, hold.claim, pvc, state, now)
    ledger.expire(now)
