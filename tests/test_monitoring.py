"""deploy/monitoring: the PrometheusRule (CRD schema, promtool unit tests), the Grafana dashboard, and every
metric name their expressions use being one our code exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from .test_deploy import DEPLOY, ROOT, find, objects, rendered

MONITORING = DEPLOY / "monitoring"
SCHEMA = ROOT / "tests" / "schemas" / "prometheusrule-v1.yaml"
PROMTOOL_TESTS = ROOT / "tests" / "promtool" / "rules_test.yaml"
METRIC = re.compile(r"\blinstor_scheduler_[a-zA-Z0-9_]+")


def rule() -> dict[str, Any]:
    return find(objects(), "PrometheusRule", "linstor-scheduler")


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "dashboard.json").read_text())


def dashboard_exprs() -> list[str]:
    out = []
    for panel in dashboard()["panels"]:
        out += [t["expr"] for t in panel.get("targets") or []]
    return out


def rule_exprs() -> list[str]:
    return [str(r["expr"]) for g in rule()["spec"]["groups"] for r in g["rules"]]


# --- the names: every one used is exported --------------------------------------------------------


def exported_series() -> set[str]:
    """Every series name our components' registries expose, as Prometheus scrapes it (counters with
    ``_total``, histograms with ``_bucket``/``_sum``/``_count``)."""
    from admission.metrics import WebhookMetrics
    from fencing.metrics import FencingMetrics
    from locality.metrics import LocalityMetrics
    from scheduler_extender.freshness import Freshness
    from scheduler_extender.metrics import ExtenderMetrics
    from storage_sync.metrics import ClassMetrics, SyncMetrics

    extender = ExtenderMetrics()
    extender.bind_caches([])
    extender.bind_freshness(lambda: Freshness(True, (0.0, 0.0), 120.0, None))
    registries: list[CollectorRegistry] = [m.registry for m in (
        extender, FencingMetrics(), SyncMetrics(), ClassMetrics(), WebhookMetrics(), LocalityMetrics())]
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                        "summary": ("_sum", "_count", "_created")}.get(family.type, ("",))
            names.update(family.name + s for s in suffixes)
    return names


def unknown_names(exprs: list[str], exported: set[str]) -> list[str]:
    return sorted({n for e in exprs for n in METRIC.findall(e) if n not in exported})


def test_every_metric_name_in_rules_and_dashboard_is_exported():
    exported = exported_series()
    assert "linstor_scheduler_volume_locality" in exported and "linstor_scheduler_extender_requests_total" in exported
    assert unknown_names(rule_exprs(), exported) == []
    assert unknown_names(dashboard_exprs(), exported) == []
    assert unknown_names(["rate(linstor_scheduler_extender_requests[5m])"], exported) == [
        "linstor_scheduler_extender_requests"]  # a counter without _total is caught


def test_the_dashboard_and_rules_cover_what_the_issue_names():
    used = {n for e in dashboard_exprs() for n in METRIC.findall(e)}
    for name in ("linstor_scheduler_pods_local_ratio", "linstor_scheduler_volume_locality",
                 "linstor_scheduler_extender_requests_total", "linstor_scheduler_extender_request_seconds_bucket",
                 "linstor_scheduler_extender_cache", "linstor_scheduler_fencing_decisions_total",
                 "linstor_scheduler_fencing_actions_total",
                 "linstor_scheduler_fencing_fault_to_deletion_seconds_bucket",
                 "linstor_scheduler_pool_sync_problems_total"):
        assert name in used, f"the dashboard shows no {name}"
    alerts = {r["alert"] for g in rule()["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"LinstorSchedulerExtenderNotReady", "LinstorSchedulerExtenderStale",
                      "LinstorSchedulerFencingStormActive", "LinstorSchedulerFencingRefusalsRecurring",
                      "LinstorSchedulerPoolSyncFailing", "LinstorSchedulerPoolSyncProblems",
                      "LinstorSchedulerClassConflict", "LinstorSchedulerWebhookErrors",
                      "LinstorSchedulerWebhookUndecided", "LinstorSchedulerLocalityLow",
                      "LinstorSchedulerLocalityNotExported", "LinstorSchedulerFencingBlind",
                      "LinstorSchedulerLocalityStale", "LinstorSchedulerVolumeAffinityStale"}
    tested = set(re.findall(r"alertname: (\w+)", PROMTOOL_TESTS.read_text()))
    assert tested == alerts, "every alert has a promtool unit test"


# --- the PrometheusRule against the CRD's schema ------------------------------------------------------


def strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it with fieldValidation=Strict: unknown fields are errors."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


def schema_errors(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(strict(yaml.safe_load(SCHEMA.read_text())))
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]


def test_prometheus_rule_validates_against_the_crd_schema():
    obj = rule()
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert schema_errors(obj) == []
    bad = json.loads(json.dumps(obj))
    bad["spec"]["groups"][0]["rules"][0]["fro"] = "5m"  # misspelt
    bad["spec"]["groups"][1]["rules"][0]["for"] = "5 minutes"
    errors = schema_errors(bad)
    assert any("fro" in e for e in errors) and any("5 minutes" in e for e in errors), errors


# --- promtool -------------------------------------------------------------------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("LINSTOR_SCHEDULER_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required (LINSTOR_SCHEDULER_REQUIRE_PROMTOOL=1) but not installed: "
                        "apt-get install prometheus")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path):
    tool = promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule()["spec"]["groups"]}))
    shutil.copy(PROMTOOL_TESTS, tmp_path / "rules_test.yaml")
    check = subprocess.run([tool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([tool, "test", "rules", "rules_test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    # the unit tests can fail: a rule with a weaker threshold breaks its "must not fire" case
    weak = rule()["spec"]["groups"]
    for group in weak:
        for r in group["rules"]:
            if r["alert"] == "LinstorSchedulerPoolSyncFailing":
                r["expr"] = "linstor_scheduler_pool_sync_consecutive_failures >= 2"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": weak}))
    broken = subprocess.run([tool, "test", "rules", "rules_test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert broken.returncode != 0 and "LinstorSchedulerPoolSyncFailing" in broken.stdout + broken.stderr


def test_promtool_accepts_every_components_exposition():
    from prometheus_client import generate_latest

    from locality.classify import Summary
    from locality.metrics import LocalityMetrics

    tool = promtool()
    metrics = LocalityMetrics()
    metrics.publish(Summary(3, 2, {("linstor-thindata-r2", "local"): 2, ("linstor-thindata-r2", "diskless"): 1}))
    metrics.bind_age(lambda: 4.0)
    text = generate_latest(metrics.registry).decode()
    check = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# --- the dashboard --------------------------------------------------------------------------------------


def test_dashboard_is_loaded_by_the_grafana_sidecar():
    board = dashboard()
    assert board["uid"] == "linstor-scheduler" and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"
    config_map = find(rendered("monitoring"), "ConfigMap", "linstor-scheduler-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "linstor-scheduler"
    assert json.loads(config_map["data"]["dashboard.json"]) == board
