"""The docs name what the code has: every module of the product and devkit is placed in
docs/architecture.md; docs/operations.md lists every metric of every component, and on its row
every label value the code can produce (taken from the code's own constants, so a new value
without docs fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from admission.metrics import WebhookMetrics
from fencing import actions as fencing_actions
from fencing import controller as fencing_controller
from fencing import guards as fencing_guards
from fencing import verdict as fencing_verdict
from fencing.metrics import FencingMetrics
from locality.affinity_sync import AffinityMetrics
from locality.metrics import LocalityMetrics
from scheduler_extender.fallback import FallbackReader
from scheduler_extender.holder import StateHolder
from scheduler_extender.http import create_app
from scheduler_extender.judge import Extender
from scheduler_extender.metrics import ExtenderMetrics
from storage_sync import backing as pool_backing
from storage_sync import classes as pool_classes
from storage_sync import plan as pool_plan
from storage_sync import tags as pool_tags
from storage_sync.class_sync import REPORTED as CLASS_REPORTS
from storage_sync.metrics import ClassMetrics, SyncMetrics

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("linstor_scheduler", "scheduler_extender", "storage_sync", "fencing", "admission", "devkit")
DOC = (ROOT / "docs" / "operations.md").read_text()


def test_every_module_is_in_the_architecture_doc():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
               if p.name != "__init__.py" and f"`{p.name}`" not in doc]
    assert missing == []


def extender_registry():
    metrics = ExtenderMetrics()
    create_app(Extender(StateHolder()), metrics=metrics)  # binds the scrape-time gauges (caches, state age)
    return metrics.registry


def row(metric: str) -> str:
    pattern = re.compile(rf"\| `{metric}(\{{[a-z_,]+\}})?` \|")  # the reference row, not an alert's selector
    found = [line for line in DOC.splitlines() if pattern.match(line)]
    assert len(found) == 1, f"docs/operations.md has {len(found)} table rows for {metric}"
    return found[0]


def camel_constants(*modules) -> set[str]:
    return {v for m in modules for k, v in vars(m).items()
            if k.isupper() and isinstance(v, str) and re.fullmatch(r"(?:[A-Z][a-z]+)+", v)}


@pytest.mark.parametrize("make", [extender_registry, lambda: WebhookMetrics().registry, lambda: SyncMetrics().registry,
                                  lambda: ClassMetrics().registry, lambda: FencingMetrics().registry,
                                  lambda: LocalityMetrics().registry, lambda: AffinityMetrics().registry],
                         ids=["extender", "webhook", "sync-node", "sync-classes", "fencing", "locality",
                              "affinity-sync"])
def test_every_metric_has_a_row(make):
    families = list(make().collect())
    assert families
    for family in families:
        row(family.name + ("_total" if family.type == "counter" else ""))


def test_every_gauge_without_a_sample_at_start_says_so_on_its_row():
    """Issue 18: a gauge absent until the first good read is documented as such (``MeasuredGauge``)."""
    from linstor_scheduler.measured import MeasuredGauge

    for make in (extender_registry, lambda: SyncMetrics().registry, lambda: ClassMetrics().registry,
                 lambda: FencingMetrics().registry, lambda: LocalityMetrics().registry):
        registry = make()
        for collector in list(registry._collector_to_names):
            if isinstance(collector, MeasuredGauge):
                assert "absent until the first" in row(collector.name), collector.name


def test_every_extender_outcome_is_documented_error_included():
    metrics = ExtenderMetrics()
    create_app(Extender(StateHolder()), metrics=metrics)  # pre-creates every (verb, outcome) it counts
    samples = [s for f in metrics.registry.collect() if f.name == "linstor_scheduler_extender_requests"
               for s in f.samples if s.name.endswith("_total")]
    outcomes = {s.labels["outcome"] for s in samples}
    assert "error" in outcomes
    text = row("linstor_scheduler_extender_requests_total")
    for value in outcomes | {s.labels["verb"] for s in samples}:
        assert f"`{value}`" in text, value


@pytest.mark.parametrize("metric,values", [
    ("linstor_scheduler_fencing_decisions_total",
     {fencing_verdict.HEALTHY, fencing_verdict.WAITING, fencing_verdict.FENCE, fencing_verdict.REFUSE, "none"}
     | camel_constants(fencing_verdict, fencing_controller, fencing_guards) - {fencing_controller.NOT_LEADER}),
    ("linstor_scheduler_fencing_actions_total", {o.value for o in fencing_actions.Outcome}
     | {"pod_delete", "pod_evict", "attachment_delete", "taint", "untaint", "skipped"}),
    ("linstor_scheduler_pool_sync_pools", set(pool_plan.STATES) | set(pool_plan.PROBLEMS)),
    ("linstor_scheduler_pool_sync_problems_total",
     camel_constants(pool_tags) | (camel_constants(pool_backing) - {pool_backing.VG_MISSING})  # that one: a pool's
     | {"PoolBacking" + r for r in camel_constants(pool_backing)}
     | {"PoolMismatch", "NodeNotOnline", "ProviderUnsupported", "PoolOrphaned", "PoolSyncFailed", "BackingInUse",
        "PoolNameTaken", "LvmWarning", "LvmDeviceVanished"}),
    ("linstor_scheduler_class_sync_classes", set(pool_classes.STATES)),
    ("linstor_scheduler_class_sync_problems_total", set(CLASS_REPORTS.values())),
])
def test_label_values_from_the_code_are_on_the_row(metric, values):
    text = row(metric)
    for value in values:
        assert f"`{value}`" in text, f"{metric}: `{value}` is not documented"


def test_every_cache_of_the_live_extender_is_on_the_row():
    """The cache gauge's ``cache`` label: every cache a live extender binds (the fallback's included)."""
    metrics = ExtenderMetrics()
    create_app(Extender(StateHolder(), fallback=FallbackReader(client=None)), metrics=metrics)
    names = {s.labels["cache"] for f in metrics.registry.collect() if f.name == "linstor_scheduler_extender_cache"
             for s in f.samples}
    assert {"answers", "tables", "fallback_found", "fallback_missing"} <= names
    text = row("linstor_scheduler_extender_cache")
    for name in names:
        assert f"`{name}`" in text, f"cache `{name}` is not documented"
