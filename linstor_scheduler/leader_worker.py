"""A worker that acts while it holds a Lease, in passes (sync-classes, affinity-sync): the loop, and
what its side port says of it.

Both workers had this written twice, word for word; each component now supplies only its pass. The
worker is anything with ``run_pass()``, ``withdraw()``, ``retry_after``, ``last_result``,
``read_at``, ``last_error``, ``calls`` and ``metrics`` (``leader`` gauge, ``registry``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from typing import Any

from linstor_scheduler.aio import wait_set
from linstor_scheduler.clock import now as boottime

Check = Callable[[], tuple[bool, str]]
log = logging.getLogger(__name__)


def sees(leader_since: float | None, read_at: float | None, error: str | None, now: float, bound: float, *,
         reads: str) -> tuple[bool, str]:
    """What a Lease-held worker sees, for the elector's ``StepAside``: a standby reads nothing and so
    is never blind; the leader while its last good read (or its term, so that a new leader gets its
    chance) is younger than ``bound``. ``reads`` names what the worker reads, for the reason."""
    if leader_since is None:
        return True, "standby"
    seen = max(leader_since, read_at if read_at is not None else leader_since)
    if now - seen > bound:
        return False, f"no good {reads} read for {now - seen:.1f}s (bound {bound:g}s)" + (f": {error}" if error else "")
    return True, "leading"


def worker_elector(api: Any, args: argparse.Namespace, eligible: Check | None) -> Any:
    """The Lease elector of a worker; with ``--dry-run`` none: a dry run changes nothing, so it must
    not hold the Lease the real instance needs to act (it would make nothing meanwhile)."""
    from linstor_scheduler.kube.lease import AlwaysLeader, elector_from_args

    if args.dry_run:
        log.info("dry run: no Lease taken; the instance that holds %s goes on acting", args.lease_name)
        return AlwaysLeader()
    return elector_from_args(api, args, eligible=eligible)


def stepping_aside_elector(api: Any, args: argparse.Namespace, worker: Any,
                           view: Callable[[float | None, float | None, str | None, float, float], tuple[bool, str]]
                           ) -> Any:
    """``worker_elector`` whose leader, without a good read for ``--max-staleness`` (``view``: the
    worker's ``sees``), hands over at once and stays aside as long."""
    from linstor_scheduler.kube.lease import StepAside

    elector: Any = None
    elector = worker_elector(api, args, StepAside(lambda: view(
        getattr(elector, "leader_since", None), worker.read_at, worker.last_error, boottime(), args.max_staleness),
        patience=0, hold=args.max_staleness))
    return elector


def leader_readiness(leading: bool, holder: str | None, ineligible: str | None, read_at: float | None,
                     error: str | None, now: float, bound: float,
                     reads: str) -> tuple[bool, str]:
    """``/readyz``: a standby is ready (it may take over); the leader while its last good read is
    younger than ``bound``, else not, with the reason. ``reads``: what a pass reads, in the text."""
    if not leading:
        if ineligible:  # we do not read the Lease meanwhile: who holds it now is not ours to say
            return True, f"standby, stepped aside: {ineligible}"
        return True, f"standby; leader is {holder or 'unknown'}"
    if read_at is None:
        return False, f"leading; no good {reads} yet" + (f": {error}" if error else "")
    age = now - read_at
    failing = f"; last pass failed: {error}" if error else ""
    if age > bound:
        return False, f"leading; last good read {age:.0f}s ago (bound {bound:g}s){failing}"
    return True, f"leading; last good read {age:.0f}s ago{failing}"


def next_wait(leading: bool, interval: float, standby_poll: float, retry_after: float) -> float:
    """Until the next look: a leader's next pass after ``interval``, and never before a 429's
    ``Retry-After`` has passed; a standby looks at the Lease every ``standby_poll``."""
    return max(interval, retry_after) if leading else standby_poll


def turning(now: float, beat: float, bound: float, what: str) -> tuple[bool, str]:
    """``/healthz`` of one loop: it turned within ``bound`` seconds."""
    idle = now - beat
    if idle > bound:
        return False, f"{what} made no progress for {idle:.0f}s (bound {bound:.0f}s)"
    return True, f"{what} turning"


async def run_as_leader(worker: Any, elector: Any, stop: asyncio.Event, *, interval: float,
                        standby_poll: float = 1.0, beat: Callable[[], None] | None = None) -> None:
    """Passes every ``interval`` (at least a 429's ``Retry-After``) while ``elector`` says we lead; a
    standby only watches the Lease. ``beat`` is called on every turn (``/healthz``).

    The elector renews in its own thread; ``is_leader`` turns false by itself when renewals stop,
    so a leader cut off from the API server stops writing before another one can start.
    """
    while not stop.is_set():
        if beat:
            beat()
        leading = elector.is_leader
        worker.metrics.leader.set(1 if leading else 0)
        if leading:
            worker.retry_after = 0.0
            worker.last_result = await worker.run_pass()
        else:
            worker.withdraw()
        wait = next_wait(leading, interval, standby_poll, worker.retry_after)
        await wait_set(stop, wait)


def probes(args: argparse.Namespace, worker: Any, elector: Any,
           reads: str) -> tuple[Check, Check, Callable[[], None]]:
    """``ready`` and ``alive`` for the side port, and the ``beat`` the loop calls: ready as
    ``leader_readiness`` says within ``--max-staleness``; alive while the pass loop turned within
    ``--interval`` plus twenty calls' timeouts and the Lease loop within the Lease plus three."""
    api_timeout = worker.calls.timeout
    pass_bound = args.interval + 20 * max(api_timeout, getattr(args, "linstor_timeout", 10.0))
    lease_bound = float(getattr(args, "lease_duration", 15.0)) + 3 * api_timeout
    beats = {"passes": boottime()}

    def ready() -> tuple[bool, str]:
        return leader_readiness(bool(elector.is_leader), getattr(elector, "holder", None),
                                getattr(elector, "ineligible", None), worker.read_at, worker.last_error,
                                boottime(), args.max_staleness, reads)

    def alive() -> tuple[bool, str]:
        now = boottime()
        checks = [turning(now, beats["passes"], pass_bound, "the pass loop")]
        if hasattr(elector, "beat"):
            checks.append(turning(now, elector.beat, lease_bound, "the Lease loop"))
        return all(ok for ok, _ in checks), "; ".join(text for _, text in checks)

    def beat() -> None:
        beats["passes"] = boottime()

    return ready, alive, beat
