"""A burst of WaitForFirstConsumer pods through kube-scheduler's cycle against the live extender
(bench/placement_burst.py, over real HTTP against the LINSTOR emulator and the Kubernetes API
stand-in), each bind annotating its claim from a binding thread as kube-scheduler's binding
goroutines do. With holds, no pool is promised more than LINSTOR says it has free, whether the
annotations reach the extender between pods or only after the whole round, and the pods spread in
proportion to each pool's free space; without them the burst piles onto the emptiest pools.

"In proportion", as a test can hold it: every pool within ``SHARE_TOLERANCE`` claims of its share
(the burst's bytes times the pool's part of all free space), and placed ~ free correlated above
0.95. Two claims, not one: pools take whole claims (one claim of rounding), and kube-scheduler adds
its own scores (PodTopologySpread counts pods per node and zone, LeastAllocated the node's CPU and
memory), which move a pod between pools our score ranks close."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import placement_burst as pb

FREE_GIB = (20, 40, 60, 80)  # 200 GiB in all
PODS, CLAIM_GIB = 36, 5  # 180 GiB asked: pools fill
SHARE_TOLERANCE = 2.0


def assert_meets_the_target(result: pb.BurstResult) -> None:
    assert result.unscheduled == 0, result
    assert result.over_promised() == [], result.rows
    assert result.off_share(CLAIM_GIB * pb.GIB) <= SHARE_TOLERANCE, result.rows
    assert result.correlation() > 0.95, result.rows
    assert all(r.held == r.placed for r in result.rows), "the ledger holds what was bound, where it was bound"


def test_a_burst_of_pods_arriving_back_to_back_promises_no_pool_more_than_it_has():
    assert_meets_the_target(pb.burst("back to back", PODS, CLAIM_GIB, FREE_GIB, ttl=120.0))


def test_a_burst_whose_choices_reach_the_extender_only_after_the_round_is_still_within_every_pool():
    """The worst informer lag: every claim of the round stays held on every node its pod passed,
    so later pods find no room and wait for kube-scheduler's backoff, and are placed then."""
    result = pb.burst("held back", PODS, CLAIM_GIB, FREE_GIB, ttl=120.0, held_back=True)
    assert result.retries > 0, "some pods had to wait for the earlier choices"
    assert_meets_the_target(result)


def test_without_holds_the_burst_over_promises():
    result = pb.burst("off", PODS, CLAIM_GIB, FREE_GIB, ttl=pb.HOLDS_OFF_TTL)
    assert result.over_promised(), result.rows
