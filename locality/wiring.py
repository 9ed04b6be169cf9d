"""The locality subcommands built from their options: the exporter service, the report, the drill."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from linstor_scheduler import gcpolicy
from linstor_scheduler.config import ConfigError, parsed, setting
from linstor_scheduler.linstor.client import LinstorClient

from .metrics import LocalityMetrics

log = logging.getLogger("linstor_scheduler.locality")


@dataclass
class ExporterService:
    """Everything the exporter runs, so tests start exactly what the CLI starts."""

    exporter: Any
    syncer: Any
    caches: Any
    pods: Any
    metrics: LocalityMetrics
    client: LinstorClient

    async def start(self) -> None:
        self.caches.start()
        try:
            await self.syncer.start()
        except BaseException:  # not started: the informers must not run on
            await self.stop()
            raise

    async def stop(self) -> None:
        """Every step runs, whatever an earlier one raised or a forced exit cancelled."""
        try:
            await self.syncer.stop()
        finally:
            self.caches.stop()
            await self.client.aclose()

    def alive(self) -> tuple[bool, str]:
        """``/healthz``: every informer loop, the LINSTOR poll and the computation loop still turn."""
        checks = [self.caches.liveness(), self.exporter.turning(self.exporter.interval + 60.0)]
        ended = [task.get_name() for task in getattr(self.syncer, "_tasks", ()) if task.done()]
        if ended:
            checks.append((False, f"the state loop {', '.join(ended)} ended"))
        return all(ok for ok, _ in checks), "; ".join(text for _, text in checks)


def build_exporter(client: LinstorClient, api: Any, leader: Any, *, poll_interval: float = 30.0,
                   interval: float = 30.0, metrics: LocalityMetrics | None = None, max_staleness: float = 90.0,
                   read_slack: float = 10.0) -> ExporterService:
    """One ``KubeCaches`` for the extender's kinds and the pods (so one age, one set of metrics), each
    watch ended by the server every third of ``max_staleness``; a watch silent ``read_slack`` past
    that is dead. Pod changes do not rebuild the state: pods are read at each computation."""
    from linstor_scheduler.kube.informer import RECORD_PAGE_SIZE, KubeCaches
    from linstor_scheduler.kube.metrics import KubeCollector
    from scheduler_extender import EXTENDER_KINDS, StateHolder, Syncer

    from .exporter import LocalityExporter
    from .pods import EXPORTER_TRANSFORMS, PodRecord

    metrics = metrics or LocalityMetrics()
    holder = StateHolder()
    syncer = Syncer(holder, client, None, poll_interval=poll_interval, use_events=False,
                    gc_policy=gcpolicy.SERVICE)

    def changed(event: str, obj: Any) -> None:
        if not isinstance(obj, PodRecord) and not (isinstance(obj, dict) and obj.get("kind") == "Pod"):
            syncer.kube_changed(event, obj)

    caches = KubeCaches(api, [*EXTENDER_KINDS, "Pod"], on_change=changed, transforms=EXPORTER_TRANSFORMS,
                        max_age=max_staleness, read_slack=read_slack,
                        page_size=RECORD_PAGE_SIZE)
    syncer.caches = caches
    pods = caches["Pod"]
    exporter = LocalityExporter(holder, pods, metrics, leader, interval=interval, caches=caches,
                                max_staleness=max_staleness)
    metrics.registry.register(KubeCollector(caches, elector=leader))
    return ExporterService(exporter, syncer, caches, pods, metrics, client)


def run_exporter(args: argparse.Namespace) -> int:
    from linstor_scheduler.kube.client import api_client_from_args
    from linstor_scheduler.kube.lease import elector_from_args
    from linstor_scheduler.linstor.options import make_linstor_client
    from linstor_scheduler.runtime import exit_now

    api = api_client_from_args(args)
    # the process ends once the service has stopped, without Python's teardown of the cluster state
    exit_now(asyncio.run(serve_exporter(args, make_linstor_client(args), api, elector_from_args(api, args))))


async def serve_exporter(args: argparse.Namespace, client: LinstorClient, api: Any, leader: Any,
                         stop_flag: threading.Event | None = None) -> int:
    """The service until SIGTERM (or ``stop_flag``): informers, LINSTOR polls, the Lease, /metrics.
    A silent watch is dead ``--api-timeout`` past its own end (the read slack of the informers)."""
    from linstor_scheduler.config import exceeds
    from linstor_scheduler.kube.lease import StepAside
    from linstor_scheduler.runtime import Health, run_service

    exceeds(args, "--max-staleness", "--poll-interval",
            "the LINSTOR view would be stale, and no figures computed, between every two reads")
    service = build_exporter(client, api, leader, poll_interval=args.poll_interval, interval=args.interval,
                             max_staleness=args.max_staleness, read_slack=args.api_timeout)
    if hasattr(leader, "eligible"):  # a LeaderElector: blind for three Lease durations, hand over
        leader.eligible = StepAside(lambda: service.exporter.view()[:2], patience=3 * leader.lease_seconds,
                                    hold=leader.lease_seconds)

    async def work(stop: asyncio.Event) -> None:
        await service.start()
        try:
            await service.exporter.run_forever(stop)
        finally:
            await service.stop()

    health = Health(service.metrics.registry, service.exporter.ready, args.listen_address, args.port,
                    alive=service.alive)
    return await run_service("locality-exporter", work, health=health, elector=leader, stop_flag=stop_flag)


def _document(args: argparse.Namespace) -> Any:
    from linstor_scheduler.snapshot import read_snapshot
    from scheduler_extender import ResourceIndexer

    if args.snapshot:
        return read_snapshot(args.snapshot, keep_raw=True, resources=ResourceIndexer())
    from linstor_scheduler.capture import capture
    from linstor_scheduler.kube.client import api_client_from_args
    from linstor_scheduler.linstor.options import make_linstor_client

    # every pod: a pod placed by another scheduler is exactly what the report must find
    return asyncio.run(capture(make_linstor_client(args), api_client_from_args(args), scheduler_name=None))


def score_weights(args: argparse.Namespace) -> Any:
    """``--score-weights`` as the extender reads it; a bad one is a ``ConfigError`` naming it."""
    from scheduler_extender import Weights

    return parsed("--score-weights", Weights.parse, args.score_weights)


def run_report(args: argparse.Namespace) -> int:
    from .report import render_locality_table, report_from_doc

    weights = score_weights(args)  # a bad setting before the cluster is read
    report = report_from_doc(_document(args), namespace=args.namespace or None, weights=weights)
    if args.output == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_locality_table(report, show_all=args.all))
    return 0


def run_affinity(args: argparse.Namespace) -> int:
    """``affinity``: exit 0 when no PV is stale, 1 when some are (scripts and CI can test it)."""
    from .affinity import render_affinity_table, report_from_doc

    report = report_from_doc(_document(args))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.output == "json"
          else render_affinity_table(report, show_all=args.all))
    return 1 if report["summary"]["stale"] else 0


def run_affinity_sync(args: argparse.Namespace) -> int:
    """``affinity-sync``: one pass (``--once``) or the Lease-held service."""
    from linstor_scheduler.config import exceeds
    from linstor_scheduler.kube.calls import KubeCalls
    from linstor_scheduler.kube.client import api_client_from_args
    from linstor_scheduler.kube.events import EventRecorder
    from linstor_scheduler.leader_worker import sees, stepping_aside_elector
    from linstor_scheduler.linstor.options import make_linstor_client
    from linstor_scheduler.runtime import exit_now

    from .affinity_sync import AffinitySync, render

    if not args.once:
        exceeds(args, "--max-staleness", "--interval", "a leader would step aside between every two passes")
    api = api_client_from_args(args)

    async def main() -> int:
        client = make_linstor_client(args)
        events = EventRecorder(api, "linstor-scheduler-affinity-sync") if args.events else None
        worker = AffinitySync(client, api, dry_run=args.dry_run, max_per_pass=args.max_per_pass,
                              rate_per_minute=args.rate, min_age=args.min_age, mode=args.mode, events=events,
                              calls=KubeCalls(args.api_timeout))
        try:
            if args.once:
                result = await worker.run_pass()
                print(orjson.dumps(result.doc(), option=orjson.OPT_INDENT_2).decode() if args.output == "json"
                      else render(result, dry_run=args.dry_run))
                if events is not None and not events.flush(args.api_timeout):
                    log.warning("%d Event(s) not sent within %.0fs", events.pending, args.api_timeout)
                stale = any(v.stale for v in result.verdicts)
                return 0 if result.ok and (not stale or result.acted) else 1
            elector = stepping_aside_elector(api, args, worker, lambda *seen: sees(
                *seen, reads="LINSTOR and PersistentVolume"))
            return await serve_affinity_sync(args, worker, elector)
        finally:
            worker.calls.shutdown()
            await client.aclose()

    code = asyncio.run(main())
    if args.once:
        return code
    exit_now(code)


async def serve_affinity_sync(args: argparse.Namespace, worker: Any, elector: Any,
                              stop_flag: threading.Event | None = None) -> int:
    """Passes while ``elector`` says we lead, until SIGTERM (or ``stop_flag``); the side port with
    ``/readyz``, ``/healthz`` and the metrics, as sync-classes has them."""
    from linstor_scheduler.kube.metrics import KubeCollector
    from linstor_scheduler.leader_worker import probes, run_as_leader
    from linstor_scheduler.runtime import Health, run_service

    worker.metrics.registry.register(KubeCollector(calls=worker.calls, recorder=worker.events, elector=elector))
    ready, alive, beat = probes(args, worker, elector, reads="LINSTOR and PersistentVolume read")
    health = Health(worker.metrics.registry, ready, args.listen_address, args.port, alive=alive)
    return await run_service(
        "affinity-sync", lambda stop: run_as_leader(worker, elector, stop, interval=args.interval, beat=beat),
        health=health, elector=elector, stop_flag=stop_flag)


def run_drill(args: argparse.Namespace) -> int:
    from .cli import CUT_NODE_ENV, FAIL_NODE_ENV
    from .drill import DrillSettings, drill, render_drill_table

    def nodes(given: list[str] | None, env: str) -> list[str]:
        return [n.strip() for text in given or [os.environ.get(env, "")] for n in text.split(",") if n.strip()]

    failed, cut = nodes(args.fail_node, FAIL_NODE_ENV), nodes(args.cut_node, CUT_NODE_ENV)
    if not failed and not cut:
        raise ConfigError(f"{setting('--fail-node', FAIL_NODE_ENV)} is required: the node (or nodes) that fail "
                          f"(or {setting('--cut-node', CUT_NODE_ENV)}: the nodes cut from the others)")
    settings = DrillSettings(args.grace_period, args.storm_share, score_weights(args))
    result = drill(_document(args), failed, settings, cut=cut)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.output == "json"
          else render_drill_table(result))
    return 0
