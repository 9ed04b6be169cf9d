"""Fencing figures with default settings (grace 30 s, poll 5 s), in fake-clock seconds.

Runs the fault matrix's scenario kinds over real HTTP (LINSTOR emulator + Kubernetes API stand-in),
injecting each fault at several offsets inside a poll interval, and prints:

- wrong evictions: pods deleted/evicted where the scenario says no pod may move, plus any second
  fail-over of the same pod (must be 0);
- missed evictions: scenarios where the pod must move and did not within 120 s (must be 0);
- fault-to-deletion seconds (from the fault injection to the pass that deleted or evicted the pod),
  p50 and max over the evicting scenarios.

    .venv/bin/python bench/fencing_bench.py
"""

from __future__ import annotations

import logging
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fencing_rig import Rig

OFFSETS = (0.5, 1.5, 2.5, 3.5, 4.5)


def _pod(rig: Rig, replicas: list[str], name: str = "db-0", labelled: bool | str = True) -> None:
    claim = rig.volume(f"pvc-{name}", replicas, in_use="n1")
    rig.pod(name, "n1", [claim], labelled=labelled)


def two_volumes(rig: Rig) -> None:
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    c3 = rig.volume("pvc-r3", ["n1", "n2", "n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2, c3])


def r3(rig: Rig) -> None:
    _pod(rig, ["n1", "n2", "n3"])


def nowhere(rig: Rig) -> None:
    _pod(rig, ["n1", "n2"])
    rig.emu.set_disk_state("pvc-db-0", "n2", "Outdated")


def no_policy(rig: Rig) -> None:
    _pod(rig, ["n1", "n2"])
    rig.emu.set_rd_props("pvc-db-0", {"DrbdOptions/Resource/quorum": None})


def unlabelled(rig: Rig) -> None:
    _pod(rig, ["n1", "n2"], labelled=False)


def storm(rig: Rig) -> None:
    """Six storage nodes (every node holds a diskful replica); n1 and n2 go at once."""
    _pod(rig, ["n1", "n3"])
    rig.volume("pvc-other", ["n2", "n4"])
    rig.volume("pvc-rest", ["n5", "n6"])


def crash(rig: Rig) -> None:
    rig.crash("n1")


def partition(rig: Rig) -> None:
    rig.partition("n1")


def kubelet_down(rig: Rig) -> None:
    rig.fault_at = rig.clock.now
    rig.set_ready("n1", False)


def crash_two(rig: Rig) -> None:
    rig.crash("n1")
    rig.crash("n2")


def garbage(rig: Rig) -> None:
    rig.crash("n1")
    rig.emu.inject(garbage=1_000_000)


def unreachable(rig: Rig) -> None:
    rig.crash("n1")
    rig.emu.inject(fail=1_000_000, status=503)


Scenario = tuple[str, Callable[[Rig], None], Callable[[Rig], None], bool]
SCENARIOS: list[Scenario] = [
    ("node crash, r2 + r3 volumes", two_volumes, crash, True),
    ("node crash, r3 volume", r3, crash, True),
    ("storage network cut, Node Ready (eviction)", two_volumes, partition, True),
    ("kubelet down, DRBD connected", two_volumes, kubelet_down, False),
    ("only UpToDate replica on the lost node", nowhere, crash, False),
    ("no quorum policy", no_policy, crash, False),
    ("unlabelled pod", unlabelled, crash, False),
    ("two of six storage nodes lost (storm)", storm, crash_two, False),
    ("garbage LINSTOR JSON", two_volumes, garbage, False),
    ("LINSTOR controller unreachable", two_volumes, unreachable, False),
]


def run(setup: Callable[[Rig], None], fault: Callable[[Rig], None], offset: float) -> tuple[int, list[float]]:
    with Rig() as rig:
        setup(rig)
        rig.run(10)
        rig.clock.now += offset  # the fault lands between two passes
        fault(rig)
        rig.step(rig.settings.poll_interval - offset)
        rig.run(120)
        return len(rig.pod_deletes()), rig.deletion_times()


def main() -> int:
    logging.disable(logging.WARNING)
    wrong = missed = 0
    times: list[float] = []
    print(f"{'scenario':48} {'offset':>6} {'deletes':>7} {'fault->deletion s':>18}")
    for name, setup, fault, evicts in SCENARIOS:
        for offset in OFFSETS if evicts else OFFSETS[:1]:
            deletes, took = run(setup, fault, offset)
            if evicts:
                missed += deletes == 0
                wrong += max(0, deletes - 1)
                times += took[:1]
            else:
                wrong += deletes
            print(f"{name:48} {offset:6.1f} {deletes:7d} {', '.join(f'{t:.1f}' for t in took):>18}")
    print()
    print(f"wrong evictions: {wrong}")
    print(f"missed evictions: {missed}")
    if times:
        print(f"fault to pod deletion (s, grace 30, poll 5): p50 {statistics.median(times):.1f}, "
              f"max {max(times):.1f}, min {min(times):.1f} over {len(times)} fail-overs")
    return 0 if wrong == 0 and missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
