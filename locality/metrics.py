"""Locality metrics, exported once per cluster: only the Lease holder sets them, a standby exports none
of the per-class series (so ``sum()`` over replicas never double-counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from .classify import Summary


class LocalityMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.volume_locality = Gauge(
            "linstor_scheduler_volume_locality", "Volumes of running pods by StorageClass and locality (local, "
            "local-syncing, diskless, none, unknown)", ["storage_class", "locality"], registry=r)
        self.pods = Gauge("linstor_scheduler_locality_pods", "Running pods with LINSTOR volumes, by whether every "
                          "volume has an UpToDate diskful replica on the pod's node", ["local"], registry=r)
        self.local_ratio = Gauge("linstor_scheduler_pods_local_ratio",
                                 "Share of running pods with LINSTOR volumes that are local (1 with none)", registry=r)
        self.state_age = Gauge("linstor_scheduler_locality_state_age_seconds",
                               "Age of the LINSTOR and Kubernetes state the figures come from", registry=r)
        self.leader = Gauge("linstor_scheduler_locality_leader", "1 while this instance holds the Lease and exports",
                            registry=r)

    def publish(self, summary: Summary, age: float | None) -> None:
        self.volume_locality.clear()
        for (storage_class, locality), count in summary.volumes.items():
            self.volume_locality.labels(storage_class, locality).set(count)
        self.pods.labels("true").set(summary.local)
        self.pods.labels("false").set(summary.pods - summary.local)
        self.local_ratio.set(summary.share)
        if age is not None:
            self.state_age.set(age)

    def withdraw(self) -> None:
        """A standby exports no figures: the holder's are the cluster's."""
        self.volume_locality.clear()
        self.pods.clear()
        self.local_ratio.set(float("nan"))
