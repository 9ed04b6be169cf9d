"""Locality metrics, exported once per cluster: only the Lease holder exports them, a standby exports
none of the figures (so ``sum()`` over replicas never double-counts and a standby claims nothing).

Every figure is a ``MeasuredGauge``: absent until the holder has computed it from a first good
LINSTOR and Kubernetes read, absent again when the instance stops leading. The state age says how
old the figures are (it grows while LINSTOR fails); ``..._leader`` is always exported, so "leading,
no figures yet" is ``leader == 1`` without a state age (the LocalityStale alert)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

from linstor_scheduler.measured import MeasuredGauge

from .classify import Summary


class LocalityMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.volume_locality = MeasuredGauge(
            "linstor_scheduler_volume_locality", "Volumes of running pods by StorageClass and locality (local, "
            "local-syncing, diskless, none, unknown)", ["storage_class", "locality"], registry=r)
        self.pods = MeasuredGauge("linstor_scheduler_locality_pods", "Running pods with LINSTOR volumes, by whether "
                                  "every volume has an UpToDate diskful replica on the pod's node", ["local"],
                                  registry=r)
        self.local_ratio = MeasuredGauge("linstor_scheduler_pods_local_ratio", "Share of running pods with LINSTOR "
                                         "volumes that are local (1 with none)", registry=r)
        self.state_age = MeasuredGauge("linstor_scheduler_locality_state_age_seconds",
                                       "Age of the LINSTOR read the figures come from (computed only from a "
                                       "view within --max-staleness)", registry=r)
        self.affinity_stale = MeasuredGauge(
            "linstor_scheduler_volume_affinity_stale", "LINSTOR PersistentVolumes whose node affinity excludes a "
            "node with a diskful replica, or admits only nodes without one (locality/affinity.py), by StorageClass",
            ["storage_class"], registry=r)
        self.leader = Gauge("linstor_scheduler_locality_leader", "1 while this instance holds the Lease and exports",
                            registry=r)

    def bind_age(self, age: Callable[[], float | None]) -> None:
        """The figures' age, computed at scrape time: it grows between computations and while reads fail."""
        self.state_age.set_function(age)

    def publish(self, summary: Summary) -> None:
        self.volume_locality.publish({key: float(count) for key, count in summary.volumes.items()})
        self.pods.publish({("true",): summary.local, ("false",): summary.pods - summary.local})
        self.local_ratio.set(summary.share)

    def publish_affinity(self, stale: dict[str, int]) -> None:
        """Every StorageClass with LINSTOR PVs, 0 when none is stale (so an alert sees the class recover)."""
        self.affinity_stale.publish({(sc,): float(n) for sc, n in stale.items()})

    def withdraw(self) -> None:
        """A standby exports no figures: the holder's are the cluster's."""
        for gauge in (self.volume_locality, self.pods, self.local_ratio, self.affinity_stale):
            gauge.forget()
