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
    assert took < 6, f"stop() took {took:.1f}s"
    wait_for(lambda: not any(i._thread.is_alive() for i in caches.informers.values()), timeout=5,
             what="the informer threads ending once their lists return")
