"""kube-scheduler 1.35's opportunistic batching (KEP-5598) must not place a pod of ours without asking us.

docs/extender.md ("Opportunistic batching") has the source read: a batched pod is placed on a node
hinted from the previous pod's scores, its candidates cut to that one node, so the extender's
/prioritize is not called for it; /filter still is (`evaluateNominatedNode` runs
`findNodesThatPassExtenders` on the hint). Batching is off for our profile for two reasons that our
configuration provides, each enough alone; these tests fail when either goes, and pin the one
property of /filter that the hinted (and the preemption-nominated) path relies on.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from devkit import kube_objects as k
from linstor_scheduler.httpserver import ServerThread

from .cluster import standard
from .test_deploy import find, rendered

PROFILE = "linstor"


def rendered_scheduler_config() -> dict[str, Any]:
    """The KubeSchedulerConfiguration as operators apply it: `kubectl kustomize deploy/`."""
    cm = find(rendered(""), "ConfigMap", "linstor-scheduler-config")
    return yaml.safe_load(cm["data"]["config.yaml"])


def linstor_profile(cfg: dict[str, Any]) -> dict[str, Any]:
    [profile] = [p for p in cfg["profiles"] if p.get("schedulerName") == PROFILE]
    return profile


def test_an_extender_is_configured_so_no_pod_of_the_profile_is_signed():
    """framework.go `computeBatchablePlugins`: any extender sets `enableSignatures = false` for every
    profile (the configuration's `extenders` are handed to each profile), `SignPod` returns nil and
    batch.go `batchStateCompatible` gives no hint for a nil signature."""
    cfg = rendered_scheduler_config()
    extenders = cfg.get("extenders") or []
    assert any(e.get("filterVerb") and e.get("prioritizeVerb") for e in extenders), (
        "without an extender in the configuration, kube-scheduler >= 1.35 may batch our pods and skip /prioritize"
    )
    linstor_profile(cfg)


def test_podtopologyspread_keeps_its_system_defaults_so_no_pod_of_the_profile_is_signed():
    """podtopologyspread/plugin.go `SignPod` refuses every pod while default constraints apply, and
    `New` sets them for `defaultingType: System`, the default. The second reason batching is off:
    a profile that empties the defaults (`defaultingType: List`, no `defaultConstraints`) or disables
    the plugin would leave the extender as the only one."""
    profile = linstor_profile(rendered_scheduler_config())
    plugins = profile.get("plugins") or {}
    for point in ("multiPoint", "preFilter", "filter", "preScore", "score"):
        disabled = {p["name"] for p in (plugins.get(point) or {}).get("disabled") or []}
        assert not disabled & {"PodTopologySpread", "*"}, f"PodTopologySpread disabled at {point}"
    for entry in profile.get("pluginConfig") or []:
        if entry["name"] == "PodTopologySpread":
            args = entry.get("args") or {}
            system = args.get("defaultingType", "System") == "System"
            assert system or args.get("defaultConstraints"), "PodTopologySpread without default constraints"


@pytest.fixture(scope="module")
def filter_http():
    from scheduler_extender.holder import StateHolder
    from scheduler_extender.http import create_app
    from scheduler_extender.judge import Extender

    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    with ServerThread(create_app(Extender(holder))) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        yield http


NODES = ["w1", "w2", "w3", "w4", "w5", "w6", "w7", "nosat"]


def verdicts(http: httpx.Client, pod: dict[str, Any], names: list[str]) -> dict[str, str | None]:
    """node -> None when it passes, else the reason /filter gives."""
    r = http.post("/filter", json={"Pod": pod, "NodeNames": names})
    assert r.status_code == 200, r.text
    body = r.json()
    failed = {**(body.get("FailedNodes") or {}), **(body.get("FailedAndUnresolvableNodes") or {})}
    passed = set(body.get("NodeNames") or [])
    assert passed | set(failed) == set(names) and not passed & set(failed)
    return {n: None if n in passed else failed[n] for n in names}


@pytest.mark.parametrize("claim", ["c-local", "c-zonal", "c-a", "c-aff", "c-new"])
def test_a_lone_hinted_node_is_judged_as_among_all_candidates(filter_http, claim):
    """A batch hint or a preemption's nominated node reaches /filter alone (schedule_one.go
    `evaluateNominatedNode`), and /prioritize not at all when it passes: its verdict must be the one
    it gets in the full list, so the strict rules (no replica, remote access forbidden; wrong zone;
    PV affinity; WFFC pool too small) hold on that path as well."""
    pod = k.pod("p", claims=[claim])
    among_all = verdicts(filter_http, pod, NODES)
    assert any(v is None for v in among_all.values()) and any(v for v in among_all.values())
    for node in NODES:
        assert verdicts(filter_http, pod, [node]) == {node: among_all[node]}, node
