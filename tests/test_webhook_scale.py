"""Issue 24: the webhook under load, rotation and scale; no pod silently keeps the default scheduler.

Every case calls ``/mutate`` over HTTPS as kube-apiserver does (``ApiServer``): it trusts only the
``caBundle`` of the MutatingWebhookConfiguration as it is at that moment, gives up after the
configuration's ``timeoutSeconds``, and with ``failurePolicy: Ignore`` admits the pod unchanged when
the call errs, times out or fails TLS (k8s.io/apiserver ``webhook/mutating/dispatcher.go``). What a
case checks is the pod as it would be created: its ``schedulerName``. Each case prints its measured
time (``pytest -s``); the figures are in docs/operations.md, "Webhook (load)".
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from admission.tls import generate_bundle, service_names
from admission.wiring import build_webhook_app
from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.kube import make_api_client

from .probing import Measurements
from .test_chaos_webhook import review
from .waiting import free_ports, stop_child, wait_for

NS = "linstor-scheduler"
CONFIG = "linstor-scheduler"
SECRET = "linstor-scheduler-webhook-tls"
SERVICE = "linstor-scheduler-webhook"
SNI = f"{SERVICE}.{NS}.svc"
TIMEOUT = 5  # the configuration's timeoutSeconds, as deploy/ sets it
PVCS = "/api/v1/namespaces/default/persistentvolumeclaims/"
measured = Measurements("webhook (load)")


def configuration(ca_bundle: str | None = None, timeout: int = TIMEOUT) -> dict[str, Any]:
    client: dict[str, Any] = {"service": {"namespace": NS, "name": SERVICE, "path": "/mutate", "port": 443}}
    if ca_bundle:
        client["caBundle"] = ca_bundle
    hook = {"name": "schedulername.linstor.csi.linbit.com", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": "Ignore", "timeoutSeconds": timeout, "clientConfig": client}
    return {"kind": "MutatingWebhookConfiguration", "metadata": {"name": CONFIG}, "webhooks": [hook]}



@dataclass
class Admitted:
    scheduler: str  # the created pod's schedulerName
    how: str  # "answered", or why the API server failed open
    seconds: float


@functools.lru_cache(maxsize=16)
def trusting(bundle: str) -> ssl.SSLContext:
    """A client context that trusts exactly this caBundle (one per value: as the API server caches it)."""
    return ssl.create_default_context(cadata=base64.b64decode(bundle).decode())


class ApiServer:
    """Calls a webhook replica as kube-apiserver does, reading the configuration at each call."""

    def __init__(self, ks: KubeStandin) -> None:
        self.ks = ks

    def hook(self) -> dict[str, Any]:
        return self.ks.get("MutatingWebhookConfiguration", CONFIG)["webhooks"][0]

    def trust(self) -> ssl.SSLContext | None:
        bundle = (self.hook().get("clientConfig") or {}).get("caBundle")
        return trusting(bundle) if bundle else None

    def admit(self, url: str, pod: dict[str, Any]) -> Admitted:
        timeout = float(self.hook().get("timeoutSeconds") or 10)
        began = time.monotonic()
        trust = self.trust()
        if trust is None:
            return Admitted("default-scheduler", "failed open: no caBundle", 0.0)
        try:
            with httpx.Client(verify=trust, timeout=timeout) as client:
                r = client.post(url + "/mutate", content=orjson.dumps(review(pod)), extensions={"sni_hostname": SNI},
                                headers={"Content-Type": "application/json"})
        except (httpx.HTTPError, ssl.SSLError) as exc:
            return Admitted("default-scheduler", f"failed open: {type(exc).__name__}: {exc}",
                            time.monotonic() - began)
        took = time.monotonic() - began
        if took > timeout:
            return Admitted("default-scheduler", "failed open: context deadline exceeded", took)
        if r.status_code != 200:
            return Admitted("default-scheduler", f"failed open: HTTP {r.status_code}: {r.text[:200]}", took)
        response = r.json()["response"]
        scheduler = "default-scheduler"
        if response.get("patchType") == "JSONPatch":
            for op in orjson.loads(base64.b64decode(response["patch"])):
                if op["path"] == "/spec/schedulerName":
                    scheduler = op["value"]
        return Admitted(scheduler, "answered", took)


@dataclass
class Rig:
    ks: KubeStandin
    url: str
    http: httpx.Client
    apiserver: ApiServer
    app: Any
    loop: Any  # the server's event loop

    def admit(self, pod: dict[str, Any]) -> Admitted:
        return self.apiserver.admit(self.url, pod)

    def counted(self, family: str, **labels: str) -> float:
        want = [f'{k_}="{v}"' for k_, v in labels.items()]
        total = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.split("{")[0] == family and all(w in name for w in want):
                total += float(value)
        return total


def cluster() -> KubeStandin:
    ks = KubeStandin()
    ks.add(k.storage_class("linstor-r2"))
    ks.add(k.storage_class("other-sc", provisioner="ebs.csi.aws.com"))
    for obj in k.bound_volume("data-db-0", "pvc-1111", storage_class="linstor-r2"):
        ks.add(obj)
    return ks


@contextlib.contextmanager
def webhook(tmp_path, ks: KubeStandin | None = None, **settings: Any) -> Iterator[Rig]:
    """The CLI's assembly (``build_webhook_app``) at the CLI's defaults, over HTTPS; its CA is in
    the configuration (how it gets there is tested below, with the subcommand)."""
    ks = ks or cluster()
    bundle = generate_bundle([*service_names(SERVICE, NS), "127.0.0.1"])
    _, cert_file, key_file = bundle.write(tmp_path / "tls")
    ks.add(configuration(base64.b64encode(bundle.ca_pem).decode(), settings.pop("config_timeout", TIMEOUT)))
    with ks.serve() as kube:
        api = make_api_client(host=kube.url, timeout=10)  # as the CLI makes it (--api-timeout 10)
        app = build_webhook_app(api, **settings)
        with ServerThread(app, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as srv, \
                httpx.Client(base_url=srv.url, timeout=10, verify=False) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, what="webhook ready")
            rig = Rig(ks, srv.url, http, ApiServer(ks), app, srv.loop)
            assert rig.admit(k.pod("db-0", claims=["data-db-0"])).scheduler == "linstor"
            try:
                yield rig
            finally:
                ks.reset_faults()
                ks.release_hangs()


def unseen_claims(rig: Rig, *names: str) -> None:
    """Claims of a LINSTOR class the webhook's cache has not seen yet (a StatefulSet controller creates
    them a moment before the pod): its PVC watch is silent while they are created."""
    rig.ks.silent_watches("/api/v1/persistentvolumeclaims")
    for name in names:
        rig.ks.add(k.pvc(name, storage_class="linstor-r2"))


# --- 1. a slow API server ------------------------------------------------------------------------------

def test_two_unseen_claims_on_a_slow_api_server_are_read_in_parallel_in_time(tmp_path):
    """Each direct read takes 1.5 s. Read one after another within one 1 s budget, the claims were
    unknown and the pod was admitted unchanged; read in parallel within the review's deadline
    (below timeoutSeconds), the pod gets the linstor scheduler in about one read's time."""
    with webhook(tmp_path) as rig:
        unseen_claims(rig, "data-web-0", "logs-web-0")
        rig.ks.slow(1.5, path_prefix=PVCS)
        got = rig.admit(k.pod("web-0", claims=["data-web-0", "logs-web-0"]))
        measured("two unseen claims, reads of 1.5 s: answered in", got.seconds)
        assert got.scheduler == "linstor", got
        assert got.seconds < 1.5 * 2, "the two reads went out together"
        for name in ("data-web-0", "logs-web-0"):
            assert rig.ks.count("GET", PVCS + name) == 1, "each claim read once, no hidden retry"


def test_slow_reviews_do_not_hold_up_a_review_the_cache_answers(tmp_path):
    """40 pods whose claims the cache lacks, on an API server that answers no read: each review waits
    for its reads. A pod whose claim is cached is answered at once all the same, and every one of the
    40 is answered before timeoutSeconds (sent to the linstor profile: its claims are unknown)."""
    with webhook(tmp_path) as rig:
        names = [f"data-app-{i}" for i in range(40)]
        unseen_claims(rig, *names)
        rig.ks.hang(path_prefix=PVCS)
        with ThreadPoolExecutor(41) as pool:
            slow = [pool.submit(rig.admit, k.pod(f"app-{i}", claims=[name])) for i, name in enumerate(names)]
            # the 40 are being judged: the webhook's read pool (--lookup-workers, 8 by default) is full of
            # reads the hung API server holds
            wait_for(lambda: rig.ks.hung_requests() >= 8, timeout=5, what="the webhook's read pool held")
            cached = rig.admit(k.pod("db-0", claims=["data-db-0"]))
            answers = [f.result() for f in slow]
        measured("a cached claim's pod during 40 hung reviews: answered in", cached.seconds)
        measured("40 reviews whose reads hang: the slowest answered in", max(a.seconds for a in answers))
        assert cached.scheduler == "linstor" and cached.seconds < 1.0, cached
        assert all(a.scheduler == "linstor" and a.how == "answered" for a in answers), \
            [a for a in answers if a.scheduler != "linstor"][:3]


def test_an_ephemeral_claim_is_judged_from_its_template_never_read(tmp_path):
    """A generic ephemeral volume's claim (``<pod>-<volume>``) is made by the ephemeral volume
    controller after the pod: it cannot exist yet, and reading it is a round trip to the API server
    per pod (a hung one made the pod unknown). Its template says everything."""
    with webhook(tmp_path) as rig:
        rig.ks.hang(path_prefix=PVCS)
        got = rig.admit(k.pod("e", ephemeral={"scratch": k.claim_template("linstor-r2")}))
        measured("a pod with an ephemeral volume, the API server hung: answered in", got.seconds)
        assert got.scheduler == "linstor" and got.seconds < 0.5, got
        assert rig.ks.count("GET", PVCS + "e-scratch") == 0


def test_a_claim_that_cannot_be_read_in_time_sends_the_pod_to_the_linstor_profile(tmp_path):
    """The unknown-claims rule (docs/install.md): the profile schedules any pod correctly, so a pod
    whose claims are unknown gets it; counted (``outcome="unknown"``), and a Warning Event
    ``LinstorClaimsUnknown`` names the pod."""
    with webhook(tmp_path) as rig:
        unseen_claims(rig, "data-web-1")
        rig.ks.hang(path_prefix=PVCS)
        got = rig.admit(k.pod("web-1", claims=["data-web-1"]))
        measured("an unknown claim (read hung): answered in", got.seconds)
        assert got.scheduler == "linstor" and got.how == "answered", got
        assert got.seconds < TIMEOUT - 0.5, "the review's deadline is below timeoutSeconds"
        assert rig.ks.count("GET", PVCS + "data-web-1") == 1
        assert rig.counted("linstor_scheduler_webhook_reviews_total", outcome="unknown") == 1
        assert rig.counted("linstor_scheduler_webhook_reviews_total", outcome="mutated") == 1  # db-0 only
        rig.ks.reset_faults()
        rig.ks.release_hangs()

        def event() -> dict[str, Any] | None:
            found = [e for e in rig.ks.list("Event", "default") if e.get("reason") == "LinstorClaimsUnknown"]
            return found[0] if found else None

        wait_for(event, what="the Warning Event")
        ev = event()
        assert ev["type"] == "Warning" and ev["involvedObject"]["kind"] == "Pod"
        assert ev["involvedObject"]["name"] == "web-1" and "data-web-1" in ev["message"], ev


def test_an_answer_past_the_timeout_is_counted_late_not_mutated(tmp_path):
    """A review that took longer than timeoutSeconds was not heard: the API server had admitted the
    pod unchanged. It is counted ``late``, not as its verdict, and the histogram places it (buckets
    up to 30 s). Here the configuration's timeout is 1 s, and while a review waits for its read the
    process is starved for 1.5 s (a CPU-starved node, a long pause)."""
    with webhook(tmp_path, config_timeout=1, timeout_seconds=1, review_deadline=0.6) as rig:
        unseen_claims(rig, "data-web-2")
        rig.ks.hang(path_prefix=PVCS)
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(rig.admit, k.pod("web-2", claims=["data-web-2"]))
            wait_for(lambda: rig.ks.hung_requests() >= 1, what="the review waiting for its read")
            rig.loop.call_soon_threadsafe(time.sleep, 1.5)
            got = call.result()
        assert got.scheduler == "default-scheduler" and got.how.startswith("failed open"), got
        wait_for(lambda: rig.counted("linstor_scheduler_webhook_reviews_total", outcome="late") == 1,
                 what="the late answer counted")
        assert rig.counted("linstor_scheduler_webhook_reviews_total", outcome="unknown") == 0
        assert rig.counted("linstor_scheduler_webhook_reviews_total", outcome="mutated") == 1  # db-0 only
        assert rig.counted("linstor_scheduler_webhook_review_seconds_bucket", le="30.0") == 2
        assert rig.counted("linstor_scheduler_webhook_review_seconds_bucket", le="1.0") == 1


# --- 5. storageClassName "" ------------------------------------------------------------------------------

def test_an_empty_class_in_an_ephemeral_template_is_no_class(tmp_path):
    """``storageClassName: ""`` asks for no class (a PV without one), not the default class: the pod is
    not ours even when the default class is a LINSTOR one. A template without the field gets it."""
    ks = cluster()
    default = k.storage_class("linstor-default")
    default["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    ks.add(default)
    with webhook(tmp_path, ks) as rig:
        empty = k.claim_template("x")
        empty["spec"]["storageClassName"] = ""
        unset = k.claim_template("x")
        del unset["spec"]["storageClassName"]
        assert rig.admit(k.pod("none", ephemeral={"scratch": empty})).scheduler == "default-scheduler"
        assert rig.admit(k.pod("dflt", ephemeral={"scratch": unset})).scheduler == "linstor"


# --- the subcommand as deploy/ runs it: certificates, shutdown --------------------------------------------

class Replica:
    """``linstor-scheduler webhook`` in a child process, self-signed through the Secret."""

    def __init__(self, kube_url: str, tmp_path, name: str, **env: str) -> None:
        self.port, self.metrics_port = free_ports(2)
        self.url = f"https://127.0.0.1:{self.port}"
        (tmp_path / name).mkdir(exist_ok=True)
        self.env = {**os.environ, "LINSTOR_SCHEDULER_KUBE_API_URL": kube_url, "POD_NAMESPACE": NS,
                    "HOSTNAME": name, "LINSTOR_SCHEDULER_PORT": str(self.port),
                    "LINSTOR_SCHEDULER_LISTEN_ADDRESS": "127.0.0.1",
                    "LINSTOR_SCHEDULER_METRICS_PORT": str(self.metrics_port),
                    "LINSTOR_SCHEDULER_METRICS_ADDRESS": "127.0.0.1",
                    "LINSTOR_SCHEDULER_CA_BUNDLE_INTERVAL": "0.2", "LINSTOR_SCHEDULER_DRAIN_SECONDS": "1",
                    "TMPDIR": str(tmp_path / name), **env}
        self.child: subprocess.Popen[bytes] | None = None

    def start(self) -> Replica:
        # Its output goes to a file, never a pipe nobody reads while it runs: a pipe holds 64 KiB, and
        # a replica that logs each of ~600 reviews then blocks on its next log line and answers
        # nothing (the SIGTERM case lost its 592nd call to exactly that, in CI and one run in four here)
        self.log = open(Path(self.env["TMPDIR"]) / "webhook.log", "w+b")  # noqa: SIM115 (closed in stop)
        self.child = subprocess.Popen([sys.executable, "-m", "linstor_scheduler.cli", "webhook"], env=self.env,
                                      stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> str:
        if self.child is None:
            return ""
        if self.child.poll() is None:
            stop_child(self.child)
        self.log.seek(0)
        out = self.log.read().decode(errors="replace")
        self.log.close()
        self.child = None
        return out


def test_replicas_agree_on_one_ca_when_the_secret_is_recreated(tmp_path):
    """Two replicas; the Secret is deleted and a replica restarts (a rollout after someone cleaned the
    namespace). Each replica used to keep its own CA and write it into the caBundle every pass, so
    the caBundle flapped and calls failed TLS while both were Ready. Now one CA per cluster: every
    call the API server would make to a Ready replica is verified by the published caBundle, and
    the caBundle settles."""
    ks = cluster()
    ks.add(configuration())
    with ks.serve() as kube:
        apiserver = ApiServer(ks)
        a = Replica(kube.url, tmp_path, "webhook-a").start()
        b = Replica(kube.url, tmp_path, "webhook-b")
        try:
            wait_for(a.ready, timeout=30, what="replica a ready")
            b.start()
            wait_for(b.ready, timeout=30, what="replica b ready")
            ks.delete("Secret", SECRET, NS)
            b.stop()
            b.start()
            restarted = time.monotonic()
            wait_for(lambda: b.ready() or b.child.poll() is not None, timeout=30, what="replica b ready again")
            assert b.child.poll() is None, b.stop()
            measured("Secret recreated, a replica restarted: ready again after", time.monotonic() - restarted)
            began = time.monotonic()
            settled = None
            bundles, calls, failed = [], 0, []
            while time.monotonic() - began < 6:
                bundle = apiserver.hook()["clientConfig"].get("caBundle")
                if not bundles or bundles[-1] != bundle:
                    bundles.append(bundle)
                for replica in (a, b):
                    if not replica.ready():  # the Service sends the API server to Ready endpoints only
                        continue
                    calls += 1
                    got = apiserver.admit(replica.url, k.pod("db-0", claims=["data-db-0"]))
                    if got.scheduler != "linstor":
                        failed.append(got.how)
                    elif settled is None:
                        settled = time.monotonic() - began
            print(f"\nSecret recreated, a replica restarted: {len(bundles)} caBundle value(s) in 6 s; "
                  f"{len(failed)} of {calls} calls to Ready replicas failed; first success after {settled or 0:.2f}s")
            assert calls > 10 and not failed, (calls, failed[:3])
            assert len(bundles) <= 3, f"the caBundle changed {len(bundles) - 1} times"  # new CA (+ retiring), new CA
        finally:
            out = a.stop() + b.stop()
        assert "Traceback" not in out, out


def test_sigterm_drains_ready_false_first_then_stops(tmp_path):
    """SIGTERM: /readyz turns 503 at once (the endpoint is taken out of the Service), and /mutate
    keeps answering for --drain-seconds, so a call routed before the endpoint update is answered;
    then the process ends well inside terminationGracePeriodSeconds."""
    ks = cluster()
    ks.add(configuration())
    with ks.serve() as kube:
        apiserver = ApiServer(ks)
        r = Replica(kube.url, tmp_path, "webhook-a", LINSTOR_SCHEDULER_DRAIN_SECONDS="2").start()
        try:
            wait_for(r.ready, timeout=30, what="ready")
            assert apiserver.admit(r.url, k.pod("db-0", claims=["data-db-0"])).scheduler == "linstor"
            began = time.monotonic()
            r.child.send_signal(signal.SIGTERM)
            wait_for(lambda: not r.ready(), timeout=1, what="/readyz 503")
            answered = []
            while time.monotonic() - began < 1.8:
                answered.append(apiserver.admit(r.url, k.pod("db-0", claims=["data-db-0"])).scheduler)
            print(f"\nSIGTERM: {answered.count('linstor')} of {len(answered)} calls answered in the first 1.8 s")
            assert answered and set(answered) == {"linstor"}, answered
            r.child.wait(15)
            ended = time.monotonic() - began
            measured("SIGTERM: the process ended after", ended)
            assert ended < 20, "inside terminationGracePeriodSeconds (30 s)"
        finally:
            out = r.stop()
        assert "Traceback" not in out, out
