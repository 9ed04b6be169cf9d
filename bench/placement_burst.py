"""A burst of WaitForFirstConsumer pods through kube-scheduler's cycle (bench/placement_cycle.py)
against the LIVE extender, so the capacity it promises (scheduler_extender/reservations.py) counts.

    .venv/bin/python bench/placement_burst.py                   # 200 pods, holds on, then off
    .venv/bin/python bench/placement_burst.py --pods 60 --claim-gib 20

bench/placement.py serves the extender from a static snapshot: nothing is ever held there. Here the
cluster lives in the LINSTOR emulator and the Kubernetes API stand-in, the extender is
``build_live_app`` on loopback (no poll during the burst), and each bind does what kube-scheduler's
binder does for an unbound WaitForFirstConsumer claim: VolumeBinding's PreBind
(pkg/scheduler/framework/plugins/volumebinding/binder.go ``BindPodVolumes`` -> ``bindAPIUpdate``,
kubernetes 1.35 line) writes ``volume.kubernetes.io/selected-node`` on the claim. The volume itself
is NOT created in LINSTOR until after the burst: LINSTOR's free space is the last poll's for every
pod, so only the holds stand between the burst and the pools.

Pools of different free sizes, claims sized so the burst asks for about all of it. Per pool it
prints free space, bytes placed (the claims of the pods bound there), bytes held in the ledger after
the burst, pods placed; it checks no pool is promised more than its free space and reports how the
spread follows free capacity (Pearson correlation of placed vs free, and each pool's fill). Then the
same burst with holds effectively off (``reservation_ttl`` of a microsecond: every hold has expired
before the next pod asks), where every pod sees the same emptiest pool.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
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
from linstor_scheduler.httpserver import ServerThread  # noqa: E402
from linstor_scheduler.linstor import LinstorClient  # noqa: E402
from scheduler_extender.reservations import SELECTED_NODE  # noqa: E402
from scheduler_extender.wiring import build_live_app  # noqa: E402

GIB = 1024**3
POOL = "thindata"
CLASS = "linstor-local-wffc"
APP = "burst"  # one owner (a StatefulSet): PodTopologySpread's default constraints count its pods
DEFAULT_FREE_GIB = (40, 80, 120, 160, 200, 240, 280, 320)
HOLDS_OFF_TTL = 1e-6


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

    def over_promised(self) -> list[PoolRow]:
        return [r for r in self.rows if r.promised > r.free]

    def correlation(self) -> float:
        return pearson([r.free for r in self.rows], [r.placed for r in self.rows])

    def fills(self) -> list[float]:
        """Each pool's placed / free: equal fills are a spread proportional to free capacity."""
        return [r.placed / r.free for r in self.rows]


# --- the cluster ------------------------------------------------------------------------------------
def populate(free_gib: tuple[int, ...], pods: int, claim_gib: int) -> tuple[LinstorEmulator, KubeStandin, list[str]]:
    """One storage node per pool size, 3 zones; a WaitForFirstConsumer class of 1 replica without
    remote access (the pod's node is where the volume goes); one unbound claim per pod."""
    names = [f"node-{i:02d}" for i in range(len(free_gib))]
    emu, ks = LinstorEmulator(), KubeStandin()
    for i, (n, free) in enumerate(zip(names, free_gib, strict=True)):
        emu.add_node(n)
        emu.add_storage_pool(n, POOL, "LVM_THIN", free_kib=free * 1024**2, total_kib=2 * free * 1024**2)
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
                             reservation_ttl=ttl)
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
    """Bytes held per node once every placed claim's hold sits where its pod was bound (the
    informer has delivered the selected-node annotations); None while it has not. A claim the
    extender never ranked (a single feasible node: kube-scheduler skips prioritize) has no hold."""
    r = httpx.post(f"{url}/explain", json={"Pod": k.pod("probe", claims=[]), "NodeNames": names}, timeout=10)
    r.raise_for_status()
    rows = r.json()["reservations"]
    where = {row["claim"]: (row["node"], row["source"]) for row in rows}
    if any(where.get(f"default/{c}", (node, "selected")) != (node, "selected") for c, node in claims.items()):
        return None
    held: dict[str, int] = dict.fromkeys(names, 0)
    for row in rows:
        held[row["node"]] += int(row["bytes"])
    return held


def burst(label: str, pods: int, claim_gib: int, free_gib: tuple[int, ...], ttl: float, seed: int = 3,
          settle: bool = False) -> BurstResult:
    """``pods`` pods, one after the other as kube-scheduler's scheduling cycles run, each bind
    annotating its claim in the stand-in; nothing created in LINSTOR. ``settle``: the next pod's
    cycle starts only once the extender has seen the annotation (no race between the binder's
    write and the informer; kube-scheduler does not wait so)."""
    emu, ks, names = populate(free_gib, pods, claim_gib)
    settings = pl.scheduler_settings(*pl.rendered_deploy())
    bodies = {f"p{i}": k.pod(f"p{i}", claims=[f"data-{i}"], labels={"app": APP}) for i in range(pods)}
    with live_extender(emu, ks, ttl) as url:
        ext = pl.HttpExtender(url, settings, bodies)
        sched = pc.Scheduler(cache_nodes(names), ext.as_extender(), settings.percentage, random.Random(seed))
        placed: dict[str, str] = {}
        t0 = time.monotonic()
        for i in range(pods):
            outcome = sched.schedule(pc.Pod(f"p{i}", APP, cpu_m=50, mem=GIB // 8))
            if outcome.host is not None:  # VolumeBinding's PreBind, then the binding itself
                ks.patch("PersistentVolumeClaim", f"data-{i}",
                         {"metadata": {"annotations": {SELECTED_NODE: outcome.host}}}, namespace="default")
                placed[f"data-{i}"] = outcome.host
                if settle and ttl > HOLDS_OFF_TTL:
                    until(lambda: held_by_node(url, names, placed) is not None, "the hold on the pod's node")
        took = time.monotonic() - t0
        if ttl > HOLDS_OFF_TTL:
            until(lambda: held_by_node(url, names, placed) is not None, "every hold on its pod's node")
            held = held_by_node(url, names, placed) or {}
        else:
            held = dict.fromkeys(names, 0)
    size = claim_gib * GIB
    rows = tuple(PoolRow(n, free * GIB, size * sum(1 for h in placed.values() if h == n), held[n],
                         sum(1 for h in placed.values() if h == n)) for n, free in zip(names, free_gib, strict=True))
    return BurstResult(label, rows, pods - len(placed), took)


def report(result: BurstResult) -> None:
    print(f"\n{result.label}: {sum(r.pods for r in result.rows)} placed, {result.unscheduled} unschedulable, "
          f"{result.seconds:.1f} s")
    print(f"{'node':<8} {'free GiB':>8} {'placed GiB':>10} {'held GiB':>8} {'pods':>5} {'fill':>6}")
    for r in result.rows:
        print(f"{r.node:<8} {r.free / GIB:>8.0f} {r.placed / GIB:>10.0f} {r.held / GIB:>8.0f} {r.pods:>5} "
              f"{r.placed / r.free:>6.0%}")
    over = result.over_promised()
    fills = result.fills()
    print(f"pools promised more than free: {len(over)}"
          + (f" (worst {max(r.promised / r.free for r in over):.1f}x)" if over else "")
          + f"; correlation placed~free {result.correlation():.3f}; fill min {min(fills):.0%} max {max(fills):.0%}")


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
    with_holds = burst(f"holds (ttl {a.ttl:g} s)", a.pods, a.claim_gib, free, a.ttl)
    settled = burst(f"holds (ttl {a.ttl:g} s), each annotation seen before the next pod", a.pods, a.claim_gib,
                    free, a.ttl, settle=True)
    without = burst("holds off (ttl 1 us)", a.pods, a.claim_gib, free, HOLDS_OFF_TTL)
    for result in (with_holds, settled, without):
        report(result)
    return 0 if not with_holds.over_promised() else 1


if __name__ == "__main__":
    raise SystemExit(main())
