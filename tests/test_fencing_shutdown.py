"""SIGTERM ends the fencing controller within 2 s, also in the middle of a pass: a pass waiting on a
slow LINSTOR answer is cancelled, never waited for (the kubelet kills after its grace period, and a
new leader must not wait on us). Every wait here is on a condition."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from fencing.controller import FencingController, Settings
from linstor_scheduler.kube.lease import AlwaysLeader

from .fencing_rig import HungLinstor, NoKube, Rig
from .waiting import wait_for

BOUND = 2.0  # seconds from SIGTERM (or the stop flag) to the end


def test_stop_cancels_a_pass_that_waits_on_linstor():
    async def main() -> float:
        linstor = HungLinstor()
        ctrl = FencingController(linstor, NoKube(), None, None, leader=AlwaysLeader(),  # type: ignore[arg-type]
                                 settings=Settings(poll_interval=3600.0))
        stop = asyncio.Event()
        task = asyncio.create_task(ctrl.run_forever(stop))
        await asyncio.wait_for(linstor.reading.wait(), 10)
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, BOUND)
        return time.monotonic() - started

    assert asyncio.run(main()) < BOUND


def test_sigterm_mid_pass_ends_the_service_within_two_seconds():
    with Rig() as rig:
        rig.pod("db-0", "n1", [rig.volume("pvc-a", ["n1", "n2", "n3"], in_use="n1")])
        rig.emu.inject(latency=120.0, path_prefix="/v1/view/resources")  # a pass stuck in the big read
        child = subprocess.Popen(
            [sys.executable, "-m", "linstor_scheduler.cli", "fencing", "--controllers", rig.emu_url,
             "--kube-api-url", rig.ks_url, "--no-leader-elect", "--port", "0", "--linstor-timeout", "300",
             "--no-promotion-events", "--log-level", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: any(path.startswith("/v1/view/resources") for _, path in list(rig.emu.requests))
                     or child.poll() is not None, timeout=60, what="the pass's resource read")
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            started = time.monotonic()
            child.terminate()  # SIGTERM, as the kubelet sends it
            try:
                code = child.wait(BOUND * 5)
            finally:
                took = time.monotonic() - started
            assert code == 0, child.stderr.read().decode() if child.stderr else ""
            assert took < BOUND, f"SIGTERM took {took:.2f}s to end the service: {child.stderr.read().decode()}"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
            rig.emu.reset_faults()


# --- within 2 s while the API server hangs every list ---------------------------------------------
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
