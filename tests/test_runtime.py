"""The runtime every worker shares: signals stop it gracefully, the health port serves while the work
runs and closes after, the Lease is started first and released last, errors of the work propagate."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from linstor_scheduler.runtime import Health, run_service


class Elector:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def start(self) -> Elector:
        self.log.append("lease start")
        return self

    def stop(self, release: bool = True) -> None:
        self.log.append(f"lease stop release={release}")


def test_health_port_serves_while_the_work_runs_and_closes_after():
    registry = CollectorRegistry()
    Counter("linstor_scheduler_test_passes", "passes", registry=registry).inc()
    flag = threading.Event()
    seen: dict[str, httpx.Response] = {}
    port = _free_port()

    async def work(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            seen["healthz"] = await http.get("/healthz")
            seen["readyz"] = await http.get("/readyz")
            seen["metrics"] = await http.get("/metrics")
        flag.set()
        await stop.wait()

    log: list[str] = []
    assert asyncio.run(run_service("test", work, elector=Elector(log), stop_flag=flag,
                                   health=Health(registry, lambda: (False, "no pass yet"), "127.0.0.1", port))) == 0
    assert seen["healthz"].status_code == 200
    assert (seen["readyz"].status_code, seen["readyz"].text) == (503, "no pass yet\n")
    assert "linstor_scheduler_test_passes_total 1.0" in seen["metrics"].text
    assert log == ["lease start", "lease stop release=True"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


def test_sigterm_stops_the_work_gracefully():
    async def work(stop: asyncio.Event) -> str:
        os.kill(os.getpid(), signal.SIGTERM)  # the kubelet stopping the pod
        await stop.wait()
        return "stopped"

    assert asyncio.run(run_service("test", work)) == 0


def test_an_error_of_the_work_propagates_and_the_lease_is_still_released():
    log: list[str] = []

    async def work(stop: asyncio.Event) -> None:
        raise RuntimeError("bad configuration")

    with pytest.raises(RuntimeError, match="bad configuration"):
        asyncio.run(run_service("test", work, elector=Elector(log)))
    assert log == ["lease start", "lease stop release=True"]


def test_the_slow_parts_of_the_shutdown_run_at_once_off_the_loop(caplog):
    """The Lease release, the health port and a service's closers stop concurrently, each in a
    thread (the loop stays free): the Lease release and a closer meet at a barrier that only two
    parts running at the same time can pass. One failing closer is logged and holds up nothing."""
    meet = threading.Barrier(2, timeout=5)
    done: list[str] = []

    class MeetingElector(Elector):
        def start(self) -> MeetingElector:
            assert threading.current_thread() is not threading.main_thread(), "elector.start() ran on the loop"
            return super().start()

        def stop(self, release: bool = True) -> None:
            meet.wait()  # BrokenBarrierError after 5 s if the closer is not running meanwhile
            super().stop(release)

    def informers_stop() -> None:
        meet.wait()
        done.append("informers")

    def broken() -> None:
        raise OSError("socket already closed")

    async def client_close() -> None:
        done.append("client")

    async def work(stop: asyncio.Event) -> None:
        assert threading.current_thread() is threading.main_thread()  # asyncio.run's loop, where start must not run

    log: list[str] = []
    with caplog.at_level("INFO", logger="linstor_scheduler.runtime"):
        assert asyncio.run(run_service("test", work, elector=MeetingElector(log),
                                       closers=(broken, informers_stop, client_close))) == 0
    assert log == ["lease start", "lease stop release=True"]
    assert sorted(done) == ["client", "informers"]
    assert "stopping" in caplog.text and "socket already closed" in caplog.text
    assert "test stopped (shutdown took" in caplog.text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sync_node_as_deployed_serves_health_and_stops_on_sigterm(tmp_path):
    """``linstor-scheduler sync-node`` in its own process: passes against the LINSTOR emulator, the
    side port answers /readyz 200 after the first pass, and SIGTERM ends it with exit 0."""
    import subprocess
    import sys
    from pathlib import Path

    from devkit.linstor_emulator import LinstorEmulator

    from .waiting import stop_child, wait_for

    fixtures = Path(__file__).parent / "fixtures" / "lvm"
    emu = LinstorEmulator()
    emu.add_node("n1")
    port = _free_port()
    with emu.serve() as linstor:
        env = {**os.environ, "LS_CONTROLLERS": linstor.url, "NODE_NAME": "n1", "LINSTOR_SCHEDULER_PORT": str(port),
               "LINSTOR_SCHEDULER_LISTEN_ADDRESS": "127.0.0.1", "LINSTOR_SCHEDULER_EVENTS": "false"}
        child = subprocess.Popen([sys.executable, "-m", "linstor_scheduler.cli", "sync-node", "--recorded-vgs",
                                  str(fixtures / "vgs.json"), "--recorded-lvs", str(fixtures / "lvs.json")],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            def ready() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
                except httpx.TransportError:
                    return child.poll() is not None  # ended early: the assertion below shows why

            wait_for(ready, timeout=20, what="sync-node's first pass")
            assert child.poll() is None, child.stdout.read().decode()
        finally:
            stop_child(child)
    output = child.stdout.read().decode()
    assert child.returncode == 0 and "sync-node stopped" in output, output


def test_exit_now_flushes_the_logs_and_output_and_skips_the_teardown():
    """A worker's end (``runtime.exit_now``): its exit code, the last log line and any unflushed
    output kept, and none of Python's teardown (no atexit, no finalizers) run."""
    import subprocess
    import sys

    program = "\n".join([
        "import atexit, logging, sys",
        "from linstor_scheduler.logs import setup_logging",
        "from linstor_scheduler.runtime import exit_now",
        "setup_logging('info', 'json')",
        "atexit.register(lambda: print('teardown ran', file=sys.stderr))",
        "logging.getLogger('linstor_scheduler.test').info('stopped')",
        "sys.stdout.write('no newline, not flushed')",
        "exit_now(3)",
        "print('after exit_now')",
    ])
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "no newline, not flushed"
    assert '"msg":"stopped"' in done.stderr.replace(" ", "") and "teardown ran" not in done.stderr


@pytest.mark.parametrize("command,port", [("sync-node", 9101), ("sync-classes", 9102), ("locality-exporter", 8096),
                                          ("fencing", 8097)])
def test_every_worker_takes_the_shared_health_options(command, port, monkeypatch):
    """``--listen-address``/``--port`` of each worker are ``runtime.add_health_options``'s: one group,
    one wording, each worker's own default port."""
    import argparse

    from linstor_scheduler.cli import build_parser

    for var in ("LINSTOR_SCHEDULER_LISTEN_ADDRESS", "LINSTOR_SCHEDULER_PORT"):
        monkeypatch.delenv(var, raising=False)
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    groups = {g.title: g for g in action.choices[command]._action_groups}
    shared = groups["serving /healthz, /readyz, /metrics"]._group_actions
    assert {a.dest: a.default for a in shared} == {"listen_address": "0.0.0.0", "port": port}
