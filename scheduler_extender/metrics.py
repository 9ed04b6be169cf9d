"""Prometheus metrics of the extender, on a registry of its own (several apps per test process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from linstor_scheduler.measured import MeasuredGauge

from .freshness import Freshness


class ExtenderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "linstor_scheduler_extender_requests", "Extender requests by verb and outcome "
            "(ok, neutral = pod without LINSTOR volumes or state not usable, bad_request, error)",
            ["verb", "outcome"], registry=r)
        self.latency = Histogram(
            "linstor_scheduler_extender_request_seconds", "Time to answer an extender request", ["verb"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r)
        self.filtered_nodes = Counter(
            "linstor_scheduler_extender_filtered_nodes", "Nodes judged by filter, by result", ["result"], registry=r)
        # Read from the state, so absent until the first full sync (linstor_scheduler_ready says so).
        self.state_age = MeasuredGauge(
            "linstor_scheduler_state_age_seconds", "Age of the extender's state (its stalest source); absent "
            "until the first full sync", registry=r)
        self.state_stale = MeasuredGauge(
            "linstor_scheduler_state_stale", "1 while the state is older than the limit and the extender is neutral; "
            "absent until the first full sync", registry=r)
        self.ready = Gauge("linstor_scheduler_ready", "1 once the first full sync finished", registry=r)
        self.syncs = Counter(
            "linstor_scheduler_sync", "Background syncs by source and outcome", ["source", "outcome"], registry=r)
        self.publishes = Counter(
            "linstor_scheduler_state_publishes", "States published by the sync: new (the content changed: a new "
            "generation, the caches start empty) or kept (LINSTOR and Kubernetes unchanged: only the state's age "
            "moves, the caches live on)", ["result"], registry=r)
        self.sync_seconds = Histogram(
            "linstor_scheduler_sync_seconds", "Duration of a LINSTOR read + index build", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.sync_cpu = Counter(
            "linstor_scheduler_sync_cpu_seconds", "CPU seconds spent reading, decoding and indexing LINSTOR "
            "(the read thread's own time)", registry=r)
        self.poll_interval = MeasuredGauge(
            "linstor_scheduler_poll_interval_seconds", "Seconds until the next LINSTOR read: --poll-interval, "
            "or --poll-min-factor x the last sync's duration if that is longer; absent before the first read",
            registry=r)
        self.fallback_reads = Counter(
            "linstor_scheduler_fallback_reads", "Bounded reads of resources missing from the index, by outcome",
            ["outcome"], registry=r)
        self.index_size = MeasuredGauge(
            "linstor_scheduler_index_objects", "Objects in the extender's index by kind; absent until the first "
            "full sync", ["kind"], registry=r)
        self.placements = Counter(
            "linstor_scheduler_extender_placements", "Pods bound after a /filter of ours, by how their node "
            "relates to their diskful replicas (not_chosen and not_offered get a NotPlacedLocally Event)",
            ["outcome"], registry=r)
        self.linstor_requests = Counter(
            "linstor_scheduler_linstor_requests", "HTTP requests to the LINSTOR controller by method and status",
            ["method", "status"], registry=r)

    def bind_caches(self, caches: Iterable[Any]) -> None:
        """Read at scrape time: counting on the hot path would cost more than a cache hit saves."""
        gauge = Gauge("linstor_scheduler_extender_cache", "The request path's caches (answers, tables, prepared, "
                      "pod_bytes, node_sets, fallback_found, fallback_missing): hits, misses and clears (emptied "
                      "by a new state generation) since start, entries and bytes held", ["cache", "stat"],
                      registry=self.registry)
        for cache in caches:
            for stat in ("hits", "misses", "clears", "bytes"):
                gauge.labels(cache.name, stat).set_function(lambda c=cache, s=stat: getattr(c, s))
            gauge.labels(cache.name, "entries").set_function(lambda c=cache: len(c))

    def bind_freshness(self, freshness: Callable[[], Freshness]) -> None:
        """The state's age and whether it is stale, from the one value ``/readyz`` and the decisions
        read too (freshness.py). Computed at scrape time, so the age grows even when no sync happens (a
        failing LINSTOR): it is measured from the last good read, and absent (None) before the first one."""
        self.state_age.set_function(lambda: freshness().age)
        self.state_stale.set_function(lambda: None if (s := freshness().stale) is None else float(s))

    def bind_reservations(self, totals: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        """Capacity promised to unbound WaitForFirstConsumer claims (reservations.py), read at scrape time."""
        gauge = Gauge("linstor_scheduler_extender_reservations", "Holds of capacity promised to unbound "
                      "WaitForFirstConsumer claims and not yet in LINSTOR, by source (filtered: on every node "
                      "the filter let the pod through to, until kube-scheduler says which; selected: on the "
                      "node kube-scheduler chose) and stat (holds, bytes)",
                      ["source", "stat"], registry=self.registry)
        for source in ("filtered", "selected"):
            for i, stat in enumerate(("holds", "bytes")):
                gauge.labels(source, stat).set_function(lambda s=source, i=i: totals()[s][i])
