"""The Kubernetes layer's own metrics, collected at scrape time from the informers, the call pools,
the Event recorder and the Lease: which informer is stale or stuck and why, what the pools are
doing, what was dropped. A component registers one ``KubeCollector`` in its registry.

Ages are absent until the informer's first list (no value before a measurement).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from linstor_scheduler.clock import now as boottime

PREFIX = "linstor_scheduler_kube"


class KubeCollector(Collector):
    def __init__(self, caches: Any = None, *, calls: Any = None, recorder: Any = None, elector: Any = None) -> None:
        self.caches, self.calls, self.recorder, self.elector = caches, calls, recorder, elector

    def collect(self) -> Iterator[Any]:
        if self.caches is not None:
            yield from self._informers()
        if self.calls is not None:
            flight = GaugeMetricFamily(f"{PREFIX}_calls_in_flight", "Kubernetes calls running now, by pool",
                                       labels=["pool"])
            done = CounterMetricFamily(f"{PREFIX}_calls", "Kubernetes calls ended, by pool and outcome "
                                       "(ok, api_error: an HTTP error status, timeout: no answer in time, error)",
                                       labels=["pool", "outcome"])
            for pool in self.calls.pools:
                flight.add_metric([pool.name], pool.in_flight)
                for outcome, n in sorted(pool.outcomes.items()):
                    done.add_metric([pool.name, outcome], n)
            yield flight
            yield done
        if self.recorder is not None:
            events = CounterMetricFamily(f"{PREFIX}_events", "Kubernetes Events by outcome (sent, failed, "
                                         "dropped: the queue was full)", labels=["outcome"])
            for outcome in ("sent", "failed", "dropped"):
                events.add_metric([outcome], getattr(self.recorder, outcome, 0))
            yield events
            yield GaugeMetricFamily(f"{PREFIX}_events_queued", "Kubernetes Events waiting to be sent",
                                    value=getattr(self.recorder, "pending", 0))
        if self.elector is not None and hasattr(self.elector, "released_for_blindness"):
            yield CounterMetricFamily(f"{PREFIX}_lease_released_blind", "times this instance released its "
                                      "Lease because its view stayed older than its bound",
                                      value=self.elector.released_for_blindness)

    def _informers(self) -> Iterator[Any]:
        now = boottime()
        age = GaugeMetricFamily(f"{PREFIX}_informer_age_seconds", "seconds since the API server last confirmed "
                                "the informer's view (absent before its first list)", labels=["kind"])
        healthy = GaugeMetricFamily(f"{PREFIX}_informer_healthy", "1 while the informer is listed and watching "
                                    "without error", labels=["kind"])
        stuck = GaugeMetricFamily(f"{PREFIX}_informer_stuck", "1 when the informer's loop made no progress past "
                                  "its bound (/healthz fails)", labels=["kind"])
        relists = CounterMetricFamily(f"{PREFIX}_informer_relists", "full lists by reason (start, expired: "
                                      "410 Gone, error)", labels=["kind", "reason"])
        restarts = CounterMetricFamily(f"{PREFIX}_watch_restarts", "watches ended by reason (timeout: the "
                                       "server's normal end, silent: no word past the read deadline, error, "
                                       "early: ended cleanly before its timeout)",
                                       labels=["kind", "reason"])
        stuck_kinds = {s.split(" ", 1)[0] for s in self.caches.stuck()}
        for kind, informer in self.caches.informers.items():
            a = informer.age(now)
            if a is not None:
                age.add_metric([kind], a)
            healthy.add_metric([kind], 1 if informer.healthy else 0)
            stuck.add_metric([kind], 1 if kind in stuck_kinds else 0)
            for reason, n in sorted(informer.relists.items()):
                relists.add_metric([kind, reason], n)
            for reason, n in sorted(informer.restarts.items()):
                restarts.add_metric([kind, reason], n)
        yield from (age, healthy, stuck, relists, restarts)
