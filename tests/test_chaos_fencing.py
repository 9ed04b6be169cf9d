"""The fencing controller on the API server's and LINSTOR's bad days: the service as deployed
(``wiring.serve`` with its real informers, Lease, call pools and clients) against the API stand-in
and the LINSTOR emulator over loopback HTTP, probed on its side port as the kubelet probes it.

Bounds are small (``--max-staleness`` 3 s: watches of 1 s, a silent watch given up after 2 s,
back-off of at most 1 s; ``--api-timeout`` 1 s; grace 0.5 s; polls of 0.2 s). Each case says, as a
real-world event, what happens; waits on conditions only; asserts what fencing must do meanwhile
(nothing on a view older than the bound), what its probes said, and how long it took to recover
(printed as ``CHAOS fencing | case | seconds``, asserted against the bound docs/operations.md states).
"""

from __future__ import annotations

import time

import pytest

from devkit import kube_objects as k

from .fencing_rig import FencingService, Rig, database

KINDS = ("Pod", "PersistentVolumeClaim", "PersistentVolume", "Node", "VolumeAttachment")
PATHS = {"Pod": "/api/v1/pods?", "PersistentVolumeClaim": "/api/v1/persistentvolumeclaims?",
         "PersistentVolume": "/api/v1/persistentvolumes?", "Node": "/api/v1/nodes?",
         "VolumeAttachment": "/apis/storage.k8s.io/v1/volumeattachments?"}
BOUND = 3.0  # --max-staleness of these tests
WATCH = BOUND / 3  # the server ends each watch after this long
GRACE = 0.5  # --grace-period of these tests (1 s where a grace period is measured against an outage)
LINSTOR_GRACE = 1.0
TICK = 0.3  # a pass (polls of 0.2 s) and a probe: how late a change can be seen
LINSTOR_BOUND = 2.0  # the LINSTOR cases need no watch to end: a shorter bound, a faster test


def measured(case: str, seconds: float, bound: float) -> None:
    print(f"\nCHAOS fencing | {case} | {seconds:.2f}s (bound {bound:g}s)")
    assert seconds <= bound, f"{case}: {seconds:.2f}s, more than {bound:g}s"


def informer(svc: FencingService, metric: str, kind: str, **labels: str) -> float | None:
    return svc.metric(f"linstor_scheduler_kube_{metric}", kind=kind, **labels)


def confirmed_since(svc: FencingService, at: float) -> bool:
    """Every informer's view was confirmed by the server after ``at`` (time.monotonic)."""
    elapsed = time.monotonic() - at
    ages = [informer(svc, "informer_age_seconds", kind) for kind in KINDS]
    return all(age is not None and age < elapsed for age in ages)


def relisted(rig: Rig, mark: int, kind: str) -> bool:
    """The ``kind`` informer listed after request number ``mark`` and watches again since: its list
    is complete (an informer lists, then watches)."""
    asked = [path for method, path in rig.ks.requests[mark:] if method == "GET" and path.startswith(PATHS[kind])]
    lists = [i for i, path in enumerate(asked) if "watch=true" not in path]
    return bool(lists) and any("watch=true" in path for path in asked[lists[-1] + 1:])


def alive_throughout(svc: FencingService, since: float) -> None:
    """/healthz never failed: a misbehaving API server or LINSTOR is no reason to restart fencing."""
    probes = svc.probes_since(since)
    assert probes, "no probe was made"
    failed = [p.alive for p in probes if p.alive[0] != 200]
    assert failed == [], failed[:3]


def ready_throughout(svc: FencingService, since: float) -> None:
    failed = [p.ready for p in svc.probes_since(since) if p.ready[0] != 200]
    assert failed == [], failed[:3]


def fails_over(svc: FencingService, rig: Rig, pod: str = "db-0", node: str = "n1", bound: float = 10.0) -> float:
    """``node`` loses power; seconds until its pod was removed."""
    rig.crash(node)
    return svc.wait(lambda: rig.ks.get("Pod", pod) is None, f"{pod} removed from {node}", bound)


def test_the_api_server_restarts(rig):
    """The API server restarts while the cluster moves on: every watch ends, each resume gets 410 Gone,
    every informer lists again; the view never goes stale, and a node crash afterwards is failed over."""
    database(rig)
    with FencingService(rig, grace=GRACE) as svc:
        rig.ks.add(k.storage_class("unrelated"))  # the cluster moves on: every watched version is behind
        restarted, mark = time.monotonic(), len(rig.ks.requests)
        rig.ks.restart()
        took = svc.wait(lambda: all(relisted(rig, mark, kind) for kind in KINDS), "every informer relisted", 10)
        assert all((informer(svc, "informer_relists_total", kind, reason="expired") or 0) >= 1 for kind in KINDS)
        measured("API server restart: every informer relisted", took, BOUND)
        ready_throughout(svc, restarted)
        measured("API server restart: then a crashed node failed over", fails_over(svc, rig), GRACE + 2)
        alive_throughout(svc, restarted)


def test_a_half_open_node_watch_while_etcd_compacts(rig):
    """The Node watch's connection goes half-open (nothing more arrives, not even its end) while pods
    change and etcd compacts: fencing gives the watch up at its read deadline, the resume gets 410,
    the Node informer lists again; the other informers never notice."""
    database(rig)
    with FencingService(rig, grace=GRACE) as svc:
        silenced, mark = time.monotonic(), len(rig.ks.requests)
        rig.ks.silent_watches("/api/v1/nodes")
        svc.wait(lambda: rig.ks.open_watches("/api/v1/nodes") >= 1, "the Node watch open (and silent)")
        rig.ks.reset_faults()  # only this one connection is half-open; new ones work
        rig.pod("web-0", "n3", [], labelled=False)  # pods change while nodes stay quiet
        rig.ks.compact(["Node"])
        took = svc.wait(lambda: (informer(svc, "watch_restarts_total", "Node", reason="silent") or 0) >= 1
                        and (informer(svc, "informer_relists_total", "Node", reason="expired") or 0) >= 1
                        and relisted(rig, mark, "Node"), "the Node watch given up, then relisted", 10)
        measured("half-open Node watch + compaction: relisted", took, BOUND)
        assert [kind for kind in KINDS if informer(svc, "informer_relists_total", kind, reason="expired")] == ["Node"]
        measured("half-open Node watch + compaction: then a crashed node failed over", fails_over(svc, rig),
                 GRACE + 2)
        alive_throughout(svc, silenced)


def test_every_watch_goes_half_open(rig):
    """Every watch connection goes half-open at once (a NAT or load balancer forgets them): each is
    given up at its read deadline and resumed from its last version, no relist; /readyz fails, with
    the reason, only if the view grew older than the bound meanwhile."""
    database(rig)
    with FencingService(rig, grace=GRACE) as svc:
        silenced = time.monotonic()
        rig.ks.silent_watches()
        svc.wait(lambda: rig.ks.open_watches() >= len(KINDS), "every watch open (and silent)")
        rig.ks.reset_faults()
        took = svc.wait(lambda: all((informer(svc, "watch_restarts_total", kind, reason="silent") or 0) >= 1
                                    for kind in KINDS) and confirmed_since(svc, silenced),
                        "every watch given up and resumed", 10)
        measured("every watch half-open: resumed", took, BOUND + BOUND / 3)  # + one back-off
        assert all(informer(svc, "informer_relists_total", kind, reason="expired") is None for kind in KINDS)
        unready = [p.ready[1] for p in svc.probes_since(silenced) if p.ready[0] != 200]
        assert all("Kubernetes view" in text for text in unready), unready[:3]
        print(f"CHAOS fencing | every watch half-open: /readyz failed in {len(unready)} probes of 50 ms")
        measured("every watch half-open: then a crashed node failed over", fails_over(svc, rig), GRACE + 2)
        alive_throughout(svc, silenced)


LEASE = 2.0  # --lease-duration of FencingService
PATIENCE = 3 * LEASE  # blind this long, a leader steps aside (fencing/wiring.py, StepAside)


def test_a_leader_blind_to_kubernetes_steps_aside(rig):
    """Every watch connection hangs half-open, again and again (a broken NAT), while the small Lease
    writes still go through. The leader's view grows older than the bound; three Lease durations
    later it releases the Lease (a standby that sees could take over), and /readyz says why; a node
    that crashes then is left alone. Once watches work again, it campaigns, leads, and fails that
    node over."""
    database(rig)
    with FencingService(rig, grace=GRACE, lease=LEASE) as svc:
        blind = time.monotonic()
        rig.ks.silent_watches()
        took = svc.wait(lambda: not svc.leading()
                        and svc.metric("linstor_scheduler_kube_lease_released_blind_total") == 1
                        and rig.ks.get("Lease", "linstor-scheduler-fencing", "kube-system")["spec"]["holderIdentity"]
                        == "", "the Lease released", 20)
        measured("blind leader: the Lease released", took, BOUND + WATCH + PATIENCE + TICK)
        silent = informer(svc, "watch_restarts_total", "Node", reason="silent") or 0
        rig.crash("n1")  # while nobody sees: nobody acts, for one more half-open watch (2 s: past the grace period)
        svc.wait(lambda: (informer(svc, "watch_restarts_total", "Node", reason="silent") or 0) >= silent + 1,
                 "one more half-open Node watch", 10)
        code, text = svc.ready()
        assert code == 503 and "Kubernetes view" in text and "bound 3s" in text, text
        assert rig.ks.get("Pod", "db-0") is not None and rig.pod_deletes() == []
        seeing = time.monotonic()
        rig.ks.release_hangs()
        leads = svc.wait(lambda: svc.leading() and svc.ready()[0] == 200, "leading again", 10)
        measured("watches work again: leading and ready", leads, BOUND)
        svc.wait(lambda: rig.ks.get("Pod", "db-0") is None, "db-0 failed over", 10)
        gone = time.monotonic() - seeing
        assert gone >= GRACE, "a new term: the fault is timed afresh"
        measured("watches work again: the pod failed over", gone, BOUND + GRACE + 1)
        alive_throughout(svc, blind)


def test_a_blind_leader_hands_over_to_a_standby_that_sees(rig):
    """Two instances, as the Deployment runs them. The leader's node loses its watch connections
    (half-open, a broken NAT on that node; its Lease writes still go through); the standby's work.
    Three Lease durations after its view passed the bound, the leader hands the Lease over, the
    standby leads, and when a node crashes it is the standby that fails the pod over; the blind
    instance writes nothing meanwhile."""
    database(rig)
    with FencingService(rig, grace=GRACE, lease=LEASE, agent="a") as a, \
            FencingService(rig, grace=GRACE, lease=LEASE, agent="b", lead=False) as b:
        assert a.leading() and not b.leading()
        blind = time.monotonic()
        rig.ks.silent_watches(agent="linstor-scheduler-fencing/a")
        took = b.wait(lambda: b.leading() and not a.leading(), "the standby leading", 20)
        measured("blind leader: the standby that sees leads", took, BOUND + WATCH + PATIENCE + LEASE + TICK)
        code, text = a.ready()
        assert code == 503 and "Kubernetes view" in text, text
        assert b.ready()[0] == 200
        crashed = time.monotonic()
        rig.crash("n1")
        b.wait(lambda: rig.ks.get("Pod", "db-0") is None, "db-0 failed over by the standby", 10)
        measured("blind leader: a crash failed over by the new leader", time.monotonic() - crashed, GRACE + 2)
        def removals(svc: FencingService) -> float:
            return sum(svc.metric("linstor_scheduler_fencing_actions_total", kind=kind, outcome="done") or 0
                       for kind in ("pod_delete", "pod_evict"))

        b.wait(lambda: removals(b) == 1, "the new leader's removal counted", 5)  # counted once answered
        assert removals(a) == 0
        assert a.alive()[0] == 200 and b.alive()[0] == 200
        print(f"CHAOS fencing | blind leader, two instances: handed over after {took:.2f}s of "
              f"{time.monotonic() - blind:.2f}s")


def test_a_continue_token_expires_during_a_relist(rig):
    """600 nodes: a relist takes two pages. The API server restarts, and while the Node informer
    lists again, slowly, etcd compacts past its continue token: the second page answers 410, the
    informer lists again from the top and ends with one consistent view."""
    for i in range(600):
        rig.ks.add(k.node(f"w{i:03}"))
    database(rig)
    with FencingService(rig, grace=GRACE) as svc:
        rig.ks.slow(0.3, "/api/v1/nodes")  # an overloaded server: each Node request answered late
        rig.ks.add(k.storage_class("unrelated"))
        restarted, mark = time.monotonic(), len(rig.ks.requests)
        rig.ks.restart()
        svc.wait(lambda: any("/api/v1/nodes?" in path and "continue=" in path for _, path in rig.ks.requests[mark:]),
                 "the second page of the relist asked for", 10)
        rig.ks.expire_continue_tokens()
        took = svc.wait(lambda: (informer(svc, "informer_relists_total", "Node", reason="expired") or 0) >= 2
                        and relisted(rig, mark, "Node"), "the Node list started again and finished", 10)
        rig.ks.reset_faults()
        pages = [p for _, p in rig.ks.requests[mark:] if p.startswith("/api/v1/nodes?") and "watch=true" not in p]
        assert sum("continue=" in p for p in pages) >= 2, pages  # the expired page, and the good one
        measured("continue token expired during a relist: listed again", took, BOUND)
        measured("continue token expired: then a crashed node failed over", fails_over(svc, rig), GRACE + 2)
        alive_throughout(svc, restarted)


def test_the_api_server_hangs_then_answers_again(rig):
    """The API server accepts every request and answers none (a stuck etcd), while a node loses power.
    Fencing does nothing on what it cannot see: /readyz fails naming the stale view, the Lease lapses,
    nobody is removed. When the server answers again, the view is fresh within the bound, the Lease is
    won back, and the pod is failed over a full grace period after a fresh read."""
    database(rig)
    with FencingService(rig, grace=GRACE) as svc:
        hung = time.monotonic()
        rig.ks.hang()
        rig.crash("n1")
        took = svc.wait(lambda: svc.ready()[0] == 503 and "Kubernetes view" in svc.ready()[1]
                        and not svc.leading() and all(informer(svc, "informer_healthy", kind) == 0 for kind in KINDS),
                        "/readyz failing, every informer failing, the Lease given up", 10)
        # the watches open when it hung still end on time, confirming the view: the bound runs from then
        measured("API server hangs: /readyz fails and the Lease lapses", took, BOUND + WATCH + TICK)
        text = svc.ready()[1]
        assert "bound 3s" in text and "Pod confirmed" in text, text
        assert rig.ks.get("Pod", "db-0") is not None and rig.pod_deletes() == []
        rig.ks.release_hangs()
        ready = svc.wait(lambda: svc.ready()[0] == 200 and svc.leading(), "ready and leading again", 10)
        measured("API server answers again: ready and leading", ready, BOUND)
        gone = svc.wait(lambda: rig.ks.get("Pod", "db-0") is None, "db-0 failed over", 10)
        measured("API server answers again: the pod failed over", gone, BOUND + GRACE + 1)
        alive_throughout(svc, hung)


def statefulset(rig: Rig, replicas: int, node: str = "n1") -> list[str]:
    """``replicas`` labelled pods on ``node``, each with its own volume replicated to another node."""
    peers = [n for n in rig.nodes if n != node]
    names = [f"db-{i}" for i in range(replicas)]
    for i, name in enumerate(names):
        database(rig, node, peers=(peers[i % len(peers)],), name=name)
    return names


@pytest.mark.parametrize("pods", [8, 50])
def test_the_events_backend_hangs_while_a_node_with_many_pods_is_lost(rig, pods):
    """Events live in an etcd of their own (the API server's ``--etcd-servers-overrides=/events#...``),
    and that etcd hangs: every Event request is accepted and never answered. A node with ``pods``
    labelled pods loses power. Every pod fails over on time all the same (before, each hung Event
    held a thread of the shared pool, and with 8 pods 0 of 8 failed over): Events wait in their own
    queue, are dropped when it is full, and never hold a read or a write."""
    names = statefulset(rig, pods)
    with FencingService(rig, "--evictions-per-minute", "1000", grace=GRACE) as svc:
        since = time.monotonic()
        rig.ks.hang(path_prefix="/api/v1/namespaces/default/events")
        rig.crash("n1")
        took = svc.wait(lambda: all(rig.ks.get("Pod", n) is None for n in names), f"all {pods} pods failed over", 30)
        measured(f"events backend hung: {pods} pods failed over", took, GRACE + BOUND + 2)
        assert rig.ks.hung_requests() >= 1, "the Events did hang"
        alive_throughout(svc, since)


@pytest.mark.parametrize("pods", [8, 50])
def test_a_node_with_many_pods_is_lost_while_the_api_server_hangs(rig, pods):
    """A node with ``pods`` labelled pods loses power while the API server accepts every request and
    answers none (Events, the Lease, reads, writes). Nothing is removed meanwhile; once it answers
    again, every pod fails over within the bound and a grace period."""
    names = statefulset(rig, pods)
    with FencingService(rig, "--evictions-per-minute", "1000", grace=GRACE) as svc:
        since = time.monotonic()
        rig.ks.hang()
        rig.crash("n1")
        svc.wait(lambda: svc.ready()[0] == 503 and not svc.leading(), "blind: /readyz failing, not leading", 10)
        assert all(rig.ks.get("Pod", n) is not None for n in names) and rig.pod_deletes() == []
        answered = time.monotonic()
        rig.ks.release_hangs()
        svc.wait(lambda: all(rig.ks.get("Pod", n) is None for n in names), f"all {pods} pods failed over", 30)
        measured(f"API server answers again: {pods} pods failed over", time.monotonic() - answered,
                 BOUND + GRACE + 3)
        alive_throughout(svc, since)


def test_slow_answers(rig):
    """Every answer of the API server comes 500 ms late (an overloaded server): within the deadline,
    but a Lease renewal (a read and a write) now takes most of the lease's margin, so it sometimes
    lands after ``is_leader`` lapsed. Fencing holds every write until it lands, keeps its term and
    grace timers, stays ready, and fails the crashed node over."""
    database(rig)
    with FencingService(rig, grace=GRACE) as svc:
        slowed = time.monotonic()
        rig.ks.slow(0.5)
        # with a 2 s lease, the window after a renewal lands (0.6 s) is about one live read long: some
        # writes are held before one fits (with the default 15 s lease, answers of 4 s would do that)
        measured("slow answers (500 ms): a crashed node failed over", fails_over(svc, rig, bound=15),
                 BOUND + GRACE + 4)
        ready_throughout(svc, slowed)
        alive_throughout(svc, slowed)


def test_error_bursts(rig):
    """For a while the API server answers every request with 429 (API Priority and Fairness, with
    Retry-After), then 500, then 503 (replicas going down behind the load balancer), serving again in
    between: each time every informer backs off and comes back within the bound, with no restart, the
    Lease is won back, and fencing still acts afterwards."""
    database(rig)
    with FencingService(rig, grace=GRACE) as svc:
        began = time.monotonic()
        for status in (429, 500, 503):
            rig.ks.inject(fail=1_000_000, status=status)
            svc.wait(lambda: all(informer(svc, "informer_healthy", kind) == 0 for kind in KINDS),
                     f"every informer refused ({status})", 10)
            ended = time.monotonic()
            rig.ks.reset_faults()
            took = svc.wait(lambda ended=ended: all(informer(svc, "informer_healthy", kind) == 1 for kind in KINDS)
                            and confirmed_since(svc, ended) and svc.ready()[0] == 200 and svc.leading(),
                            "every informer back, ready and leading", 10)
            measured(f"{status} burst over: informers back, ready, leading", took, BOUND)
        measured("error bursts over: then a crashed node failed over", fails_over(svc, rig), GRACE + 2)
        alive_throughout(svc, began)


def test_a_pod_delete_throttled_with_retry_after(rig):
    """The pod delete meets API Priority and Fairness: 429 with Retry-After 2. Fencing asks again no
    sooner than that, and then removes the pod."""
    database(rig)
    with FencingService(rig, grace=GRACE) as svc:
        rig.ks.inject(fail=1, status=429, path_prefix="/api/v1/namespaces/default/pods/db-0", method="DELETE",
                      retry_after=2)
        rig.crash("n1")
        svc.wait(lambda: rig.pod_deletes(), "the first delete", 10)
        refused = time.monotonic()
        took = svc.wait(lambda: rig.ks.get("Pod", "db-0") is None, "db-0 removed", 10)
        assert len(rig.pod_deletes()) == 2, rig.pod_deletes()
        assert took >= 2 - 0.2, f"asked again after {took:.2f}s, before Retry-After"
        measured("pod delete 429 Retry-After 2: removed after", took, 2 + 1)
        assert svc.metric("linstor_scheduler_fencing_actions_total", kind="pod_delete", outcome="throttled") == 1
        assert svc.metric("linstor_scheduler_fencing_decisions_total", verdict="refuse", reason="RateLimited") is None
        assert svc.recorder.flush(10)
        assert any(e.get("reason") == "EvictionBlocked" for e in rig.ks.list("Event"))
        alive_throughout(svc, refused)


def test_answers_lost_after_the_write_was_done(rig):
    """The pod delete is carried out and its answer lost (the connection cut); later a VolumeAttachment
    delete is carried out and its answer never comes. Each is confirmed by a live read: counted done,
    its Event recorded, nothing sent twice."""
    database(rig)
    database(rig, "n3", ("n4", "n5"), name="db-1")
    with FencingService(rig, grace=GRACE) as svc:
        began = time.monotonic()
        rig.ks.lose_answers("/api/v1/namespaces/default/pods/db-0", method="DELETE", how="drop")
        measured("pod delete answer lost: removed", fails_over(svc, rig), GRACE + 2)
        svc.wait(lambda: svc.metric("linstor_scheduler_fencing_actions_total", kind="pod_delete",
                                    outcome="done") == 1, "the delete counted done")
        assert svc.metric("linstor_scheduler_fencing_actions_total", kind="pod_delete", outcome="error") is None
        rig.ks.lose_answers("/apis/storage.k8s.io/v1/volumeattachments/", method="DELETE", how="hang")
        lost = time.monotonic()
        rig.crash("n3")
        svc.wait(lambda: rig.ks.get("VolumeAttachment", "csi-pvc-db-1-n3-linstor") is None, "the attachment deleted")
        took = svc.wait(lambda: svc.metric("linstor_scheduler_fencing_actions_total", kind="attachment_delete",
                                           outcome="done") == 2, "the attachment delete counted done", 10)
        measured("attachment delete answer never came: confirmed done", time.monotonic() - lost,
                 GRACE + 1 + 2)  # the grace period, then --api-timeout and one read
        print(f"CHAOS fencing | attachment delete answer never came: confirmed {took:.2f}s after it was made")
        assert svc.metric("linstor_scheduler_fencing_actions_total", kind="attachment_delete", outcome="error") is None
        deletes = [w for w in rig.ks.writes if w[0] == "DELETE" and ("/pods/" in w[1] or "attachments" in w[1])]
        assert len(deletes) == 4, deletes  # two pods, two attachments: each once
        assert svc.recorder.flush(10)
        fenced = {(e.get("involvedObject") or {}).get("name") for e in rig.ks.list("Event")
                  if e.get("reason") == "FencedPod"}
        detached = {(e.get("involvedObject") or {}).get("name") for e in rig.ks.list("Event")
                    if e.get("reason") == "DetachedVolume"}
        assert fenced == {"db-0", "db-1"} and detached == {"db-0", "db-1"}, (fenced, detached)
        alive_throughout(svc, began)


def test_the_linstor_controller_goes_down_and_comes_back(rig):
    """A node loses power; fencing starts timing the fault; then the LINSTOR controller stops (its pod
    restarts) for longer than the bound. Fencing reads nothing, so it does nothing: /readyz fails
    naming the LINSTOR view's age. When the controller is back, the next poll reads, and since nobody
    can say the fault held meanwhile, it is failed over a full grace period after that read."""
    database(rig)
    with FencingService(rig, bound=LINSTOR_BOUND, grace=LINSTOR_GRACE) as svc:
        rig.crash("n1")
        svc.wait(lambda: svc.metric("linstor_scheduler_fencing_decisions_total", verdict="waiting",
                                    reason="GracePeriod"), "the fault timed", 5)
        down = time.monotonic()
        rig.linstor_down()
        took = svc.wait(lambda: svc.ready()[0] == 503 and "LINSTOR view" in svc.ready()[1],
                        "/readyz failing on LINSTOR", 10)
        measured("LINSTOR down: /readyz fails", took, LINSTOR_BOUND + TICK)
        assert "LINSTOR read failed" in svc.ready()[1], svc.ready()
        svc.wait(lambda: svc.metric("linstor_scheduler_fencing_linstor_view_age_seconds") > LINSTOR_BOUND + TICK,
                 "blind for longer than the bound", 5)
        assert svc.metric("linstor_scheduler_fencing_reads_total", source="linstor", outcome="error") >= 1
        assert rig.ks.get("Pod", "db-0") is not None and rig.pod_deletes() == []
        up = time.monotonic()
        rig.linstor_up()
        ready = svc.wait(lambda: svc.ready()[0] == 200, "ready again", 10)
        measured("LINSTOR back: ready", ready, 1 + TICK)  # one read of at most --linstor-timeout
        svc.wait(lambda: rig.ks.get("Pod", "db-0") is None, "db-0 failed over", 10)
        gone = time.monotonic() - up
        # the histogram is observed once the delete's answer is back: after the pod is gone in the API
        svc.wait(lambda: (svc.metric("linstor_scheduler_fencing_fault_to_deletion_seconds_count") or 0) >= 1,
                 "the deletion timed", 5)
        # timed from before the outage (longer than the bound), the fault would be older than the outage
        timed = svc.metric("linstor_scheduler_fencing_fault_to_deletion_seconds_sum")
        assert up - down > LINSTOR_BOUND and LINSTOR_GRACE <= timed <= LINSTOR_GRACE + 2 * TICK, (up - down, timed)
        measured("LINSTOR back: the pod failed over", gone, 1 + LINSTOR_GRACE + 2 * TICK)
        print(f"CHAOS fencing | LINSTOR back: the fault timed afresh, {timed:.2f}s from its first sight to removal")
        print(f"CHAOS fencing | LINSTOR down for {up - down:.2f}s")
        alive_throughout(svc, down)


def test_linstor_slow_then_failing(rig):
    """LINSTOR answers 1.5 s late (past --linstor-timeout) for a while, later with 500s: no complete
    read, so /readyz fails naming the LINSTOR view and nothing is done; each time, once it answers
    again, ready at the next poll."""
    database(rig)
    with FencingService(rig, bound=LINSTOR_BOUND) as svc:
        began = time.monotonic()
        for fault, inject in (("slow", {"latency": 1.5}), ("500", {"fail": 1_000_000, "status": 500})):
            faulted = time.monotonic()
            rig.emu.inject(**inject)
            took = svc.wait(lambda: svc.ready()[0] == 503 and "LINSTOR view" in svc.ready()[1],
                            "/readyz failing on LINSTOR", 10)
            measured(f"LINSTOR {fault}: /readyz fails", took, LINSTOR_BOUND + TICK)
            assert rig.pod_deletes() == []
            healed = time.monotonic()
            rig.emu.reset_faults()
            ready = svc.wait(lambda: svc.ready()[0] == 200, "ready again", 10)
            measured(f"LINSTOR {fault} over: ready", ready, 1 + 2 * TICK)  # a read in flight, then one more
            print(f"CHAOS fencing | LINSTOR {fault} for {healed - faulted:.2f}s")
        alive_throughout(svc, began)


def test_a_grace_period_ends_between_two_slow_polls(rig):
    """n1 has lost power when fencing starts, and fencing polls LINSTOR only every 15 s: the first pass
    sees the fault and times its grace period (1 s); the next pass comes when that grace period ends,
    not a poll later, and fails the pod over."""
    database(rig)
    rig.crash("n1")
    started = time.monotonic()
    with FencingService(rig, "--poll-interval", "15", grace=1.0, bound=20.0) as svc:
        svc.wait(lambda: rig.ks.get("Pod", "db-0") is None, "db-0 removed from n1", 15)
        measured("grace period ends between polls of 15 s: start to removal", time.monotonic() - started, 8)
