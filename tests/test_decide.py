"""``Extender.decide(pod, names)``: the one way from a pod and its candidate nodes to the extender's
word, owning the request path's caches; and ``Freshness``, the one value that ``/readyz``, the
state-age metrics and the decision's neutral answer read."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass

import httpx
import pytest

from devkit import kube_objects as k
from devkit.clock import FakeClock
from linstor_scheduler.httpserver import ServerThread
from scheduler_extender.codec import BadRequest
from scheduler_extender.fallback import FallbackReader
from scheduler_extender.freshness import NOT_SYNCED, measure
from scheduler_extender.holder import StateHolder
from scheduler_extender.http import create_app
from scheduler_extender.judge import NO_LINSTOR_VOLUMES, Extender

from .cluster import lres, standard
from .test_judge import FakeLinstor, fresh_volume_state, live_holder

NAMES = ["w1", "w2", "w3"]


def go(doc) -> bytes:
    """JSON as kube-scheduler's encoding/json writes it: no spaces."""
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Body:
    """The least a kept answer is: bytes (their size bounds the cache)."""

    body: bytes

    @property
    def size(self) -> int:
        return len(self.body)


class Builds:
    """A ``build`` for ``Decision.answer`` that counts how often it had to run."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> Body:
        self.count += 1
        return Body(b"answer %d" % self.count)


def decide(ext: Extender, pod, names):
    return asyncio.run(ext.decide(pod, names))


# --- the decision --------------------------------------------------------------------------------
def test_the_bytes_kube_scheduler_sent_and_the_decoded_pod_get_the_same_decision():
    ext = Extender(live_holder(FakeClock()), clock=FakeClock(10.0))
    pod = k.pod("db-0", claims=["c-a"])
    as_sent = decide(ext, go(pod), go(NAMES))
    decoded = decide(ext, pod, NAMES)
    assert as_sent.pod == decoded.pod == "default/db-0" and as_sent.neutral_reason is None
    assert list(as_sent.names) == NAMES
    assert [v.score for v in as_sent.verdicts] == [v.score for v in decoded.verdicts] == [10, 4, 8]


def test_a_wave_of_pods_on_one_volume_is_answered_once_per_verb_and_candidate_list():
    """Pods of a wave share their volumes' verdicts and the candidate list: the second pod's answer is
    the first's, found without judging a node; another verb or another list is built anew."""
    ext = Extender(live_holder(FakeClock()), clock=FakeClock(10.0))
    build = Builds()
    first = decide(ext, go(k.pod("web-0", claims=["c-a"])), go(NAMES))
    assert first.answer("prioritize", build) == Body(b"answer 1")
    tables = (ext.tables.hits, ext.tables.misses)
    second = decide(ext, go(k.pod("web-1", claims=["c-a"])), go(NAMES))
    assert second.pod == "default/web-1"
    assert second.answer("prioritize", build) == Body(b"answer 1") and build.count == 1
    assert (ext.tables.hits, ext.tables.misses) == tables, "a kept answer needs no verdict"
    assert second.answer("filter", build) == Body(b"answer 2")
    third = decide(ext, go(k.pod("web-2", claims=["c-a"])), go(NAMES[:2]))
    assert third.answer("prioritize", build) == Body(b"answer 3") and build.count == 3


def test_the_api_server_goes_silent_and_the_neutral_answer_is_never_kept():
    """Staleness depends on the time, not on the state's content: a neutral answer for it is built
    each time, and the first request after the view is confirmed again steers, from the same caches."""
    clock = FakeClock(10.0)
    holder = live_holder(clock)
    ext = Extender(holder, max_staleness=120, clock=clock)
    raw_pod, raw_names = go(k.pod("db-0", claims=["c-a"])), go(NAMES)
    build = Builds()
    decide(ext, raw_pod, raw_names).answer("prioritize", build)
    clock.now = 121.0
    stale = [decide(ext, raw_pod, raw_names) for _ in range(2)]
    assert all(d.verdicts is None and d.neutral_reason.endswith("not steering on stale data") for d in stale)
    assert [d.answer("prioritize", build).body for d in stale] == [b"answer 2", b"answer 3"]
    holder.swap(dataclasses.replace(holder.state, linstor_synced_at=121.0, kube_synced_at=121.0))  # same content
    again = decide(ext, raw_pod, raw_names)
    assert again.answer("prioritize", build) == Body(b"answer 1"), "the answer kept before it went stale"


def test_a_pod_without_linstor_volumes_is_neutral_even_before_the_first_sync():
    ext = Extender(StateHolder(), clock=FakeClock())
    build = Builds()
    web = decide(ext, go(k.pod("web", extra_volumes=[{"name": "c", "emptyDir": {}}])), go(NAMES))
    assert web.neutral_reason == NO_LINSTOR_VOLUMES and web.verdicts is None and web.claims == []
    assert web.answer("filter", build) == Body(b"answer 1")
    other = decide(ext, go(k.pod("web-2")), go(NAMES))
    assert other.answer("filter", build) == Body(b"answer 1"), "every pod without volumes: the same answer"
    db = decide(ext, go(k.pod("db", claims=["c-a"])), go(NAMES))
    assert db.neutral_reason == NOT_SYNCED and db.answer("filter", build) == Body(b"answer 2")


def test_the_main_scheduler_shows_us_another_profiles_pod_and_it_passes_untouched():
    """Extenders are shared by every profile of a kube-scheduler: with ``scheduler_name`` only that
    profile's pods are judged; another's is neutral whatever its volumes, and kept by its bytes."""
    ext = Extender(live_holder(FakeClock()), clock=FakeClock(10.0), scheduler_name="linstor")
    raw_pod = go(k.pod("db-0", claims=["c-a"], scheduler="default-scheduler"))
    other = decide(ext, raw_pod, go(NAMES))
    assert other.neutral_reason == "pod's scheduler is default-scheduler, not linstor" and other.claims == []
    assert raw_pod in ext.pod_bytes
    ours = decide(ext, go(k.pod("db-1", claims=["c-a"])), go(NAMES))
    assert [v.score for v in ours.verdicts] == [10, 4, 8]


def test_a_volume_bound_a_moment_ago_is_looked_up_again_not_remembered_missing():
    """The index lacks the volume and LINSTOR does not show it yet: the pod's side is not kept by its
    bytes, so once LINSTOR has it (after the 5 s "not found"), the same Pod is judged from it."""
    clock = FakeClock(1.0)
    linstor = FakeLinstor()
    ext = Extender(live_holder(clock, fresh_volume_state()), clock=clock,
                   fallback=FallbackReader(linstor, negative_ttl=5.0, clock=clock))
    raw_pod, raw_names = go(k.pod("db-0", claims=["c-new"])), go(["w1", "w2"])
    assert [v.score for v in decide(ext, raw_pod, raw_names).verdicts] == [0, 0]
    assert raw_pod not in ext.pod_bytes
    linstor.items["pvc-new"] = [lres("pvc-new", "w2")]  # LINSTOR has it now
    clock.now += 5.0
    assert [v.score for v in decide(ext, raw_pod, raw_names).verdicts] == [1, 10]
    assert raw_pod in ext.pod_bytes and len(linstor.calls) == 2


def test_names_that_are_not_a_list_of_strings_are_the_senders_error():
    ext = Extender(live_holder(FakeClock()), clock=FakeClock(10.0))
    decision = decide(ext, go(k.pod("db-0", claims=["c-a"])), b'["w1",2]')
    with pytest.raises(BadRequest, match="must be a list of strings"):
        decision.answer("filter", lambda: Body(b"".join(n.encode() for n in decision.names)))


# --- freshness -------------------------------------------------------------------------------------
def never_asked() -> str:
    raise AssertionError("the informers' detail is read only when the Kubernetes view is past the limit")


def test_before_the_first_sync_nothing_is_stale_or_fresh():
    fresh = measure(False, None, 120.0, None, never_asked)
    assert (fresh.age, fresh.stale, fresh.neutral_reason) == (None, None, NOT_SYNCED)


def test_at_the_limit_the_view_is_fresh_and_past_it_stale_naming_the_source():
    at = measure(True, (120.0, 3.0), 120.0, "connection refused", never_asked)
    assert (at.age, at.stale, at.neutral_reason) == (120.0, False, None)
    past = measure(True, (121.0, 3.0), 120.0, "connection refused", never_asked)
    assert past.stale and past.age == 121.0
    assert past.reason == "LINSTOR state 121s old (last error: connection refused); limit 120s"
    assert past.neutral_reason == f"{past.reason}: not steering on stale data"


def test_a_silent_api_server_is_named_with_the_stalest_informer():
    fresh = measure(True, (3.0, 200.0), 120.0, None, lambda: "Node confirmed 200s ago")
    assert fresh.reason == "Kubernetes view 200s old (Node confirmed 200s ago); limit 120s"


def test_a_snapshot_never_ages():
    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    fresh = Extender(holder, max_staleness=1, clock=FakeClock(1e9)).freshness()
    assert (fresh.ages, fresh.stale, fresh.neutral_reason) == (None, False, None)


def test_linstor_goes_unreachable_and_probe_metric_and_answers_turn_at_the_same_second():
    """The same limit, compared once: at 120 s without a LINSTOR read all three still say fresh; a
    second later ``/readyz`` is 503, ``linstor_scheduler_state_stale`` is 1 and ``/prioritize`` is
    neutral."""
    clock = FakeClock(0.0)
    holder = live_holder(clock)
    app = create_app(Extender(holder, max_staleness=120, clock=clock))
    body = {"Pod": k.pod("db-0", claims=["c-a"]), "NodeNames": NAMES}

    def seen(http: httpx.Client) -> tuple[int, str, list[int]]:
        metrics = http.get("/metrics").text
        [stale] = [line.split()[1] for line in metrics.splitlines()
                   if line.startswith("linstor_scheduler_state_stale ")]
        scores = [h["Score"] for h in http.post("/prioritize", json=body).json()]
        return http.get("/readyz").status_code, stale, scores

    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        clock.now = 120.0
        assert seen(http) == (200, "0.0", [10, 4, 8])
        clock.now = 121.0
        assert seen(http) == (503, "1.0", [0, 0, 0])
