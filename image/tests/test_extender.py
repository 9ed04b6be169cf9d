"""The scheduler's extender sidecar as deploy/ runs it, serving a snapshot of the demo cluster: kube-scheduler's
verbs on loopback (127.0.0.1:8099, urlPrefix of its configuration), probes and metrics on 8098."""

from __future__ import annotations

import httpx
import yaml

from devkit import kube_objects as k
from devkit.demo_cluster import demo_snapshot

from .conftest import listening, running
from .pod import Workload

NODES = ["w1", "w2", "w3", "w4", "w5"]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_extender_from_a_snapshot_answers_probes_metrics_and_verbs(image, manifests, tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "cluster.yaml").write_text(yaml.safe_dump(demo_snapshot()))
    snapshot.chmod(0o755)
    (snapshot / "cluster.yaml").chmod(0o644)
    scheduler = Workload(manifests, "Deployment", "linstor-scheduler")
    env = {e["name"]: e.get("value") for e in scheduler.container("extender")["env"]}
    port = int(env["LINSTOR_SCHEDULER_PORT"])
    verbs, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{env['LINSTOR_SCHEDULER_METRICS_PORT']}"
    with running(scheduler, "extender", image, tmp_path, podman_options=("--volume", f"{snapshot}:/snapshot:ro"),
                 extra_args=("--snapshot", "/snapshot/cluster.yaml")) as extender:
        extender.wait_until(lambda: answers(metrics_url + "/readyz"), "the extender is ready")
        extender.wait_until(lambda: listening(port), "the verbs' port listens")
        assert httpx.get(metrics_url + "/healthz").status_code == 200
        pod = demo_snapshot()["kubernetes"]["items"]
        db = next(o for o in pod if o["kind"] == "Pod" and o["metadata"]["name"] == "db-0")
        filtered = httpx.post(verbs + "/filter", json={"Pod": db, "NodeNames": NODES}).json()
        scores = httpx.post(verbs + "/prioritize", json={"Pod": db, "NodeNames": NODES}).json()
        plain = httpx.post(verbs + "/prioritize", json={"Pod": k.pod("web"), "NodeNames": NODES}).json()
        metrics = httpx.get(metrics_url + "/metrics").text
        # The verbs are not on the pod network's port, the probes not on the verbs' one.
        assert httpx.post(metrics_url + "/filter", json={"Pod": db, "NodeNames": NODES}).status_code == 404
    assert filtered["NodeNames"] == ["w1", "w2", "w3", "w4"]
    assert filtered["FailedAndUnresolvableNodes"] == {"w5": "LINSTOR satellite on node w5 is OFFLINE, not ONLINE"}
    # The two diskful replicas first, the tie-breaker next; a pod without LINSTOR volumes is neutral.
    assert [a["Host"] for a in sorted(scores, key=lambda a: -a["Score"])][:3] == ["w1", "w3", "w2"]
    assert {a["Score"] for a in plain} == {0}
    assert 'linstor_scheduler_extender_requests_total{' in metrics and "verb=\"filter\"" in metrics, metrics[:2000]
    # SIGTERM (kubelet, podman stop): uvicorn finishes both servers and re-raises it (143 = 128 + 15).
    assert extender.process.returncode in (0, 143), extender.output()
    assert extender.output().count("Application shutdown complete") == 2
    assert "serving from snapshot /snapshot/cluster.yaml: 6 nodes, 3 resources" in extender.output()
