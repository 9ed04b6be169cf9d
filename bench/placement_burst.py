"""A burst of WaitForFirstConsumer pods through kube-scheduler's cycle (bench/placement_cycle.py)
against the LIVE extender, so the capacity it promises (scheduler_extender/reservations.py) counts.

    .venv/bin/python bench/placement_burst.py                   # 200 pods: the four runs below
    .venv/bin/python bench/placement_burst.py --pods 100 --claim-gib 7

bench/placement.py serves the extender from a static snapshot: nothing is ever held there. Here the
cluster lives in the LINSTOR emulator and the Kubernetes API stand-in, the extender is
``build_live_app`` on loopback (no poll during the burst), and each bind does what kube-scheduler's
binding cycle does for an unbound WaitForFirstConsumer claim, from a thread of its own as
kube-scheduler's binding goroutine (``Binder``): VolumeBinding's PreBind writes
``volume.kubernetes.io/selected-node`` on the claim. The volume itself is NOT created in LINSTOR
until after the burst: LINSTOR's free space is the last poll's for every pod, so only the holds
stand between the burst and the pools. Pods no node passes are tried again as kube-scheduler's
backoff queue does (``burst``).

Pools of different free sizes, claims sized so the burst asks for about all of it. Per pool it
prints free space, bytes placed (the claims of the pods bound there), bytes held in the ledger after
the burst, pods placed; it checks no pool is promised more than its free space and reports how the
spread follows free capacity (Pearson correlation of placed vs free, each pool's fill, and how many
claims the pool furthest from its proportional share is off). Four runs: back to back (the next
pod's cycle right after the previous one's, binds written meanwhile); no annotation written before
the round of cycles ends (the worst informer lag); each annotation seen by the extender before the
next pod; holds off (``HOLDS_OFF_TTL``: the extender's ledger is taken away, as in snapshot mode,
so no hold is taken; a TTL alone cannot do it, selections the claims still carry never expire),
where every pod sees the same emptiest pool.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import placement as pl  # noqa: E402
import placement_cycle as pc  # noqa: E402

from devkit import kube_objects as k  # noqa: E402
from devkit.kube_standin import KubeStandin  # noqa: E402
from devkit.linstor_emulator import LinstorEmulator  # noqa: E402
from linstor_scheduler.claims import SELECTED_NODE  # noqa: E402
from linstor_scheduler.httpserver import ServerThread  # noqa: E402
from linstor_scheduler.linstor import LinstorClient  # noqa: E402
from scheduler_extender import build_live_app  # noqa: E402

GIB = 1024**3
POOL = "thindata"
CLASS = "linstor-local-wffc"
APP = "burst"  # one owner (a StatefulSet): PodTopologySpread's default constraints count its pods
DEFAULT_FREE_GIB = (40, 80, 120, 160, 200, 240, 280, 320)
HOLDS_OFF_TTL = 1e-6  # burst(ttl=...): this or less means no ledger at all (holds off)


# --- what a burst left behind: pure -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PoolRow:
    node: str
    free: int  # bytes free in LINSTOR's poll (nothing created during the burst)
    placed: int  # bytes of the claims whose pods were bound to this node
    held: int  # bytes the extender's ledger holds on this pool after the burst
    pods: int

    @property
    def promised(self) -> int:
        """What the pool must take once the CSI driver creates the volumes: the pods bound here."""
        return self.placed


def pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0


@dataclass(frozen=True, slots=True)
class BurstResult:
    label: str
    rows: tuple[PoolRow, ...]
    unscheduled: int
    seconds: float
    retries: int = 0  # scheduling attempts of pods no node passed before (the backoff queue's)

    def over_promised(self) -> list[PoolRow]:
        return [r for r in self.rows if r.promised > r.free]

    def correlation(self) -> float:
        return pearson([r.free for r in self.rows], [r.placed for r in self.rows])

    def fills(self) -> list[float]:
        """Each pool's placed / free: equal fills are a spread proportional to free capacity."""
        return [r.placed / r.free for r in self.rows]

    def off_share(self, claim: int) -> float:
        """How far the pool furthest from its share of the burst is, in claims: its share is the
        burst's bytes times the pool's part of all free space. Pools take whole claims, so an exact
        spread is within one claim of every share."""
        placed, free = sum(r.placed for r in self.rows), sum(r.free for r in self.rows)
        return max(abs(r.placed - placed * r.free / free) for r in self.rows) / claim


# --- the cluster ------------------------------------------------------------------------------------
def populate(free_gib: tuple[int, ...], pods: int, claim_gib: int) -> tuple[LinstorEmulator, KubeStandin, list[str]]:
    """One storage node per pool size, 3 zones; a WaitForFirstConsumer class of 1 replica without
    remote access (the pod's node is where the volume goes); one unbound claim per pod. The pools'
    ``MaxOversubscriptionRatio`` is 1: LINSTOR (and so the extender, docs/extender.md "How much a pool
    takes") admits what is free, no thin over-commit, so "more than it has" means the free space."""
    names = [f"node-{i:02d}" for i in range(len(free_gib))]
    emu, ks = LinstorEmulator(), KubeStandin()
    for i, (n, free) in enumerate(zip(names, free_gib, strict=True)):
        emu.add_node(n)
        emu.add_storage_pool(n, POOL, "LVM_THIN", free_kib=free * 1024**2, total_kib=2 * free * 1024**2,
                             props={"MaxOversubscriptionRatio": "1"})
        ks.add(k.node(n, zone=f"zone-{i % 3}"))
    ks.add(k.storage_class(CLASS, pool=POOL, replicas=1, remote=False, wffc=True))
    for i in range(pods):
        ks.add(k.pvc(f"data-{i}", storage_class=CLASS, size=f"{claim_gib}Gi"))
    return emu, ks, names


def cache_nodes(names: list[str], seed: int = 11) -> list[pc.Node]:
    """32 cores / 128 GiB, room for the burst's pod count; 0-40 % already requested by other pods."""
    rnd = random.Random(seed)
    out = []
    for i, n in enumerate(names):
        node = pc.Node(n, f"zone-{i % 3}", {pc.HOSTNAME: n, pc.ZONE: f"zone-{i % 3}"}, cpu_m=32000,
                       mem=128 * GIB, max_pods=500)
        node.cpu_req_m = rnd.randint(0, 40) * 320
        node.mem_req = rnd.randint(0, 40) * 128 * GIB // 100
        out.append(node)
    return out


@contextlib.contextmanager
def live_extender(emu: LinstorEmulator, ks: KubeStandin, ttl: float) -> Iterator[str]:
    """build_live_app on loopback against both doubles; no poll during the burst (LINSTOR's free
    space stays the first read's), events off (the emulator's event stream is not the point)."""
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=5.0, retries=1)
        app = build_live_app(client, ks.api_client(ksrv.url), use_events=False, poll_interval=3600,
                             reservation_ttl=max(ttl, HOLDS_OFF_TTL))
        if ttl <= HOLDS_OFF_TTL:
            app.state.extender.ledger = None  # holds off: the extender judges the poll's free space alone
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            until(lambda: http.get("/readyz").status_code == 200, "the extender's first full sync")
            yield srv.url


def until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def held_by_node(url: str, names: list[str], claims: dict[str, str]) -> dict[str, int] | None:
    """Bytes held per node once every placed claim's hold sits, alone, on the node its pod was bound
    to (the informer has delivered every selected-node annotation); None while it has not."""
    r = httpx.post(f"{url}/explain", json={"Pod": k.pod("probe", claims=[]), "NodeNames": names}, timeout=10)
    r.raise_for_status()
    rows = r.json()["reservations"]
    where: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        where.setdefault(row["claim"], []).append((row["node"], row["source"]))
    if any(where.get(f"default/{c}") != [(node, "selected")] for c, node in claims.items()):
        return None
    held: dict[str, int] = dict.fromkeys(names, 0)
    for row in rows:
        held[row["node"]] += int(row["bytes"])
    return held


class Binder:
    """kube-scheduler's binding cycles: each runs in its own goroutine while the next pod is
    scheduled (schedule_one.go ``ScheduleOne``: "bind the pod to its host asynchronously"); its
    VolumeBinding PreBind (framework/plugins/volumebinding/volume_binding.go ``PreBind`` -> binder.go
    ``BindPodVolumes`` -> ``bindAPIUpdate``, a PVC Update) writes the claim's
    ``volume.kubernetes.io/selected-node``, which VolumeBinding's Reserve (binder.go
    ``AssumePodVolumes``) had set on its in-memory copy. Read in kubernetes/kubernetes:
    volume_binding.go at 00fe7a377bc3, binder.go at 01aa0f3f6052, schedule_one.go at 003b4460edb5.
    Here: a pool of threads writing to the Kubernetes API stand-in."""

    def __init__(self, ks: KubeStandin, *, held_back: bool = False) -> None:
        """``held_back``: no bind reaches the API server before ``release`` (the end of each round
        of scheduling cycles): the worst an informer's lag can be, whatever the machine's speed."""
        self.ks = ks
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="binding-cycle")
        self.pending: list[Future[object]] = []
        self.held_back: list[tuple[str, str]] | None = [] if held_back else None

    def bind(self, claim: str, node: str) -> None:
        if self.held_back is not None:
            self.held_back.append((claim, node))
            return
        self.pending.append(self.pool.submit(
            self.ks.patch, "PersistentVolumeClaim", claim, {"metadata": {"annotations": {SELECTED_NODE: node}}},
            namespace="default"))

    def release(self) -> None:
        if self.held_back is None:
            return
        waiting, self.held_back = self.held_back, None
        for claim, node in waiting:
            self.bind(claim, node)
        self.held_back = []

    def written(self) -> bool:
        """Every bind so far has reached the API server (raises a bind's error)."""
        return not self.held_back and all(f.done() and f.result() is not None for f in self.pending)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def burst(label: str, pods: int, claim_gib: int, free_gib: tuple[int, ...], ttl: float, seed: int = 3,
          settle: bool = False, held_back: bool = False) -> BurstResult:
    """``pods`` pods, one after the other as kube-scheduler's scheduling cycles run, each bind
    annotating its claim from a binding thread; nothing created in LINSTOR. ``settle``: the next
    pod's cycle starts only once the extender has seen the annotation (kube-scheduler does not
    wait so). ``held_back``: no annotation is written before the round of cycles ends (``Binder``).
    A pod no node passes goes to kube-scheduler's backoff queue: a pod only an extender
    rejected has no unschedulable plugin and is retried after a backoff (scheduling_queue.go
    ``determineSchedulingHintForInFlightPod`` -> ``queueAfterBackoff``; 1 s first,
    ``DefaultPodInitialBackoffDuration``), by when the binds before it have long reached the
    extender: here, once the active queue is empty, when they have, the rejected pods are tried
    again in order, as long as a round places any."""
    emu, ks, names = populate(free_gib, pods, claim_gib)
    settings = pl.scheduler_settings(*pl.rendered_deploy())
    bodies = {f"p{i}": k.pod(f"p{i}", claims=[f"data-{i}"], labels={"app": APP}) for i in range(pods)}
    holds = ttl > HOLDS_OFF_TTL
    with live_extender(emu, ks, ttl) as url:
        ext = pl.HttpExtender(url, settings, bodies)
        sched = pc.Scheduler(cache_nodes(names), ext.as_extender(), settings.percentage, random.Random(seed))
        binder = Binder(ks, held_back=held_back)
        placed: dict[str, str] = {}

        def cycles(queue: list[int]) -> list[int]:
            """The scheduling cycles of ``queue``, in order; the pods no node passed."""
            rejected = []
            for i in queue:
                outcome = sched.schedule(pc.Pod(f"p{i}", APP, cpu_m=50, mem=GIB // 8))
                if outcome.host is None:
                    rejected.append(i)
                    continue
                binder.bind(f"data-{i}", outcome.host)
                placed[f"data-{i}"] = outcome.host
                if settle and holds:
                    until(lambda: binder.written() and held_by_node(url, names, placed) is not None,
                          "the hold on the pod's node")
            return rejected

        queue, retries = list(range(pods)), 0
        t0 = time.monotonic()
        try:
            while queue:
                rejected = cycles(queue)
                binder.release()
                if len(rejected) == len(queue):
                    break  # a round that places nothing: unschedulable for good
                until(binder.written, "the binds written")
                if holds:
                    until(lambda: held_by_node(url, names, placed) is not None, "every hold on its pod's node")
                retries += len(rejected)
                queue = rejected
            took = time.monotonic() - t0
            until(binder.written, "the binds written")
            if holds:
                until(lambda: held_by_node(url, names, placed) is not None, "every hold on its pod's node")
                held = held_by_node(url, names, placed) or {}
            else:
                held = dict.fromkeys(names, 0)
        finally:
            binder.close()
    size = claim_gib * GIB
    rows = tuple(PoolRow(n, free * GIB, size * sum(1 for h in placed.values() if h == n), held[n],
                         sum(1 for h in placed.values() if h == n)) for n, free in zip(names, free_gib, strict=True))
    return BurstResult(label, rows, len(queue), took, retries)


def report(result: BurstResult, claim_gib: int) -> None:
    print(f"\n{result.label}: {sum(r.pods for r in result.rows)} placed, {result.unscheduled} unschedulable, "
          f"{result.retries} retries, {result.seconds:.1f} s")
    print(f"{'node':<8} {'free GiB':>8} {'placed GiB':>10} {'held GiB':>8} {'pods':>5} {'fill':>6}")
    for r in result.rows:
        print(f"{r.node:<8} {r.free / GIB:>8.0f} {r.placed / GIB:>10.0f} {r.held / GIB:>8.0f} {r.pods:>5} "
              f"{r.placed / r.free:>6.0%}")
    over = result.over_promised()
    fills = result.fills()
    print(f"pools promised more than free: {len(over)}"
          + (f" (worst {max(r.promised / r.free for r in over):.1f}x)" if over else "")
          + f"; correlation placed~free {result.correlation():.3f}; fill min {min(fills):.0%} max {max(fills):.0%}"
          + f"; furthest pool {result.off_share(claim_gib * GIB):.1f} claims off its share")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--claim-gib", type=int, default=7, help="each claim's size (default: the burst asks ~97%%)")
    ap.add_argument("--free-gib", type=int, nargs="+", default=list(DEFAULT_FREE_GIB), help="free space per pool")
    ap.add_argument("--ttl", type=float, default=120.0, help="reservation TTL of the first run")
    a = ap.parse_args(argv)
    free = tuple(a.free_gib)
    print(f"{a.pods} pods x {a.claim_gib} GiB = {a.pods * a.claim_gib} GiB asked; pools {free} GiB "
          f"= {sum(free)} GiB free")
    with_holds = burst(f"holds (ttl {a.ttl:g} s), back to back", a.pods, a.claim_gib, free, a.ttl)
    lagging = burst(f"holds (ttl {a.ttl:g} s), no annotation written before the round ends", a.pods,
                    a.claim_gib, free, a.ttl, held_back=True)
    settled = burst(f"holds (ttl {a.ttl:g} s), each annotation seen before the next pod", a.pods, a.claim_gib,
                    free, a.ttl, settle=True)
    without = burst("holds off", a.pods, a.claim_gib, free, HOLDS_OFF_TTL)
    for result in (with_holds, lagging, settled, without):
        report(result, a.claim_gib)
    return 0 if not with_holds.over_promised() and not lagging.over_promised() else 1


if __name__ == "__main__":
    raise SystemExit(main())
