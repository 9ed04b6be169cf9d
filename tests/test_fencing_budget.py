"""Fencing's fail-over budget (--failover-budget) and rate limit: a pod whose budget is spent is held,
by the next leader too; a token is a fail-over made, so a pass that sends nothing spends none. Real
HTTP (LINSTOR emulator + Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, ``rig`` in
tests/conftest.py).

Their other cases: tests/test_fencing_matrix.py (the budget stops a loop, the rate limit spreads
fail-overs). Also here: 20 pods on one lost node, 10 a minute, one Warning each.
"""

from __future__ import annotations

from .fencing_rig import Rig, database, lease_leader


def test_a_pod_whose_budget_is_spent_is_not_failed_over_again_by_the_next_leader():
    """--failover-budget 1 per hour. n1 loses power and db-0 fails over (grace 0); the StatefulSet
    recreates it on n2, which then loses power too: the budget holds it (BudgetSpent), which is what
    the budget is for (a pod that keeps landing on failing nodes, a flapping rack). The fencing
    Deployment is rolled meanwhile (the old leader hands its Lease over on SIGTERM): the new leader
    must hold db-0 as well. On main it deletes it at once."""
    from fencing.controller import Settings

    with Rig(settings=Settings(failover_budget=1)) as rig:
        claim = database(rig, peers=("n2", "n3"))
        rig.clock.now = round(rig.clock.now)
        elector_a = lease_leader(rig, "fencing-a")
        a = rig.controller(leader=elector_a)
        assert elector_a.step()
        rig.power_off("n1")
        while rig.ks.get("Pod", "db-0") is not None and rig.clock.now - rig.fault_at < 60:
            rig.clock.now += 5
            elector_a.step()
            rig.loop.run_until_complete(a.run_once())
        assert rig.ks.get("Pod", "db-0") is None, "the first fail-over"
        rig.recreate("db-0", "n2", [claim])
        rig.recover("n1")  # n1 is repaired and resyncs
        rig.emu.set_in_use("pvc-db-0", "n1", False)
        rig.emu.set_in_use("pvc-db-0", "n2", True)  # the new db-0 runs on n2 (Primary there)
        rig.clock.now += 60
        rig.power_off("n2")
        for _ in range(10):
            rig.clock.now += 5
            elector_a.step()
            rig.reports.append(rig.loop.run_until_complete(a.run_once()))
        assert rig.ks.get("Pod", "db-0") is not None
        assert any(d.reason == "BudgetSpent" for d in rig.reports[-1].decisions), rig.reports[-1].decisions
        elector_a.release()  # the rolling update: A hands over on SIGTERM
        elector_b = lease_leader(rig, "fencing-b")
        b = rig.controller(leader=elector_b)
        for _ in range(10):
            rig.clock.now += 5
            elector_b.step()
            rig.reports.append(rig.loop.run_until_complete(b.run_once()))
        assert elector_b.is_leader
        assert rig.ks.get("Pod", "db-0") is not None, "the new leader failed db-0 over past its budget"


# --- a token is a fail-over made ----------------------------------------------------------------------
def test_a_pass_that_sends_nothing_spends_no_fail_over_tokens(rig):
    """n1 runs ten labelled databases and loses power. When their grace runs out, the API server
    answers the ten live pod reads 503 (a kube-apiserver instance shutting down behind the load
    balancer): nothing is sent, each pod is retried next pass. Before, the rate limit (10 a minute)
    had taken a token for each decision all the same, so five seconds later, with the API server
    fine, all ten were held RateLimited and the last one failed over a minute later: a token
    is a fail-over, and none was made."""
    for i in range(10):
        database(rig, name=f"db-{i}")
    rig.run(10)
    rig.ks.inject(fail=10, status=503, path_prefix="/api/v1/namespaces/default/pods/db-", method="GET")
    rig.power_off("n1")
    rig.run(35)
    assert rig.pod_deletes() == []
    refused = [d.reason for d in rig.reports[-1].decisions]
    assert refused == ["StaleData"] * 10, refused
    rig.run(5)
    held = [d.pod.name for d in rig.reports[-1].decisions if d.reason == "RateLimited"]
    assert len(rig.pod_deletes()) == 10, f"{len(rig.pod_deletes())} deleted, held by the rate limit: {held}"


def test_twenty_pods_on_one_lost_node_are_rate_limited_one_warning_each(rig):
    for i in range(20):
        rig.pod(f"db-{i}", "n1", [rig.volume(f"pvc-{i}", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.run(35)
    assert len(rig.pod_deletes()) == 10, "10 per minute (burst 10)"
    limited = rig.events("RateLimited")
    assert len(limited) == 10 and len({e["involvedObject"]["name"] for e in limited}) == 10
    rig.run(65)
    assert len(rig.pod_deletes()) == 20
    assert len(rig.events("RateLimited")) == 10, "one Warning per held pod, not one per pass"
    order = [w[1] for w in rig.ks.writes if w[0] == "DELETE"]
    for i in range(20):
        pod_at = order.index(f"/api/v1/namespaces/default/pods/db-{i}")
        va_at = order.index(f"/apis/storage.k8s.io/v1/volumeattachments/csi-pvc-{i}-n1-linstor")
        assert pod_at < va_at, "the VolumeAttachment after its pod"
