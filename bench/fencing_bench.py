"""Fencing figures over the whole fault matrix, default settings (grace 30 s, poll 5 s), fake-clock seconds.

Every scenario of the matrix is a network event on the LINSTOR emulator's reachability matrix
("n1 loses power", "controller cut from n3", "n1 cut from its peers", ...), run over real HTTP
(LINSTOR emulator + Kubernetes API stand-in). Scenarios where pods must move are run with the fault
landing at several offsets inside a poll interval. Prints, over the whole matrix:

- wrong evictions: a pod deleted/evicted that the scenario says must stay, or a second fail-over
  of the same pod (must be 0);
- missed evictions: a pod that must move and was not deleted/evicted within 120 s (must be 0);
- fault-to-deletion seconds (from the fault to the pass that deleted or evicted the pod), p50 and
  max over every pod that moved (target: p50 <= grace + 10 s).

Every pod is a StatefulSet's (an ownerReference with ``controller: true``: ``Rig.pod``), as fencing
fails over nothing else; the safety rules' own scenarios (a bare pod, a DaemonSet's, one that also
mounts NFS) are among those that must stay.

    .venv/bin/python bench/fencing_bench.py
"""

from __future__ import annotations

import logging
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fencing_rig import Rig

OFFSETS = (0.5, 1.5, 2.5, 3.5, 4.5)
SEVEN = ("n1", "n2", "n3", "n4", "n5", "n6", "n7")


def _pod(rig: Rig, replicas: list[str], name: str = "db-0", labelled: bool | str = True, node: str = "n1",
         **pod: Any) -> str:
    claim = rig.volume(f"pvc-{name}", replicas, in_use=node)
    rig.pod(name, node, [claim], labelled=labelled, **pod)
    return claim


# --- the clusters ------------------------------------------------------------------------------
def two_volumes(rig: Rig) -> None:
    c2 = rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")
    c3 = rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2, c3])


def r3(rig: Rig) -> None:
    _pod(rig, ["n1", "n2", "n3"])


def rack(rig: Rig) -> None:
    rig.pod("a-0", "n1", [rig.volume("pvc-a", ["n1", "n3"], diskless=["n5"], in_use="n1")])
    rig.pod("b-0", "n2", [rig.volume("pvc-b", ["n2", "n4"], diskless=["n5"], in_use="n2")])


def nowhere(rig: Rig) -> None:
    _pod(rig, ["n1", "n2"])
    rig.emu.set_disk_state("pvc-db-0", "n2", "Outdated")


def no_policy(rig: Rig) -> None:
    _pod(rig, ["n1", "n2"])
    rig.emu.set_rd_props("pvc-db-0", {"DrbdOptions/Resource/quorum": None})


def quorum_one(rig: Rig) -> None:
    _pod(rig, ["n1", "n2"])
    rig.emu.set_rd_props("pvc-db-0", {"DrbdOptions/Resource/quorum": "1"})


def unlabelled(rig: Rig) -> None:
    _pod(rig, ["n1", "n2"], labelled=False)


def bare_beside_statefulset(rig: Rig) -> None:
    """db-0 (a StatefulSet's) and tmp-0 (created by hand: nothing would recreate it) on n1."""
    _pod(rig, ["n1", "n2", "n3"])
    _pod(rig, ["n1", "n2", "n3"], name="tmp-0", owner=None)


def daemonset_pod(rig: Rig) -> None:
    _pod(rig, ["n1", "n2", "n3"], owner="DaemonSet")


def with_nfs(rig: Rig) -> None:
    _pod(rig, ["n1", "n2", "n3"], extra_volumes=[{"name": "shared", "nfs": {"server": "nas", "path": "/db"}}])


def storm_cluster(rig: Rig) -> None:
    _pod(rig, ["n1", "n4"])
    rig.volume("pvc-other", ["n2", "n3"], diskless=["n6"])


def on_n3(rig: Rig) -> None:
    _pod(rig, ["n1", "n2", "n3"], node="n3")


# --- the faults (network events) ---------------------------------------------------------------
def power_off(rig: Rig) -> None:
    rig.power_off("n1")


def power_off_two(rig: Rig) -> None:
    rig.power_off("n1")
    rig.power_off("n2")


def power_off_three(rig: Rig) -> None:
    for node in ("n1", "n2", "n3"):
        rig.power_off(node)


def peers_cut(rig: Rig) -> None:
    rig.partition("n1")


def kubelet_down(rig: Rig) -> None:
    rig.fault_at = rig.clock.now
    rig.set_ready("n1", False)


def controller_cut_n3(rig: Rig) -> None:
    rig.cut_controller("n3")


def controller_cut_all(rig: Rig) -> None:
    for node in rig.nodes:
        rig.cut_controller(node)


def garbage(rig: Rig) -> None:
    rig.power_off("n1")
    rig.emu.inject(garbage=1_000_000)


def unreachable(rig: Rig) -> None:
    rig.power_off("n1")
    rig.emu.inject(fail=1_000_000, status=503)


def kube_blind(rig: Rig) -> None:
    rig.power_off("n1")
    rig.ks.inject(fail=1_000_000, status=503, path_prefix="/api/v1/pods", method="GET")


def blip(rig: Rig) -> None:
    rig.power_off("n1")
    rig.run(20)
    rig.recover("n1")


def flap(rig: Rig) -> None:
    """20 s down, 2 s up between two polls, 20 s down (seen through the promotion stream)."""
    rig.follow_promotions()
    rig.power_off("n1")
    rig.wait_promotions()
    rig.run(20)
    rig.clock.now += 1
    rig.recover("n1")
    rig.wait_promotions()
    rig.clock.now += 2
    rig.power_off("n1")
    rig.wait_promotions()
    rig.run(20)
    rig.recover("n1")


@dataclass(frozen=True)
class Scenario:
    name: str
    setup: Callable[[Rig], None]
    fault: Callable[[Rig], None]
    moves: frozenset[str] = frozenset()  # pods that must be failed over; every other pod must stay
    nodes: tuple[str, ...] = ("n1", "n2", "n3", "n4", "n5", "n6")
    events: bool = False


def moves(*pods: str) -> frozenset[str]:
    return frozenset(pods)


SCENARIOS = [
    Scenario("n1 loses power, r2 + r3 volumes", two_volumes, power_off, moves("db-0")),
    Scenario("n1 loses power, r3 volume", r3, power_off, moves("db-0")),
    Scenario("n1 cut from its peers, Node Ready (eviction)", two_volumes, peers_cut, moves("db-0")),
    Scenario("rack: 2 of 7 storage nodes lose power", rack, power_off_two, moves("a-0", "b-0"), SEVEN),
    Scenario("kubelet down, DRBD connected", two_volumes, kubelet_down),
    Scenario("controller cut from n3 (pod on n3)", on_n3, controller_cut_n3),
    Scenario("controller cut from every satellite", two_volumes, controller_cut_all),
    Scenario("two of three replicas lose power", r3, power_off_two),
    Scenario("only UpToDate replica on the lost node", nowhere, power_off),
    Scenario("no quorum policy", no_policy, power_off),
    Scenario("quorum=1 (a lone node is quorate)", quorum_one, peers_cut),
    Scenario("unlabelled pod", unlabelled, power_off),
    Scenario("a bare pod beside a StatefulSet's (NoController)", bare_beside_statefulset, power_off, moves("db-0")),
    Scenario("a DaemonSet's pod (NoController)", daemonset_pod, power_off),
    Scenario("pod also mounts NFS (UnfencedStorage)", with_nfs, power_off),
    Scenario("3 of 6 storage nodes lose power (storm)", storm_cluster, power_off_three),
    Scenario("garbage LINSTOR JSON", two_volumes, garbage),
    Scenario("LINSTOR controller unreachable", two_volumes, unreachable),
    Scenario("Kubernetes API lists fail (blind)", two_volumes, kube_blind),
    Scenario("blip: 20 s without power", two_volumes, blip),
    Scenario("flap: 20 s down, 2 s up, 20 s down", r3, flap, events=True),
]


def run(scenario: Scenario, offset: float) -> tuple[Counter[str], dict[str, float]]:
    """Deletions per pod, and seconds from the fault to each pod's first deletion."""
    with Rig(nodes=scenario.nodes, linstor_events=scenario.events) as rig:
        scenario.setup(rig)
        rig.run(10)
        rig.clock.now += offset  # the fault lands between two passes
        scenario.fault(rig)
        rig.step(rig.settings.poll_interval - offset)
        rig.run(120)
        deleted: Counter[str] = Counter(path.split("/")[6] for _, path, _ in rig.pod_deletes())
        first: dict[str, float] = {}
        assert rig.fault_at is not None
        for report in rig.reports:
            for kind, obj, outcome in report.actions:
                if kind in ("pod_delete", "pod_evict") and outcome == "done":
                    first.setdefault(obj.split("/")[1], report.at - rig.fault_at)
        return deleted, first


def main() -> int:
    logging.disable(logging.WARNING)
    wrong = missed = 0
    times: list[float] = []
    print(f"{'scenario':48} {'offset':>6} {'moved':>12} {'fault->deletion s':>18}")
    for scenario in SCENARIOS:
        for offset in OFFSETS if scenario.moves else OFFSETS[:1]:
            deleted, first = run(scenario, offset)
            wrong += sum(n for pod, n in deleted.items() if pod not in scenario.moves)
            wrong += sum(n - 1 for pod, n in deleted.items() if pod in scenario.moves and n > 1)
            missed += sum(1 for pod in scenario.moves if pod not in deleted)
            times += [first[pod] for pod in scenario.moves if pod in first]
            took = ", ".join(f"{first[p]:.1f}" for p in sorted(first))
            print(f"{scenario.name:48} {offset:6.1f} {','.join(sorted(deleted)) or '-':>12} {took:>18}")
    print()
    print(f"scenarios: {len(SCENARIOS)}, runs: {sum(len(OFFSETS) if s.moves else 1 for s in SCENARIOS)}")
    print(f"wrong evictions: {wrong}")
    print(f"missed evictions: {missed}")
    if times:
        print(f"fault to pod deletion (s, grace 30, poll 5): p50 {statistics.median(times):.1f}, "
              f"max {max(times):.1f}, min {min(times):.1f} over {len(times)} fail-overs")
    return 0 if wrong == 0 and missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
