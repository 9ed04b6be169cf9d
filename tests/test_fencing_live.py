"""The service as deployed: informer caches with the server-side label selector, the Lease in a
thread, the promotion stream, /metrics, passes on the real clock (short grace for the test)."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx

from fencing.actions import KubeActions
from fencing.wiring import serve, settings_from_args
from linstor_scheduler.cli import build_parser
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.linstor.options import make_linstor_client

from .fencing_rig import Rig
from .waiting import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_service_fails_over_a_crashed_node_and_reports_metrics():
    with Rig() as rig:
        c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
        rig.pod("db-0", "n1", [c2])
        rig.pod("web-0", "n1", [rig.volume("pvc-w", ["n1", "n2"], in_use="n1")], labelled=False)
        port = free_port()
        args = build_parser().parse_args([
            "fencing", "--controllers", rig.emu_url, "--kube-api-url", rig.ks_url, "--grace-period", "0.6",
            "--poll-interval", "0.1", "--max-staleness", "5", "--lease-duration", "2", "--lease-namespace",
            "kube-system", "--listen-address", "127.0.0.1", "--port", str(port)])
        api = rig.ks.api_client(rig.ks_url)
        stop = threading.Event()
        thread = threading.Thread(target=lambda: asyncio.run(serve(
            args, settings_from_args(args), api, EventRecorder(api), make_linstor_client(args), KubeActions(api),
            stop)), daemon=True)
        thread.start()
        try:
            wait_for(lambda: (rig.ks.get("Lease", "linstor-scheduler-fencing", "kube-system") or {}).get("spec"),
                     what="the Lease")
            wait_for(lambda: _get(f"http://127.0.0.1:{port}/readyz") == 200, what="ready")
            rig.crash("n1")
            wait_for(lambda: rig.ks.get("Pod", "db-0") is None, what="the pod removed", timeout=15)
            wait_for(lambda: rig.ks.get("VolumeAttachment", "csi-pvc-r2-n1-linstor") is None,
                     what="the VolumeAttachment removed")
            assert rig.ks.get("Pod", "web-0") is not None, "unlabelled: never touched"
            assert rig.ks.get("VolumeAttachment", "csi-pvc-w-n1-linstor") is not None
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            assert 'linstor_scheduler_fencing_actions_total{kind="pod_delete",outcome="done"} 1.0' in metrics
            assert 'linstor_scheduler_fencing_actions_total{kind="attachment_delete",outcome="done"} 1.0' in metrics
            assert "linstor_scheduler_fencing_fault_to_deletion_seconds_count 1.0" in metrics
            assert "linstor_scheduler_fencing_leader 1.0" in metrics
        finally:
            stop.set()
            thread.join(15)
        assert not thread.is_alive()
        assert rig.ks.get("Lease", "linstor-scheduler-fencing", "kube-system")["spec"]["holderIdentity"] == "", \
            "released on shutdown"


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return 0


def test_promotion_events_wake_the_loop_and_their_absence_changes_nothing():
    for offered in (True, False):
        with Rig(linstor_events=offered) as rig:
            rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
            ctrl = rig.ctrl

            async def scenario(rig=rig, ctrl=ctrl, offered=offered):
                task = asyncio.create_task(ctrl.follow_promotions(ctrl.linstor))
                if not offered:
                    await asyncio.wait_for(task, 5)  # EventsNotSupported: it ends; polling goes on
                    return
                async def subscribed():
                    while not rig.emu._subscribers:
                        await asyncio.sleep(0.01)
                await asyncio.wait_for(subscribed(), 5)
                assert not ctrl._wake.is_set()
                rig.emu.set_may_promote("pvc-r2", "n2", True)
                await asyncio.wait_for(ctrl._wake.wait(), 5)
                task.cancel()

            rig.loop.run_until_complete(scenario())
            assert rig.step().guard is None, "passes work either way"


# --- the Kubernetes layer's metrics on fencing's /metrics -----------------------------------------
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
