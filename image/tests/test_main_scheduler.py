"""Main-scheduler mode as deploy/ runs it (issue 22: every component, as its manifest runs it): the
Deployment ``linstor-scheduler`` rendered with ``components/main-scheduler`` and
``components/main-scheduler-client-auth``, its extender container run from the image with the
manifest's user, mounts and environment, the Secret ``linstor-scheduler-extender-tls`` mounted as the
kubelet mounts it (mode 0440, group fsGroup), live against the LINSTOR emulator and the Kubernetes API
stand-in (in-cluster over HTTPS). Asked as another pod's kube-scheduler asks: HTTPS under the
Service's name, trusting the Secret's CA, with a client certificate of that CA; without one it is
refused at the handshake."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from admission.tls import generate_bundle
from devkit import kube_objects as k
from devkit.demo_cluster import demo_emulator, demo_kube_objects
from devkit.kube_standin import KubeStandin
from tests.test_extender_https import ClientPair, client_context, client_pair

from .conftest import NAMESPACE, ROOT, https_api, listening, running, with_linstor_at
from .pod import Workload
from .test_extender import answers

NODES = ["w1", "w2", "w3", "w4", "w5"]
SERVICE = "linstor-scheduler-extender-https"
SECRET = "linstor-scheduler-extender-tls"


def rendered_with_components(*components: str) -> tuple[dict[str, Any], ...]:
    """What ``kubectl apply -k`` applies for an overlay of deploy/ with ``components``."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/ (kubectl kustomize)"
    with tempfile.TemporaryDirectory() as tmp:  # outside deploy/: kustomize refuses a base that holds the overlay
        rel = os.path.relpath(ROOT / "deploy", tmp)
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [rel],
            "components": [f"{rel}/components/{c}" for c in components]}))
        out = subprocess.run([kubectl, "kustomize", tmp], capture_output=True, text=True, check=True)
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


@pytest.fixture(scope="module")
def main_scheduler_manifests() -> tuple[dict[str, Any], ...]:
    return rendered_with_components("main-scheduler", "main-scheduler-client-auth")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def test_the_extender_serves_the_main_scheduler_over_https_with_client_certificates(
        image, main_scheduler_manifests, tmp_path):
    emu, ks = demo_emulator(), KubeStandin()
    for obj in demo_kube_objects():
        ks.add(obj)
    service_name = f"{SERVICE}.{NAMESPACE}.svc"
    server = generate_bundle([service_name])  # cert-manager's part: the serving certificate
    scheduler_client = client_pair(tmp_path, "kube-scheduler")  # the CA the Secret's ca.crt names
    intruder = client_pair(tmp_path, "intruder")  # a certificate of another CA
    secret = {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": scheduler_client.ca_pem}
    with emu.serve() as linstor, https_api(ks, tmp_path) as api:
        scheduler = Workload(with_linstor_at(main_scheduler_manifests, linstor.url), "Deployment",
                             "linstor-scheduler")
        assert [c["name"] for c in scheduler.spec["containers"]] == ["extender"]
        env = env_of(scheduler.container("extender"))
        port, metrics_port = int(env["LINSTOR_SCHEDULER_PORT"]), int(env["LINSTOR_SCHEDULER_METRICS_PORT"])
        db = next(o for o in demo_kube_objects() if o["kind"] == "Pod" and o["metadata"]["name"] == "db-0")
        other = k.pod("web", scheduler="default-scheduler")
        sni = {"sni_hostname": service_name}

        def ask(client: ClientPair | None, path: str, pod: dict[str, Any]) -> Any:
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=5,
                              verify=client_context(server.ca_pem, client)) as https:
                answer = https.post(path, json={"Pod": pod, "NodeNames": NODES}, extensions=sni)
                answer.raise_for_status()
                return answer.json()

        with running(scheduler, "extender", image, tmp_path, kube=api, secrets={SECRET: secret}) as extender:
            extender.wait_until(lambda: listening(metrics_port) and answers(f"http://127.0.0.1:{metrics_port}/readyz"),
                                "the extender is ready")
            extender.wait_until(lambda: listening(port), "the verbs' HTTPS port listens")
            filtered = ask(scheduler_client, "/filter", db)
            neutral = ask(scheduler_client, "/prioritize", other)
            for refused in (intruder, None):  # another CA's certificate, and none: refused at the handshake
                with pytest.raises(httpx.TransportError):
                    ask(refused, "/filter", db)
        assert extender.process.returncode in (0, 143), extender.output()
    assert filtered["FailedAndUnresolvableNodes"] == {"w5": "LINSTOR satellite on node w5 is OFFLINE, not ONLINE"}
    assert filtered["NodeNames"] == ["w1", "w2", "w3", "w4"]
    # --scheduler-name linstor: the pods of the main scheduler's other profiles are left alone
    assert {a["Score"] for a in neutral} == {0}
