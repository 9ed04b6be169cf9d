"""locality-exporter on the API server's and LINSTOR's bad days (issue 18, the chaos matrix).

The exporter runs as ``run_exporter`` runs it (``serve_exporter``: one ``KubeCaches`` for the
extender's kinds and the pods, the LINSTOR poll, the computation loop, the side port), with a client
whose every call has a 1 s deadline, against the API stand-in and the LINSTOR emulator over
loopback HTTP. Small bounds: ``--max-staleness`` 3 s (so each watch is ended by the server every
second), a silent watch dead 1 s (``--api-timeout``) past that, LINSTOR polled every 0.2 s. The
cluster: db-0 local on n1, db-1 diskless on n3 (ratio 0.5); deleting db-1, or giving it a diskful
replica, makes it 1.0, so a new figure shows a fresh view. Each case prints its measured recovery
time (``-s``) for docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.kube.client import make_api_client
from linstor_scheduler.kube.lease import AlwaysLeader
from linstor_scheduler.linstor.client import LinstorClient
from locality.exporter import view_verdict
from locality.wiring import serve_exporter

from .probing import recovered, scrape
from .test_locality import two_pods_cluster
from .waiting import free_ports, wait_for

MAX_STALENESS, API_TIMEOUT = 3.0, 1.0
RATIO, AGE = "linstor_scheduler_pods_local_ratio", "linstor_scheduler_locality_state_age_seconds"
KINDS = ("Node", "PersistentVolumeClaim", "PersistentVolume", "StorageClass", "Pod")


@dataclass
class Exporter:
    ks: KubeStandin
    emu: LinstorEmulator
    url: str

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def metrics(self) -> dict[str, float]:
        return scrape(self.url)

    def ratio(self) -> float | None:
        return self.metrics().get(RATIO)

    def kube(self, name: str, kind: str, **labels: str) -> float:
        extra = "".join(f',{k}="{v}"' for k, v in labels.items())
        return self.metrics().get(f'linstor_scheduler_kube_{name}{{kind="{kind}"{extra}}}', 0.0)

    def fresh(self) -> bool:
        return self.get("/readyz").status_code == 200

    def db1_local(self) -> None:
        """db-1's volume gets a diskful replica on n3 (LINSTOR's auto-diskful): every pod local."""
        self.emu.remove_resource("pvc-2", "n3")
        self.emu.add_resource("pvc-2", "n3", in_use=True)


@pytest.fixture
def exporter(ks: KubeStandin) -> Iterator[Exporter]:
    emu, kube = two_pods_cluster()
    for obj in kube:
        ks.add(obj)
    port = free_ports(1)[0]
    with emu.serve() as lsrv:
        args = argparse.Namespace(poll_interval=0.2, interval=0.1, listen_address="127.0.0.1", port=port,
                                  max_staleness=MAX_STALENESS, api_timeout=API_TIMEOUT)
        api = make_api_client(host=ks.url, timeout=API_TIMEOUT)
        flag = threading.Event()
        client = LinstorClient(lsrv.url, timeout=0.5, retries=1)
        thread = threading.Thread(target=asyncio.run, args=(serve_exporter(args, client, api, AlwaysLeader(),
                                                                           stop_flag=flag),))
        thread.start()
        running = Exporter(ks, emu, f"http://127.0.0.1:{port}")
        try:
            wait_for(lambda: _serving(running) and running.ratio() == 0.5, timeout=15, what="the first figures")
            yield running
        finally:
            ks.release_hangs()
            ks.reset_faults()
            flag.set()
            thread.join(15)
        assert not thread.is_alive()


def _serving(exporter: Exporter) -> bool:
    try:
        return exporter.fresh()
    except httpx.TransportError:
        return False


def test_the_api_server_restarts_while_a_pod_goes_away(exporter: Exporter) -> None:
    """The API server restarts (its watches end) and a pod is deleted meanwhile: the informers'
    resumes get 410 and they list again; the figures show the deletion, /readyz stays 200."""
    ks = exporter.ks
    ks.down()
    ks.delete("Pod", "db-1", "default")
    up = time.monotonic()
    ks.up()
    wait_for(lambda: exporter.ratio() == 1.0, timeout=10, what="the deletion in the figures")
    took = recovered("locality-exporter", "API server restart (410 on resume)", up)
    assert exporter.kube("informer_relists_total", "Pod", reason="expired") >= 1
    assert took < 2 * MAX_STALENESS / 3 + 2, "within two watch timeouts and a list"
    assert exporter.fresh() and exporter.get("/healthz").status_code == 200


def test_etcd_compacts_past_a_quiet_kind_while_its_watch_is_refused(exporter: Exporter) -> None:
    """The Node watch is refused for a while (500s on /api/v1/nodes); meanwhile pods change and etcd
    compacts the Nodes' history past the version the quiet Node informer holds. When the watch is
    answered again its resume gets 410, and the informer lists again by itself; the other kinds never
    went stale, and the view is confirmed within a watch timeout."""
    ks = exporter.ks
    ks.inject(fail=10**6, status=500, path_prefix="/api/v1/nodes")
    wait_for(lambda: exporter.kube("watch_restarts_total", "Node", reason="error") >= 1, timeout=5,
             what="the Node watch refused")
    ks.add({"kind": "Pod", "metadata": {"name": "unrelated", "namespace": "default"}, "spec": {}})
    ks.compact(kinds=["Node"])
    answered = time.monotonic()
    ks.reset_faults()
    wait_for(lambda: exporter.kube("informer_relists_total", "Node", reason="expired") >= 1, timeout=10,
             what="the Node informer listing again")
    wait_for(lambda: exporter.kube("informer_age_seconds", "Node") < 1.5 and exporter.fresh(), timeout=5,
             what="a young Node view")
    took = recovered("locality-exporter", "etcd compaction past a quiet kind (410 on resume)", answered)
    assert took < MAX_STALENESS / 3 + 3, "within a back-off, a list and a watch timeout"
    assert exporter.kube("informer_relists_total", "Pod", reason="expired") == 0, "only the quiet kind lists"
    exporter.db1_local()
    wait_for(lambda: exporter.ratio() == 1.0, timeout=5, what="new figures")


def test_a_continue_token_expires_during_a_list(exporter: Exporter) -> None:
    """600 pods (two pages of 500) and a slow API server: the API server restarts while db-1 is
    deleted, so the Pod informer lists again; etcd compacts while it reads the first page, so the
    second page's continue token answers 410. The informer lists again from the top (a list made of
    two snapshots is not one state) and the view is whole and fresh again."""
    ks = exporter.ks
    for i in range(600):
        ks.add({"kind": "Pod", "metadata": {"name": f"batch-{i:03}", "namespace": "jobs"}, "spec": {}})
    ks.slow(0.5, path_prefix="/api/v1/pods")
    expired = exporter.kube("informer_relists_total", "Pod", reason="expired")
    ks.down()
    ks.delete("Pod", "db-1", "default")
    ks.up()
    began = time.monotonic()
    wait_for(lambda: any(p.startswith("/api/v1/pods?") and "continue=" in p for _, p in ks.requests), timeout=10,
             what="the second page asked for")
    ks.expire_continue_tokens()
    wait_for(lambda: exporter.kube("informer_relists_total", "Pod", reason="expired") >= expired + 2, timeout=10,
             what="the 410 on resume and the 410 on the continue token")
    wait_for(lambda: exporter.ratio() == 1.0 and exporter.fresh(), timeout=15, what="a whole, fresh view")
    ks.reset_faults()
    recovered("locality-exporter", "continue token expired during a list", began)
    lists = [p for _, p in ks.requests if p.startswith("/api/v1/pods?") and "watch=true" not in p]
    assert sum("continue=" not in p for p in lists) >= 3, "the start, the relist, and the list from the top"


def test_a_hung_backend_means_no_new_figures_and_readyz_says_why(exporter: Exporter) -> None:
    """The API server accepts and never answers: watches end and the next ones hang, the view ages
    past --max-staleness; /readyz fails naming the stale informers, the metrics say which informer
    is unhealthy and how old its view is, no new figures are computed (LINSTOR's change is not
    shown) and their age grows; /healthz stays 200. Answers again: the held lists complete and the
    figures are new within a watch timeout."""
    ks = exporter.ks
    ks.hang()
    wait_for(lambda: not exporter.fresh(), timeout=10, what="/readyz failing")
    text = exporter.get("/readyz").text
    assert f"old (bound {MAX_STALENESS:g}s)" in text and "Kubernetes view" in text, text
    exporter.db1_local()  # LINSTOR moves on; the stale Kubernetes view must not be mixed in
    wait_for(lambda: exporter.metrics()[AGE] > MAX_STALENESS + 1, timeout=10, what="the figures' age growing")
    assert exporter.ratio() == 0.5, "no figures from a view past its bound"
    assert exporter.kube("informer_healthy", "Pod") == 0 and exporter.kube("informer_age_seconds", "Pod") > 3
    assert exporter.get("/healthz").status_code == 200, exporter.get("/healthz").text
    released = time.monotonic()
    ks.release_hangs()
    wait_for(lambda: exporter.ratio() == 1.0 and exporter.fresh(), timeout=10, what="fresh figures")
    took = recovered("locality-exporter", "hung backend released", released)
    assert took < MAX_STALENESS + 3, "the held lists answered, within the informers' back-off and a watch timeout"
    assert exporter.metrics()[AGE] < MAX_STALENESS


def test_a_silent_half_open_watch_is_ended_and_replaced(exporter: Exporter) -> None:
    """The open watches go silent (a half-open connection: no event, no end): each informer ends its
    watch past the watch timeout + --api-timeout and opens another; the view is confirmed again."""
    ks = exporter.ks
    ks.silent_watches()
    ks.reset_faults()  # only the connections open now are half-open; new ones work
    silenced = time.monotonic()
    wait_for(lambda: all(exporter.kube("watch_restarts_total", kind, reason="silent") >= 1 for kind in KINDS),
             timeout=10, what="every silent watch ended")
    wait_for(lambda: exporter.metrics()[AGE] < 1.5 and exporter.fresh(), timeout=5, what="a young view")
    took = recovered("locality-exporter", "silent watches", silenced)
    assert took < MAX_STALENESS / 3 + API_TIMEOUT + 3, "the read deadline, a back-off, a watch timeout"
    exporter.db1_local()
    wait_for(lambda: exporter.ratio() == 1.0, timeout=5, what="new figures")


FAULTS: dict[str, Callable[[KubeStandin], None]] = {
    "slow answers": lambda ks: ks.slow(0.4),
    "429 with Retry-After": lambda ks: ks.inject(fail=12, status=429, retry_after=1),
    "a burst of 500s": lambda ks: ks.inject(fail=12, status=500),
    "a burst of 503s": lambda ks: ks.inject(fail=12, status=503),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_slow_or_refusing_api_server_the_figures_carry_on(exporter: Exporter, fault: str) -> None:
    """Answers 0.4 s late, or a dozen requests refused (429, 500, 503): the informers back off and
    resume by themselves; a pod deleted meanwhile shows in the figures within the bound."""
    ks = exporter.ks
    FAULTS[fault](ks)
    if fault == "slow answers":
        wait_for(lambda: sum(exporter.kube("watch_restarts_total", kind, reason="timeout") for kind in KINDS) >= 10,
                 timeout=10, what="slow watches ending and resuming")
    else:
        wait_for(lambda: sum(exporter.kube("watch_restarts_total", kind, reason="error") for kind in KINDS) >= 3,
                 timeout=10, what="refused watches")
    began = time.monotonic()
    ks.delete("Pod", "db-1", "default")
    wait_for(lambda: exporter.ratio() == 1.0, timeout=10, what="the deletion in the figures")
    took = recovered("locality-exporter", fault, began)
    ks.reset_faults()
    assert took < MAX_STALENESS + 4, "within the informers' back-off (0.5 s doubling) and a list"
    wait_for(exporter.fresh, timeout=5, what="/readyz 200")
    assert exporter.get("/healthz").status_code == 200


def test_linstor_fails_no_new_figures_then_fresh_ones(exporter: Exporter) -> None:
    """LINSTOR answers 500: past --max-staleness /readyz fails with the LINSTOR error, the figures
    stay as they were (a pod deleted meanwhile is not counted) and their age grows; LINSTOR back,
    the next poll brings new figures."""
    exporter.emu.inject(fail=10**9, status=500, path_prefix="/v1/")
    wait_for(lambda: not exporter.fresh(), timeout=10, what="/readyz failing")
    text = exporter.get("/readyz").text
    assert "LINSTOR view" in text and "LINSTOR read failed" in text, text
    exporter.ks.delete("Pod", "db-1", "default")
    wait_for(lambda: exporter.metrics()[AGE] > MAX_STALENESS + 1, timeout=10, what="the figures' age growing")
    assert exporter.ratio() == 0.5 and exporter.get("/healthz").status_code == 200
    back = time.monotonic()
    exporter.emu.reset_faults()
    wait_for(lambda: exporter.ratio() == 1.0 and exporter.fresh(), timeout=10, what="fresh figures")
    assert recovered("locality-exporter", "LINSTOR 500s", back) < 3


def test_a_standby_with_a_stale_view_is_not_ready_and_computes_nothing() -> None:
    """A standby may take over at any time: its /readyz fails, with the reason, when its own view
    is past the bound, as the leader's does; and a leader with that view computes nothing."""
    from locality.exporter import LocalityExporter
    from locality.metrics import LocalityMetrics
    from scheduler_extender.holder import StateHolder

    from .test_locality import cluster

    class StaleCaches:
        def age(self) -> float:
            return 10.0

        def stalest(self) -> str:
            return "Pod confirmed 10s ago (TimeoutError: watch silent)"

    class Pods:
        synced = threading.Event()

        def items(self) -> list:
            return []

    Pods.synced.set()
    state = cluster()
    holder = StateHolder(state=state, ready=True)
    standby = AlwaysLeader()
    standby.is_leader = False
    exporter = LocalityExporter(holder, Pods(), LocalityMetrics(), standby, caches=StaleCaches(),
                                max_staleness=3, clock=lambda: state.linstor_synced_at + 1)
    assert exporter.ready() == (False, "Kubernetes view 10s old (bound 3s): Pod confirmed 10s ago "
                                       "(TimeoutError: watch silent)")
    exporter.leader = AlwaysLeader()
    assert exporter.run_once() is None and exporter.metrics.registry.get_sample_value(RATIO) is None


def test_the_view_verdict() -> None:
    assert view_verdict(None, 1, 3, "LINSTOR read failed: x", "") == (False, "no LINSTOR read yet: LINSTOR read "
                                                                          "failed: x")
    assert view_verdict(1, None, 3, None, "Pod never listed") == (False, "Kubernetes view not listed yet: Pod never "
                                                                  "listed")
    assert view_verdict(4, 1, 3, "boom", "")[1] == "LINSTOR view 4s old (bound 3s): boom"
    assert view_verdict(1, 5, 3, None, "Pod confirmed 5s ago")[1] == ("Kubernetes view 5s old (bound 3s): Pod "
                                                                      "confirmed 5s ago")
    assert view_verdict(1, 2, 3, None, "") == (True, "view 2s old")
