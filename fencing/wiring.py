"""Builds the running fencing service from its options: clients, informers, Lease, routes, the loop.

``cli.py`` defines the flags; this module turns parsed flags into the service (``run``, which ends
the process once the service has stopped: ``runtime.exit_now``), the one-shot inspection
(``--once``) or, for tests, the service with a stop flag (``serve``, which returns).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from typing import Any

from linstor_scheduler import gcpolicy
from linstor_scheduler.config import exceeds
from linstor_scheduler.runtime import Health, exit_now, run_service

from .controller import FencingController, Settings, render_pass_table
from .guards import STALE_DATA

log = logging.getLogger("linstor_scheduler.fencing")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Each flag's own range is the parser's (``cli.py``); here what holds between flags."""
    exceeds(args, "--max-staleness", "--poll-interval",
            "data a poll old would be stale at every pass, and nothing would ever act")
    return Settings(
        grace_period=args.grace_period, poll_interval=args.poll_interval, max_staleness=args.max_staleness,
        storm_share=args.storm_share, evictions_per_minute=args.evictions_per_minute,
        failover_budget=args.failover_budget, budget_window=args.budget_window,
        eviction_timeout=args.eviction_timeout, dry_run=args.dry_run or args.once, taint=args.taint,
        taint_stable_seconds=args.taint_stable_seconds, api_timeout=args.api_timeout, select=args.select,
        fail_over_unsafe_pods=args.fail_over_unsafe_pods, taint_max_seconds=args.taint_max_seconds)


def run(args: argparse.Namespace) -> int:
    from linstor_scheduler.kube.client import api_client_from_args
    from linstor_scheduler.kube.events import EventRecorder
    from linstor_scheduler.linstor.options import make_linstor_client

    from .actions import KubeActions

    settings = settings_from_args(args)
    api = api_client_from_args(args)
    recorder = EventRecorder(api, component="linstor-scheduler-fencing")
    actions = KubeActions(api, timeout=settings.api_timeout)
    if args.once:
        return asyncio.run(_once(settings, api, make_linstor_client(args), actions))
    # Everything is released once serve returns; the process ends there, without Python's slow
    # teardown (runtime.exit_now): SIGTERM must end fencing within 2 s at 100,000 replicas.
    exit_now(asyncio.run(serve(args, settings, api, recorder, make_linstor_client(args), actions)))


async def _once(settings: Settings, api: Any, client: Any, actions: Any) -> int:
    from linstor_scheduler.kube.lease import AlwaysLeader

    from .kubeview import ListedKube

    class _Quiet:  # --once inspects: no Events either
        def record(self, *_a: Any) -> None:
            pass

    kube = ListedKube(api, timeout=settings.api_timeout, select=settings.select)
    controller = FencingController(client, kube, actions, _Quiet(), leader=AlwaysLeader(), settings=settings,
                                   gc_policy=gcpolicy.SERVICE)
    try:
        report = await controller.run_once()
    finally:
        await client.aclose()
    print(render_pass_table(report))
    # As ``sync-node --once``: an inspection that could not read (stale or failed reads held
    # every action) is not a clean answer, so scripts and CI see it in the exit code.
    return 1 if report.guard == STALE_DATA else 0


async def serve(args: argparse.Namespace, settings: Settings, api: Any, recorder: Any, client: Any, actions: Any,
                stop_flag: threading.Event | None = None) -> int:
    """The service: informers, the Lease, /metrics, the promotion stream, passes until SIGTERM (or
    ``stop_flag``). Signals, the health port, the Lease and the shutdown (its slow parts at once,
    within 2 s) are the shared ``run_service``'s.

    Each bound comes from ``--max-staleness`` and ``--api-timeout``: the informers' watch, read
    deadline and back-off (``kubeview.informer_settings``), the calls' deadlines (``KubeCalls``),
    and the Lease, which this instance gives up when its Kubernetes view stayed older than the bound
    for three Lease durations (``StepAside``): a leader blind to Kubernetes steps aside for a standby
    that sees."""
    from linstor_scheduler.kube.calls import KubeCalls
    from linstor_scheduler.kube.lease import LeaderElector, StepAside, elector_from_args
    from linstor_scheduler.kube.metrics import KubeCollector

    from .http import alive_check, ready_check
    from .kubeview import CachedKube
    from .metrics import FencingMetrics

    metrics = FencingMetrics()
    calls = KubeCalls(settings.api_timeout)
    kube = CachedKube(api, bound=settings.max_staleness, api_timeout=settings.api_timeout, select=settings.select)
    # blind (a Kubernetes view older than the bound) for three Lease durations: hand over, and stay
    # aside for one, so that a standby whose watches work can lead (issue 18)
    elector = elector_from_args(api, args, eligible=StepAside(kube.readiness, patience=3 * args.lease_duration,
                                                               hold=args.lease_duration))
    controller = FencingController(client, kube, actions, recorder, leader=elector, settings=settings,
                                   metrics=metrics, calls=calls, gc_policy=gcpolicy.SERVICE)
    if isinstance(elector, LeaderElector):  # a new term's first pass at once, not a poll later
        elector.on_change = controller.leadership_changed
    metrics.registry.register(KubeCollector(kube.caches, calls=calls, recorder=recorder, elector=elector))

    async def work(stop: asyncio.Event) -> None:
        follower = asyncio.create_task(controller.follow_promotions(client)) if args.promotion_events else None
        log.info("fencing controller started (grace %.0fs, poll %.0fs%s)", settings.grace_period,
                 settings.poll_interval, ", DRY RUN" if settings.dry_run else "")
        try:
            await controller.run_forever(stop)
        finally:
            if follower:
                follower.cancel()

    kube.start()  # informer threads: the Lease is sought once their view is fresh (eligible)
    health = Health(metrics.registry, ready_check(kube, controller), args.listen_address, args.port,
                    alive=alive_check(kube, controller, elector, settings.api_timeout))
    # the informers stopped, the call pools and the LINSTOR client closed at the same time as the Lease release
    return await run_service("fencing controller", work, health=health, elector=elector, stop_flag=stop_flag,
                             closers=(kube.stop, calls.shutdown, client.aclose))
