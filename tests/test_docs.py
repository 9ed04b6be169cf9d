"""The docs name what the code has: every module of the product and devkit is placed in
docs/architecture.md, every extender metric is described in docs/operations.md."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from scheduler_extender.http import create_app
from scheduler_extender.judge import Extender, StateHolder
from scheduler_extender.metrics import ExtenderMetrics

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("linstor_scheduler", "scheduler_extender", "storage_sync", "fencing", "admission", "devkit")


def test_every_module_is_in_the_architecture_doc():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
               if p.name != "__init__.py" and f"`{p.name}`" not in doc]
    assert missing == []


def test_every_extender_metric_is_documented():
    metrics = ExtenderMetrics(CollectorRegistry())
    create_app(Extender(StateHolder()), metrics=metrics)  # binds the scrape-time gauges (caches, state age)
    doc = (ROOT / "docs" / "operations.md").read_text()
    names = {m.name for m in metrics.registry.collect()}
    assert names and [n for n in sorted(names) if f"`{n}" not in doc] == []
