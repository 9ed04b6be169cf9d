"""Subcommands ``sync-node`` (the per-node agent) and ``sync-classes`` (the StorageClass reconciler)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from linstor_scheduler.config import add_flag, add_option
from linstor_scheduler.kube.client import add_kube_options
from linstor_scheduler.linstor.options import add_linstor_options, make_linstor_client

log = logging.getLogger("linstor_scheduler.storage_sync")


def _serve_options(parser: argparse.ArgumentParser, port: int) -> None:
    group = parser.add_argument_group("serving /healthz, /readyz, /metrics")
    add_option(group, "--listen-address", default="0.0.0.0", help="address to listen on")
    add_option(group, "--port", type=int, default=port, help="port for health and metrics (0: do not serve)")


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    n = sub.add_parser("sync-node", parents=[parent], help="register this node's tagged LVM pools in LINSTOR",
                       description="Scan LVM for volume groups and thin pools tagged linstor-<pool> and keep the "
                       "LINSTOR storage pools of this node in step: create missing ones, report mismatches, "
                       "orphans and invalid tags (log, Warning Event on the Node, metric). Never re-points a "
                       "pool; deletes one only with --prune when it is empty.")
    add_option(n, "--node-name", env="NODE_NAME", help="this node's Kubernetes node name (required)")
    add_option(n, "--linstor-node-name", help="this node's name in LINSTOR, where it differs (default: --node-name)")
    add_option(n, "--interval", type=float, default=30.0, help="seconds between passes")
    add_option(n, "--max-backoff", type=float, default=300.0, help="longest wait after repeated failures, seconds")
    add_flag(n, "--once", help="run one pass and exit: 0 when all is in sync, 1 otherwise")
    add_flag(n, "--dry-run", help="print the plan (create / mismatch / orphan / invalid) and change nothing")
    add_flag(n, "--prune", help="delete pools we created whose tag is gone, when they hold no resources")
    add_option(n, "--output", default="table", choices=["table", "json"], help="output of --once")
    add_option(n, "--lvm-devices", default="",
               help="comma-separated block devices to scan (default: all but /dev/drbd*)")
    add_option(n, "--lvm-binary", default="lvm", help="the lvm tool")
    add_option(n, "--recorded-vgs", help="read this recorded 'vgs --reportformat json' output (testing)")
    add_option(n, "--recorded-lvs", help="read this recorded 'lvs --reportformat json' output (testing)")
    add_flag(n, "--events", default=True, help="write Kubernetes Events on the Node")
    _serve_options(n, 9101)
    add_linstor_options(n)
    add_kube_options(n)
    n.set_defaults(func=run_sync_node)

    c = sub.add_parser("sync-classes", parents=[parent], help="keep StorageClasses linstor-<pool>-r1..r3",
                       description="From LINSTOR's storage pools, keep StorageClasses linstor-<pool>-r<N> for "
                       "N = 1..min(3, nodes with the pool). Only classes labelled app.kubernetes.io/managed-by="
                       "linstor-scheduler are changed; stale ones are recreated keeping the user's labels and "
                       "annotations; none is deleted. One active instance, elected through a Lease.")
    add_option(c, "--interval", type=float, default=30.0, help="seconds between passes")
    add_option(c, "--config", help="YAML file with the class parameters (see docs/storage-sync.md)")
    add_flag(c, "--once", help="run one pass and exit: 0 when all is in sync, 1 otherwise")
    add_flag(c, "--dry-run", help="print what would change and change nothing")
    add_option(c, "--output", default="table", choices=["table", "json"], help="output of --once")
    _serve_options(c, 9102)
    add_linstor_options(c)
    add_kube_options(c)
    from linstor_scheduler.kube.lease import add_leader_options

    add_leader_options(c, "linstor-scheduler-sync-classes")
    c.set_defaults(func=run_sync_classes)


def lvm_source(args: argparse.Namespace) -> Any:
    from .lvm import CombinedLvm, LvmCommand, RecordedLvm

    devices = [d.strip() for d in args.lvm_devices.split(",") if d.strip()]
    command = LvmCommand(devices=devices, lvm=args.lvm_binary)
    if bool(args.recorded_vgs) != bool(args.recorded_lvs):
        raise ValueError("--recorded-vgs and --recorded-lvs go together")
    if args.recorded_vgs:
        recorded = RecordedLvm(Path(args.recorded_vgs).read_text(), Path(args.recorded_lvs).read_text())
        return CombinedLvm(command, recorded) if devices else recorded
    return command


def _events(args: argparse.Namespace, component: str) -> Any:
    if not args.events:
        return None
    from linstor_scheduler.kube.client import KubeConfigError, api_client_from_args
    from linstor_scheduler.kube.events import EventRecorder

    try:
        return EventRecorder(api_client_from_args(args), component)
    except KubeConfigError as exc:
        if args.once:
            log.info("no Kubernetes Events: %s", exc)
            return None
        raise


@contextlib.contextmanager
def _health(args: argparse.Namespace, registry: Any, ready: Any):  # type: ignore[no-untyped-def]
    if args.once or not args.port:
        yield None
        return
    from linstor_scheduler.health import health_app
    from linstor_scheduler.httpserver import ServerThread

    with ServerThread(health_app(registry, ready=ready), args.listen_address, args.port) as srv:
        log.info("serving /healthz, /readyz, /metrics on %s:%d", args.listen_address, srv.port)
        yield srv


async def _until_signalled(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def run_sync_node(args: argparse.Namespace) -> int:
    from .agent import NodeAgent
    from .metrics import SyncMetrics
    from .report import dumps, node_pass_doc, render_node_pass

    if not args.node_name:
        raise ValueError("--node-name (env NODE_NAME) is required: the node this agent serves")
    metrics = SyncMetrics()

    async def main() -> int:
        client = make_linstor_client(args)
        agent = NodeAgent(args.linstor_node_name or args.node_name, lvm_source(args), client, prune=args.prune,
                          dry_run=args.dry_run, events=_events(args, "linstor-scheduler-sync-node"), metrics=metrics,
                          kube_node_name=args.node_name)
        try:
            if args.once:
                result = await agent.run_pass()
                doc = node_pass_doc(agent.node_name, result, dry_run=args.dry_run)
                print(dumps(doc) if args.output == "json" else render_node_pass(agent.node_name, result,
                                                                                  dry_run=args.dry_run))
                return 0 if result.in_sync else 1
            stop = asyncio.Event()
            await _until_signalled(stop)

            def ready() -> tuple[bool, str]:
                last = agent.last_success
                if last is None:
                    return False, "no successful pass yet" + (f": {agent.last_result.error}"
                                                              if agent.last_result and agent.last_result.error else "")
                age = time.monotonic() - last
                limit = max(3 * args.interval, args.max_backoff + args.interval)
                return age < limit, f"last successful pass {age:.0f}s ago"

            with _health(args, metrics.registry, ready):
                log.info("sync-node for %s: every %.0fs%s%s", args.node_name, args.interval,
                         ", prune" if args.prune else "", ", dry run" if args.dry_run else "")
                await agent.run(stop, interval=args.interval, max_backoff=args.max_backoff)
            log.info("sync-node stopped")
            return 0
        finally:
            await client.aclose()

    return asyncio.run(main())


def load_class_config(path: str | None) -> Any:
    from .classes import ClassConfig

    if not path:
        return ClassConfig()
    doc = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: the class config must be a mapping")
    return ClassConfig.from_mapping(doc)


def run_sync_classes(args: argparse.Namespace) -> int:
    from linstor_scheduler.kube.client import api_client_from_args
    from linstor_scheduler.kube.events import EventRecorder
    from linstor_scheduler.kube.lease import elector_from_args

    from .class_sync import ClassReconciler, run_as_leader
    from .metrics import ClassMetrics
    from .report import class_pass_doc, dumps, render_class_pass

    config = load_class_config(args.config)
    api = api_client_from_args(args)
    metrics = ClassMetrics()

    async def main() -> int:
        client = make_linstor_client(args)
        reconciler = ClassReconciler(client, api, config=config, dry_run=args.dry_run,
                                     events=EventRecorder(api, "linstor-scheduler-sync-classes"), metrics=metrics)
        try:
            if args.once:
                result = await reconciler.run_pass()
                print(dumps(class_pass_doc(result, dry_run=args.dry_run)) if args.output == "json"
                      else render_class_pass(result, dry_run=args.dry_run))
                return 0 if result.in_sync else 1
            elector = elector_from_args(api, args)
            elector.start()
            stop = asyncio.Event()
            await _until_signalled(stop)

            def ready() -> tuple[bool, str]:
                if not elector.is_leader:
                    return True, f"standby; leader is {elector.holder or 'unknown'}"
                last = reconciler.last_result
                return bool(last and last.ok), "last pass " + (
                    "worked" if last and last.ok else f"failed: {last.error}" if last else "not run yet")

            try:
                with _health(args, metrics.registry, ready):
                    await run_as_leader(reconciler, elector, stop, interval=args.interval)
            finally:
                elector.stop()
            return 0
        finally:
            await client.aclose()

    return asyncio.run(main())


if __name__ == "__main__":  # pragma: no cover
    from linstor_scheduler.cli import main

    sys.exit(main(["sync-node", *sys.argv[1:]]))
