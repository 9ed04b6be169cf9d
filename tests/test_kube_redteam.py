"""Red team of the Kubernetes layer (issue 18, "never silently dead"): what real API servers and the
real client do that the layer must survive, or say that it cannot. Each test is one bad day played
by the stand-in over real HTTP, through the client the components use (``make_api_client``: no
urllib3 retries, a deadline on every call)."""

from __future__ import annotations

import time

from devkit import kube_objects as k
from linstor_scheduler.kube import make_api_client
from linstor_scheduler.kube.informer import Informer, KubeCaches

from .waiting import wait_for


def _watches(ks, path: str) -> int:
    return sum(1 for m, p in ks.requests if m == "GET" and p.startswith(path + "?") and "watch=true" in p)


def test_watches_ended_at_once_confirm_nothing_and_back_off(ks):
    """A server shutting down ends every watch at once, new ones included (apiserver watch.go
    ``HandleHTTP``: ``<-s.ServerShuttingDownCh``), and so does a proxy that cuts long requests. Each
    such end is HTTP 200 and a clean end of the stream, without an event.

    Before: every clean end counted as "the server ended the watch at its timeout: nothing missed",
    so the age stayed near 0 and the informer healthy while a node added meanwhile never arrived,
    and the loop reopened the watch without pause (hundreds of watches a second against a server
    going down). client-go calls such a watch an error and backs off (reflector.go ``handleWatch``,
    "very short watch")."""
    api = make_api_client(host=ks.url, timeout=5.0)
    ks.add(k.node("w1"))
    inf = Informer(api, "Node", watch_timeout=2, backoff_base=0.2, backoff_cap=0.5)
    inf.start()
    try:
        assert inf.wait_synced(5)
        ks.short_watches("/api/v1/nodes")
        ks.add(k.node("w2"))  # the open watch may still bring it; none after it will bring w3
        wait_for(lambda: _watches(ks, "/api/v1/nodes") >= 3, timeout=8, what="watches ended at once")
        ks.add(k.node("w3"))
        started, before = time.monotonic(), _watches(ks, "/api/v1/nodes")
        wait_for(lambda: (inf.age() or 0) > 2.5, timeout=8,
                 what="the age growing while no watch confirms anything")
        rate = (_watches(ks, "/api/v1/nodes") - before) / (time.monotonic() - started)
        assert inf.get("w3") is None and not inf.healthy and "without any event" in (inf.error or "")
        assert rate < 10, f"{rate:.0f} watches a second: the loop does not back off"
        ks.reset_faults()
        wait_for(lambda: inf.get("w3") is not None and inf.healthy, timeout=8, what="recovered")
        assert (inf.age() or 99) < 2.5
    finally:
        inf.stop()


def test_a_watch_refused_with_410_relists(ks):
    """A watch refused with HTTP 410 Gone (rather than 200 and an ERROR event) is expired all the
    same: client-go's reflector relists (reflector.go ``isWatchErrorRetriable`` is false for it,
    ``isExpiredError``). Before: it backed off and resumed from the same version, which a server
    that no longer has it answers 410 for ever."""
    api = make_api_client(host=ks.url, timeout=5.0)
    inf = Informer(api, "Node", watch_timeout=1, backoff_base=0.05, backoff_cap=0.1)
    inf.start()
    try:
        assert inf.wait_synced(5)
        wait_for(lambda: _watches(ks, "/api/v1/nodes") >= 1, what="the first watch")
        ks.inject(fail=1, status=410, path_prefix="/api/v1/nodes", method="GET")  # the next watch
        wait_for(lambda: inf.relists["expired"] >= 1, timeout=6, what="a relist after the watch's 410")
        wait_for(lambda: inf.healthy, what="healthy again")
    finally:
        inf.stop()


def test_stop_is_prompt_while_every_list_hangs(ks):
    """The API server accepts the lists and never answers (a hung backend): shutdown must still fit the
    kubelet's grace period. Before: ``KubeCaches.stop`` waited 5 s for each informer in turn (the
    list response is not in ``_resp``, so nothing could shut it), 15 s for three kinds, 25 s for
    fencing's five."""
    api = make_api_client(host=ks.url, timeout=5.0)
    ks.hang(path_prefix="/api/v1/")
    caches = KubeCaches(api, ["Node", "PersistentVolume", "PersistentVolumeClaim"], list_timeout=30)
    caches.start()
    try:
        wait_for(lambda: ks.hung_requests() == 3, what="three hung lists")
    finally:
        started = time.monotonic()
        caches.stop()
        took = time.monotonic() - started
        ks.release_hangs()
    assert took < 2, f"stop() took {took:.1f}s"
    wait_for(lambda: not any(i._thread.is_alive() for i in caches.informers.values()), timeout=5,
             what="the informer threads ending once their lists return")


def test_fencing_ends_within_its_two_seconds_while_the_api_server_hangs_every_list():
    """Fencing promises to end within 2 s of SIGTERM (test_fencing_shutdown). With an API server that
    accepts the informers' lists and never answers, its closer ``KubeCaches.stop`` waited for each of
    the five informers in turn (25 s; 5 s after the shared deadline above): a list hung before its
    headers cannot be interrupted, and the process ends at once after the closers anyway
    (``runtime.exit_now``), so there is nothing to wait for past a short grace."""
    import subprocess
    import sys

    from .fencing_rig import Rig

    with Rig() as rig:
        rig.ks.hang(path_prefix="/ap")  # /api/v1/... and /apis/...: every Kubernetes request
        child = subprocess.Popen(
            [sys.executable, "-m", "linstor_scheduler.cli", "fencing", "--controllers", rig.emu_url,
             "--kube-api-url", rig.ks_url, "--no-leader-elect", "--port", "0", "--no-promotion-events",
             "--log-level", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: rig.ks.hung_requests() >= 5 or child.poll() is not None, timeout=30,
                     what="the five informers' lists hung")
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            started = time.monotonic()
            child.terminate()
            try:
                code = child.wait(30)
            finally:
                took = time.monotonic() - started
            assert code == 0, child.stderr.read().decode() if child.stderr else ""
            assert took < 2.0, f"SIGTERM took {took:.2f}s to end fencing"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
            rig.ks.release_hangs()


def test_fencing_metrics_tell_the_informers_age():
    """The layer's probes and metrics exist (``KubeCollector``) but nothing exports them: an operator
    cannot see a stale or stuck informer, a relist storm or dropped Events on /metrics."""
    import subprocess
    import sys
    import urllib.request

    from .fencing_rig import Rig
    from .waiting import free_ports, stop_child

    (port,) = free_ports(1)
    with Rig() as rig:
        child = subprocess.Popen(
            [sys.executable, "-m", "linstor_scheduler.cli", "fencing", "--controllers", rig.emu_url,
             "--kube-api-url", rig.ks_url, "--no-leader-elect", "--port", str(port), "--no-promotion-events"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = ""
        try:
            def scraped() -> bool:
                nonlocal text
                try:
                    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                except OSError:
                    return False
                return "fencing" in text or "linstor" in text

            wait_for(scraped, timeout=30, what="/metrics answering")
        finally:
            stop_child(child)
        assert 'linstor_scheduler_kube_informer_age_seconds{kind="Node"}' in text
