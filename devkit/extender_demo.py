"""``make demo``: the extender on the built-in demo cluster, asked over real HTTP like kube-scheduler."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.snapshot import find_pod
from scheduler_extender import all_node_names, create_app, render_explain_table, snapshot_extender

from .demo_cluster import SAMPLE_PODS, demo_snapshot


def build_demo_app() -> tuple[Any, dict[str, Any]]:
    doc = demo_snapshot()
    return create_app(snapshot_extender(doc)), doc


def ask_yourself(verbs_url: str, ops_url: str, body: Path) -> list[str]:
    """The commands that ask a running extender what kube-scheduler asks it, and its health and metrics:
    the verbs and ``/readyz``, ``/metrics`` are on two listeners, as the deployed extender serves them
    (127.0.0.1:8099 and :8098, wiring.serve_extender)."""
    post = "curl -s -X POST -H 'Content-Type: application/json' --data @"
    return [f"{post}{body} {verbs_url}/filter", f"{post}{body} {verbs_url}/prioritize",
            f"curl -s {ops_url}/readyz ; curl -s {ops_url}/metrics | grep linstor_scheduler"]


def serve_until(stop: threading.Event | None) -> None:
    """Until Ctrl-C (or ``stop``, for tests)."""
    with contextlib.suppress(KeyboardInterrupt):
        (stop or threading.Event()).wait()


@contextlib.contextmanager
def split_servers(app: Any, port: int, metrics_port: int) -> Iterator[tuple[ServerThread, ServerThread]]:
    """The extender's two listeners on loopback, as the CLI serves them: the verbs on ``port``,
    ``/healthz``, ``/readyz``, ``/metrics`` on ``metrics_port`` (0: any free port)."""
    with (ServerThread(app.verbs, port=port, interface="asgi3") as verbs,
          ServerThread(app.ops, port=metrics_port, port_flag="--metrics-port") as ops):
        yield verbs, ops


def run(port: int = 8099, serve: bool = False, out: Any = None, *, metrics_port: int = 0,
        stop: threading.Event | None = None) -> int:
    out = out or sys.stdout
    app, doc = build_demo_app()
    nodes = all_node_names(app.state.extender.holder.state)
    with split_servers(app, port, metrics_port) as (srv, ops):
        print(f"linstor-scheduler extender serving the built-in demo cluster: the verbs on {srv.url}, "
              f"/healthz /readyz /metrics on {ops.url}", file=out)
        print("nodes: " + ", ".join(nodes) + " (w5's satellite is OFFLINE, cp1 runs no satellite)\n", file=out)
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            for ref, what in SAMPLE_PODS:
                pod = find_pod(doc, ref)
                answer = http.post("/explain", json={"Pod": pod, "NodeNames": nodes})
                answer.raise_for_status()
                print(f"# {what}", file=out)
                print(render_explain_table(answer.json()) + "\n", file=out)
        if not serve:  # no commands for a file and ports that are gone when this returns
            print("(the extender stops here: `linstor-scheduler demo --extender-only --serve` keeps it running and "
                  "prints how to ask it; `linstor-scheduler extender --snapshot FILE` serves your own snapshot)",
                  file=out)
            return 0
        with tempfile.TemporaryDirectory(prefix="linstor-scheduler-demo-") as folder:  # removed when the demo ends
            body = Path(folder) / "db-0.json"
            body.write_text(json.dumps({"Pod": find_pod(doc, "default/db-0"), "NodeNames": nodes}, indent=1))
            print("Ask the running extender what kube-scheduler would ask it:", file=out)
            for line in ask_yourself(srv.url, ops.url, body):
                print(f"  {line}", file=out)
            print("\nServing until Ctrl-C.", file=out, flush=True)
            serve_until(stop)
    return 0
