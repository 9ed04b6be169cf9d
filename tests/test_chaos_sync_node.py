"""sync-node on the API server's and LINSTOR's bad days (issue 18, the chaos matrix).

The agent runs as ``run_sync_node`` runs it (``serve_sync_node``: the loop, the side port with
``/healthz``, ``/readyz``, ``/metrics``), with the real ``LinstorClient`` against the LINSTOR emulator
and the real ``EventRecorder`` against the API stand-in, both over loopback HTTP; LVM is a fake whose
scan the test can hang. Bounds are small: a pass every 0.2 s, back-off capped at 0.8 s (so the
readiness bound, ``readiness_bound``, is 1 s), a pass stuck after 1 s, every Kubernetes call 1 s.
Each case prints its measured recovery time (``-s``) for docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.kube.client import make_api_client
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.linstor.client import LinstorClient
from storage_sync.agent import NodeAgent, loop_liveness, pass_readiness, readiness_bound
from storage_sync.lvm import LvmInventory, VolumeGroup
from storage_sync.wiring import pass_bound, serve_sync_node

from .probing import recovered
from .waiting import free_ports, wait_for

INTERVAL, MAX_BACKOFF, PASS_BOUND, API_TIMEOUT = 0.2, 0.8, 1.0, 1.0
BOUND = readiness_bound(INTERVAL, MAX_BACKOFF)
PASSES = "linstor_scheduler_pool_sync_passes_total"


class HangableLvm:
    """Two VGs with the same tag (a DuplicatePoolTag Warning Event on every pass, the agent repeating
    it at once) and one pool to create; ``hang()`` makes the next scan block as a ``vgs`` stuck on a
    dead device does, until ``release()``."""

    def __init__(self) -> None:
        self._go = threading.Event()
        self._go.set()
        self.stuck = threading.Event()

    def scan(self) -> LvmInventory:
        if not self._go.is_set():
            self.stuck.set()
            self._go.wait(30)
            self.stuck.clear()
        return LvmInventory((VolumeGroup("vg0", "u0", ("linstor-data",), 1 << 40, 1 << 39),
                             VolumeGroup("vg1", "u1", ("linstor-data",), 1 << 40, 1 << 39),
                             VolumeGroup("vg2", "u2", ("linstor-fast",), 1 << 40, 1 << 39)))

    def hang(self) -> None:
        self._go.clear()

    def release(self) -> None:
        self._go.set()


@dataclass
class Node:
    """One running sync-node and the doubles it talks to."""

    ks: KubeStandin
    emu: LinstorEmulator
    lvm: HangableLvm
    agent: NodeAgent
    url: str
    linstor_port: int
    linstor: ServerThread | None = None

    def linstor_down(self) -> None:
        """LINSTOR's controller stops: nothing listens on its port (connection refused)."""
        if self.linstor is not None:
            self.linstor.stop()
            self.linstor = None

    def linstor_up(self) -> None:
        if self.linstor is None:
            self.linstor = self.emu.serve(port=self.linstor_port).start()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def metric(self, name: str) -> float:
        """A sample of /metrics (``name`` with its labels as the text shows them); 0 when absent."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def passes(self, outcome: str) -> float:
        return self.metric(f'{PASSES}{{outcome="{outcome}"}}')

    def events(self, outcome: str) -> float:
        return self.metric(f'linstor_scheduler_kube_events_total{{outcome="{outcome}"}}')


@pytest.fixture
def node() -> Iterator[Node]:
    ks, emu, lvm = KubeStandin(), LinstorEmulator(), HangableLvm()
    emu.add_node("n1")
    health_port, linstor_port = free_ports(2)
    with ks.serve() as ksrv:
        yield from _running(ks, emu, lvm, ksrv.url, health_port, linstor_port)


def _running(ks: KubeStandin, emu: LinstorEmulator, lvm: HangableLvm, kube_url: str, health_port: int,
             linstor_port: int) -> Iterator[Node]:
    recorder = EventRecorder(make_api_client(host=kube_url, timeout=API_TIMEOUT), "linstor-scheduler-sync-node")
    client = LinstorClient(f"http://127.0.0.1:{linstor_port}", timeout=0.5, retries=1, backoff_base=0.01)
    agent = NodeAgent("n1", lvm, client, events=recorder, repeat_seconds=0, pass_bound=PASS_BOUND)
    args = argparse.Namespace(interval=INTERVAL, max_backoff=MAX_BACKOFF, listen_address="127.0.0.1",
                              port=health_port)
    flag = threading.Event()

    async def serve() -> None:  # as run_sync_node: the service, then the client closed on its loop
        try:
            await serve_sync_node(args, agent, stop_flag=flag)
        finally:
            await client.aclose()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    running = Node(ks, emu, lvm, agent, f"http://127.0.0.1:{health_port}", linstor_port)
    running.linstor_up()
    try:
        wait_for(lambda: _answers(running) and running.passes("ok") >= 2, what="two good passes")
        yield running
    finally:
        lvm.release()
        flag.set()
        thread.join(15)
        running.linstor_down()
    assert not thread.is_alive()


def _answers(node: Node) -> bool:
    try:
        return node.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def test_the_api_server_hangs_passes_go_on_and_events_wait_then_flow(node: Node) -> None:
    """The API server accepts and never answers: every Event times out after --api-timeout in the
    recorder's own thread; the passes keep their pace, /readyz and /healthz stay 200."""
    node.ks.hang()
    ok_before, failed_before = node.passes("ok"), node.events("failed")
    wait_for(lambda: node.events("failed") >= failed_before + 2, timeout=10, what="Events timing out")
    assert node.passes("ok") >= ok_before + 5, "passes went on while the Events waited"
    assert node.metric("linstor_scheduler_kube_events_queued") > 0, "Events wait in the recorder's queue"
    assert node.get("/readyz").status_code == 200 and node.get("/healthz").status_code == 200
    assert node.agent.last_result is not None and node.agent.last_result.ok
    sent = node.events("sent")
    released = time.monotonic()
    node.ks.release_hangs()
    wait_for(lambda: node.events("sent") > sent + 1, timeout=5, what="Events sent again")
    assert recovered("sync-node", "API server hang, Events flowing again", released) < API_TIMEOUT
    assert node.agent.events.flush(10), "the Events are queued (EventRecorder): sent before the test looks"
    reasons = {e["reason"] for e in node.ks.list("Event")}
    assert "DuplicatePoolTag" in reasons


def test_the_api_server_restarts_and_is_down_a_while_passes_go_on(node: Node) -> None:
    """While the API server is down (503 "apiserver is shutting down"), Events fail and are counted;
    the passes do not notice. Back up, the next Event goes through."""
    node.ks.down()
    ok_before, failed_before = node.passes("ok"), node.events("failed")
    wait_for(lambda: node.events("failed") >= failed_before + 3, timeout=5, what="Events refused")
    assert node.passes("ok") > ok_before and node.get("/readyz").status_code == 200
    sent = node.events("sent")
    up = time.monotonic()
    node.ks.up()
    wait_for(lambda: node.events("sent") > sent, timeout=5, what="an Event sent after the restart")
    assert recovered("sync-node", "API server down then up", up) < 2


@pytest.mark.parametrize("fault", ["500s", "down", "slow"])
def test_linstor_misbehaves_the_pass_fails_readyz_says_why_healthz_stays(node: Node, fault: str) -> None:
    """LINSTOR answers 500, is down (connection refused), or answers later than --linstor-timeout:
    every pass fails without a write and is retried with a doubling wait; /readyz says why and since
    when, and fails once the last good pass is older than its bound; /healthz stays 200 (the loop
    turns). LINSTOR back: the next pass succeeds, within the capped back-off."""
    if fault == "500s":
        node.emu.inject(fail=10**9, status=500)
    elif fault == "slow":
        node.emu.inject(latency=2.0)
    else:
        node.linstor_down()
    wait_for(lambda: node.get("/readyz").status_code == 503, timeout=10, what="/readyz failing")
    text = node.get("/readyz").text
    assert "bound" in text and "failing for" in text and "LINSTOR: " in text, text
    assert node.get("/healthz").status_code == 200, "a failing pass is not a stuck loop"
    wait_for(lambda: node.metric("linstor_scheduler_pool_sync_consecutive_failures") >= 2, timeout=5,
             what="passes failing in a row")
    assert node.passes("error") >= 2 and node.get("/healthz").status_code == 200
    back = time.monotonic()
    node.linstor_up()
    node.emu.reset_faults()
    wait_for(lambda: node.get("/readyz").status_code == 200, timeout=10, what="/readyz back")
    took = recovered("sync-node", f"LINSTOR {fault}", back)
    assert took < MAX_BACKOFF + 1.5, "the next try comes within the capped back-off"
    assert node.metric("linstor_scheduler_pool_sync_consecutive_failures") == 0
    assert "failing" not in node.get("/readyz").text


def test_a_hung_lvm_scan_fails_healthz_then_the_loop_turns_again(node: Node) -> None:
    """``vgs`` hangs (a dead device, uninterruptible sleep): the pass never returns, so /healthz fails
    after the pass bound and says so (the kubelet restarts the container); once the scan returns the
    loop turns and /healthz is 200 again."""
    node.lvm.hang()
    wait_for(node.lvm.stuck.is_set, timeout=5, what="a scan stuck")
    wait_for(lambda: node.get("/healthz").status_code == 503, timeout=5, what="/healthz failing")
    assert "stuck" in node.get("/healthz").text
    released = time.monotonic()
    node.lvm.release()
    wait_for(lambda: node.get("/healthz").status_code == 200, timeout=5, what="/healthz back")
    ok = node.passes("ok")
    wait_for(lambda: node.passes("ok") > ok, timeout=5, what="a good pass after the scan")
    recovered("sync-node", "LVM scan hung then returned", released)


def test_the_probe_decisions() -> None:
    """The pure decisions, at their edges."""
    assert pass_readiness(10, None, 4, "LINSTOR: HTTP 500", 5) == (
        False, "no successful pass yet; failing for 6s: LINSTOR: HTTP 500")
    assert pass_readiness(10, 6, 7, "LINSTOR: down", 5) == (True, "last successful pass 4s ago; failing for 3s: "
                                                           "LINSTOR: down")
    assert pass_readiness(12, 6, 7, "LINSTOR: down", 5)[0] is False
    assert pass_readiness(10, 9, None, None, 5) == (True, "last successful pass 1s ago")
    assert loop_liveness(10, 8, None, 5)[0] and not loop_liveness(10, 4, None, 5)[0]
    assert loop_liveness(10, None, 6, 5)[0] and not loop_liveness(10, None, 4, 5)[0]
    assert readiness_bound(30, 300) == 330 and readiness_bound(30, 30) == 90
    assert pass_bound(60, 10) == 440, "four LVM commands at the default timeout, and --linstor-timeout"
