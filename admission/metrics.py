"""The webhook's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reviews = Counter(
            "linstor_scheduler_webhook_reviews", "AdmissionReviews answered, by outcome (mutated, "
            "no_linstor_volume, already_set, other_scheduler, opted_out, ignored, unknown: a claim could not be looked "
            "up in time and the pod was sent to the linstor profile all the same, late: answered after the "
            "configuration's timeoutSeconds, so the API server had admitted the pod unchanged, bad_request, error)",
            ["outcome"], registry=r)
        self.latency = Histogram(
            "linstor_scheduler_webhook_review_seconds", "Time to answer an AdmissionReview (up to the "
            "configuration's timeoutSeconds and beyond)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 4.0, 5.0, 10.0, 30.0),
            registry=r)
        self.direct_reads = Counter(
            "linstor_scheduler_webhook_direct_reads", "PVCs, PVs and StorageClasses read from the API server, by "
            "reason (miss: a PVC not in the cache yet; stale: the cache is older than --max-staleness) and outcome "
            "(found, not_found, error)", ["reason", "outcome"], registry=r)
        self.events = Counter(
            "linstor_scheduler_webhook_events", "Warning Events LinstorClaimsUnknown, by outcome (queued: handed to "
            "the recorder, which sends them in its own thread; dropped: its queue was full)", ["outcome"], registry=r)
        self.ready = Gauge("linstor_scheduler_webhook_ready", "1 while /readyz answers 200 (the view fresh, the "
                           "served certificate verified by the published caBundle, not draining)", registry=r)
