"""The webhook's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reviews = Counter(
            "linstor_scheduler_webhook_reviews", "AdmissionReviews answered, by outcome (mutated, "
            "no_linstor_volume, already_set, other_scheduler, opted_out, ignored, not_ready, bad_request, error)",
            ["outcome"], registry=r)
        self.latency = Histogram(
            "linstor_scheduler_webhook_review_seconds", "Time to answer an AdmissionReview",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r)
        self.direct_reads = Counter(
            "linstor_scheduler_webhook_direct_reads", "PVCs read from the API because the cache lacked them, "
            "by outcome (found, not_found, error)", ["outcome"], registry=r)
        self.ready = Gauge("linstor_scheduler_webhook_ready", "1 once the caches are synced", registry=r)
