"""Looking at a component from outside, as Prometheus and a person do: its /metrics as numbers, and
how long a recovery took (printed for docs/operations.md: run a chaos module with ``-s``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest


def scrape(url_or_client: str | httpx.Client) -> dict[str, float]:
    """/metrics of ``url`` (or of a client's base URL) as series -> value; a series without a sample
    is simply not there."""
    if isinstance(url_or_client, httpx.Client):
        text = url_or_client.get("/metrics").text
    else:
        text = httpx.get(url_or_client + "/metrics").text
    out = {}
    for line in text.splitlines():
        if line.startswith("linstor_scheduler_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def recovered(component: str, what: str, since: float) -> float:
    """Seconds since ``since`` (time.monotonic), printed as ``<component>, <what>: recovered in Ns``."""
    took = time.monotonic() - since
    print(f"{component}, {what}: recovered in {took:.2f}s")
    return took


class Measurements:
    """A chaos module's recovery times: each printed as it is measured, and all of them once more when
    the module ends (``report``, a module fixture: ``report = measurements.report``)."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.seconds: dict[str, float] = {}
        seconds = self.seconds

        def report() -> Iterator[None]:
            yield
            if seconds:
                print(f"\nchaos {component}, measured:\n" + "\n".join(f"  {s:5.2f}s  {c}" for c, s in seconds.items()))

        self.report = pytest.fixture(scope="module", autouse=True)(report)

    def __call__(self, case: str, seconds: float) -> None:
        self.seconds[case] = seconds
        print(f"\nchaos {self.component}: {case}: {seconds:.2f}s")
