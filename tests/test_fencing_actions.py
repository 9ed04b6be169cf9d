"""Writes are judged by their HTTP status, and no call can stall a pass."""

from __future__ import annotations

import threading
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devkit.kube_standin import KubeStandin
from fencing.actions import KubeActions, Outcome
from fencing.controller import Settings
from linstor_scheduler.httpserver import ServerThread

from .fencing_rig import Rig

# A Pod answer the client's models cannot read (a container without its required name).
UNREADABLE_POD = b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"},"spec":{"containers":[{}]}}'


def test_a_write_that_worked_is_done_even_when_its_answer_cannot_be_parsed():
    async def answer(request: Request) -> Response:
        return Response(UNREADABLE_POD, status_code=200, media_type="application/json")

    async def refuse(request: Request) -> Response:
        return Response(b'{"kind":"Status","code":429}', status_code=429, headers={"Retry-After": "7"},
                        media_type="application/json")

    app = Starlette(routes=[Route("/api/v1/namespaces/default/pods/x", answer, methods=["DELETE"]),
                            Route("/api/v1/namespaces/default/pods/x/eviction", refuse, methods=["POST"])])
    with ServerThread(app) as srv:
        actions = KubeActions(KubeStandin.api_client(srv.url), timeout=2.0)
        assert actions.delete_pod("default", "x", "uid-1").outcome is Outcome.DONE
        evicted = actions.evict_pod("default", "x", "uid-1")
        assert (evicted.outcome, evicted.retry_after) == (Outcome.THROTTLED, 7.0)


def test_a_hung_kubernetes_call_ends_the_call_not_the_pass():
    with Rig(settings=Settings(api_timeout=0.2)) as rig:
        rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
        rig.run(10)
        rig.power_off("n1")
        rig.run(30)
        release = threading.Event()
        get_pod = rig.ctrl.actions.get_pod
        rig.ctrl.actions.get_pod = lambda ns, name: (release.wait(10), get_pod(ns, name))[1]
        started = time.monotonic()
        report = rig.step()
        took = time.monotonic() - started
        release.set()
        assert took < 5, "bounded by the call timeout"
        (decision,) = report.decisions
        assert (decision.verdict, decision.reason) == ("refuse", "StaleData") and "cannot read pod" in decision.detail
        assert rig.pod_deletes() == []
        rig.ctrl.actions.get_pod = get_pod
        rig.step()
        assert len(rig.pod_deletes()) == 1, "the next pass acts"
