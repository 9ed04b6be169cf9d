"""Subcommands of the extender: ``extender``, ``explain``, ``snapshot``, ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

import orjson
import yaml

from linstor_scheduler.config import add_flag, add_option
from linstor_scheduler.kube.client import add_kube_options
from linstor_scheduler.linstor.options import add_linstor_options, make_linstor_client

from .scoring import Weights

log = logging.getLogger("linstor_scheduler.extender")


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("extender", parents=[parent], help="serve the kube-scheduler extender (filter, prioritize)",
                       description="Serve kube-scheduler's extender v1 verbs /filter and /prioritize, plus "
                       "/explain, /healthz, /readyz and /metrics, from an in-memory index of LINSTOR and "
                       "Kubernetes state (or from a snapshot file).")
    add_option(p, "--listen-address", default="0.0.0.0", help="address to listen on")
    add_option(p, "--port", type=int, default=8099, help="port to listen on")
    add_option(p, "--snapshot", help="serve from this snapshot file instead of live LINSTOR and Kubernetes")
    add_option(p, "--poll-interval", type=float, default=10.0, help="seconds between LINSTOR reads")
    add_flag(p, "--node-events", default=True,
             help="also follow LINSTOR's node event stream (falls back to polling)")
    add_option(p, "--max-staleness", type=float, default=120.0,
               help="seconds; older state makes the extender neutral (every node passes, score 0)")
    add_option(p, "--fallback-timeout", type=float, default=1.0,
               help="seconds for the one read of a resource missing from the index")
    add_option(p, "--score-weights", default="",
               help="override score levels, e.g. 'local_syncing=7,remote=0' (see docs/extender.md)")
    add_option(p, "--max-body-bytes", type=int, default=64 * 1024 * 1024, help="largest request body accepted")
    add_linstor_options(p)
    add_kube_options(p)
    p.set_defaults(func=run_extender)

    e = sub.add_parser("explain", parents=[parent], help="why would a pod go where? per-node verdicts",
                       description="Print each node's verdict, score and reasons for a pod, from a snapshot "
                       "file or the live cluster.")
    add_option(e, "--pod", help="the pod, NAMESPACE/NAME")
    add_option(e, "--nodes", default="", help="comma-separated nodes to judge (default: all)")
    add_option(e, "--snapshot", help="judge against this snapshot file instead of the live cluster")
    add_option(e, "--output", default="table", choices=["table", "json"], help="output format")
    add_option(e, "--score-weights", default="", help="as for the extender")
    add_linstor_options(e)
    add_kube_options(e)
    e.set_defaults(func=run_explain)

    s = sub.add_parser("snapshot", parents=[parent], help="write a snapshot of the live cluster (for bug reports)",
                       description="Read LINSTOR nodes, resources and storage pools and the Kubernetes Nodes, "
                       "PVCs, PVs, StorageClasses and pods with schedulerName linstor; print a snapshot file.")
    add_option(s, "--format", default="yaml", choices=["yaml", "json"], help="output format")
    add_option(s, "--scheduler-name", default="linstor", help="include pods with this schedulerName")
    add_linstor_options(s)
    add_kube_options(s)
    s.set_defaults(func=run_snapshot)

    d = sub.add_parser("demo", parents=[parent], help="the whole system on a built-in cluster (no Kubernetes)",
                       description="Run the LINSTOR emulator and the Kubernetes API stand-in with three nodes, and "
                       "every component against them, and tell what happens: tagged LVM becomes pools and "
                       "StorageClasses, a pod is placed next to its replica, its node loses storage, fencing "
                       "moves it, it is placed next to the surviving replica. --extender-only: the extender on a "
                       "static demo cluster, with per-node verdicts for sample pods.")
    add_option(d, "--port", type=int, default=8099, help="port of the demo extender (0: any free port)")
    add_flag(d, "--serve", default=None,
             help="keep serving after printing, until Ctrl-C (default: when run on a terminal)")
    add_flag(d, "--extender-only", help="only the extender on the static demo cluster (sample pods' verdicts)")
    d.set_defaults(func=run_demo)


def run_extender(args: argparse.Namespace) -> int:
    import uvicorn

    from linstor_scheduler.httpserver import uvicorn_options

    from .app import create_app
    from .metrics import ExtenderMetrics
    from .service import Extender, StateHolder
    from .snapshot import read_snapshot, state_from_snapshot

    weights = Weights.parse(args.score_weights)
    metrics = ExtenderMetrics()
    holder = StateHolder()
    if args.snapshot:
        holder.swap(state_from_snapshot(read_snapshot(args.snapshot), now=time.monotonic()))
        holder.static = holder.ready = True
        extender = Extender(holder, weights=weights, max_staleness=args.max_staleness)
        log.info("serving from snapshot %s: %d nodes, %d resources", args.snapshot,
                 len(holder.state.nodes), len(holder.state.resources))
        app = create_app(extender, metrics=metrics, max_body=args.max_body_bytes)
    else:
        from linstor_scheduler.kube.client import api_client_from_args

        from .live import build_live_app

        app = build_live_app(
            make_linstor_client(args), api_client_from_args(args), poll_interval=args.poll_interval,
            max_staleness=args.max_staleness, fallback_timeout=args.fallback_timeout, weights=weights,
            use_events=args.node_events, max_body=args.max_body_bytes, metrics=metrics,
        )
    uvicorn.run(app, **uvicorn_options(host=args.listen_address, port=args.port, loop="uvloop", http="httptools",
                                       access_log=False, log_level=args.log_level, timeout_graceful_shutdown=10))
    return 0


def _nodes_arg(text: str) -> list[str] | None:
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


def run_explain(args: argparse.Namespace) -> int:
    from .explain import explain_ref, render_table
    from .snapshot import read_snapshot

    if not args.pod:
        raise ValueError("--pod NAMESPACE/NAME is required")
    doc = read_snapshot(args.snapshot) if args.snapshot else asyncio.run(live_snapshot(args, pod=args.pod))
    result = explain_ref(doc, args.pod, _nodes_arg(args.nodes), Weights.parse(args.score_weights))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.output == "json" else render_table(result))
    return 0


async def live_snapshot(args: argparse.Namespace, *, pod: str | None = None) -> dict[str, Any]:
    """One read of everything the extender indexes; ``pod`` adds that pod, else the linstor-scheduled pods."""
    from linstor_scheduler.kube.client import api_client_from_args

    from .snapshot_live import kube_snapshot_items

    client = make_linstor_client(args)
    try:
        nodes = await client.get_nodes()
        pools = await client.get_storage_pools()
        resources = await client.get_resources()
    finally:
        await client.aclose()
    api = api_client_from_args(args)
    items = await asyncio.to_thread(kube_snapshot_items, api, pod=pod,
                                    scheduler_name=getattr(args, "scheduler_name", "linstor"))

    def dump(models: list[Any]) -> list[dict[str, Any]]:
        return [m.model_dump(mode="json", exclude_none=True) for m in models]

    return {"linstor": {"nodes": dump(nodes), "storage_pools": dump(pools), "resources": dump(resources)},
            "kubernetes": {"items": items}}


def run_snapshot(args: argparse.Namespace) -> int:
    doc = asyncio.run(live_snapshot(args))
    if args.format == "json":
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    serve = sys.stdout.isatty() if args.serve is None else args.serve
    if args.extender_only:
        from .demo import run

        return run(port=args.port, serve=serve)
    from linstor_scheduler.story import run as story

    if args.log_level == "info":  # the story narrates what the components do: their INFO lines would repeat it
        logging.getLogger().setLevel(logging.WARNING)
    result = story(port=args.port, serve=serve)
    return 0 if result.second_node and result.second_node != result.first_node else 1
