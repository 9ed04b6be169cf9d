"""sync-classes on the API server's and LINSTOR's bad days (issue 18, the chaos matrix).

Over loopback HTTP: the real ``ClassReconciler`` with its ``KubeCalls`` (every call 1 s) against the
API stand-in, the real ``LinstorClient`` against the LINSTOR emulator; the service cases run it as
``run_sync_classes`` does (``serve_sync_classes``: the pass loop, the Lease with ``StepAside(leader_view)`` as its
``eligible``, the side port). Small bounds: a pass every 0.2 s, ``--max-staleness`` 1.5 s, a Lease of
2 s. Each case prints its measured recovery time (``-s``) for docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube.calls import KubeCalls
from linstor_scheduler.kube.client import make_api_client
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.kube.lease import LeaderElector, StepAside
from linstor_scheduler.leader_worker import leader_readiness, next_wait
from linstor_scheduler.linstor.client import LinstorClient
from storage_sync.class_sync import ClassReconciler, leader_view
from storage_sync.classes import CREATE, IN_SYNC, RECREATE, ClassConfig, as_wanted, desired_class
from storage_sync.wiring import serve_sync_classes

from .waiting import free_ports, wait_for

API_TIMEOUT, INTERVAL, MAX_STALENESS, LEASE = 1.0, 0.2, 1.5, 2.0
SC_PATH = "/apis/storage.k8s.io/v1/storageclasses"
LEASE_NAME, NS = "linstor-scheduler-sync-classes", "default"


@pytest.fixture
def doubles() -> Iterator[tuple[KubeStandin, LinstorEmulator, str]]:
    ks, emu = KubeStandin(), LinstorEmulator()
    for n in ("n1", "n2"):
        emu.add_node(n)
        emu.add_storage_pool(n, "data", "LVM")
    with ks.serve() as ksrv, emu.serve() as lsrv:
        ks.url = ksrv.url
        yield ks, emu, lsrv.url


def api(ks: KubeStandin):  # type: ignore[no-untyped-def]
    return make_api_client(host=ks.url, timeout=API_TIMEOUT)


def one_pass(ks: KubeStandin, linstor_url: str, reconciler: ClassReconciler | None = None):  # type: ignore[no-untyped-def]
    """One pass of a reconciler (a fresh one unless given) with its Events sent before returning."""
    async def go():  # type: ignore[no-untyped-def]
        async with LinstorClient(linstor_url, retries=1, timeout=1.0) as client:
            rec = reconciler or ClassReconciler(client, api(ks), events=EventRecorder(api(ks), "sync-classes"),
                                                calls=KubeCalls(API_TIMEOUT))
            rec.linstor = client
            result = await rec.run_pass()
            rec.events.flush(10)
            return rec, result
    return asyncio.run(go())


def class_writes(ks: KubeStandin) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in ks.writes if p.startswith(SC_PATH)]


@pytest.mark.parametrize("how", ["drop", "hang"])
def test_a_create_whose_answer_is_lost_is_done_once_and_reported_right(doubles, how: str) -> None:
    """The API server creates the class, then the answer is lost (the connection cut, or no answer
    until --api-timeout): the reconciler reads the class back, finds it as wanted, counts it done;
    the create is never sent again, and the next pass finds everything in sync without a 409."""
    ks, _emu, url = doubles
    ks.lose_answers(path_prefix=SC_PATH, method="POST", count=1, how=how)
    started = time.monotonic()
    rec, result = one_pass(ks, url)
    took = time.monotonic() - started
    print(f"sync-classes, create answer lost ({how}): settled in {took:.2f}s")
    ks.release_hangs()
    assert result.ok and [(a.action, a.name) for a in result.applied] == [
        (CREATE, "linstor-data-r1"), (CREATE, "linstor-data-r2")], result.failed
    assert [m for m, _ in class_writes(ks)] == ["POST", "POST"], "each class created once, never re-sent"
    assert took < 2 * API_TIMEOUT + 2
    ks.clear_requests()
    ks.writes.clear()
    _, again = one_pass(ks, url, rec)
    assert again.in_sync and [a.action for a in again.actions] == [IN_SYNC, IN_SYNC] and class_writes(ks) == []
    assert rec.metrics.actions.labels(CREATE, "ok")._value.get() == 2
    assert rec.events.flush(10), "the Events are queued (EventRecorder): sent before the test looks"
    assert {e["reason"] for e in ks.list("Event")} == {"Created"}


def test_a_recreate_whose_delete_answer_is_lost_finishes_keeping_the_users_metadata(doubles) -> None:
    """The stale class is deleted but the answer is lost: the reconciler reads it back, finds it gone,
    and creates the new one at once with the user's annotations."""
    ks, _emu, url = doubles
    stale = desired_class("data", 1, ClassConfig())
    stale["parameters"]["linstor.csi.linbit.com/placementCount"] = "9"
    stale["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] = "true"
    old_uid = ks.add(stale)["metadata"]["uid"]
    ks.lose_answers(path_prefix=SC_PATH, method="DELETE", count=1)
    _, result = one_pass(ks, url)
    assert result.ok and (RECREATE, "linstor-data-r1") in [(a.action, a.name) for a in result.applied]
    now = ks.get("StorageClass", "linstor-data-r1")
    assert now["metadata"]["uid"] != old_uid
    assert now["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert now["parameters"]["linstor.csi.linbit.com/placementCount"] == "1"
    assert [m for m, p in class_writes(ks) if p.endswith("linstor-data-r1")] == ["DELETE"]


def test_a_429_is_tried_again_after_its_retry_after(doubles) -> None:
    """API Priority and Fairness refuses the list with 429 and Retry-After: 1: the reconciler waits
    that second and tries once more, within the pass; a Retry-After longer than the call deadline
    fails the pass and the next one waits at least that long."""
    ks, _emu, url = doubles
    ks.inject(fail=1, status=429, path_prefix=SC_PATH, retry_after=1)
    started = time.monotonic()
    _, result = one_pass(ks, url)
    took = time.monotonic() - started
    print(f"sync-classes, 429 Retry-After 1: pass done in {took:.2f}s")
    assert result.ok and took >= 1.0, "the second try came after Retry-After"
    assert [p for m, p in ks.requests if m == "GET" and p.startswith(SC_PATH)][:2] == [SC_PATH, SC_PATH]
    ks.inject(fail=2, status=429, path_prefix=SC_PATH, retry_after=5)
    rec, refused = one_pass(ks, url)
    assert refused.error and "429" in refused.error and rec.retry_after == 5
    assert next_wait(True, 0.2, 1.0, rec.retry_after) == 5, "the next pass waits for Retry-After"
    assert next_wait(True, 30, 1.0, 5) == 30 and next_wait(False, 30, 1.0, 5) == 1.0


# --- the service -------------------------------------------------------------------------------
@dataclass
class Instance:
    """One sync-classes service as the CLI runs it, in a thread."""

    identity: str
    reconciler: ClassReconciler
    elector: LeaderElector
    url: str
    stop: threading.Event
    thread: threading.Thread
    seen: dict[str, float] = field(default_factory=dict)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def passes(self, outcome: str) -> float:
        return self.reconciler.metrics.passes.labels(outcome)._value.get()


@pytest.fixture
def start(doubles) -> Iterator[Callable[..., Instance]]:
    ks, _emu, default_url = doubles
    started: list[Instance] = []

    def launch(identity: str, linstor_url: str | None = None) -> Instance:
        port = free_ports(1)[0]
        calls = KubeCalls(API_TIMEOUT)
        reconciler_holder: list[ClassReconciler] = []
        elector = LeaderElector(api(ks), LEASE_NAME, NS, identity=identity, lease_seconds=LEASE,
                                renew_seconds=LEASE / 4, retry_seconds=0.2,
                                eligible=StepAside(lambda: leader_view(
                                    elector.leader_since, reconciler_holder[0].read_at,
                                    reconciler_holder[0].last_error, boottime(), MAX_STALENESS),
                                    patience=0, hold=MAX_STALENESS))
        args = argparse.Namespace(interval=INTERVAL, max_staleness=MAX_STALENESS, listen_address="127.0.0.1",
                                  port=port, lease_duration=LEASE, linstor_timeout=0.5)
        flag = threading.Event()
        ready = threading.Event()

        async def serve() -> None:  # as run_sync_classes: the service, then its clients closed
            async with LinstorClient(linstor_url or default_url, retries=1, timeout=0.5) as client:
                reconciler = ClassReconciler(client, api(ks), events=EventRecorder(api(ks), "sync-classes"),
                                             calls=calls)
                reconciler_holder.append(reconciler)
                ready.set()
                try:
                    await serve_sync_classes(args, reconciler, elector, stop_flag=flag)
                finally:
                    calls.shutdown()

        thread = threading.Thread(target=asyncio.run, args=(serve(),))
        thread.start()
        assert ready.wait(10)
        instance = Instance(identity, reconciler_holder[0], elector, f"http://127.0.0.1:{port}", flag, thread)
        started.append(instance)
        wait_for(lambda: _answers(instance), what=f"{identity}'s side port")
        return instance

    yield launch
    for instance in started:
        instance.stop.set()
    for instance in started:
        instance.thread.join(15)
        assert not instance.thread.is_alive()


def _answers(instance: Instance) -> bool:
    try:
        instance.get("/healthz")
        return True
    except httpx.TransportError:
        return False


def _leading_and_synced(instance: Instance, ks: KubeStandin) -> bool:
    last = instance.reconciler.last_result
    return bool(instance.elector.is_leader and last is not None and last.in_sync
                and ks.get("StorageClass", "linstor-data-r2") is not None)


FAULTS: dict[str, tuple[Callable[[KubeStandin], None], Callable[[KubeStandin], None]]] = {
    "a burst of 500s": (lambda ks: ks.inject(fail=4, status=500, path_prefix=SC_PATH), KubeStandin.reset_faults),
    "a burst of 503s": (lambda ks: ks.inject(fail=4, status=503, path_prefix=SC_PATH), KubeStandin.reset_faults),
    "slow answers": (lambda ks: ks.slow(API_TIMEOUT + 0.5, path_prefix=SC_PATH), KubeStandin.reset_faults),
    "a hung backend": (lambda ks: ks.hang(), KubeStandin.release_hangs),
    "the API server down": (lambda ks: ks.down(), KubeStandin.up),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_api_server_misbehaves_and_the_leader_carries_on_after(doubles, start, fault: str) -> None:
    """Each bad day fails passes (nothing written, the reason in /readyz and the pass counter) or
    takes the Lease away (the API server cannot renew it: the instance is a standby, still ready);
    /healthz stays 200 throughout (its loops turn). Once the API server behaves, the next pass
    works and the classes stay in sync, without a restart."""
    ks, emu, _ = doubles
    a = start("a")
    wait_for(lambda: _leading_and_synced(a, ks), what="a leading and in sync")
    begin, end = FAULTS[fault]
    errors = a.passes("error")
    begin(ks)
    emu.add_storage_pool("n3", "data", "LVM")  # LINSTOR moves on: linstor-data-r3 is wanted
    wait_for(lambda: a.passes("error") > errors or not a.elector.is_leader, timeout=10,
             what="a failed pass or the Lease lost")
    probe = a.get("/readyz")
    assert probe.status_code == 200 or "bound" in probe.text, probe.text
    if a.elector.is_leader and a.reconciler.last_error:
        assert "Kubernetes" in probe.text or "failed" in probe.text, probe.text
    assert a.get("/healthz").status_code == 200, a.get("/healthz").text
    assert ks.get("StorageClass", "linstor-data-r3") is None or fault.startswith("a burst")
    back = time.monotonic()
    end(ks)
    # Ready too: the pass that recovers may have started while the API server still hung, and its read
    # is as old as its start (read_at), so /readyz can lag it by one pass of 0.2 s: part of the recovery.
    wait_for(lambda: _leading_and_synced(a, ks) and ks.get("StorageClass", "linstor-data-r3") is not None
             and a.get("/readyz").status_code == 200, timeout=15, what="a leading, in sync and ready again")
    took = time.monotonic() - back
    print(f"sync-classes, {fault}: recovered in {took:.2f}s")
    assert took < LEASE + 2 * API_TIMEOUT + 2
    assert a.get("/readyz").status_code == 200 and a.get("/healthz").status_code == 200
    creates = [body["metadata"]["name"] for m, p, body in ks.writes if m == "POST" and p == SC_PATH]
    assert len(creates) == len(set(creates)) == 3, f"each class created once: {creates}"


def test_a_blind_leader_steps_aside_for_a_standby_that_sees(doubles, start) -> None:
    """a's way to the LINSTOR controller is cut (nothing listens where it looks) while b's works. a
    holds the Lease; blind past --max-staleness it says so in /readyz and hands the Lease over; b
    takes it and creates the classes."""
    ks, _emu, _ = doubles
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    first = LeaderElector(api(ks), LEASE_NAME, NS, identity="a", lease_seconds=LEASE, renew_seconds=LEASE / 4)
    assert first.step()  # a holds the Lease before either starts
    began = time.monotonic()
    a = start("a", linstor_url=dead)
    b = start("b")
    wait_for(lambda: a.elector.released_for_blindness >= 1, timeout=10, what="a stepping aside")
    wait_for(lambda: _leading_and_synced(b, ks), timeout=10, what="b leading and in sync")
    took = time.monotonic() - began
    print(f"sync-classes, blind leader: the standby that sees took over and synced in {took:.2f}s")
    assert took < MAX_STALENESS + LEASE + 3
    text = a.get("/readyz").text
    assert "stepped aside" in text and "LINSTOR" in text, text
    metrics = a.get("/metrics").text
    assert "linstor_scheduler_kube_lease_released_blind_total 1.0" in metrics
    assert b.get("/readyz").status_code == 200
    assert ks.get("Lease", LEASE_NAME, NS)["spec"]["holderIdentity"] == "b"


READS = "LINSTOR and StorageClass read"


def test_the_leaders_readiness_and_blindness_decisions() -> None:
    assert leader_readiness(False, "b", None, None, None, 10, 5, READS) == (True, "standby; leader is b")
    assert leader_readiness(True, "a", None, None, "LINSTOR: down", 10, 5, READS) == (
        False, "leading; no good LINSTOR and StorageClass read yet: LINSTOR: down")
    assert leader_readiness(True, "a", None, 7, "Kubernetes: HTTP 500", 10, 5, READS) == (
        True, "leading; last good read 3s ago; last pass failed: Kubernetes: HTTP 500")
    assert leader_readiness(True, "a", None, 4, "x", 10, 5, READS)[0] is False
    now = [100.0]
    seen: list[tuple[float | None, float | None, str | None]] = [(None, None, None)]
    blind = StepAside(lambda: leader_view(*seen[0], now[0], 5), patience=0, hold=5, clock=lambda: now[0])
    assert blind()[0], "a standby may campaign"
    seen[0] = (98, None, None)
    assert blind()[0], "a new leader gets its bound"
    seen[0] = (90, 94, "LINSTOR: down")
    ok, why = blind()
    assert (ok, why) == (False, "no good LINSTOR and StorageClass read for 6.0s (bound 5s): LINSTOR: down")
    seen[0] = (None, None, None)
    now[0] = 104
    assert blind() == (False, why), "aside for another bound"
    now[0] = 106
    assert blind()[0]
    want = desired_class("data", 1, ClassConfig())
    assert as_wanted(want, want) and not as_wanted(want, None)
    assert not as_wanted(want, {**want, "metadata": {"name": "linstor-data-r1"}}), "not ours: a conflict"
