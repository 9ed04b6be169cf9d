"""Prometheus metrics of the fencing controller, on a registry of its own (several per test process).

What fencing reads from LINSTOR (lost nodes, the storm flag, the read's duration and age) is a
``MeasuredGauge``: absent until the first complete LINSTOR read of this leadership term, absent
again on a standby. After a failed read the values stay and the view's age grows from the last
good read. ``..._leader`` is always exported: "leading, never read" is ``leader == 1`` without a
view age (the FencingBlind alert)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from linstor_scheduler.measured import MeasuredGauge


class FencingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "linstor_scheduler_fencing_decisions", "Pod decisions per pass, by verdict (healthy, waiting, fence, "
            "refuse) and reason", ["verdict", "reason"], registry=r)
        self.actions = Counter(
            "linstor_scheduler_fencing_actions", "Writes by kind (pod_delete, pod_evict, attachment_delete, taint, "
            "untaint; dry_run_* in --dry-run) and outcome", ["kind", "outcome"], registry=r)
        self.fault_to_deletion = Histogram(
            "linstor_scheduler_fencing_fault_to_deletion_seconds",
            "From the first observation of a storage fault to the pod's deletion",
            buckets=(5, 10, 20, 30, 35, 40, 45, 60, 90, 120, 300), registry=r)
        self.storm_active = MeasuredGauge(
            "linstor_scheduler_fencing_storm_active", "1 while the storm breaker holds every action", registry=r)
        self.lost_nodes = MeasuredGauge(
            "linstor_scheduler_fencing_lost_storage_nodes", "Storage nodes that look lost right now", registry=r)
        self.view_age = MeasuredGauge(
            "linstor_scheduler_fencing_linstor_view_age_seconds", "Age of the last complete LINSTOR read", registry=r)
        self.read_seconds = MeasuredGauge(
            "linstor_scheduler_fencing_linstor_read_seconds",
            "Duration of the last complete LINSTOR read (all six reads; must stay well under --max-staleness)",
            registry=r)
        self.reads = Counter(
            "linstor_scheduler_fencing_reads", "LINSTOR and Kubernetes reads by source and outcome",
            ["source", "outcome"], registry=r)
        self.unknown_nodes = MeasuredGauge(
            "linstor_scheduler_fencing_nodes_unknown_to_linstor",
            "Kubernetes Nodes running labelled pods with LINSTOR volumes that LINSTOR has no node of that name for "
            "(a name mismatch: their storage cannot be judged)", registry=r)
        self.in_doubt = Gauge(
            "linstor_scheduler_fencing_writes_in_doubt",
            "Writes sent whose answer was lost and whose effect is not seen yet (not sent again meanwhile)",
            registry=r)
        self.leader = Gauge("linstor_scheduler_fencing_leader", "1 while this instance holds the Lease", registry=r)

    def bind_view_age(self, age: Callable[[], float | None]) -> None:
        """Computed at scrape time: the age grows while reads fail, even between passes."""
        self.view_age.set_function(age)

    def withdraw(self) -> None:
        """Not leading (or a new term): nothing of an older read is claimed."""
        for gauge in (self.storm_active, self.lost_nodes, self.read_seconds, self.unknown_nodes):
            gauge.forget()
