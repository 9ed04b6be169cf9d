"""Subcommands ``sync-node`` (the per-node agent) and ``sync-classes`` (the StorageClass reconciler)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from linstor_scheduler.cli import deferred
from linstor_scheduler.config import add_flag, add_option, add_output
from linstor_scheduler.kube.client import add_kube_options
from linstor_scheduler.linstor.options import add_linstor_options
from linstor_scheduler.runtime import add_health_options


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    n = sub.add_parser("sync-node", parents=[parent], help="register this node's tagged LVM pools in LINSTOR",
                       description="Scan LVM for volume groups and thin pools tagged linstor-<pool> and keep the "
                       "LINSTOR storage pools of this node in step: create missing ones, report mismatches, "
                       "orphans and invalid tags (log, Warning Event on the Node, metric). Never re-points a "
                       "pool; deletes one only with --prune when it is empty.")
    add_option(n, "--node-name", env="NODE_NAME", help="this node's Kubernetes node name (required)")
    add_option(n, "--linstor-node-name", help="this node's name in LINSTOR, where it differs (default: --node-name)")
    add_option(n, "--interval", type=float, default=30.0, above=0, help="seconds between passes")
    add_option(n, "--max-backoff", type=float, default=300.0, above=0,
               help="longest wait after repeated failures, seconds")
    add_flag(n, "--once", help="run one pass and exit: 0 when all is in sync, 1 otherwise")
    add_flag(n, "--dry-run", help="print the plan (create / mismatch / orphan / invalid) and change nothing")
    add_flag(n, "--prune", help="delete pools we created whose tag is gone, when they hold no resources")
    add_output(n, help="output of --once")
    add_option(n, "--lvm-devices", default="",
               help="comma-separated block devices to scan (default: those the host's LVM configuration "
               "accepts, less /dev/drbd*; these override the host's devices file, lvm(8) --devices)")
    add_option(n, "--lvm-binary", default="lvm", help="the lvm tool")
    add_option(n, "--host-uts-namespace", default="",
               help="the host's UTS namespace, e.g. /host/proc/1/ns/uts with the host's /proc mounted (the "
               "DaemonSet does): the LVM tools run in it, so a system ID from system_id_source = \"uname\" is "
               "the host's name, not the pod's (default: this process's)")
    add_option(n, "--recorded-vgs", help="read this recorded 'vgs --reportformat json' output (testing)")
    add_option(n, "--recorded-lvs", help="read this recorded 'lvs --reportformat json' output (testing)")
    add_flag(n, "--events", default=True, help="write Kubernetes Events on the Node")
    add_health_options(n, 9101)
    add_linstor_options(n)
    add_kube_options(n)
    n.set_defaults(func=deferred("storage_sync.wiring:run_sync_node"))

    c = sub.add_parser("sync-classes", parents=[parent], help="keep StorageClasses linstor-<pool>-r1..r3",
                       description="From LINSTOR's storage pools, keep StorageClasses linstor-<pool>-r<N> for "
                       "N = 1..min(3, nodes with the pool). Only classes labelled app.kubernetes.io/managed-by="
                       "linstor-scheduler are changed; stale ones are recreated keeping the user's labels and "
                       "annotations; none is deleted. One active instance, elected through a Lease.")
    add_option(c, "--interval", type=float, default=30.0, above=0, help="seconds between passes")
    add_option(c, "--max-staleness", type=float, default=90.0, above=0,
               help="seconds the leader may go without a good LINSTOR and StorageClass read before /readyz "
               "fails and it hands the Lease over; more than --interval")
    add_option(c, "--config", help="YAML file with the class parameters (see docs/storage-sync.md)")
    add_flag(c, "--once", help="run one pass and exit: 0 when all is in sync, 1 otherwise")
    add_flag(c, "--dry-run", help="print what would change and change nothing")
    add_output(c, help="output of --once")
    add_health_options(c, 9102)
    add_linstor_options(c)
    add_kube_options(c)
    from linstor_scheduler.kube.lease import add_leader_options

    add_leader_options(c, "linstor-scheduler-sync-classes")
    c.set_defaults(func=deferred("storage_sync.wiring:run_sync_classes"))


if __name__ == "__main__":  # pragma: no cover
    from linstor_scheduler.cli import main

    sys.exit(main(["sync-node", *sys.argv[1:]]))
