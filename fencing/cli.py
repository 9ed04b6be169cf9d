"""``linstor-scheduler fencing``: the fencing controller (a Deployment; one active instance via a Lease)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
from typing import Any

from linstor_scheduler.config import add_flag, add_option

log = logging.getLogger("linstor_scheduler.fencing")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    from linstor_scheduler.kube.client import add_kube_options
    from linstor_scheduler.kube.lease import add_leader_options
    from scheduler_extender.cli import add_linstor_options

    p = sub.add_parser(
        "fencing", parents=[parent], help="move pods labelled on-storage-lost=remove off nodes that lost storage",
        description="Watch pods labelled linstor.csi.linbit.com/on-storage-lost=remove; when their node loses its "
        "LINSTOR/DRBD storage for the whole grace period and a healthy replica exists elsewhere, remove the pod "
        "(grace 0 on a NotReady node, the Eviction API on a Ready one), then its VolumeAttachment. "
        "See docs/fencing.md.")
    g = p.add_argument_group("fencing")
    add_option(g, "--grace-period", type=float, default=30.0,
               help="seconds a storage fault must hold, observed without a break, before a pod is moved")
    add_option(g, "--poll-interval", type=float, default=5.0, help="seconds between LINSTOR reads")
    add_option(g, "--max-staleness", type=float, default=20.0,
               help="seconds; LINSTOR or Kubernetes data older than this holds every action")
    add_option(g, "--storm-share", type=float, default=1 / 3,
               help="hold every action while at least this share of the storage nodes (and two or more) look lost")
    add_option(g, "--evictions-per-minute", type=float, default=10.0,
               help="at most this many pods failed over per minute (burst of the same size)")
    add_option(g, "--failover-budget", type=int, default=3,
               help="at most this many fail-overs of one pod (namespace/name) per --budget-window")
    add_option(g, "--budget-window", type=float, default=3600.0, help="seconds of the per-pod fail-over budget")
    add_option(g, "--eviction-timeout", type=float, default=60.0,
               help="seconds after which an eviction (Ready node) that does not finish becomes a grace-0 delete")
    add_flag(g, "--dry-run", help="decide, log and record Events and metrics, but delete nothing")
    add_flag(g, "--taint", help="taint a node whose pods were failed over (NoSchedule), until its storage is stable")
    add_option(g, "--taint-stable-seconds", type=float, default=300.0,
               help="seconds of stable storage after which our taint is removed again")
    add_flag(g, "--promotion-events", default=True,
             help="also follow LINSTOR's DRBD promotion event stream to poll early (polling never stops)")
    add_flag(g, "--once", help="one pass over freshly listed objects, print the verdict table, act never")
    add_option(g, "--listen-address", default="0.0.0.0", help="address of /metrics, /healthz, /readyz")
    add_option(g, "--port", type=int, default=8097, help="port of /metrics, /healthz, /readyz (0: none)")
    add_linstor_options(p)
    add_kube_options(p)
    add_leader_options(p, "linstor-scheduler-fencing")
    p.set_defaults(func=run_fencing)


def settings_from_args(args: argparse.Namespace) -> Any:
    from .controller import Settings

    if not 0 < args.storm_share <= 1:
        raise ValueError("--storm-share must be in (0, 1]")
    if args.grace_period < 0 or args.poll_interval <= 0:
        raise ValueError("--grace-period must be >= 0 and --poll-interval > 0")
    return Settings(
        grace_period=args.grace_period, poll_interval=args.poll_interval, max_staleness=args.max_staleness,
        storm_share=args.storm_share, evictions_per_minute=args.evictions_per_minute,
        failover_budget=args.failover_budget, budget_window=args.budget_window,
        eviction_timeout=args.eviction_timeout, dry_run=args.dry_run or args.once, taint=args.taint,
        taint_stable_seconds=args.taint_stable_seconds)


def run_fencing(args: argparse.Namespace) -> int:
    from linstor_scheduler.kube.client import api_client_from_args
    from linstor_scheduler.kube.events import EventRecorder
    from scheduler_extender.cli import make_linstor_client

    from .actions import KubeActions

    settings = settings_from_args(args)
    api = api_client_from_args(args)
    recorder = EventRecorder(api, component="linstor-scheduler-fencing")
    if args.once:
        return asyncio.run(_once(args, settings, api, recorder, make_linstor_client(args), KubeActions(api)))
    return asyncio.run(_serve(args, settings, api, recorder, make_linstor_client(args), KubeActions(api)))


async def _once(args: argparse.Namespace, settings: Any, api: Any, recorder: Any, client: Any, actions: Any) -> int:
    from linstor_scheduler.kube.lease import AlwaysLeader

    from .controller import FencingController, render_table
    from .kubeview import ListedKube

    class _Quiet:  # --once inspects: no Events either
        def record(self, *_a: Any) -> None:
            pass

    controller = FencingController(client, ListedKube(api), actions, _Quiet(), leader=AlwaysLeader(),
                                   settings=settings)
    try:
        report = await controller.run_once()
    finally:
        await client.aclose()
    print(render_table(report))
    return 0


async def _serve(args: argparse.Namespace, settings: Any, api: Any, recorder: Any, client: Any, actions: Any,
                 stop_flag: threading.Event | None = None) -> int:
    """The service: informers, the Lease, /metrics, the promotion stream, passes until SIGTERM (or ``stop_flag``)."""
    from linstor_scheduler.httpserver import ServerThread
    from linstor_scheduler.kube.lease import elector_from_args

    from .controller import FencingController
    from .kubeview import CachedKube
    from .metrics import FencingMetrics
    from .web import create_app

    metrics = FencingMetrics()
    kube = CachedKube(api)
    kube.start()
    elector = elector_from_args(api, args).start()
    controller = FencingController(client, kube, actions, recorder, leader=elector, settings=settings,
                                   metrics=metrics)
    server = None
    if args.port:
        server = ServerThread(create_app(controller, kube), host=args.listen_address, port=args.port).start()
        log.info("metrics on http://%s:%d/metrics", args.listen_address, server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not in the main thread (tests)
            loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(asyncio.to_thread(stop_flag.wait)) if stop_flag else None
    if watcher:
        watcher.add_done_callback(lambda _t: stop.set())
    follower = asyncio.create_task(controller.follow_promotions(client)) if args.promotion_events else None
    log.info("fencing controller started (grace %.0fs, poll %.0fs%s)", settings.grace_period, settings.poll_interval,
             ", DRY RUN" if settings.dry_run else "")
    try:
        await controller.run_forever(stop)
    finally:
        if follower:
            follower.cancel()
        if stop_flag:
            stop_flag.set()
        elector.stop(release=True)
        kube.stop()
        if server:
            server.stop()
        await client.aclose()
    return 0
