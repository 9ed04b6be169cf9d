"""Subcommands of the extender: ``extender``, ``explain``, ``snapshot`` (``demo`` is devkit's)."""

from __future__ import annotations

import argparse
from typing import Any

from linstor_scheduler.cli import deferred
from linstor_scheduler.config import PORT, add_flag, add_option, add_output, add_snapshot
from linstor_scheduler.kube.client import add_kube_options
from linstor_scheduler.linstor.options import add_linstor_options
from linstor_scheduler.lost_storage import DEFAULT_LEASE

MIN_BODY_BYTES = 64 * 1024  # one pod with its node names; below this even a small cluster's verbs get 413


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("extender", parents=[parent], help="serve the kube-scheduler extender (filter, prioritize)",
                       description="Serve kube-scheduler's extender v1 verbs /filter and /prioritize, plus "
                       "/explain, on loopback (--listen-address), and /healthz, /readyz, /metrics on a separate "
                       "port (--metrics-address), from an in-memory index of LINSTOR and Kubernetes state (or "
                       "from a snapshot file).")
    add_option(p, "--listen-address", default="127.0.0.1",
               help="address of the verbs /filter, /prioritize, /explain: loopback, for kube-scheduler in the "
               "same pod (any other address lets every pod that reaches it ask)")
    add_option(p, "--port", type=int, default=8099, range=PORT, help="port of the verbs")
    add_option(p, "--metrics-address", default="0.0.0.0",
               help="address of /healthz, /readyz, /metrics (kubelet, Prometheus); nothing else is served there")
    add_option(p, "--metrics-port", type=int, default=8098, range=PORT, help="port of /healthz, /readyz, /metrics")
    add_snapshot(p, help="serve from this snapshot file instead of live LINSTOR and Kubernetes (-: standard input)")
    add_option(p, "--poll-interval", type=float, default=10.0, above=0, help="seconds between LINSTOR reads")
    add_option(p, "--poll-min-factor", type=float, default=4.0, minimum=0,
               help="the wait between LINSTOR reads is at least this many times the last read's duration "
               "(a big cluster's read takes seconds: the sync then uses at most 1/factor of a core; 0: off)")
    add_flag(p, "--node-events", default=True,
             help="also follow LINSTOR's node event stream (falls back to polling)")
    add_option(p, "--max-staleness", type=float, default=120.0, above=0,
               help="seconds; older state makes the extender neutral (every node passes, score 0)")
    add_option(p, "--fallback-timeout", type=float, default=1.0, above=0,
               help="seconds for the one read of a resource missing from the index")
    add_option(p, "--score-weights", default="",
               help="override score levels, e.g. 'local_syncing=7,remote=0' (see docs/extender.md)")
    add_option(p, "--reservation-ttl", type=float, default=120.0, above=0, maximum=3600,
               help="seconds a hold of an unbound WaitForFirstConsumer claim's size on the pools of the nodes "
               "the filter passed lasts when nothing ends it (LINSTOR showing the volume, the claim deleted, "
               "kube-scheduler's choice); a choice the claim still shows is held until its volume appears")
    add_option(p, "--max-body-bytes", type=int, default=64 * 1024 * 1024, minimum=MIN_BODY_BYTES,
               help="largest request body accepted (a pod and its node names need far less than the minimum)")
    add_option(p, "--scheduler-name", default="",
               help="judge only pods with this spec.schedulerName; every other pod passes every node with score 0 "
               "(empty: judge every pod). For the main kube-scheduler, whose extenders are shown the pods of "
               "every profile (deploy/components/main-scheduler sets linstor)")
    fence = p.add_argument_group("fencing's word (docs/fencing.md: the extender keeps LINSTOR pods off lost nodes)")
    add_option(fence, "--fencing-lease", default=DEFAULT_LEASE,
               help="fencing's Lease, NAME or NAMESPACE/NAME: its leader records the nodes whose storage it "
               "judges lost, and pods with LINSTOR volumes are not placed there (empty: off)")
    add_option(fence, "--fencing-lease-namespace", env="POD_NAMESPACE", default="linstor-scheduler",
               help="namespace of --fencing-lease when it names none (the pod's own in the deployment)")
    add_option(fence, "--fencing-record-max-age", type=float, default=60.0, above=0, maximum=3600,
               help="seconds; an older record of fencing's (its leader gone or blind) filters nothing")
    tls = p.add_argument_group("HTTPS for the verbs (main-scheduler mode, docs/install.md)")
    add_option(tls, "--tls-cert-file", help="serve the verbs over HTTPS (TLS 1.2 or newer) with this certificate "
               "(PEM); re-read when the file changes, no restart needed")
    add_option(tls, "--tls-key-file", help="key of --tls-cert-file (PEM)")
    add_option(tls, "--tls-client-ca-file", help="require a client certificate signed by this CA (PEM) on the "
               "verbs' port; re-read with the certificate")
    add_linstor_options(p)
    add_kube_options(p)
    p.set_defaults(func=deferred("scheduler_extender.wiring:run_extender"))

    e = sub.add_parser("explain", parents=[parent], help="why would a pod go where? per-node verdicts",
                       description="Print each node's verdict, score and reasons for a pod, from a snapshot "
                       "file or the live cluster.")
    add_option(e, "--pod", help="the pod, NAMESPACE/NAME")
    add_option(e, "--nodes", default="", help="comma-separated nodes to judge (default: all)")
    add_snapshot(e, help="judge against this snapshot file instead of the live cluster (-: standard input)")
    add_output(e)
    add_option(e, "--score-weights", default="", help="as for the extender")
    add_linstor_options(e)
    add_kube_options(e)
    e.set_defaults(func=deferred("scheduler_extender.wiring:run_explain"))

    s = sub.add_parser("snapshot", parents=[parent], help="write a snapshot of the live cluster (for bug reports)",
                       description="Read LINSTOR nodes, resources and storage pools and the Kubernetes Nodes, "
                       "PVCs, PVs, StorageClasses and pods with schedulerName linstor; print a snapshot file.")
    add_option(s, "--format", default="yaml", choices=["yaml", "json"], help="output format")
    add_option(s, "--scheduler-name", default="linstor", help="include pods with this schedulerName")
    add_linstor_options(s)
    add_kube_options(s)
    s.set_defaults(func=deferred("scheduler_extender.wiring:run_snapshot"))
