"""Subcommands of locality: ``locality`` (the report), ``locality-exporter`` (the metrics service), ``drill``."""

from __future__ import annotations

import argparse
from typing import Any

from linstor_scheduler.cli import deferred
from linstor_scheduler.config import add_flag, add_option
from linstor_scheduler.kube.client import add_kube_options
from linstor_scheduler.kube.lease import add_leader_options
from linstor_scheduler.linstor.options import add_linstor_options
from linstor_scheduler.runtime import add_health_options


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    r = sub.add_parser("locality", parents=[parent], help="which pods are not next to their data, and why",
                       description="List the pods whose LINSTOR volumes have no UpToDate diskful replica on the "
                       "pod's node, why, and where the extender would place each now (its best nodes with scores). "
                       "From the live cluster or a snapshot file. See docs/locality.md.")
    add_option(r, "--namespace", default="", help="only pods of this namespace")
    add_option(r, "--snapshot", help="read this snapshot file instead of the live cluster")
    add_option(r, "--output", default="table", choices=["table", "json"],
               help="table (the non-local pods) or json (every pod with LINSTOR volumes)")
    add_flag(r, "--all", help="the table lists the local pods too")
    add_option(r, "--score-weights", default="", help="as for the extender")
    add_linstor_options(r)
    add_kube_options(r)
    r.set_defaults(func=deferred("locality.wiring:run_report"))

    e = sub.add_parser("locality-exporter", parents=[parent], help="export locality metrics (one Lease holder)",
                       description="Export linstor_scheduler_volume_locality and linstor_scheduler_pods_local_ratio "
                       "on /metrics. Every replica serves /metrics; only the Lease holder exports the figures.")
    add_option(e, "--interval", type=float, default=30.0, help="seconds between computations")
    add_option(e, "--poll-interval", type=float, default=30.0, help="seconds between LINSTOR reads")
    add_health_options(e, 8096)
    add_linstor_options(e)
    add_kube_options(e)
    add_leader_options(e, "linstor-scheduler-locality")
    e.set_defaults(func=deferred("locality.wiring:run_exporter"))
