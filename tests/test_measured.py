"""``MeasuredGauge``: no sample before a measurement, none after ``forget``, ages only after a read."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from linstor_scheduler.measured import MeasuredGauge, age_since


def test_an_unlabelled_gauge_has_no_sample_until_set_and_after_forget():
    registry = CollectorRegistry()
    gauge = MeasuredGauge("linstor_scheduler_probe_ratio", "a ratio", registry=registry)
    text = generate_latest(registry).decode()
    assert "# TYPE linstor_scheduler_probe_ratio gauge" in text  # the family is known ...
    assert registry.get_sample_value("linstor_scheduler_probe_ratio") is None  # ... the value is not
    gauge.set(0.5)
    assert registry.get_sample_value("linstor_scheduler_probe_ratio") == 0.5 == gauge.value()
    gauge.forget()
    assert registry.get_sample_value("linstor_scheduler_probe_ratio") is None and gauge.value() is None


def test_publish_replaces_every_labelled_series_at_once():
    registry = CollectorRegistry()
    gauge = MeasuredGauge("linstor_scheduler_probe_pools", "pools", ["pool"], registry=registry)
    gauge.publish({("a",): 2, ("b",): 3})
    gauge.publish({("b",): 1})
    assert registry.get_sample_value("linstor_scheduler_probe_pools", {"pool": "a"}) is None  # gone with its pool
    assert registry.get_sample_value("linstor_scheduler_probe_pools", {"pool": "b"}) == 1
    with pytest.raises(ValueError):
        gauge.publish({("a", "extra"): 1})


def test_a_function_gauge_is_absent_while_the_function_says_none():
    registry = CollectorRegistry()
    now = [100.0]
    read_at: list[float | None] = [None]
    gauge = MeasuredGauge("linstor_scheduler_probe_age_seconds", "age", registry=registry)
    gauge.set_function(lambda: age_since(lambda: now[0], read_at[0]))
    assert registry.get_sample_value("linstor_scheduler_probe_age_seconds") is None
    read_at[0] = 90.0
    assert registry.get_sample_value("linstor_scheduler_probe_age_seconds") == 10.0
    now[0] = 130.0  # failed reads leave read_at alone: the age grows
    assert registry.get_sample_value("linstor_scheduler_probe_age_seconds") == 40.0
    assert age_since(lambda: 5.0, float("-inf")) is None


def test_the_exposition_passes_promtool_with_and_without_samples():
    import shutil
    import subprocess

    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed")
    registry = CollectorRegistry()
    gauge = MeasuredGauge("linstor_scheduler_probe_pools", "pools", ["pool"], registry=registry)
    for values in ({}, {("a",): 2.0}):
        gauge.publish(values)
        check = subprocess.run(["promtool", "check", "metrics"], input=generate_latest(registry).decode(),
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
