"""The scheduler's extender sidecar as deploy/ runs it, on the demo cluster: from a snapshot file, and
live against the LINSTOR emulator and the Kubernetes API stand-in (in-cluster over HTTPS).
kube-scheduler's verbs on loopback (the urlPrefix of its configuration), probes and metrics on the
metrics port: both from the manifest's environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from devkit import kube_objects as k
from devkit.demo_cluster import demo_emulator, demo_kube_objects, demo_snapshot
from devkit.kube_standin import KubeStandin

from .conftest import https_api, listening, running, with_linstor_at
from .pod import Workload

NODES = ["w1", "w2", "w3", "w4", "w5"]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def serve_and_ask(scheduler: Workload, image: str, tmp_path: Path, **kw: Any) -> tuple[dict, list, list, str, str]:
    """The extender run as the Deployment's sidecar, asked as kube-scheduler asks: (filter, prioritize of
    db-0, prioritize of a pod without LINSTOR volumes, metrics, its output), then stopped."""
    env = {e["name"]: e.get("value") for e in scheduler.container("extender")["env"]}
    port = int(env["LINSTOR_SCHEDULER_PORT"])
    verbs, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{env['LINSTOR_SCHEDULER_METRICS_PORT']}"
    db = next(o for o in demo_kube_objects() if o["kind"] == "Pod" and o["metadata"]["name"] == "db-0")
    with running(scheduler, "extender", image, tmp_path, **kw) as extender:
        extender.wait_until(lambda: answers(metrics_url + "/readyz"), "the extender is ready")
        extender.wait_until(lambda: listening(port), "the verbs' port listens")
        assert httpx.get(metrics_url + "/healthz").status_code == 200
        filtered = httpx.post(verbs + "/filter", json={"Pod": db, "NodeNames": NODES}).json()
        scores = httpx.post(verbs + "/prioritize", json={"Pod": db, "NodeNames": NODES}).json()
        plain = httpx.post(verbs + "/prioritize", json={"Pod": k.pod("web"), "NodeNames": NODES}).json()
        metrics = httpx.get(metrics_url + "/metrics").text
        # The verbs are not on the pod network's port.
        assert httpx.post(metrics_url + "/filter", json={"Pod": db, "NodeNames": NODES}).status_code == 404
    # SIGTERM (kubelet, podman stop): uvicorn finishes both servers and re-raises it (143 = 128 + 15).
    assert extender.process.returncode in (0, 143), extender.output()
    assert extender.output().count("Application shutdown complete") == 2
    return filtered, scores, plain, metrics, extender.output()


def assert_demo_answers(filtered: dict, scores: list, plain: list, metrics: str) -> None:
    assert filtered["NodeNames"] == ["w1", "w2", "w3", "w4"]
    assert filtered["FailedAndUnresolvableNodes"] == {"w5": "LINSTOR satellite on node w5 is OFFLINE, not ONLINE"}
    # The two diskful replicas first, the tie-breaker next; a pod without LINSTOR volumes is neutral.
    assert [a["Host"] for a in sorted(scores, key=lambda a: -a["Score"])][:3] == ["w1", "w3", "w2"]
    assert {a["Score"] for a in plain} == {0}
    assert 'linstor_scheduler_extender_requests_total{' in metrics and "verb=\"filter\"" in metrics, metrics[:2000]


def test_extender_from_a_snapshot_answers_probes_metrics_and_verbs(image, manifests, tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "cluster.yaml").write_text(yaml.safe_dump(demo_snapshot()))
    snapshot.chmod(0o755)
    (snapshot / "cluster.yaml").chmod(0o644)
    *answered, output = serve_and_ask(Workload(manifests, "Deployment", "linstor-scheduler"), image, tmp_path,
                                      podman_options=("--volume", f"{snapshot}:/snapshot:ro"),
                                      extra_args=("--snapshot", "/snapshot/cluster.yaml"))
    assert_demo_answers(*answered)
    assert "serving from snapshot /snapshot/cluster.yaml: 6 nodes, 3 resources" in output


def test_extender_live_against_linstor_and_the_api_server(image, manifests, tmp_path):
    emu, ks = demo_emulator(), KubeStandin()
    for obj in demo_kube_objects():
        ks.add(obj)
    with emu.serve() as linstor, https_api(ks, tmp_path) as api:
        scheduler = Workload(with_linstor_at(manifests, linstor.url), "Deployment", "linstor-scheduler")
        *answered, output = serve_and_ask(scheduler, image, tmp_path, kube=api)
    assert_demo_answers(*answered)
    assert "first full sync done: 6 LINSTOR nodes, 3 resources" in output, output
