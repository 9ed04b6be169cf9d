"""The extender's chaos matrix (issue 18, "never silently dead"): the live extender as
``build_live_app`` wires it (the CLI's assembly), over real HTTP, against the Kubernetes API
stand-in and the LINSTOR emulator on loopback, through the API server's and LINSTOR's bad days.

Each case is a real-world event (the API server restarts, etcd compacts, the backend hangs, a
watch goes half-open, the controller goes away, ...) and checks what the issue asks: the extender
recovers by itself within its bound, never judges from a view older than ``--max-staleness``
(it answers neutrally and says why), ``/readyz`` fails with the reason while it is stale and
``/healthz`` stays 200 while its loops turn, and the metrics name the informer and why. Each case
prints its measured recovery time (``pytest -s``) and holds it to a bound; docs/operations.md,
"Extender (chaos)", states them. Small bounds keep the module fast: ``--max-staleness`` 3 s (the
server ends each watch every second, a silent one is ended 1.5 s after it opened; 4 s for the
half-open case, whose margin is a sixth of the bound), ``--api-timeout`` 1 s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.kube import make_api_client
from linstor_scheduler.linstor import LinstorClient
from scheduler_extender.wiring import build_live_app

from .probing import Measurements
from .test_extender_live import populated
from .waiting import wait_for

BOUND = 3.0  # --max-staleness
HALF_OPEN_BOUND = 4.0  # a half-open watch costs 5/6 of the bound: 1/6 of it to spare (0.67 s)
API_TIMEOUT = 1.0  # --api-timeout
RECOVERY = BOUND  # every case recovers within the bound once the fault is gone (measured: well under)
NAMES = ["w1", "w2", "w3"]
POD = k.pod("db-0", claims=["data"])
JUDGED = {"w1": 10, "w2": 0, "w3": 0}  # replica on w1, a tie-breaker on w2, remote access forbidden
REMOTE = {"w1": 10, "w2": 4, "w3": 1}  # the same once the StorageClass allows remote access
NEUTRAL = dict.fromkeys(NAMES, 0)
measured = Measurements("extender")
report = measured.report


@dataclass
class Rig:
    emu: LinstorEmulator
    ks: KubeStandin
    http: httpx.Client
    app: Any
    linstor: ServerThread
    bound: float

    def ready(self) -> httpx.Response:
        return self.http.get("/readyz")

    def alive(self) -> httpx.Response:
        return self.http.get("/healthz")

    def scores(self) -> dict[str, int]:
        r = self.http.post("/prioritize", json={"Pod": POD, "NodeNames": NAMES})
        assert r.status_code == 200, r.text
        return {h["Host"]: h["Score"] for h in r.json()}

    def passing(self) -> list[str]:
        r = self.http.post("/filter", json={"Pod": POD, "NodeNames": NAMES})
        assert r.status_code == 200, r.text
        return r.json()["NodeNames"]

    def known_nodes(self) -> list[str]:
        r = self.http.post("/explain", json={"Pod": POD})
        return [row["node"] for row in r.json()["nodes"]]

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith("linstor_scheduler_"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def counted(self, family: str, **labels: str) -> float:
        """The sum of ``family``'s series whose labels include ``labels``."""
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(v for name, v in self.metrics().items()
                   if name.split("{")[0] == family and all(w in name for w in want))

    def allow_remote_access(self) -> None:
        """A Kubernetes change the extender must see: the StorageClass now allows remote access."""
        self.ks.patch("StorageClass", "local",
                      {"parameters": {"linstor.csi.linbit.com/allowRemoteVolumeAccess": "true"}})


@contextlib.contextmanager
def extender(*, extra_claims: int = 0, bound: float = BOUND) -> Iterator[Rig]:
    emu, ks = populated(extra_claims)
    with emu.serve() as lsrv, ks.serve() as ksrv:
        client = LinstorClient(lsrv.url, timeout=API_TIMEOUT, retries=1)
        api = make_api_client(host=ksrv.url, timeout=API_TIMEOUT)  # as the CLI makes it: deadlines, no retries
        app = build_live_app(client, api, poll_interval=0.5, max_staleness=bound, use_events=False,
                             api_timeout=API_TIMEOUT)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            rig = Rig(emu, ks, http, app, lsrv, bound)
            wait_for(lambda: rig.ready().status_code == 200, what="first full sync")
            assert rig.scores() == JUDGED
            try:
                yield rig
            finally:
                ks.reset_faults()
                ks.release_hangs()


def stale_for(rig: Rig, source: str) -> dict[str, Any]:
    """What the extender says while ``source`` is older than its bound: /readyz 503 naming it (and
    only it), every node passing with score 0, /healthz 200 (its loops turn: no restart wanted)."""
    ready = rig.ready()
    body = ready.json()
    assert ready.status_code == 503 and body["stale"] is True and body["neutral"] is True, body
    other = "LINSTOR state" if source == "Kubernetes view" else "Kubernetes view"
    assert source in body["detail"] and other not in body["detail"], body["detail"]
    assert "passes every node with score 0" in body["detail"]
    assert body["max_staleness_seconds"] == rig.bound and body["state_age_seconds"] > rig.bound
    assert rig.scores() == NEUTRAL and rig.passing() == NAMES
    alive = rig.alive()
    assert alive.status_code == 200, alive.text
    assert rig.metrics()["linstor_scheduler_state_stale"] == 1
    return body


def recovered(rig: Rig, since: float, case: str, expect: dict[str, int] = JUDGED) -> None:
    """/readyz 200 and judged answers again, within ``RECOVERY`` of ``since``; the time is recorded."""
    wait_for(lambda: rig.ready().status_code == 200 and rig.scores() == expect, timeout=RECOVERY,
             what=f"recovery after: {case}")
    measured(case, time.monotonic() - since)
    assert rig.alive().status_code == 200
    assert rig.metrics()["linstor_scheduler_state_stale"] == 0


# --- the API server ---------------------------------------------------------------------------------


def test_the_api_server_restarts():
    """A rolling restart of the API server: every watch ends at once, every request is answered 503
    ("apiserver is shutting down") while it is down, and things change meanwhile. The new process's
    watch cache starts at the current version, so each informer's resume gets 410 and it lists again;
    the change is seen."""
    with extender() as rig:
        expired = rig.counted("linstor_scheduler_kube_informer_relists_total", reason="expired")
        errors = rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="error")
        began = time.monotonic()
        rig.ks.down()
        wait_for(lambda: rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="error") > errors,
                 timeout=RECOVERY, what="the informers met the 503s")
        rig.allow_remote_access()  # written through another API server meanwhile
        rig.ks.up()
        recovered(rig, began, "the API server restarts: 503s, then 410, relisted, the change seen", REMOTE)
        # ready and judging needs the informers whose kinds changed; the others relist after their
        # own retry backoff (one had not yet when recovery was seen, with two suites on 2 CPUs)
        wait_for(lambda: rig.counted("linstor_scheduler_kube_informer_relists_total", reason="expired")
                 >= expired + 4, timeout=RECOVERY, what="every informer relisted after its 410")


def test_etcd_compacts_while_nodes_are_quiet():
    """The Node watch carries nothing for a while (a broken connection: no event, no bookmark) while
    other kinds change and etcd compacts: the Node informer, whose version fell behind, ends the silent
    watch at its deadline, gets 410 on the resume and relists by itself; a node added afterwards
    reaches the index."""
    with extender() as rig:
        before = rig.counted("linstor_scheduler_kube_informer_relists_total", kind="Node", reason="expired")
        began = time.monotonic()
        rig.ks.silent_watches("/api/v1/nodes")
        rig.ks.reset_faults()  # the Node watch open now stays silent; the next one is healthy
        rig.allow_remote_access()  # other kinds move on
        rig.ks.compact(kinds=["Node"])
        wait_for(lambda: rig.counted("linstor_scheduler_kube_informer_relists_total", kind="Node",
                                     reason="expired") > before, timeout=RECOVERY, what="the Node informer relisted")
        rig.ks.add(k.node("w4", zone="z3"))
        wait_for(lambda: "w4" in rig.known_nodes(), timeout=RECOVERY, what="the new node in the index")
        measured("etcd compacts while nodes are quiet: Node relisted, a new node seen", time.monotonic() - began)
        assert rig.ready().status_code == 200 and rig.scores() == REMOTE


def test_a_list_continue_token_expires_mid_list():
    """The informer lists claims in pages of 500. After an API server restart it must list again, and
    etcd compacts between two pages, so the second page's continue token answers 410. The list starts
    again from the top (a list of two snapshots is not one state), and the extender judges from the
    whole new list."""
    with extender(extra_claims=520) as rig:
        ks = rig.ks
        path = "/api/v1/persistentvolumeclaims"
        before = rig.counted("linstor_scheduler_kube_informer_relists_total", kind="PersistentVolumeClaim",
                             reason="expired")
        errors = rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="error")
        began = time.monotonic()
        ks.down()
        wait_for(lambda: rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="error") > errors,
                 timeout=RECOVERY, what="the informers met the 503s")
        ks.add(k.pvc("other-new", namespace="apps", storage_class="local"))  # a change while it was down
        ks.slow(0.3, path_prefix=path)  # each page answered late: room to compact between two
        mark = len(ks.requests)
        ks.up()

        def second_page_asked() -> bool:
            return any(p.startswith(path) and "continue=" in p for _, p in ks.requests[mark:])

        wait_for(second_page_asked, timeout=RECOVERY, what="the second page of the claims list requested")
        ks.expire_continue_tokens()  # etcd compacts past the list's version while the page is on its way
        wait_for(lambda: rig.counted("linstor_scheduler_kube_informer_relists_total", kind="PersistentVolumeClaim",
                                     reason="expired") >= before + 2, timeout=RECOVERY,
                 what="the watch's 410 and the continue token's 410, each a list from the top")
        ks.reset_faults()
        rig.allow_remote_access()
        recovered(rig, began, "a list continue token expires mid-list: listed again from the top", REMOTE)
        firsts = [p for _, p in ks.requests[mark:] if p.startswith(path + "?") and "continue=" not in p
                  and "watch=true" not in p]
        assert len(firsts) >= 2, "the list started again from its first page"


def test_the_backend_hangs_then_answers():
    """The API server accepts every request and answers none (a stuck etcd): the informers' reads end
    at their deadlines, the view is not confirmed, and once it is older than the bound the extender
    answers neutrally and /readyz says the Kubernetes view is stale (LINSTOR is fine). When the backend
    answers again the extender judges again, with no restart."""
    with extender() as rig:
        began = time.monotonic()
        rig.ks.hang()
        wait_for(lambda: rig.ready().status_code == 503, timeout=BOUND + 3, what="the view past its bound")
        measured("the backend hangs: /readyz 503 after", time.monotonic() - began)
        body = stale_for(rig, "Kubernetes view")
        assert body["kubernetes_age_seconds"] > BOUND >= body["linstor_age_seconds"]
        assert rig.ks.hung_requests() > 0
        # /readyz turns 503 when the stalest informer passes the bound; each informer was last confirmed
        # at its own moment, so the claims' informer passes it a moment later (in CI: 2.995 s when the
        # Node informer's age made /readyz 503)
        pvc_age = 'linstor_scheduler_kube_informer_age_seconds{kind="PersistentVolumeClaim"}'
        wait_for(lambda: rig.metrics()[pvc_age] > BOUND, timeout=BOUND, what="the claims' informer past the bound")
        metrics = rig.metrics()
        assert metrics['linstor_scheduler_kube_informer_healthy{kind="PersistentVolumeClaim"}'] == 0
        assert metrics['linstor_scheduler_kube_informer_stuck{kind="PersistentVolumeClaim"}'] == 0
        released = time.monotonic()
        rig.ks.release_hangs()
        recovered(rig, released, "the backend answers again after a hang: judging again")


def test_slow_answers_keep_the_view_fresh():
    """Every answer half a second late (an overloaded API server): watches still end and start again
    within the bound, so the extender stays ready and keeps seeing changes."""
    with extender() as rig:
        rig.ks.slow(0.5)
        before = rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="timeout")
        statuses: list[int] = []

        def two_more_watches_each() -> bool:
            statuses.append(rig.ready().status_code)
            return rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="timeout") >= before + 8

        wait_for(two_more_watches_each, timeout=10, what="two slow watches per kind")
        assert set(statuses) == {200}, statuses
        began = time.monotonic()
        rig.allow_remote_access()
        wait_for(lambda: rig.scores() == REMOTE, timeout=RECOVERY, what="a change seen through a slow server")
        measured("slow answers (0.5 s each): a change seen after", time.monotonic() - began)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_burst_of_error_answers(status):
    """A burst of 429 (API Priority and Fairness, with Retry-After), 500 or 503 answers while the
    informers renew their watches: each backs off, tries again and resumes; nothing is lost."""
    with extender() as rig:
        errors = rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="error")
        began = time.monotonic()
        rig.ks.inject(fail=8, status=status, retry_after=1)
        wait_for(lambda: rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="error") > errors,
                 timeout=RECOVERY, what=f"the informers met the {status}s")
        rig.allow_remote_access()
        recovered(rig, began, f"a burst of eight {status} answers: resumed, a change seen", REMOTE)


def test_a_half_open_watch_is_ended_before_the_view_goes_stale():
    """The watches open now go silent, as over a half-open connection (no event, no bookmark, no end):
    each is ended at its read deadline (half the bound after it opened) and the next watch confirms the
    view, so /readyz never fails and the metrics count the silent ends."""
    with extender(bound=HALF_OPEN_BOUND) as rig:
        before = rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="silent")
        rig.ks.silent_watches()
        rig.ks.reset_faults()  # only the watches open now: the next ones are healthy
        began = time.monotonic()
        statuses: list[int] = []

        def every_silent_watch_replaced() -> bool:
            statuses.append(rig.ready().status_code)
            metrics = rig.metrics()
            ages = [v for name, v in metrics.items() if name.startswith("linstor_scheduler_kube_informer_age_seconds")]
            return (rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="silent") > before
                    and len(ages) == 4 and max(ages) < 1.5)

        wait_for(every_silent_watch_replaced, timeout=HALF_OPEN_BOUND, what="the silent watches ended and replaced")
        measured("a half-open watch: ended and replaced after", time.monotonic() - began)
        assert set(statuses) == {200}, statuses
        assert rig.scores() == JUDGED


def test_watches_silent_past_the_bound():
    """Every watch stays silent (a proxy that keeps connections open and forwards nothing): the
    informers end each at its deadline, the next is silent too, the view ages past the bound. The
    extender turns neutral and says which informer is stale and why; when the streams flow again
    it recovers by itself."""
    with extender() as rig:
        began = time.monotonic()
        rig.ks.silent_watches()
        wait_for(lambda: rig.ready().status_code == 503, timeout=BOUND + 3, what="the view past its bound")
        measured("silent watches: /readyz 503 after", time.monotonic() - began)
        body = stale_for(rig, "Kubernetes view")
        assert "watch silent" in body["detail"] and "confirmed" in body["detail"]
        assert rig.counted("linstor_scheduler_kube_watch_restarts_total", reason="silent") > 0
        released = time.monotonic()
        rig.ks.release_hangs()
        recovered(rig, released, "watches flow again after silence: judging again")


# --- LINSTOR ----------------------------------------------------------------------------------------


def test_the_linstor_controller_goes_away_and_comes_back():
    """The controller's process is gone (connections refused), then starts again on the same address:
    the extender keeps the last good state while it is within the bound, then answers neutrally with
    /readyz naming LINSTOR; the next poll after the controller is back restores it."""
    with extender() as rig:
        port = rig.linstor.port
        began = time.monotonic()
        rig.linstor.stop()
        wait_for(lambda: rig.ready().json()["last_error"], what="a failed LINSTOR read")
        within = rig.ready()
        assert within.status_code == 200 and rig.scores() == JUDGED, "the last good state, within the bound"
        wait_for(lambda: rig.ready().status_code == 503, timeout=BOUND + 3, what="LINSTOR state past its bound")
        measured("the LINSTOR controller goes away: /readyz 503 after", time.monotonic() - began)
        body = stale_for(rig, "LINSTOR state")
        assert "LINSTOR read failed" in body["last_error"]
        assert rig.counted("linstor_scheduler_linstor_requests_total", status="error") > 0
        back = time.monotonic()
        with rig.emu.serve(port=port):
            recovered(rig, back, "the LINSTOR controller is back: judging again")


def test_linstor_answers_slower_than_its_timeout():
    """The controller answers, but each answer takes longer than the client's timeout (an overloaded
    controller): every read fails, the state ages past the bound, the extender says so; once answers
    are quick again the next poll restores it."""
    with extender() as rig:
        began = time.monotonic()
        rig.emu.inject(latency=API_TIMEOUT * 1.5)
        wait_for(lambda: rig.ready().status_code == 503, timeout=BOUND + 3, what="LINSTOR state past its bound")
        measured("LINSTOR slower than its timeout: /readyz 503 after", time.monotonic() - began)
        body = stale_for(rig, "LINSTOR state")
        assert "LINSTOR read failed" in body["last_error"]
        assert rig.counted("linstor_scheduler_linstor_requests_total", status="error") > 0
        quick = time.monotonic()
        rig.emu.reset_faults()
        recovered(rig, quick, "LINSTOR quick again: judging again")


def test_the_informers_and_the_read_are_kept_to_the_bound():
    """The assembly the CLI runs: at --max-staleness 120 s and --api-timeout 10 s the server ends each
    watch every 40 s, a silent one is ended 10 s later (half the bound after it opened), a retry waits
    at most 40 s, a list page at most 10 s, and one LINSTOR read at most 120 s."""
    app = build_live_app(LinstorClient("http://127.0.0.1:1"), make_api_client(host="http://127.0.0.1:1"),
                         max_staleness=120, api_timeout=10)
    for informer in app.state.caches.informers.values():
        assert (informer.watch_timeout, informer.read_slack, informer.backoff_cap, informer.list_timeout) == \
            (40.0, 10.0, 30.0, 10.0)
    assert app.state.syncer.read_deadline == 120
    small = build_live_app(LinstorClient("http://127.0.0.1:1"), make_api_client(host="http://127.0.0.1:1"),
                           max_staleness=BOUND, api_timeout=API_TIMEOUT)
    node = small.state.caches["Node"]
    assert (node.watch_timeout, node.read_slack, node.backoff_cap, node.list_timeout) == (1.0, 0.5, 1.0, 1.0)
