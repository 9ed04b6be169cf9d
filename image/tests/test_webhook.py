"""The scheduler-name webhook as deploy/ runs it, against the Kubernetes API stand-in reached as from a
pod (in-cluster: service account, HTTPS): it makes its certificate, publishes the CA into the
MutatingWebhookConfiguration that deploy/ applies, and answers a real HTTPS ``/mutate`` that is
verified with that CA under the Service's name, as the API server calls it."""

from __future__ import annotations

import base64
import copy
import json
import ssl

import httpx
import pytest

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin, json_patch
from tests.test_webhook import as_created, review

from .conftest import NAMESPACE, https_api, listening, running
from .pod import Workload


def setting(container: dict, name: str) -> str:
    return next(e["value"] for e in container["env"] if e["name"] == name)


def test_webhook_answers_mutate_over_https_with_the_ca_it_published(image, manifests, tmp_path):
    workload = Workload(manifests, "Deployment", "linstor-scheduler-webhook")
    c = workload.container("webhook")
    port = int(setting(c, "LINSTOR_SCHEDULER_PORT"))
    metrics_port = int(setting(c, "LINSTOR_SCHEDULER_METRICS_PORT"))
    config_name = setting(c, "LINSTOR_SCHEDULER_WEBHOOK_CONFIG_NAME")
    service = setting(c, "LINSTOR_SCHEDULER_SERVICE_NAME")
    ks = KubeStandin()
    (config,) = [o for o in manifests if o["kind"] == "MutatingWebhookConfiguration"]
    ks.add(copy.deepcopy(config))
    ks.add(k.storage_class("linstor-r2"))
    ks.add(k.pvc("data", namespace="apps", storage_class="linstor-r2"))

    def published() -> str | None:
        return ks.get("MutatingWebhookConfiguration", config_name)["webhooks"][0]["clientConfig"].get("caBundle")

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    with https_api(ks, tmp_path) as api, running(workload, "webhook", image, tmp_path, kube=api) as webhook:
        webhook.wait_until(published, "the caBundle in the MutatingWebhookConfiguration")
        webhook.wait_until(ready, "the webhook is ready")
        webhook.wait_until(lambda: listening(port), "the webhook's HTTPS port listens")
        ca = tmp_path / "published-ca.crt"
        ca.write_bytes(base64.b64decode(published()))
        body = review(as_created(k.pod("db", namespace="apps", claims=["data"])), namespace="apps")
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=5,
                          verify=ssl.create_default_context(cafile=str(ca))) as client:
            sni = {"sni_hostname": f"{service}.{NAMESPACE}.svc"}
            answer = client.post("/mutate", json=body, extensions=sni).json()["response"]
        # A new connection under the address: not a name the certificate holds.
        with httpx.Client(timeout=5, verify=ssl.create_default_context(cafile=str(ca))) as stranger, \
                pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            stranger.post(f"https://127.0.0.1:{port}/mutate", json=body)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert answer["uid"] == body["request"]["uid"] and answer["allowed"] is True
    patched = json_patch(as_created(k.pod("db", namespace="apps", claims=["data"])),
                         json.loads(base64.b64decode(answer["patch"])))
    assert patched["spec"]["schedulerName"] == "linstor"
    assert 'linstor_scheduler_webhook_reviews_total{outcome="mutated"} 1.0' in metrics
    secret = ks.get("Secret", setting(c, "LINSTOR_SCHEDULER_TLS_SECRET"), NAMESPACE)
    assert base64.b64decode(secret["data"]["ca.crt"]) == ca.read_bytes(), "one CA: the Secret's"
    assert webhook.process.returncode in (0, 143) and "Application shutdown complete" in webhook.output()
