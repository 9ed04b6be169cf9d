"""A burst of WaitForFirstConsumer pods through kube-scheduler's cycle against the live extender
(bench/placement_burst.py, over real HTTP against the LINSTOR emulator and the Kubernetes API
stand-in): with holds, no pool is promised more than LINSTOR says it has free; without them the
burst piles onto the emptiest pools and promises more than they have."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import placement_burst as pb

FREE_GIB = (20, 40, 60, 80)  # 200 GiB in all
PODS, CLAIM_GIB = 36, 5  # 180 GiB asked: pools fill


def test_holds_keep_every_pool_within_its_free_space_and_spread_by_capacity():
    result = pb.burst("holds", PODS, CLAIM_GIB, FREE_GIB, ttl=120.0, settle=True)
    assert result.unscheduled == 0
    assert result.over_promised() == []
    assert result.correlation() > 0.95, result.rows
    assert all(r.held == r.placed for r in result.rows if r.pods), "the ledger holds what was bound"


def test_without_holds_the_burst_over_promises():
    result = pb.burst("off", PODS, CLAIM_GIB, FREE_GIB, ttl=pb.HOLDS_OFF_TTL)
    assert result.over_promised(), result.rows
