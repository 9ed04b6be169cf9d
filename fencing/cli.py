"""``linstor-scheduler fencing``: its flags and nothing else (``wiring.py`` builds the service from them)."""

from __future__ import annotations

import argparse

from linstor_scheduler.config import add_flag, add_option


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    from linstor_scheduler.kube.client import add_kube_options
    from linstor_scheduler.kube.lease import add_leader_options
    from linstor_scheduler.linstor.options import add_linstor_options
    from linstor_scheduler.runtime import add_health_options

    p = sub.add_parser(
        "fencing", parents=[parent], help="move pods labelled on-storage-lost=remove off nodes that lost storage",
        description="Watch pods labelled linstor.csi.linbit.com/on-storage-lost=remove; when their node loses its "
        "LINSTOR/DRBD storage for the whole grace period and a healthy replica exists elsewhere, remove the pod "
        "(grace 0 on a NotReady node, the Eviction API on a Ready one), then its VolumeAttachment. "
        "See docs/fencing.md.")
    g = p.add_argument_group("fencing")
    add_option(g, "--grace-period", type=float, default=30.0, minimum=0,
               help="seconds a storage fault must hold, observed without a break, before a pod is moved")
    add_option(g, "--poll-interval", type=float, default=5.0, above=0, help="seconds between LINSTOR reads")
    add_option(g, "--max-staleness", type=float, default=20.0, above=0,
               help="seconds; LINSTOR or Kubernetes data older than this holds every action")
    add_option(g, "--storm-share", type=float, default=1 / 3, above=0, maximum=1,
               help="hold every action while more than this share of the storage nodes (and two or more) look "
               "lost at once")
    add_option(g, "--evictions-per-minute", type=float, default=10.0, above=0,
               help="at most this many pods failed over per minute (burst of the same size)")
    add_option(g, "--failover-budget", type=int, default=3, minimum=1,
               help="at most this many fail-overs of one pod (namespace/name) per --budget-window")
    add_option(g, "--budget-window", type=float, default=3600.0, above=0,
               help="seconds of the per-pod fail-over budget")
    add_option(g, "--eviction-timeout", type=float, default=60.0, above=0,
               help="seconds after which an eviction (Ready node) that does not finish becomes a grace-0 delete")
    add_flag(g, "--dry-run", help="decide, log and record Events and metrics, but delete nothing")
    add_option(g, "--select", default="labelled", choices=["labelled", "all"],
               help="which pods may be failed over: 'labelled' (on-storage-lost=remove) or 'all' with LINSTOR volumes "
               "(opt out with the label linstor.csi.linbit.com/on-storage-lost=keep)")
    add_flag(g, "--fail-over-unsafe-pods",
             help="also fail over pods that use storage fencing cannot fence (another driver's writable claim, NFS, "
             "iSCSI, a writable hostPath, ...): their old copy may still write there")
    add_flag(g, "--taint",
             help="while fencing acts on a node, taint it linstor.csi.linbit.com/storage-lost:NoSchedule, until its "
             "storage is back (off: never set it; ours are still removed). The storage's own DaemonSets must "
             "tolerate it: see docs/fencing.md")
    add_option(g, "--taint-max-seconds", type=float, default=300.0, above=0,
               help="seconds a taint of ours may stay on a node with no fail-over under way there before it is "
               "removed and a Warning says so")
    add_option(g, "--taint-stable-seconds", type=float, default=60.0, minimum=0,
               help="seconds of storage back (satellite ONLINE, no storage proof for any of its replicas) after "
               "which our taint comes off")
    add_flag(g, "--promotion-events", default=True,
             help="also follow LINSTOR's DRBD promotion event stream to poll early (polling never stops)")
    add_flag(g, "--once", help="one pass over freshly listed objects, print the verdict table, act never")
    add_health_options(p, 8097)  # --listen-address, --port: the side port every worker has
    add_linstor_options(p)
    add_kube_options(p)
    add_leader_options(p, "linstor-scheduler-fencing")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .wiring import run

    return run(args)


