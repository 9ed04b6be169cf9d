"""What fencing's probes say, decided on a fake clock: /readyz names a Kubernetes or LINSTOR view
older than --max-staleness (a standby reads no LINSTOR), /healthz names a loop that stopped turning
(the pass loop, the Lease); and the bounds that keep every loop turning (the informers tuned from
--max-staleness, a LINSTOR read abandoned at it). The same over HTTP on the API server's bad days:
tests/test_chaos_fencing.py. The metrics tell the same truth: no figure of LINSTOR before a good read
or on a standby, and the view's age counted from the last good read."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from devkit.clock import FakeClock
from devkit.kube_standin import KubeStandin
from fencing.controller import FencingController, Settings
from fencing.http import alive_check, lease_liveness, ready_check
from fencing.kubeview import CachedKube
from linstor_scheduler.kube.lease import AlwaysLeader

from .fencing_rig import HungLinstor, NoKube, Rig
from .probing import scrape

SETTINGS = Settings(max_staleness=20.0, poll_interval=5.0, api_timeout=10.0)


def test_readiness_names_a_linstor_view_older_than_the_bound():
    with Rig(settings=SETTINGS) as rig:
        ctrl = rig.ctrl
        assert ctrl.linstor_readiness() == (True, "standby: LINSTOR is read by the Lease holder")
        rig.step()
        ok, text = ctrl.linstor_readiness()
        assert ok and text == "LINSTOR view 0s old"
        rig.emu.inject(fail=1_000_000, status=500)
        rig.step(15)
        assert ctrl.linstor_readiness()[0], "15 s old: within the bound"
        rig.step(10)
        ok, text = ctrl.linstor_readiness()
        assert not ok and text.startswith("LINSTOR view 25s old (bound 20s): LINSTOR read failed"), text
        rig.emu.reset_faults()
        rig.step()
        assert ctrl.linstor_readiness() == (True, "LINSTOR view 0s old")
        ctrl.leader.is_leader, ctrl.leader.leader_since = False, None  # as the elector says it
        rig.step(60)
        assert ctrl.linstor_readiness()[0], "a standby reads no LINSTOR: nothing of it is stale"


def test_a_new_leader_that_never_read_is_blind_from_the_moment_it_won():
    with Rig(settings=SETTINGS) as rig:
        rig.emu.inject(fail=1_000_000, status=500)
        rig.step()
        assert rig.ctrl.linstor_readiness()[0]
        rig.step(21)
        ok, text = rig.ctrl.linstor_readiness()
        assert not ok and "26s old" in text and "LINSTOR read failed" in text, text


def test_liveness_fails_when_the_pass_loop_stops_turning():
    with Rig(settings=SETTINGS) as rig:
        ctrl = rig.ctrl
        rig.step()
        assert ctrl.liveness_bound() == 5 + 20 + 30
        assert ctrl.liveness() == (True, "fencing pass loop running")
        rig.clock.advance(55)
        assert ctrl.liveness()[0]
        rig.clock.advance(1)
        assert ctrl.liveness() == (False, "fencing pass loop made no progress for 56s (bound 55s)")
        rig.step(0)
        assert ctrl.liveness()[0], "a pass is progress, even one that acts on nothing"


def test_lease_liveness_and_the_composite_probes():
    clock = FakeClock(100.0)
    elector = SimpleNamespace(beat=100.0, lease_seconds=15.0)
    check = lease_liveness(elector, 10.0, clock)
    assert check() == (True, "Lease loop running")
    clock.advance(15 + 40 + 30 + 1)
    assert check() == (False, "Lease loop made no progress for 86s (bound 85s)")
    assert lease_liveness(SimpleNamespace(), 10.0, clock)() == (True, "no Lease loop")  # --no-leader-elect

    kube = SimpleNamespace(liveness=lambda: (True, "informers running"), objects=lambda: object(),
                           readiness=lambda: (False, "Kubernetes view 25s old (bound 20s): Pod confirmed 25s ago"))
    controller = SimpleNamespace(liveness=lambda: (True, "fencing pass loop running"),
                                 linstor_readiness=lambda: (True, "LINSTOR view 1s old"))
    ok, text = alive_check(kube, controller, elector, 10.0, clock)()
    assert not ok and text == "Lease loop made no progress for 86s (bound 85s)", "the failing loop is named"
    ok, text = ready_check(kube, controller)()
    assert not ok and text.startswith("Kubernetes view 25s old"), text
    kube.readiness = lambda: (True, "Kubernetes view 1s old")
    assert ready_check(kube, controller)() == (True, "Kubernetes view 1s old; LINSTOR view 1s old")
    kube.objects = lambda: None
    assert ready_check(kube, controller)() == (False, "Kubernetes caches not synced")


def test_the_informers_are_tuned_from_the_staleness_bound():
    """Watches ended by the server every third of the bound, a silent one given up a sixth of it later
    (1 to 10 s), retries at least every third of it (at most 30 s), list pages with --api-timeout."""
    api = KubeStandin.api_client("http://127.0.0.1:9")  # nothing is called: the informers are not started
    for bound, timeout, expected in ((20.0, 10.0, (20 / 3, 20 / 6, 20 / 3, 10.0)), (3.0, 1.0, (1.0, 1.0, 1.0, 1.0)),
                                     (600.0, 10.0, (200.0, 10.0, 30.0, 10.0))):
        informer = CachedKube(api, bound=bound, api_timeout=timeout).caches["Pod"]
        got = (informer.watch_timeout, informer.read_slack, informer.backoff_cap, informer.list_timeout)
        assert got == expected, (bound, got)


def test_a_linstor_read_that_does_not_answer_is_abandoned_at_the_bound():
    """A LINSTOR controller that accepts the read and never answers: the pass ends at --max-staleness
    with the reason, so the pass loop keeps turning (and /readyz will say why)."""
    async def main() -> tuple[float, str | None]:
        ctrl = FencingController(HungLinstor(), NoKube(), None, None, leader=AlwaysLeader(),  # type: ignore[arg-type]
                                 settings=Settings(max_staleness=0.5, poll_interval=0.1))
        started = time.monotonic()
        report = await asyncio.wait_for(ctrl.run_once(), 5)
        assert report.guard == "StaleData"
        return time.monotonic() - started, ctrl.read_error

    took, error = asyncio.run(main())
    assert 0.5 <= took < 2 and error == "LINSTOR read did not finish within 0.5s (--max-staleness)", (took, error)


LOST, STORM = "linstor_scheduler_fencing_lost_storage_nodes", "linstor_scheduler_fencing_storm_active"
VIEW_AGE, LEADER = "linstor_scheduler_fencing_linstor_view_age_seconds", "linstor_scheduler_fencing_leader"


def test_lost_nodes_and_storm_are_absent_until_a_read_and_the_view_ages_while_linstor_fails(rig):
    """The controller's /metrics over HTTP (its registry on the side-port app): leading but LINSTOR
    down, nothing of LINSTOR is claimed (0 lost nodes would be a guess); a good read brings the
    figures; failed reads keep them and the view's age grows; a standby withdraws them."""
    from linstor_scheduler.health import health_app
    from linstor_scheduler.httpserver import ServerThread

    rig.pod("a-0", "n1", [rig.volume("pvc-a", ["n1", "n4"], diskless=["n5"], in_use="n1")])
    with ServerThread(health_app(rig.ctrl.metrics.registry, ready=lambda: (True, ""))) as srv:
        rig.emu.inject(fail=10**9, status=500, path_prefix="/v1/")
        rig.step()
        blind = scrape(srv.url)
        assert blind[LEADER] == 1
        assert not {LOST, STORM, VIEW_AGE, "linstor_scheduler_fencing_linstor_read_seconds"} & set(blind), blind
        rig.emu.reset_faults()
        rig.step()
        seen = scrape(srv.url)
        assert seen[LOST] == 0 and seen[STORM] == 0 and seen[VIEW_AGE] == 0
        rig.emu.inject(fail=10**9, status=500, path_prefix="/v1/")
        ages = []
        for _ in range(3):
            rig.step()
            ages.append(scrape(srv.url)[VIEW_AGE])
        step = rig.settings.poll_interval
        assert ages == [step, 2 * step, 3 * step], "from the last good read: failed reads never reset it"
        assert scrape(srv.url)[LOST] == 0  # kept, with its age beside it
        rig.ctrl.leader.is_leader, rig.ctrl.leader.leader_since = False, None  # as the elector says it
        rig.step()
        standby = scrape(srv.url)
        assert standby[LEADER] == 0 and not {LOST, STORM, VIEW_AGE} & set(standby), standby
