"""Subcommands of locality: ``locality`` (the report), ``locality-exporter`` (the metrics service), ``drill``."""

from __future__ import annotations

import argparse
from typing import Any

from linstor_scheduler.cli import deferred
from linstor_scheduler.config import add_flag, add_option, add_output, add_snapshot, env_name
from linstor_scheduler.kube.client import add_kube_options
from linstor_scheduler.kube.lease import add_leader_options
from linstor_scheduler.linstor.options import add_linstor_options
from linstor_scheduler.runtime import add_health_options

FAIL_NODE_ENV = env_name("--fail-node")
CUT_NODE_ENV = env_name("--cut-node")


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    r = sub.add_parser("locality", parents=[parent], help="which pods are not next to their data, and why",
                       description="List the pods whose LINSTOR volumes have no UpToDate diskful replica on the "
                       "pod's node, why, and where the extender would place each now (its best nodes with scores). "
                       "From the live cluster or a snapshot file. See docs/locality.md.")
    add_option(r, "--namespace", default="", help="only pods of this namespace")
    add_snapshot(r)
    add_output(r, help="table (the non-local pods) or json (every pod with LINSTOR volumes)")
    add_flag(r, "--all", help="the table lists the local pods too")
    add_option(r, "--score-weights", default="", help="as for the extender")
    add_linstor_options(r)
    add_kube_options(r)
    r.set_defaults(func=deferred("locality.wiring:run_report"))

    e = sub.add_parser("locality-exporter", parents=[parent], help="export locality metrics (one Lease holder)",
                       description="Export linstor_scheduler_volume_locality and linstor_scheduler_pods_local_ratio "
                       "on /metrics. Every replica serves /metrics; only the Lease holder exports the figures.")
    add_option(e, "--interval", type=float, default=30.0, above=0, help="seconds between computations")
    add_option(e, "--poll-interval", type=float, default=30.0, above=0, help="seconds between LINSTOR reads")
    add_option(e, "--max-staleness", type=float, default=90.0, above=0,
               help="seconds; no figures from a LINSTOR or Kubernetes view older than this (/readyz fails, the "
               "state age grows); more than --poll-interval")
    add_health_options(e, 8096)
    add_linstor_options(e)
    add_kube_options(e)
    add_leader_options(e, "linstor-scheduler-locality")
    e.set_defaults(func=deferred("locality.wiring:run_exporter"))

    a = sub.add_parser("affinity", parents=[parent], help="which PVs' node affinity is out of step with LINSTOR",
                       description="For every PersistentVolume of linstor.csi.linbit.com: the node affinity LINSTOR "
                       "CSI would write now (the diskful replicas and the StorageClass's allowRemoteVolumeAccess), "
                       "and whether the PV's is stale (it excludes a node with a diskful replica, or admits only "
                       "nodes without one), with the reason. From the live cluster or a snapshot file. Changes "
                       "nothing; affinity-sync fixes. See docs/locality.md.")
    add_snapshot(a)
    add_output(a, help="table (the stale PVs) or json (all)")
    add_flag(a, "--all", help="the table lists the PVs in step too")
    add_linstor_options(a)
    add_kube_options(a)
    a.set_defaults(func=deferred("locality.wiring:run_affinity"))

    w = sub.add_parser("affinity-sync", parents=[parent], help="give stale PVs the node affinity LINSTOR CSI would "
                       "write now (opt-in; dry run by default)",
                       description="Fix PersistentVolumes whose node affinity LINSTOR's replicas left behind: patch "
                       "the affinity where the API server allows it (1.35+ with MutablePVNodeAffinity), else "
                       "replace the PV under the same name, crash-safe (the intended PV is kept on the LINSTOR "
                       "resource definition until done). Guards: the PV Bound, the claim there and not being "
                       "deleted, resized or snapshotted, the PV older than --min-age, no pod using the claim on a "
                       "node the new affinity would not admit. One active instance (Lease). See docs/locality.md.")
    add_option(w, "--interval", type=float, default=60.0, above=0, help="seconds between passes")
    add_option(w, "--max-staleness", type=float, default=300.0, above=0,
               help="seconds the leader may go without a good read before /readyz fails and it hands the Lease "
               "over; more than --interval")
    add_flag(w, "--dry-run", default=True, help="say what would be done and change nothing (--no-dry-run acts)")
    add_flag(w, "--once", help="run one pass and exit: 0 when no PV is stale or every fix worked, 1 otherwise")
    add_output(w, help="output of --once")
    add_option(w, "--max-per-pass", type=int, default=10, minimum=1, help="PVs fixed per pass at most")
    add_option(w, "--rate", type=float, default=10.0, minimum=0,
               help="fixes begun per minute at most (0: no limit)")
    add_option(w, "--min-age", type=float, default=600.0, minimum=0,
               help="seconds; a PV younger than this is left alone (provisioning may still be settling)")
    add_option(w, "--mode", default="auto", choices=["auto", "replace", "patch"],
               help="auto: patch the affinity, and replace PVs once the API server refuses (422: immutable "
               "before 1.35 or without MutablePVNodeAffinity); replace; patch")
    add_flag(w, "--events", default=True, help="write Kubernetes Events on the PV and the claim")
    add_health_options(w, 8094)
    add_linstor_options(w)
    add_kube_options(w)
    add_leader_options(w, "linstor-scheduler-affinity-sync")
    w.set_defaults(func=deferred("locality.wiring:run_affinity_sync"))

    d = sub.add_parser("drill", parents=[parent], help="what would happen if these nodes failed now?",
                       description="Rehearse a failure: for each pod labelled linstor.csi.linbit.com/on-storage-lost, "
                       "would fencing remove it after the grace period or refuse (and why), and where would the "
                       "extender place it; which resources would be left without an UpToDate replica or quorum; "
                       "would the storm breaker hold. Runs fencing's and the extender's own code on the live "
                       "cluster's state or a snapshot; changes nothing. See docs/locality.md.")
    d.add_argument("--fail-node", action="append", default=None, metavar="NODE",
                   help=f"a node that fails: repeat, or give a comma-separated list [env {FAIL_NODE_ENV}]")
    d.add_argument("--cut-node", action="append", default=None, metavar="NODE",
                   help="a node cut from the others on the replication network (LINSTOR and its kubelet still "
                   "reach it); the nodes given together stay connected to each other: repeat, or give a "
                   f"comma-separated list [env {CUT_NODE_ENV}]")
    add_snapshot(d)
    add_output(d)
    add_option(d, "--grace-period", type=float, default=30.0, minimum=0, help="fencing's --grace-period (as deployed)")
    add_option(d, "--storm-share", type=float, default=1 / 3, above=0, maximum=1,
               help="fencing's --storm-share (as deployed)")
    add_option(d, "--score-weights", default="", help="as for the extender")
    add_linstor_options(d)
    add_kube_options(d)
    d.set_defaults(func=deferred("locality.wiring:run_drill"))
