"""The webhook's chaos matrix (issue 18, "never silently dead"): the webhook as ``build_webhook_app``
wires it (the CLI's assembly, CA publisher included), answering AdmissionReviews over HTTPS as the
API server sends them, against the Kubernetes API stand-in through its bad days.

What the issue asks of it: it never answers "no LINSTOR volume" from a view older than its bound
(``--max-staleness``): a stale cache is read around (direct reads within the review's deadline,
each capped here by ``--pvc-read-timeout``), and a pod whose claims it could not look at is sent to
the linstor profile (issue 24's unknown-claims rule), counted ``unknown``; ``/readyz`` fails with
the reason while the view is stale, ``/healthz`` stays 200 while its loops turn; it recovers by
itself. Each case prints its measured time (``pytest -s``); docs/operations.md, "Webhook (chaos)", states them.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from admission.tls import CaBundlePublisher, generate_bundle, service_names
from admission.wiring import build_webhook_app
from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.kube import make_api_client

from .probing import Measurements
from .waiting import wait_for

BOUND = 3.0  # --max-staleness
API_TIMEOUT = 1.0  # --api-timeout
READ_TIMEOUT = 1.0  # --pvc-read-timeout: a cap on each direct read (the review's deadline is 3.5 s)
RECOVERY = BOUND
NS = "linstor-scheduler"
CONFIG = "linstor-scheduler"
CONFIGS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
measured = Measurements("webhook")
report = measured.report


def review(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod creation as the API server asks about it: no namespace in the pod, no schedulerName."""
    pod = {**pod, "metadata": {k_: v for k_, v in pod["metadata"].items() if k_ != "namespace"},
           "spec": {k_: v for k_, v in pod["spec"].items() if k_ != "schedulerName"}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": "CREATE", "namespace": "default", "object": pod}}


def configuration() -> dict[str, Any]:
    hook = {"name": "schedulername.linstor.csi.linbit.com", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": "Ignore", "timeoutSeconds": 5,
            "clientConfig": {"service": {"namespace": NS, "name": "linstor-scheduler-webhook", "path": "/mutate"}}}
    return {"kind": "MutatingWebhookConfiguration", "metadata": {"name": CONFIG}, "webhooks": [hook]}


@dataclass
class Rig:
    ks: KubeStandin
    http: httpx.Client
    publisher: CaBundlePublisher
    ca_b64: str

    def mutate(self, pod: dict[str, Any]) -> httpx.Response:
        return self.http.post("/mutate", content=orjson.dumps(review(pod)),
                              headers={"Content-Type": "application/json"})

    def verdict(self, pod: dict[str, Any]) -> str:
        """``mutated`` / ``unchanged`` from a 200 answer; anything else fails the test."""
        r = self.mutate(pod)
        assert r.status_code == 200, r.text
        return "mutated" if r.json()["response"].get("patchType") == "JSONPatch" else "unchanged"

    def ready(self) -> httpx.Response:
        return self.http.get("/readyz")

    def counted(self, family: str, **labels: str) -> float:
        want = [f'{k_}="{v}"' for k_, v in labels.items()]
        total = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.split("{")[0] == family and all(w in name for w in want):
                total += float(value)
        return total

    def ca_bundle(self) -> str | None:
        return self.ks.get("MutatingWebhookConfiguration", CONFIG)["webhooks"][0]["clientConfig"].get("caBundle")


LINSTOR_POD = k.pod("db-0", claims=["data-db-0"])  # bound to a LINSTOR PV
FOREIGN_POD = k.pod("ebs-0", claims=["elsewhere"])  # a claim of another driver
PLAIN_POD = k.pod("plain")  # no volumes: nothing to look up


@contextlib.contextmanager
def webhook(tmp_path) -> Iterator[Rig]:
    ks = KubeStandin()
    ks.add(k.storage_class("linstor-r2"))
    ks.add(k.storage_class("other-sc", provisioner="ebs.csi.aws.com"))
    for obj in k.bound_volume("data-db-0", "pvc-1111", storage_class="linstor-r2"):
        ks.add(obj)
    ks.add(k.pvc("elsewhere", storage_class="other-sc"))
    ks.add(configuration())
    bundle = generate_bundle([*service_names("linstor-scheduler-webhook", NS), "127.0.0.1"])
    ca_file, cert_file, key_file = bundle.write(tmp_path)
    with ks.serve() as kube:
        api = make_api_client(host=kube.url, timeout=API_TIMEOUT)  # as the CLI makes it: deadlines, no retries
        publisher = CaBundlePublisher(api, CONFIG, bundle.ca_pem, interval=0.2, call_timeout=API_TIMEOUT)
        app = build_webhook_app(api, publisher=publisher, read_timeout=READ_TIMEOUT, max_staleness=BOUND,
                                api_timeout=API_TIMEOUT)
        with ServerThread(app, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as srv, \
                httpx.Client(base_url=srv.url, timeout=10,
                             verify=ssl.create_default_context(cafile=str(ca_file))) as http:
            rig = Rig(ks, http, publisher, base64.b64encode(bundle.ca_pem).decode())
            wait_for(lambda: rig.ready().status_code == 200, what="webhook ready")
            assert rig.verdict(LINSTOR_POD) == "mutated" and rig.verdict(FOREIGN_POD) == "unchanged"
            try:
                yield rig
            finally:
                ks.reset_faults()
                ks.release_hangs()


def stale(rig: Rig) -> dict[str, Any]:
    """/readyz while the view is older than the bound: 503, saying which kind and why; /healthz 200."""
    ready = rig.ready()
    body = ready.json()
    assert ready.status_code == 503 and body["ready"] is False, body
    assert body["detail"].startswith("Kubernetes view") and f"(bound {BOUND:.0f}s)" in body["detail"], body
    assert body["kubernetes_age_seconds"] > BOUND
    alive = rig.http.get("/healthz")
    assert alive.status_code == 200, alive.text
    return body


def test_the_api_server_hangs_then_answers(tmp_path):
    """The API server accepts requests and answers none. Once the caches are older than the bound,
    /readyz fails saying so; a LINSTOR pod is not called "not ours" from the old cache: its claim is
    read directly, the read gets no answer within --pvc-read-timeout, and the pod is sent to the
    linstor profile (unknown claims) within that time. A pod without volumes needs no look-up
    and is answered as always. When the API server answers again, so does the webhook."""
    with webhook(tmp_path) as rig:
        began = time.monotonic()
        rig.ks.hang()
        wait_for(lambda: rig.ready().status_code == 503, timeout=BOUND + 3, what="the view past its bound")
        measured("the API server hangs: /readyz 503 after", time.monotonic() - began)
        stale(rig)
        asked = time.monotonic()
        unknown = rig.counted("linstor_scheduler_webhook_reviews_total", outcome="unknown")
        assert rig.verdict(LINSTOR_POD) == "mutated"
        took = time.monotonic() - asked
        # within --pvc-read-timeout plus the machine's slack (2 s: two whole suites on 2 CPUs took 2.01 s),
        # before the review's own deadline (3.5 s), which an uncapped read would have run into
        assert took < READ_TIMEOUT + 2.0, "answered within --pvc-read-timeout, well inside timeoutSeconds (5 s)"
        assert rig.counted("linstor_scheduler_webhook_reviews_total", outcome="unknown") == unknown + 1
        measured("the API server hangs: a LINSTOR pod sent to the profile (claims unknown) in", took)
        assert rig.verdict(PLAIN_POD) == "unchanged"
        assert rig.counted("linstor_scheduler_webhook_reviews_total", outcome="unknown") >= 1
        assert rig.counted("linstor_scheduler_webhook_direct_reads_total", reason="stale", outcome="error") >= 1
        assert rig.counted("linstor_scheduler_kube_informer_healthy", kind="PersistentVolumeClaim") == 0
        released = time.monotonic()
        rig.ks.release_hangs()
        wait_for(lambda: rig.ready().status_code == 200 and rig.verdict(LINSTOR_POD) == "mutated",
                 timeout=RECOVERY, what="the webhook fresh and judging again")
        measured("the API server answers again after a hang: ready and judging", time.monotonic() - released)


def test_silent_watches_are_read_around(tmp_path):
    """The watches carry nothing (a proxy that forwards no events) while reads are answered: the caches
    age past the bound and /readyz says so, but every review is judged from direct reads, so a claim
    created meanwhile is still recognised, and a foreign one still left alone. A burst of 429s then
    makes the reads fail: those pods are sent to the profile (claims unknown), never "not ours". When the watches
    flow again the caches answer, with no direct read."""
    with webhook(tmp_path) as rig:
        began = time.monotonic()
        rig.ks.silent_watches()
        wait_for(lambda: rig.ready().status_code == 503, timeout=BOUND + 3, what="the view past its bound")
        measured("silent watches: /readyz 503 after", time.monotonic() - began)
        assert "watch silent" in stale(rig)["detail"]
        rig.ks.add(k.pvc("data-web-0", storage_class="linstor-r2"))  # the cache cannot learn of it
        found = rig.counted("linstor_scheduler_webhook_direct_reads_total", reason="stale", outcome="found")
        assert rig.verdict(k.pod("web-0", claims=["data-web-0"])) == "mutated"
        assert rig.verdict(FOREIGN_POD) == "unchanged"
        assert rig.counted("linstor_scheduler_webhook_direct_reads_total", reason="stale", outcome="found") > found
        rig.ks.inject(fail=10, status=429, retry_after=1)  # the burst also meets the informers' retries
        unknown = rig.counted("linstor_scheduler_webhook_reviews_total", outcome="unknown")
        assert rig.verdict(FOREIGN_POD) == "mutated"  # its reads were refused: unknown, not "not ours"
        assert rig.counted("linstor_scheduler_webhook_reviews_total", outcome="unknown") == unknown + 1
        rig.ks.inject(fail=0)  # the burst is over
        assert rig.verdict(LINSTOR_POD) == "mutated"
        released = time.monotonic()
        rig.ks.release_hangs()
        wait_for(lambda: rig.ready().status_code == 200, timeout=RECOVERY, what="the caches confirmed again")
        measured("watches flow again: /readyz 200 after", time.monotonic() - released)
        direct = rig.counted("linstor_scheduler_webhook_direct_reads_total")
        assert rig.verdict(k.pod("web-0", claims=["data-web-0"])) == "mutated"
        assert rig.counted("linstor_scheduler_webhook_direct_reads_total") == direct, "answered from the cache"


def test_the_api_server_restarts(tmp_path):
    """A rolling restart: watches end, every request is answered 503 while it is down, a claim is
    created meanwhile. The caches relist on the 410 that follows and know the claim: its pod is
    judged from the cache, with no direct read."""
    with webhook(tmp_path) as rig:
        errors = rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="error")
        expired = rig.counted("linstor_scheduler_kube_informer_relists_total", reason="expired")
        began = time.monotonic()
        rig.ks.down()
        wait_for(lambda: rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="error") > errors,
                 timeout=RECOVERY, what="the informers met the 503s")
        rig.ks.add(k.pvc("data-web-1", storage_class="linstor-r2"))  # through another API server
        rig.ks.up()
        wait_for(lambda: rig.counted("linstor_scheduler_kube_informer_relists_total", reason="expired")
                 >= expired + 3, timeout=RECOVERY, what="every cache relisted after its 410")
        measured("the API server restarts: every cache relisted after", time.monotonic() - began)
        direct = rig.counted("linstor_scheduler_webhook_direct_reads_total")
        assert rig.verdict(k.pod("web-1", claims=["data-web-1"])) == "mutated"
        assert rig.counted("linstor_scheduler_webhook_direct_reads_total") == direct, "answered from the cache"
        assert rig.ready().status_code == 200


def test_a_lost_answer_to_the_ca_bundle_patch(tmp_path, caplog):
    """Someone re-applies the configuration without our CA; the publisher's patch is carried out but
    its answer is lost. It does not patch blindly again: the next pass reads the configuration, finds
    our CA there, and is done. /readyz never fails for it."""
    with webhook(tmp_path) as rig:
        caplog.set_level(logging.WARNING, logger="admission.tls")
        wait_for(lambda: rig.ca_bundle() == rig.ca_b64, what="our CA published")
        mark = len(rig.ks.writes)
        rig.ks.lose_answers(path_prefix=CONFIGS, method="PATCH", count=1)
        began = time.monotonic()
        rig.ks.update(configuration())  # kubectl apply of the manifest: caBundle gone
        wait_for(lambda: "publishing caBundle" in caplog.text, timeout=RECOVERY, what="the patch's answer lost")
        wait_for(lambda: rig.ca_bundle() == rig.ca_b64 and rig.ready().json()["ca_bundle_error"] is None,
                 timeout=RECOVERY, what="the publisher's next pass")
        measured("a lost answer to the caBundle patch: settled after", time.monotonic() - began)
        patches = [w for w in rig.ks.writes[mark:] if w[0] == "PATCH"]
        assert len(patches) == 1, "the lost write was carried out once and not sent again"
        assert rig.ready().status_code == 200


def test_the_informers_are_kept_to_the_bound():
    """The assembly the CLI runs: at --max-staleness 60 s and --api-timeout 10 s the server ends each
    watch every 20 s, a silent one is ended 10 s later, a retry waits at most 20 s, a list page 10 s."""
    app = build_webhook_app(make_api_client(host="http://127.0.0.1:1"), max_staleness=60, api_timeout=10)
    for informer in app.state.caches.informers.values():
        assert (informer.watch_timeout, informer.read_slack, informer.backoff_cap, informer.list_timeout) == \
            (20.0, 10.0, 20.0, 10.0)


def test_healthz_fails_naming_a_stuck_loop(tmp_path):
    """/healthz is the informers' liveness and the CA publisher's: when one made no progress past its
    bound, 503 with its words (the kubelet restarts the container); /readyz is not touched by it."""
    with webhook(tmp_path) as rig:
        caches = rig.http.get("/healthz")
        assert caches.status_code == 200 and caches.text == "informers running; caBundle publisher turning"
        rig.publisher._stop.set()  # its loop no longer turns ...
        rig.publisher._thread.join(5)
        rig.publisher.beat -= 1000  # ... and has not for 1000 s
        stuck = rig.http.get("/healthz")
        assert stuck.status_code == 503 and "caBundle publisher made no progress for 100" in stuck.text
        assert rig.ready().status_code == 200
