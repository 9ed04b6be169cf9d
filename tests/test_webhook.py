"""The scheduler-name webhook over HTTPS, against the Kubernetes API stand-in.

Real AdmissionReview v1 bodies go over TLS to the app the CLI runs (``build_webhook_app``); the
client trusts only the CA the webhook made and published into the MutatingWebhookConfiguration.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import socket
import ssl
import uuid
import warnings
from typing import Any

import httpx
import orjson
import pytest

from admission import OPT_OUT_LABEL, OPT_OUT_VALUE
from admission.http import create_app
from admission.metrics import WebhookMetrics
from admission.review import Lookups, SchedulerNameMutator
from admission.tls import CaBundlePublisher, generate_bundle, load_or_create, service_names
from admission.wiring import build_webhook_app
from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin, json_patch
from linstor_scheduler.httpserver import ServerThread

from .waiting import free_ports, stop_child, wait_for

NS = "linstor-scheduler"
CONFIG = "linstor-scheduler"
SECRET = "linstor-scheduler-webhook-tls"
NAMES = [*service_names("linstor-scheduler-webhook", NS), "127.0.0.1"]


def webhook_configuration() -> dict[str, Any]:
    hook = {"name": "schedulername.linstor.csi.linbit.com", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": "Ignore",
            "clientConfig": {"service": {"namespace": NS, "name": "linstor-scheduler-webhook", "path": "/mutate"}}}
    return {"kind": "MutatingWebhookConfiguration", "metadata": {"name": CONFIG}, "webhooks": [hook]}


def review(pod: dict[str, Any] | None, *, operation: str = "CREATE", kind: str = "Pod",
           namespace: str = "default") -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
        "requestKind": {"group": "", "version": "v1", "kind": kind},
        "operation": operation, "namespace": namespace,
        "userInfo": {"username": "system:serviceaccount:kube-system:statefulset-controller"},
        "dryRun": False, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    if pod is not None:
        request["object"] = pod
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def as_created(pod: dict[str, Any], scheduler: str | None = None) -> dict[str, Any]:
    """A pod as the API server hands it to a webhook: no namespace in its metadata yet, and
    ``schedulerName`` absent unless the workload set one."""
    pod = copy.deepcopy(pod)
    pod["metadata"].pop("namespace", None)
    pod["spec"].pop("schedulerName", None)
    if scheduler is not None:
        pod["spec"]["schedulerName"] = scheduler
    return pod


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ks = KubeStandin()
    ks.add(k.storage_class("linstor-r2"))
    ks.add(k.storage_class("other-sc", provisioner="ebs.csi.aws.com"))
    for obj in k.bound_volume("data-db-0", "pvc-1111"):
        ks.add(obj)
    ks.add(k.pvc("waiting", storage_class="linstor-r2"))
    ks.add(k.pvc("elsewhere", storage_class="other-sc", volume="pv-ebs"))
    ks.add(k.pv("pv-ebs", claim=("default", "elsewhere"), storage_class="other-sc", driver="ebs.csi.aws.com"))
    ks.add(webhook_configuration())
    with ks.serve() as kube:
        api = ks.api_client(kube.url)
        bundle = load_or_create(api, NS, SECRET, NAMES)
        ca_file, cert_file, key_file = bundle.write(tmp_path_factory.mktemp("tls"))
        publisher = CaBundlePublisher(api, CONFIG, bundle.ca_pem, interval=0.05)
        app = build_webhook_app(api, publisher=publisher)
        with ServerThread(app, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as srv:
            client = httpx.Client(base_url=srv.url, verify=ssl.create_default_context(cafile=str(ca_file)),
                                  timeout=10)
            wait_for(lambda: client.get("/readyz").status_code == 200, what="webhook ready")
            yield {"ks": ks, "api": api, "url": srv.url, "client": client, "bundle": bundle, "ca_file": ca_file,
                   "app": app}
            client.close()


def post(cluster, body: Any) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return cluster["client"].post("/mutate", content=raw, headers={"Content-Type": "application/json"})


def answer(cluster, body: dict[str, Any]) -> dict[str, Any]:
    resp = post(cluster, body)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    assert doc["response"]["uid"] == body["request"]["uid"]
    assert doc["response"]["allowed"] is True
    return doc["response"]


MUTATED = {
    "bound LINSTOR PV": lambda: k.pod("db-0", claims=["data-db-0"]),
    "unbound claim of a LINSTOR class": lambda: k.pod("w", claims=["waiting"]),
    "generic ephemeral volume of a LINSTOR class": lambda: k.pod(
        "e", ephemeral={"scratch": k.claim_template("linstor-r2")}),
    "LINSTOR claim next to a foreign one": lambda: k.pod("mix", claims=["elsewhere", "data-db-0"]),
}


@pytest.mark.parametrize("scheduler", [None, "default-scheduler"])
@pytest.mark.parametrize("case", list(MUTATED))
def test_linstor_pods_get_the_linstor_scheduler(cluster, case, scheduler):
    pod = as_created(MUTATED[case](), scheduler)
    resp = answer(cluster, review(pod))
    assert resp["patchType"] == "JSONPatch"
    ops = orjson.loads(base64.b64decode(resp["patch"]))
    assert ops == [{"op": "add", "path": "/spec/schedulerName", "value": "linstor"}]
    assert json_patch(pod, ops)["spec"]["schedulerName"] == "linstor"


LEFT_ALONE = {
    "no volumes": (lambda: as_created(k.pod("plain")), {}),
    "foreign driver only": (lambda: as_created(k.pod("ebs", claims=["elsewhere"])), {}),
    "claim nobody has seen": (lambda: as_created(k.pod("ghost", claims=["no-such-claim"])), {}),
    "ephemeral volume of a foreign class": (
        lambda: as_created(k.pod("e2", ephemeral={"s": k.claim_template("other-sc")})), {}),
    "another scheduler": (lambda: as_created(k.pod("db-1", claims=["data-db-0"]), "volcano"), {}),
    "already linstor": (lambda: as_created(k.pod("db-2", claims=["data-db-0"]), "linstor"), {}),
    "opted out by label": (
        lambda: as_created(k.pod("db-3", claims=["data-db-0"], labels={OPT_OUT_LABEL: OPT_OUT_VALUE})), {}),
    "an update": (lambda: as_created(k.pod("db-4", claims=["data-db-0"])), {"operation": "UPDATE"}),
    "not a pod": (lambda: {"metadata": {"name": "cm"}, "data": {}}, {"kind": "ConfigMap"}),
}


@pytest.mark.parametrize("case", list(LEFT_ALONE))
def test_other_pods_are_allowed_unchanged(cluster, case):
    make, options = LEFT_ALONE[case]
    resp = answer(cluster, review(make(), **options))
    assert "patch" not in resp and "patchType" not in resp


def test_ephemeral_volume_without_class_follows_the_default_class(cluster):
    ks = cluster["ks"]
    template = k.claim_template("x")
    del template["spec"]["storageClassName"]
    pod = as_created(k.pod("defaulted", ephemeral={"scratch": template}))
    assert "patch" not in answer(cluster, review(pod)), "no default class yet: not ours"
    sc = k.storage_class("linstor-default")
    sc["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    ks.add(sc)
    try:
        caches = cluster["app"].state.caches
        wait_for(lambda: caches["StorageClass"].get("linstor-default") is not None, what="default class cached")
        assert "patch" in answer(cluster, review(pod))
    finally:
        ks.delete("StorageClass", "linstor-default")


@pytest.mark.parametrize("body,message", [
    (b"{not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b"", "not JSON"),
    ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}, "apiVersion"),
    ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request"),
    ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
      "request": {"kind": {"kind": "Pod", "version": "v1"}, "operation": "CREATE"}}, "uid"),
    (review(None), "needs the pod"),
    (review({"metadata": {"name": "x"}, "spec": "nonsense"}), "spec"),
])
def test_bad_bodies_are_400_with_a_message(cluster, body, message):
    resp = post(cluster, body)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]


def test_served_only_to_clients_that_trust_our_ca(cluster):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(cluster["url"] + "/healthz", verify=ssl.create_default_context())
    # The name the API server uses for the Service verifies too (SNI + hostname check on that name).
    ctx = ssl.create_default_context(cafile=str(cluster["ca_file"]))
    with httpx.Client(verify=ctx) as client:
        resp = client.get(cluster["url"] + "/healthz",
                          extensions={"sni_hostname": f"linstor-scheduler-webhook.{NS}.svc"})
    assert resp.status_code == 200 and resp.text == "informers running; caBundle publisher turning"


def test_ca_bundle_is_published_and_kept(cluster):
    ks, bundle = cluster["ks"], cluster["bundle"]
    ours = base64.b64encode(bundle.ca_pem).decode()

    def current() -> str | None:
        return ks.get("MutatingWebhookConfiguration", CONFIG)["webhooks"][0]["clientConfig"].get("caBundle")

    wait_for(lambda: current() == ours, what="caBundle published")
    ks.patch("MutatingWebhookConfiguration", CONFIG,
             {"webhooks": [{**webhook_configuration()["webhooks"][0],
                            "clientConfig": {"caBundle": base64.b64encode(b"stale").decode()}}]})
    assert current() != ours
    wait_for(lambda: current() == ours, what="caBundle restored after drift")


def test_replicas_share_one_certificate_and_a_bad_secret_is_replaced(cluster):
    ks, api, bundle = cluster["ks"], cluster["api"], cluster["bundle"]
    again = load_or_create(api, NS, SECRET, NAMES)
    assert again == bundle, "a second replica must serve from the same CA"
    secret = ks.get("Secret", SECRET, NS)
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    other = load_or_create(api, NS, "other-tls", ["a.example"])
    renamed = load_or_create(api, NS, "other-tls", ["b.example"])
    assert renamed != other and renamed.covers(["b.example"]) and not renamed.covers(["a.example"])
    assert load_or_create(api, NS, "other-tls", ["b.example"]) == renamed


def test_metrics_count_reviews_by_outcome(cluster):
    def count(outcome: str) -> float:
        text = cluster["client"].get("/metrics").text
        line = f'linstor_scheduler_webhook_reviews_total{{outcome="{outcome}"}} '
        found = [ln for ln in text.splitlines() if ln.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    before = {o: count(o) for o in ("mutated", "no_linstor_volume", "bad_request")}
    answer(cluster, review(as_created(k.pod("m1", claims=["data-db-0"]))))
    answer(cluster, review(as_created(k.pod("m2"))))
    post(cluster, b"nope")
    assert count("mutated") == before["mutated"] + 1
    assert count("no_linstor_volume") == before["no_linstor_volume"] + 1
    assert count("bad_request") == before["bad_request"] + 1
    assert "linstor_scheduler_webhook_ready 1.0" in cluster["client"].get("/metrics").text


def test_claim_missing_from_the_cache_is_read_once(tmp_path):
    """A StatefulSet's PVC created a moment before its pod: the cache may not have it yet."""
    ks = KubeStandin()
    ks.add(k.storage_class("linstor-r2"))
    with ks.serve() as kube:
        api = ks.api_client(kube.url)
        metrics = WebhookMetrics()
        app = build_webhook_app(api, metrics=metrics)
        caches = app.state.caches
        caches.start()
        try:
            assert caches.wait_synced(10)
        finally:
            caches.stop()  # from here on the cache cannot learn of the new PVC
        ks.add(k.pvc("data-web-0", storage_class="linstor-r2"))
        with ServerThread(app) as srv:  # plain HTTP: this test is about the lookup, TLS is tested above
            resp = httpx.post(srv.url + "/mutate", json=review(as_created(k.pod("web-0", claims=["data-web-0"]))))
        assert resp.status_code == 200
        assert resp.json()["response"]["patchType"] == "JSONPatch"
        assert metrics.direct_reads.labels("miss", "found")._value.get() == 1
        assert ks.count("GET", "/api/v1/namespaces/default/persistentvolumeclaims/data-web-0") == 1


def test_an_unready_webhook_still_judges_from_its_lookups_and_readyz_says_503():
    """Readiness is about the view's age and the CA; a review is judged from what the look-ups say
    (lookups.py reads around a stale cache), never answered "not ours" because of readiness."""
    from linstor_scheduler.volumes import StorageClassInfo

    sc = StorageClassInfo.from_object(k.storage_class("linstor-r2"))
    lookups = Lookups(lambda _: k.pvc("x", storage_class="linstor-r2"), lambda _: None, lambda _: sc)
    app = create_app(SchedulerNameMutator(lookups), is_ready=lambda: False)
    with ServerThread(app) as srv:
        body = review(as_created(k.pod("early", claims=["x"])))
        resp = httpx.post(srv.url + "/mutate", json=body)
        ready = httpx.get(srv.url + "/readyz")
    assert resp.status_code == 200 and resp.json()["response"]["patchType"] == "JSONPatch"
    assert resp.json()["response"]["uid"] == body["request"]["uid"]
    assert ready.status_code == 503 and ready.json()["ready"] is False


def test_a_claim_that_cannot_be_looked_up_is_sent_to_the_profile_never_not_ours():
    """A failed look-up is not "no LINSTOR volume": the unknown-claims rule (docs/install.md) sends
    the pod to the linstor profile, counts it ``unknown`` and names the reason to ``on_unknown``
    (the Warning Event). Another claim known to be LINSTOR decides as ever (``mutated``)."""
    from admission.review import LookupFailed
    from linstor_scheduler.volumes import StorageClassInfo

    def failing(key):
        if key == "default/unreadable":
            raise LookupFailed("PersistentVolumeClaim default/unreadable: API error 429 Too Many Requests")
        return k.pvc("ok", storage_class="linstor-r2")

    sc = StorageClassInfo.from_object(k.storage_class("linstor-r2"))
    metrics = WebhookMetrics()
    told = []
    app = create_app(SchedulerNameMutator(Lookups(failing, lambda _: None, lambda _: sc)), is_ready=lambda: True,
                     metrics=metrics, on_unknown=lambda pod, ns, reason: told.append((pod["metadata"]["name"], reason)))
    with ServerThread(app) as srv:
        alone = httpx.post(srv.url + "/mutate", json=review(as_created(k.pod("a", claims=["unreadable"]))))
        beside = httpx.post(srv.url + "/mutate",
                            json=review(as_created(k.pod("b", claims=["unreadable", "ok"]))))
    assert alone.status_code == 200 and alone.json()["response"]["patchType"] == "JSONPatch"
    assert orjson.loads(base64.b64decode(alone.json()["response"]["patch"])) == [
        {"op": "add", "path": "/spec/schedulerName", "value": "linstor"}]
    assert [name for name, _ in told] == ["a"] and "429 Too Many Requests" in told[0][1]
    assert beside.status_code == 200 and beside.json()["response"]["patchType"] == "JSONPatch"
    assert metrics.reviews.labels("unknown")._value.get() == 1
    assert metrics.reviews.labels("mutated")._value.get() == 1


def test_scheduler_name_is_configurable():
    sc = k.storage_class("linstor-r2")
    from linstor_scheduler.volumes import StorageClassInfo

    lookups = Lookups(lambda _: k.pvc("x", storage_class="linstor-r2"), lambda _: None,
                      lambda name: StorageClassInfo.from_object(sc) if name == "linstor-r2" else None)
    from admission.review import parse_review

    req = parse_review(orjson.dumps(review(as_created(k.pod("p", claims=["x"]))))).request
    verdict = SchedulerNameMutator(lookups, "linstor-nvme").review(req)
    assert verdict.patch == [{"op": "add", "path": "/spec/schedulerName", "value": "linstor-nvme"}]


def test_generated_certificate_names_and_lifetime():
    bundle = generate_bundle(["svc.ns.svc", "10.0.0.1"])
    assert bundle.covers(["svc.ns.svc", "10.0.0.1"])
    assert not bundle.covers(["other.ns.svc"])
    import datetime as dt

    assert not bundle.covers(["svc.ns.svc"], now=dt.datetime.now(dt.UTC) + dt.timedelta(days=3650 - 10)), \
        "a certificate within the renewal margin of its end must be replaced"


def test_the_webhook_subcommand_end_to_end(tmp_path, tls11_possible):
    """``linstor-scheduler webhook`` as deploy/ runs it: env vars only, self-signed via the Secret,
    caBundle published, certificate files in $TMPDIR, answering over HTTPS."""
    import os
    import signal
    import subprocess
    import sys

    ks = KubeStandin()
    ks.add(k.storage_class("linstor-r2"))
    ks.add(k.pvc("data", namespace="apps", storage_class="linstor-r2"))
    ks.add(webhook_configuration())
    port, metrics_port = free_ports(2)
    with ks.serve() as kube:
        env = {**os.environ, "LINSTOR_SCHEDULER_KUBE_API_URL": kube.url, "POD_NAMESPACE": NS,
               "LINSTOR_SCHEDULER_PORT": str(port), "LINSTOR_SCHEDULER_LISTEN_ADDRESS": "127.0.0.1",
               "LINSTOR_SCHEDULER_METRICS_PORT": str(metrics_port),
               "LINSTOR_SCHEDULER_METRICS_ADDRESS": "127.0.0.1",
               "LINSTOR_SCHEDULER_CA_BUNDLE_INTERVAL": "0.2", "TMPDIR": str(tmp_path)}
        child = subprocess.Popen([sys.executable, "-m", "linstor_scheduler.cli", "webhook"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: ks.get("Secret", SECRET, NS) is not None or child.poll() is not None, timeout=20,
                     what="the webhook's Secret")
            assert child.poll() is None, child.stdout.read().decode()
            ca = base64.b64decode(ks.get("Secret", SECRET, NS)["data"]["ca.crt"])
            ca_file = tmp_path / "trusted-ca.crt"
            ca_file.write_bytes(ca)
            wait_for(lambda: (ks.get("MutatingWebhookConfiguration", CONFIG)["webhooks"][0]["clientConfig"]
                              .get("caBundle")) == base64.b64encode(ca).decode(), timeout=20, what="caBundle")
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=5,
                              verify=ssl.create_default_context(cafile=str(ca_file))) as client:
                # The certificate names the Service, as the API server calls it; we connect to loopback.
                sni = {"sni_hostname": f"linstor-scheduler-webhook.{NS}.svc"}

                def ready() -> bool:  # kubelet's probe: plain HTTP on the metrics port
                    try:
                        return httpx.get(f"http://127.0.0.1:{metrics_port}/readyz").status_code == 200
                    except httpx.TransportError:
                        return False

                wait_for(ready, timeout=20, what="webhook ready")
                resp = client.post("/mutate", extensions=sni, json=review(
                    as_created(k.pod("db", namespace="apps", claims=["data"])), namespace="apps"))
                # The API server's port answers /mutate and nothing else.
                others = [client.request(m, path, extensions=sni).status_code for m, path in (
                    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/docs"),
                    ("POST", "/filter"), ("GET", "/"), ("POST", "/mutate/x"))]
                assert others == [404] * len(others)
                assert client.get("/mutate", extensions=sni).status_code == 405
                assert_tls_below_1_2_refused("127.0.0.1", port, tls11_possible)
            assert resp.json()["response"]["patchType"] == "JSONPatch"
            # ... and the metrics port has no /mutate: Prometheus cannot post reviews.
            assert httpx.post(f"http://127.0.0.1:{metrics_port}/mutate", json={}).status_code == 404
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert 'linstor_scheduler_webhook_reviews_total{outcome="mutated"} 1.0' in text
            assert any(p.name.startswith("webhook-tls-") for p in tmp_path.iterdir()), "files go to $TMPDIR"
        finally:
            stop_child(child)
    output = child.stdout.read().decode()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught: -15 is a clean stop.
    assert child.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output


def test_a_mounted_certificate_is_renewed_without_a_restart(tmp_path):
    """cert-manager's way (--tls-cert-file, --tls-key-file): when the kubelet swaps the Secret's files,
    the next connection gets the new certificate from the same process (servingtls.py)."""
    import os
    import subprocess
    import sys

    from .test_extender_https import SecretVolume, der

    first, second = generate_bundle(["127.0.0.1"]), generate_bundle(["127.0.0.1"])
    secret = SecretVolume(tmp_path / "secret")
    secret.write({"tls.crt": first.cert_pem, "tls.key": first.key_pem})
    ks = KubeStandin()
    port, metrics_port = free_ports(2)
    with ks.serve() as kube:
        env = {**os.environ, "LINSTOR_SCHEDULER_KUBE_API_URL": kube.url, "POD_NAMESPACE": NS,
               "LINSTOR_SCHEDULER_PORT": str(port), "LINSTOR_SCHEDULER_LISTEN_ADDRESS": "127.0.0.1",
               "LINSTOR_SCHEDULER_METRICS_PORT": str(metrics_port), "LINSTOR_SCHEDULER_METRICS_ADDRESS": "127.0.0.1",
               "LINSTOR_SCHEDULER_TLS_CERT_FILE": secret.path("tls.crt"),
               "LINSTOR_SCHEDULER_TLS_KEY_FILE": secret.path("tls.key"), "LINSTOR_SCHEDULER_DRAIN_SECONDS": "0"}
        child = subprocess.Popen([sys.executable, "-m", "linstor_scheduler.cli", "webhook"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def served(ca: bytes) -> bytes | None:
            ctx = ssl.create_default_context(cadata=ca.decode())
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    return tls.getpeercert(binary_form=True)
            except (ssl.SSLError, OSError):
                return None

        try:
            wait_for(lambda: child.poll() is not None or served(first.ca_pem) is not None, timeout=30,
                     what="the webhook's HTTPS port")
            assert served(first.ca_pem) == der(first.cert_pem), child.stdout.read().decode()
            secret.write({"tls.crt": second.cert_pem, "tls.key": second.key_pem})
            assert served(second.ca_pem) == der(second.cert_pem) and served(first.ca_pem) is None
            assert child.poll() is None
        finally:
            stop_child(child)


def tls11_client_context() -> ssl.SSLContext:
    """A client that offers TLS 1.1 only (security level 0: OpenSSL 3 refuses TLS 1.1 above it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # deprecated: which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def handshake(host: str, port: int, ctx: ssl.SSLContext) -> str | None:
    """The protocol version negotiated with ``host:port``, or None when the handshake is refused."""
    import socket

    with socket.create_connection((host, port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                return tls.version()
        except (ssl.SSLError, ConnectionResetError):
            return None


@pytest.fixture(scope="module")
def tls11_possible(tmp_path_factory):
    """Whether this machine's OpenSSL can speak TLS 1.1 at all: a server that allows it, asked by the
    TLS 1.1 client. Without it, a refused handshake would prove nothing about our floor."""
    import socket
    import threading

    bundle = generate_bundle(["127.0.0.1"])
    _, cert, key = bundle.write(tmp_path_factory.mktemp("tls11"))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    try:
        server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError):
        return False
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError), server_ctx.wrap_socket(conn, server_side=True):
                pass
            conn.close()

        worker = threading.Thread(target=accept, daemon=True)
        worker.start()
        try:
            version = handshake("127.0.0.1", listener.getsockname()[1], tls11_client_context())
        except (ssl.SSLError, OSError):
            version = None
        worker.join(5)
    return version == "TLSv1.1"


def assert_tls_below_1_2_refused(host: str, port: int, tls11_possible: bool) -> None:
    if tls11_possible:
        assert handshake(host, port, tls11_client_context()) is None, "a TLS 1.1 handshake was accepted"
    modern = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    modern.check_hostname, modern.verify_mode = False, ssl.CERT_NONE
    modern.minimum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(host, port, modern) in ("TLSv1.2", "TLSv1.3")


def test_our_tls_floor_holds_whatever_context_uvicorn_makes(tmp_path, monkeypatch):
    """Python 3.10+ starts server contexts at TLS 1.2 itself; ``loaded_config`` (what the webhook's
    CLI serves with) does not rely on that: a context that uvicorn made allowing TLS 1.0 (an older
    Python, a changed default, an ``ssl_version`` option) is raised to TLS 1.2."""
    import uvicorn.config

    from linstor_scheduler.httpserver import loaded_config

    made = uvicorn.config.create_ssl_context

    def permissive(*args, **kwargs):
        ctx = made(*args, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        return ctx

    monkeypatch.setattr(uvicorn.config, "create_ssl_context", permissive)
    _, cert, key = generate_bundle(["127.0.0.1"]).write(tmp_path)
    config = loaded_config(None, ssl_certfile=str(cert), ssl_keyfile=str(key))
    assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert loaded_config(None).ssl is None  # plain HTTP stays plain


def test_tls_before_1_2_is_refused(cluster, tls11_possible):
    """A TLS 1.1 handshake with the webhook's server, tried for real where this OpenSSL can speak TLS 1.1."""
    host, port = cluster["url"].removeprefix("https://").rsplit(":", 1)
    assert_tls_below_1_2_refused(host, int(port), tls11_possible)
    if not tls11_possible:
        pytest.skip("this OpenSSL cannot speak TLS 1.1 at all: only TLS 1.2+ handshakes were checked")



def test_every_webhook_metric_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    for family in WebhookMetrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}" in doc, f"docs/operations.md does not document {name}"


@pytest.mark.parametrize("pod", [
    {"metadata": [], "spec": {"volumes": "nonsense"}},
    {"metadata": {"labels": ["x"]}, "spec": {"volumes": [None, 3, {"name": "v", "persistentVolumeClaim": {}}]}},
    {"metadata": {}, "spec": {"volumes": [{"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": "x"}}}]}},
    {"metadata": {}, "spec": {"schedulerName": 7, "volumes": []}},
])
def test_odd_pods_never_get_a_500(cluster, pod):
    resp = post(cluster, review(pod))
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 200:
        assert resp.json()["response"]["allowed"] is True and "patch" not in resp.json()["response"]
