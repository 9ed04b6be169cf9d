"""Informers and the Event recorder over real HTTP against the API stand-in; what real API servers
and the real client do that the layer must survive, or say that it cannot ("never silently dead":
watches ended at once, a 410, lists that hang), through the client the components use
(``make_api_client``: no urllib3 retries, a deadline on every call)."""

from __future__ import annotations

import time

from kubernetes import client as k8s

from devkit import kube_objects as k
from linstor_scheduler.kube import EventRecorder, Informer, KubeCaches, make_api_client

from .waiting import wait_for


def test_informer_syncs_and_follows_changes(ks):
    ks.add(k.pod("a"))
    changes: list[tuple[str, str]] = []
    inf = Informer(ks.api, "Pod", on_change=lambda t, o: changes.append((t, o["metadata"]["name"])),
                   backoff_base=0.01)
    inf.start()
    try:
        assert inf.wait_synced(5)
        assert [o["metadata"]["name"] for o in inf.items()] == ["a"]
        ks.add(k.pod("b"))
        ks.patch("Pod", "a", {"metadata": {"labels": {"x": "1"}}})
        ks.delete("Pod", "b")
        wait_for(lambda: ("DELETED", "b") in changes, what="delete seen")
        assert changes == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        assert inf.get("a", "default")["metadata"]["labels"] == {"x": "1"}
        assert inf.get("b", "default") is None
    finally:
        started = time.monotonic()
        inf.stop()
        # Watch.stop() shuts the quiet stream's socket down (kubernetes >= 36): no waiting for a timeout.
        assert time.monotonic() - started < 1 and not inf._thread.is_alive(), "stop() must be prompt"


def test_watch_timeout_resumes_without_relisting(ks):
    inf = Informer(ks.api, "Node", watch_timeout=1)
    inf.start()
    try:
        assert inf.wait_synced(5)
        wait_for(lambda: ks.count("GET", "/api/v1/nodes?") >= 3, what="two watch renewals")
        ks.add(k.node("w1"))
        wait_for(lambda: inf.get("w1") is not None, what="node seen")
        assert inf.lists == 1
        lists = [p for m, p in ks.requests if m == "GET" and p.startswith("/api/v1/nodes") and "watch=true" not in p]
        assert len(lists) == 1
    finally:
        inf.stop()


def test_expired_version_relists(ks):
    inf = Informer(ks.api, "Node", watch_timeout=1)
    inf.start()
    try:
        assert inf.wait_synced(5)
        inf.stop()
        inf2 = Informer(ks.api, "Node", watch_timeout=1)
        inf2.resource_version = None
        ks.add(k.node("w1"))
        ks.compact()  # the first informer's version is gone now
        inf._stop.clear()
        inf.start()
        wait_for(lambda: inf.lists >= 2 and inf.get("w1") is not None, what="relist after 410")
    finally:
        inf.stop()


def test_errors_back_off_and_recover(ks):
    ks.inject(fail=3, status=500, path_prefix="/api/v1/persistentvolumes")
    inf = Informer(ks.api, "PersistentVolume", backoff_base=0.01, backoff_cap=0.05)
    inf.start()
    try:
        assert inf.wait_synced(10)
        assert inf.error is None and inf.healthy
        assert ks.count("GET", "/api/v1/persistentvolumes") >= 4
    finally:
        inf.stop()


def test_selectors_reach_the_server(ks):
    inf = Informer(ks.api, "Pod", label_selector="linstor.csi.linbit.com/on-storage-lost=remove",
                   field_selector="spec.nodeName=w1")
    ks.add(k.pod("match", labels={"linstor.csi.linbit.com/on-storage-lost": "remove"}, node_name="w1"))
    ks.add(k.pod("other", labels={"linstor.csi.linbit.com/on-storage-lost": "remove"}, node_name="w2"))
    inf.start()
    try:
        assert inf.wait_synced(5)
        assert [o["metadata"]["name"] for o in inf.items()] == ["match"]
        assert any("labelSelector=linstor.csi.linbit.com" in p and "fieldSelector=spec.nodeName" in p
                   for _, p in ks.requests)
    finally:
        inf.stop()


def test_caches_sync_and_age(ks):
    """A quiet view's age is the time since the server last confirmed it: each watch the server ends
    at its timeout confirms it, so with ``max_age`` 3 s (watches of 1 s) the age stays under 3 s."""
    caches = KubeCaches(ks.api, ["Node", "PersistentVolumeClaim", "PersistentVolume", "StorageClass"], max_age=3)
    assert caches.age() is None
    caches.start()
    try:
        assert caches.wait_synced(5) and caches.synced
        assert caches["Node"].watch_timeout == 1.0
        wait_for(lambda: all(i.restarts["timeout"] >= 2 for i in caches.informers.values()),
                 what="two watches of every kind ended by the server")
        age = caches.age()
        assert age is not None and age < 3
        assert caches.stuck() == [] and caches.errors() == {}
    finally:
        caches.stop()


def test_a_quiet_kind_compacted_away_relists_by_itself(ks):
    """Nodes stay quiet while pods change; the API server restarts (its watch caches start at the
    current version, no bookmark reached the Node watch first); the Node watch, resumed from its old
    version, gets an ERROR event with code 410 and must relist (with the official client's Watch it
    raised KeyError and retried the expired version for ever)."""
    ks.add(k.node("w1"))
    inf = Informer(ks.api, "Node", watch_timeout=1, backoff_base=0.01)
    inf.start()
    try:
        assert inf.wait_synced(5)
        for i in range(3):
            ks.add(k.pod(f"p{i}"))  # another kind moves the global resourceVersion on
        ks.restart()
        wait_for(lambda: inf.relists["expired"] >= 1, what="a relist after 410")
        ks.patch("Node", "w1", {"metadata": {"labels": {"seen": "after"}}})
        wait_for(lambda: (inf.get("w1")["metadata"].get("labels") or {}).get("seen") == "after",
                 what="the change made after the restart")
        wait_for(lambda: inf.healthy and inf.error is None, what="watching again")
    finally:
        inf.stop()


def test_a_view_not_confirmed_grows_old(ks):
    """The age is measured from the last confirmation: once the server stops answering (every
    request fails), it grows, and the informer says why."""
    inf = Informer(ks.api, "Node", watch_timeout=1, backoff_base=0.01, backoff_cap=0.05)
    inf.start()
    try:
        assert inf.wait_synced(5)
        ks.inject(fail=10_000, status=503, path_prefix="/api/v1/nodes")
        wait_for(lambda: inf.error is not None and "503" in inf.error, what="the failure seen")
        confirmed = inf.confirmed_at
        wait_for(lambda: (inf.age() or 0) > 1.5, what="the age growing")
        assert inf.confirmed_at == confirmed and not inf.healthy
        ks.reset_faults()
        wait_for(lambda: inf.healthy and (inf.age() or 99) < 1.5, what="recovered")
    finally:
        inf.stop()


def test_event_recorder_creates_and_aggregates(ks):
    node = ks.add(k.node("w1"))
    rec = EventRecorder(ks.api, component="linstor-scheduler-test")
    rec.record(node, "Warning", "PoolTagClash", "two volume groups carry linstor-data")
    rec.record(node, "Warning", "PoolTagClash", "two volume groups carry linstor-data")
    assert rec.flush(10) and rec.sent == 2
    events = k8s.CoreV1Api(ks.api).list_namespaced_event("default").items
    assert len(events) == 1
    ev = events[0]
    assert ev.count == 2 and ev.reason == "PoolTagClash" and ev.type == "Warning"
    assert ev.involved_object.kind == "Node" and ev.involved_object.uid == node["metadata"]["uid"]
    assert ev.source.component == "linstor-scheduler-test"


def test_event_recorder_never_raises(ks, caplog):
    ks.inject(fail=5, status=500, path_prefix="/api/v1/namespaces/default/events")
    rec = EventRecorder(ks.api)
    rec.record(ks.add(k.node("w2")), "Normal", "Test", "hello")
    assert rec.flush(10) and rec.failed == 1
    assert "could not record event Test" in caplog.text


def test_events_to_a_hung_api_server_are_dropped_not_waited_for(ks):
    """The API server takes the Event requests and never answers: ``record`` returns at once all the
    same, the queue fills, and what does not fit is dropped and counted; once the server answers
    again, what was queued is sent."""
    from linstor_scheduler.kube.client import timed_client

    ks.hang(path_prefix="/api/v1/namespaces/default/events")
    slow = timed_client(k8s.Configuration(host=ks.url), timeout=30)
    rec = EventRecorder(slow, queue_size=4)
    node = ks.add(k.node("w3"))
    rec.record(node, "Warning", "Test", "event 0")
    wait_for(lambda: ks.hung_requests() == 1, what="the first Event hanging in the API server")
    started = time.monotonic()
    for i in range(1, 20):
        rec.record(node, "Warning", "Test", f"event {i}")
    assert time.monotonic() - started < 0.5, "record() must never wait for the API server"
    assert rec.dropped == 19 - 4 and rec.pending == 5  # the hung one and the queue's 4
    ks.release_hangs()
    assert rec.flush(20) and rec.sent + rec.failed == 5


def test_calls_have_a_deadline_and_writes_are_sent_once(ks):
    """No hidden retries: a DELETE whose answer fails is sent once; every call without its own
    ``_request_timeout`` gets the client's."""
    import asyncio

    from linstor_scheduler.kube.calls import KubeCalls

    api = make_api_client(host=ks.url, timeout=2.0)
    ks.add(k.node("w4"))
    ks.inject(fail=1, status=503, path_prefix="/api/v1/nodes/w4", method="DELETE")
    calls = KubeCalls(timeout=2.0)
    core = k8s.CoreV1Api(api)
    try:
        asyncio.run(calls.write(core.delete_node, "w4"))
        raise AssertionError("a 503 must reach the caller")
    except k8s.exceptions.ApiException as exc:
        assert exc.status == 503
    assert ks.count("DELETE", "/api/v1/nodes/w4") == 1
    assert calls.writes.outcomes["api_error"] == 1
    assert type(api).default_timeout == (2.0, 2.0)
    calls.shutdown()


def test_make_api_client(ks, tmp_path):
    api = make_api_client(host=ks.url)
    assert k8s.CoreV1Api(api).list_node().items == []
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{ks.url}"}}}}]
users: [{{name: u, user: {{token: abc}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    ks.add(k.node("w9"))
    assert [n.metadata.name for n in k8s.CoreV1Api(make_api_client(str(cfg))).list_node().items] == ["w9"]


def test_lists_are_paged_and_transform_keeps_only_what_it_returns(ks):
    """A relist asks for pages (limit/continue, as client-go's reflector does): 100,000 pods are never
    one JSON document in memory; ``transform`` decides what the store keeps (None: nothing)."""
    for i in range(5):
        ks.add(k.pod(f"p{i}", node_name="n1" if i % 2 else None))
    seen: list[tuple[str, object]] = []
    informer = Informer(ks.api, "Pod", page_size=2, on_change=lambda kind, obj: seen.append((kind, obj)),
                        transform=lambda o: o["spec"].get("nodeName") and o["metadata"]["name"])
    informer.start()
    try:
        assert informer.wait_synced(5)
        assert sorted(informer.items()) == ["p1", "p3"]  # the kept values; the unbound pods are skipped
        assert sorted(seen) == [("ADDED", "p1"), ("ADDED", "p3")]
        lists = [p for m, p in ks.requests if m == "GET" and "watch=true" not in p and "/pods" in p]
        assert len(lists) == 3 and all("limit=2" in p for p in lists) and sum("continue=" in p for p in lists) == 2
        ks.add(k.pod("p9", node_name="n2"))  # a watch event goes through the same transform
        wait_for(lambda: "p9" in informer.items(), what="the watched pod")
    finally:
        informer.stop()


def test_after_an_etcd_restore_the_informer_lists_again(ks):
    """etcd is restored from a backup taken before node w2 was added: the API server's version goes
    back, a resume from a later version gets 504 "Too large resource version", and the informer
    must list again (resuming would miss everything up to its old version) and drop w2."""
    ks.add(k.node("w1"))
    snapshot = ks.backup()
    inf = Informer(ks.api, "Node", watch_timeout=1, backoff_base=0.01, backoff_cap=0.05)
    inf.start()
    try:
        assert inf.wait_synced(5)
        ks.add(k.node("w2"))
        wait_for(lambda: inf.get("w2") is not None, what="w2 seen")
        ks.restore(snapshot)
        wait_for(lambda: inf.get("w2") is None, what="the restored state listed")
        assert inf.relists["expired"] >= 1 and inf.get("w1") is not None
        wait_for(lambda: inf.healthy, what="watching again")
    finally:
        inf.stop()


def test_a_failing_change_callback_loses_nothing_else(ks, caplog):
    """The component's callback raises on one object: the store and the next changes go on."""
    seen: list[str] = []

    def callback(kind: str, obj: dict) -> None:
        if obj["metadata"]["name"] == "bad":
            raise RuntimeError("a bug in the component")
        seen.append(obj["metadata"]["name"])

    inf = Informer(ks.api, "Node", on_change=callback, watch_timeout=1)
    inf.start()
    try:
        assert inf.wait_synced(5)
        ks.add(k.node("bad"))
        ks.add(k.node("good"))
        wait_for(lambda: "good" in seen, what="the change after the failing one")
        assert inf.get("bad") is not None and inf.healthy and inf.restarts["error"] == 0
        assert "the change callback failed on ADDED bad" in caplog.text
    finally:
        inf.stop()


def test_a_throttled_informer_waits_as_long_as_the_server_asks(ks):
    """The API server sheds load with 429 and ``Retry-After: 2`` (API Priority and Fairness): the
    informer's next try comes no sooner than asked, although its own back-off would be 10 ms."""
    ks.inject(fail=1, status=429, path_prefix="/api/v1/nodes", retry_after=2)
    inf = Informer(ks.api, "Node", watch_timeout=1, backoff_base=0.01, backoff_cap=5)
    started = time.monotonic()
    inf.start()
    try:
        assert inf.wait_synced(10)
        assert time.monotonic() - started >= 2.0
        assert ks.count("GET", "/api/v1/nodes") >= 2
    finally:
        inf.stop()


def test_an_event_whose_answer_was_lost_is_recorded_once(ks):
    """The API server creates the Event, then the connection breaks before its answer: the recorder
    sends it once more under the same name, takes the 409 for "done", and a repeat bumps its count
    instead of creating a second Event."""
    node = ks.add(k.node("w5"))
    ks.lose_answers(path_prefix="/api/v1/namespaces/default/events", method="POST", count=1)
    rec = EventRecorder(ks.api)
    rec.record(node, "Warning", "Lost", "the answer goes missing")
    assert rec.flush(10) and (rec.sent, rec.failed) == (1, 0)
    rec.record(node, "Warning", "Lost", "the answer goes missing")
    assert rec.flush(10)
    events = [e for e in ks.list("Event") if e["reason"] == "Lost"]
    assert len(events) == 1 and events[0]["count"] == 2
    assert ks.count("POST", "/api/v1/namespaces/default/events") == 2


# --- never silently dead: watches ended at once, 410, lists that hang (issue 18) ------------------
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
