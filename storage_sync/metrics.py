"""Prometheus metrics of ``sync-node`` and ``sync-classes`` (a registry of their own per instance).

The figures of a plan (pools, classes by state) are ``MeasuredGauge``s: absent until the first good
read of LVM/LINSTOR/Kubernetes, each plan replacing the last whole (a pool that vanished is gone),
and on a ``sync-classes`` standby absent again. After a failed read they stay, and the state age
(time since the last good read, absent before it) says how old they are."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from linstor_scheduler.measured import MeasuredGauge


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.passes = Counter("linstor_scheduler_pool_sync_passes", "sync-node passes by outcome "
                              "(ok; failed = a write failed; error = a read failed, nothing written)",
                              ["outcome"], registry=r)
        self.pass_seconds = Histogram("linstor_scheduler_pool_sync_pass_seconds", "Duration of a sync-node pass",
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.pools = MeasuredGauge("linstor_scheduler_pool_sync_pools", "This node's tagged pools by state in the "
                                   "last plan (create, in-sync, mismatch, orphan, prune, invalid, blocked, unseen)",
                                   ["state"], registry=r)
        self.state_age = MeasuredGauge("linstor_scheduler_pool_sync_state_age_seconds", "Seconds since the last "
                                       "good LVM and LINSTOR read (absent before it)", registry=r)
        self.problems = Counter("linstor_scheduler_pool_sync_problems", "Problems reported (when they appear, and "
                                "again every repeat interval), by reason", ["reason"], registry=r)
        self.writes = Counter("linstor_scheduler_pool_sync_writes", "LINSTOR writes by action and outcome",
                              ["action", "outcome"], registry=r)
        self.consecutive_failures = Gauge("linstor_scheduler_pool_sync_consecutive_failures",
                                          "Passes in a row that failed (0 when the last one worked)", registry=r)

    def bind_age(self, age: Callable[[], float | None]) -> None:
        """Computed at scrape time: the age grows while reads fail."""
        self.state_age.set_function(age)


class ClassMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.passes = Counter("linstor_scheduler_class_sync_passes", "sync-classes passes by outcome",
                              ["outcome"], registry=r)
        self.pools = MeasuredGauge("linstor_scheduler_class_sync_pools", "LINSTOR storage pools (non-diskless) "
                                   "seen, by name, with the number of nodes that have each", ["pool"], registry=r)
        self.classes = MeasuredGauge("linstor_scheduler_class_sync_classes", "StorageClasses by state in the last "
                                     "plan (in-sync, create, recreate, conflict, pool-gone, no-class, "
                                     "mixed-providers)", ["state"], registry=r)
        self.reports = Counter("linstor_scheduler_class_sync_problems", "Problems reported (when they appear, and "
                               "again every repeat interval), by reason", ["reason"], registry=r)
        self.state_age = MeasuredGauge("linstor_scheduler_class_sync_state_age_seconds", "Seconds since the last "
                                       "good LINSTOR and StorageClass read (absent before it and on a standby)",
                                       registry=r)
        self.actions = Counter("linstor_scheduler_class_sync_actions", "StorageClass writes by action and outcome",
                               ["action", "outcome"], registry=r)
        self.leader = Gauge("linstor_scheduler_class_sync_leader", "1 while this instance holds the Lease",
                            registry=r)

    def bind_age(self, age: Callable[[], float | None]) -> None:
        """Computed at scrape time: the age grows while reads fail."""
        self.state_age.set_function(age)

    def withdraw(self) -> None:
        """A standby claims no figures: the holder's are the cluster's."""
        self.pools.forget()
        self.classes.forget()
