"""sync-node and sync-classes built from their options and run: the LINSTOR client, the LVM source,
Events, the health port and the Lease, around ``agent.NodeAgent`` and ``class_sync.ClassReconciler``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import yaml

from linstor_scheduler.config import ConfigError, env_name, exceeds, setting
from linstor_scheduler.linstor.options import make_linstor_client
from linstor_scheduler.runtime import Health, exit_now, run_service

log = logging.getLogger("linstor_scheduler.storage_sync")


def lvm_source(args: argparse.Namespace) -> Any:
    from .lvm import CombinedLvm, LvmCommand, RecordedLvm

    devices = [d.strip() for d in args.lvm_devices.split(",") if d.strip()]
    command = LvmCommand(devices=devices, lvm=args.lvm_binary, host_uts=args.host_uts_namespace or None)
    if bool(args.recorded_vgs) != bool(args.recorded_lvs):
        raise ConfigError(f"{setting('--recorded-vgs')} and {setting('--recorded-lvs')} go together: "
                          "give both or neither")
    if args.recorded_vgs:
        recorded = RecordedLvm(_read("--recorded-vgs", args.recorded_vgs), _read("--recorded-lvs", args.recorded_lvs))
        return CombinedLvm(command, recorded) if devices else recorded
    return command


def _read(flag: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{setting(flag)}: cannot read {path}: {exc.strerror or exc}") from None


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


def _sent(events: Any, timeout: float) -> None:
    """``--once`` ends the process after its pass: its Events are sent first (the recorder's thread
    would otherwise be cut off, the Events lost, and Python's teardown under that thread's open HTTPS
    call has ended the process with SIGABRT or SIGSEGV instead of the pass's exit code)."""
    if events is not None and not events.flush(timeout):
        log.warning("%d Event(s) not sent within %.0fs", events.pending, timeout)


def _ended(args: argparse.Namespace, code: int) -> int:
    """``--once``'s exit code; after the service, the end of the process (``runtime.exit_now``)."""
    if args.once:
        return code
    exit_now(code)


def _health(args: argparse.Namespace, registry: Any, ready: Any, alive: Any = None) -> Health:
    return Health(registry, ready, args.listen_address, args.port, alive=alive)


def pass_bound(lvm_timeout: float, linstor_timeout: float) -> float:
    """How long one sync-node pass may run before ``/healthz`` calls the loop stuck: the four LVM commands
    of a scan (lvmconfig, systemid, vgs, lvs) at their timeout, and twenty LINSTOR calls (four reads of
    three tries, the writes) at theirs."""
    return 4 * lvm_timeout + 20 * linstor_timeout


def run_sync_node(args: argparse.Namespace) -> int:
    from .agent import NodeAgent
    from .metrics import SyncMetrics
    from .report import dumps, node_pass_doc, render_node_pass

    if not args.node_name:
        raise ConfigError(f"{setting('--node-name', 'NODE_NAME')} is required: the Kubernetes node this agent "
                          "serves")
    if not args.once:  # one pass never waits
        exceeds(args, "--max-backoff", "--interval", "the wait doubles from --interval after a failure, and a "
                "cap below it would retry a failing pass sooner than a good one", or_equal=True)
    metrics = SyncMetrics()

    async def main() -> int:
        client = make_linstor_client(args)
        lvm = lvm_source(args)
        agent = NodeAgent(args.linstor_node_name or args.node_name, lvm, client, prune=args.prune,
                          dry_run=args.dry_run, events=_events(args, "linstor-scheduler-sync-node"), metrics=metrics,
                          kube_node_name=args.node_name,
                          pass_bound=pass_bound(getattr(lvm, "timeout", 60.0), args.linstor_timeout))
        try:
            if args.once:
                result = await agent.run_pass()
                doc = node_pass_doc(agent.node_name, result, dry_run=args.dry_run)
                print(dumps(doc) if args.output == "json" else render_node_pass(agent.node_name, result,
                                                                                  dry_run=args.dry_run))
                _sent(agent.events, args.api_timeout)
                return 0 if result.in_sync else 1
            return await serve_sync_node(args, agent)
        finally:
            await client.aclose()

    return _ended(args, asyncio.run(main()))


async def serve_sync_node(args: argparse.Namespace, agent: Any, stop_flag: threading.Event | None = None) -> int:
    """The agent's loop until SIGTERM (or ``stop_flag``), with its side port: ``/readyz`` from the last
    good pass (``agent.readiness``), ``/healthz`` from the loop's own turning (``agent.liveness``), and
    the Kubernetes layer's metrics of its Events. Tests run exactly this."""
    from linstor_scheduler.kube.metrics import KubeCollector

    from .agent import readiness_bound

    bound = readiness_bound(args.interval, args.max_backoff)
    if agent.events is not None:
        agent.metrics.registry.register(KubeCollector(recorder=agent.events))
    log.info("sync-node for %s: every %.0fs%s%s", agent.kube_node_name, args.interval,
             ", prune" if agent.prune else "", ", dry run" if agent.dry_run else "")
    health = _health(args, agent.metrics.registry, lambda: agent.readiness(bound), agent.liveness)
    return await run_service(
        "sync-node", lambda stop: agent.run(stop, interval=args.interval, max_backoff=args.max_backoff),
        health=health, stop_flag=stop_flag)


def load_class_config(path: str | None) -> Any:
    from .classes import ClassConfig

    if not path:
        return ClassConfig()
    where = f"class config {path} (--config or {env_name('--config')})"
    try:
        doc = yaml.safe_load(_read("--config", path)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of settings (see docs/storage-sync.md), "
                          f"not a {type(doc).__name__}")
    try:
        return ClassConfig.from_mapping(doc)
    except (TypeError, ValueError) as exc:  # a key or a value of the file: the setting to fix
        raise ConfigError(f"{where}: {exc}") from None


def run_sync_classes(args: argparse.Namespace) -> int:
    from linstor_scheduler.kube.calls import KubeCalls
    from linstor_scheduler.kube.client import api_client_from_args
    from linstor_scheduler.kube.events import EventRecorder
    from linstor_scheduler.leader_worker import stepping_aside_elector

    from .class_sync import ClassReconciler, leader_view
    from .metrics import ClassMetrics
    from .report import class_pass_doc, dumps, render_class_pass

    config = load_class_config(args.config)
    if not args.once:
        exceeds(args, "--max-staleness", "--interval", "a leader would step aside between every two passes")
    api = api_client_from_args(args)
    metrics = ClassMetrics()

    async def main() -> int:
        client = make_linstor_client(args)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": args.lease_name, "namespace": args.lease_namespace}}
        reconciler = ClassReconciler(client, api, config=config, dry_run=args.dry_run,
                                     events=EventRecorder(api, "linstor-scheduler-sync-classes"), metrics=metrics,
                                     calls=KubeCalls(args.api_timeout),
                                     report_object=lease if args.leader_elect else None)
        try:
            if args.once:
                result = await reconciler.run_pass()
                print(dumps(class_pass_doc(result, dry_run=args.dry_run)) if args.output == "json"
                      else render_class_pass(result, dry_run=args.dry_run))
                _sent(reconciler.events, args.api_timeout)
                return 0 if result.in_sync else 1
            # a leader without a good read for --max-staleness hands over at once and stays aside as long
            elector = stepping_aside_elector(api, args, reconciler, leader_view)
            return await serve_sync_classes(args, reconciler, elector)
        finally:
            reconciler.calls.shutdown()
            await client.aclose()

    return _ended(args, asyncio.run(main()))


async def serve_sync_classes(args: argparse.Namespace, reconciler: Any, elector: Any,
                             stop_flag: threading.Event | None = None) -> int:
    """Passes while ``elector`` says we lead, until SIGTERM (or ``stop_flag``), with the side port:
    ``/readyz`` (a standby is ready; the leader while its last good read is within
    ``--max-staleness``), ``/healthz`` (the pass loop and the Lease loop both turn), and the Kubernetes
    layer's metrics (calls, Events, the Lease). Tests run exactly this."""
    from linstor_scheduler.kube.metrics import KubeCollector
    from linstor_scheduler.leader_worker import probes, run_as_leader

    reconciler.metrics.registry.register(KubeCollector(calls=reconciler.calls, recorder=reconciler.events,
                                                       elector=elector))
    ready, alive, beat = probes(args, reconciler, elector, reads="LINSTOR and StorageClass read")
    return await run_service(
        "sync-classes", lambda stop: run_as_leader(reconciler, elector, stop, interval=args.interval, beat=beat),
        health=_health(args, reconciler.metrics.registry, ready, alive), elector=elector, stop_flag=stop_flag)
