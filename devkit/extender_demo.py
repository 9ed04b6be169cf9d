"""``make demo``: the extender on the built-in demo cluster, asked over real HTTP like kube-scheduler."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.httpserver import ServerThread
from scheduler_extender.explain import render_table
from scheduler_extender.http import create_app
from scheduler_extender.judge import Extender, StateHolder
from scheduler_extender.scoring import all_node_names
from scheduler_extender.snapshot import find_pod, state_from_snapshot

from .demo_cluster import SAMPLE_PODS, demo_snapshot


def build_demo_app() -> tuple[Any, dict[str, Any]]:
    doc = demo_snapshot()
    holder = StateHolder(static=True, ready=True)
    holder.swap(state_from_snapshot(doc, now=boottime()))
    return create_app(Extender(holder)), doc


def run(port: int = 8099, serve: bool = False, out: Any = None) -> int:
    out = out or sys.stdout
    app, doc = build_demo_app()
    nodes = all_node_names(app.state.extender.holder.state)
    with ServerThread(app, port=port) as srv:
        print(f"linstor-scheduler extender serving the built-in demo cluster on {srv.url}", file=out)
        print("nodes: " + ", ".join(nodes) + " (w5's satellite is OFFLINE, cp1 runs no satellite)\n", file=out)
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            for ref, what in SAMPLE_PODS:
                pod = find_pod(doc, ref)
                answer = http.post("/explain", json={"Pod": pod, "NodeNames": nodes})
                answer.raise_for_status()
                print(f"# {what}", file=out)
                print(render_table(answer.json()) + "\n", file=out)
        with tempfile.TemporaryDirectory(prefix="linstor-scheduler-demo-") as folder:  # removed when the demo ends
            body = Path(folder) / "db-0.json"
            body.write_text(json.dumps({"Pod": find_pod(doc, "default/db-0"), "NodeNames": nodes}, indent=1))
            print("Ask the running extender what kube-scheduler would ask it:", file=out)
            print(f"  curl -s -X POST -H 'Content-Type: application/json' --data @{body} {srv.url}/filter", file=out)
            print(f"  curl -s -X POST -H 'Content-Type: application/json' --data @{body} {srv.url}/prioritize",
                  file=out)
            print(f"  curl -s {srv.url}/readyz ; curl -s {srv.url}/metrics | grep linstor_scheduler", file=out)
            if serve:
                print("\nServing until Ctrl-C.", file=out, flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
        if not serve:
            print("\n(run with --serve to keep it running; `linstor-scheduler extender --snapshot FILE` "
                  "serves your own snapshot)", file=out)
    return 0
