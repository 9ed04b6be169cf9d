"""The Lease loop keeps its cadence when the API server is slow (over real HTTP, on the real clock)."""

from __future__ import annotations

import itertools
import time

from linstor_scheduler.kube.lease import LeaderElector

from .waiting import wait_for


def test_renewals_start_every_renew_interval_when_answers_are_slow(ks):
    """Every answer 150 ms late: a step (read, then replace) takes 0.3 s. Steps still start every
    ``renew_seconds`` (0.5 s), so ``is_leader`` never lapses between two renewals (it would 0.96 s
    after the start of the last one). Waiting ``renew_seconds`` after the *end* of a step, the next
    renewal landed 1.1 s after the last one began, and the leader lapsed at every renewal."""
    ks.slow(0.15)
    elector = LeaderElector(ks.api, "cadence", "kube-system", identity="a", lease_seconds=1.2, renew_seconds=0.5,
                            retry_seconds=0.1)
    starts: list[float] = []
    step = elector.step

    def timed() -> bool:
        starts.append(time.monotonic())
        return step()

    elector.step = timed  # type: ignore[method-assign]
    lapsed: list[float] = []

    def watched() -> bool:
        if starts and elector.leader_since is not None and not elector.is_leader:
            lapsed.append(time.monotonic())
        return len(starts) >= 7

    elector.start()
    try:
        wait_for(watched, timeout=10, what="seven steps")
    finally:
        elector.stop(release=False)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts[1:])]  # after the first (create)
    assert all(gap < 0.5 + 0.1 for gap in gaps), gaps
    assert lapsed == [], f"is_leader lapsed between renewals {len(lapsed)} times"
