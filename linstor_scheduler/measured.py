"""Gauges that claim nothing they have not measured.

A prometheus_client ``Gauge`` without labels exports 0 from the moment it exists: a component that
has not read LINSTOR yet then says "0% of the pods are local" or "state 0 s old", and alerts fire
on a number nobody measured. Every gauge whose value comes from a read (LINSTOR, Kubernetes, LVM)
or from a computation on one is a ``MeasuredGauge`` instead: its family (HELP, TYPE) is always
exported, a sample only while it holds a measurement.

- ``set``/``publish``: the values of a good read (``publish`` replaces every labelled series at
  once, so a scrape never sees half a pass and a label that vanished is gone);
- ``forget``: the component no longer measures (a standby): the series go absent again;
- ``set_function``: computed at scrape time (ages); absent while the function returns None.

After a failed read the values stay as they were, and the component's age gauge (``age_since``,
from the last good read on the component's clock, CLOCK_BOOTTIME) says how old they are: a failed
read never resets an age to 0. docs/operations.md, "Metrics", states the rule per component.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

Labels = tuple[str, ...]


class MeasuredGauge(Collector):
    """A gauge with a sample only while it holds a measurement (see the module's docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._values: Mapping[Labels, float] = {}  # replaced whole: a scrape reads one version
        self._function: Callable[[], float | None] | None = None
        registry.register(self)

    def set(self, value: float) -> None:
        """The value of an unlabelled gauge, measured now."""
        self.publish({(): value})

    def publish(self, values: Mapping[Labels, float]) -> None:
        """Every labelled series of this measurement; series not named are gone."""
        for labels in values:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {labels} do not match {self.labelnames}")
        self._values = dict(values)

    def set_function(self, function: Callable[[], float | None]) -> None:
        """An unlabelled value computed at each scrape; None means "not measured": no sample."""
        if self.labelnames:
            raise ValueError(f"{self.name}: set_function is for unlabelled gauges")
        self._function = function

    def forget(self) -> None:
        """No measurement any more (a standby): the series go absent until the next ``publish``."""
        self._values = {}

    def value(self, *labels: str) -> float | None:
        """The value a scrape would show now, or None when it would show no sample."""
        if self._function is not None:
            return self._function()
        return self._values.get(tuple(labels))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if self._function is not None:
            value = self._function()
            if value is not None:
                family.add_metric([], value)
        else:
            for labels, value in self._values.items():
                family.add_metric(list(labels), value)
        yield family


def age_since(clock: Callable[[], float], at: float | None) -> float | None:
    """Seconds from ``at`` (a time on ``clock``, boot time) to now; None when nothing was read
    (``at`` None, or -inf as ``ClusterState`` says it): an age is never claimed before a read."""
    if at is None or at == float("-inf"):
        return None
    return max(0.0, clock() - at)
