"""The pure verdict: dataclasses in, verdicts out, a clock passed in. No I/O."""

from __future__ import annotations

from fencing.grace import GraceTimers
from fencing.verdict import (
    CONTROLLER_PARTITION,
    FENCE,
    HEALTHY,
    IN_USE_ELSEWHERE,
    NO_PROMOTABLE_REPLICA,
    NO_QUORUM_POLICY,
    NOWHERE_TO_GO,
    REFUSE,
    UNRESOLVED_VOLUME,
    WAITING,
    NodeState,
    Observed,
    PodState,
    PodVolume,
    ReplicaState,
    ResourceState,
    grace_due,
    judge,
    judge_pod,
    storage_proof,
    witnesses,
)

POLICY = {"DrbdOptions/Resource/quorum": "majority", "DrbdOptions/Resource/on-no-quorum": "suspend-io"}


def replica(node, *, diskful=True, up_to_date=True, in_use=False, may_promote=True, peers=None, **kw):
    return ReplicaState(node, diskful, up_to_date, in_use, may_promote, peers or {}, **kw)


def resource(*replicas, props=POLICY, name="r1", lost="n1"):
    """Replicas as DRBD reports them once ``lost`` is gone: every other one sees its connection down."""
    if lost:
        replicas = tuple(r if r.node == lost or lost in r.peers else ReplicaState(
            r.node, r.diskful, r.up_to_date, r.in_use, r.may_promote, {**r.peers, lost: False}, r.ignored,
            r.reported) for r in replicas)
    return ResourceState(name, {r.node: r for r in replicas}, props)


def nodes(**status):
    base = {"n1": "ONLINE", "n2": "ONLINE", "n3": "ONLINE"}
    base.update(status)
    return {n: NodeState(n, s, s == "ONLINE") for n, s in base.items()}


DATA = (PodVolume("default/data", "r1", "r1"),)


def pod(node="n1", *, volumes=DATA, **kw):
    return PodState("default", "db-0", "uid-1", node, tuple(volumes), kw.pop("opted_in", True),
                    kw.pop("opted_out", False), **kw)


def observed(res, node_states, pods=None, since=None):
    return Observed(node_states, {res.name: res}, tuple(pods or [pod()]), since or {})


def test_both_witnesses_are_needed():
    res = resource(replica("n1", in_use=True, may_promote=False), replica("n2"))
    proof = storage_proof(res, "n1", nodes(n1="OFFLINE"))
    assert "OFFLINE" in proof and "replicas on n2 report their DRBD connection to n1 down" in proof
    assert storage_proof(res, "n1", nodes()) is None, "LINSTOR reaches n1 and its replica reports no peer down"
    connected = resource(replica("n1", in_use=True, may_promote=False), replica("n2", peers={"n1": True}), lost=None)
    said = witnesses(connected, "n1", nodes(n1="OFFLINE"))
    assert said.linstor and said.peers is None and said.proof is None, "a controller partition"
    decision = judge_pod(pod(), observed(connected, nodes(n1="OFFLINE")), 60, 30)
    assert (decision.verdict, decision.reason) == (HEALTHY, CONTROLLER_PARTITION)


def test_a_node_cut_from_its_peers_is_lost_while_linstor_reaches_it():
    cut = resource(replica("n1", in_use=True, may_promote=False, peers={"n2": False, "n3": False}),
                   replica("n2"), replica("n3", diskful=False))
    assert "the replica on n1 reports every DRBD peer connection down" in storage_proof(cut, "n1", nodes())
    unknown = resource(replica("n1", peers={"n2": False}), replica("n2", reported=False), lost=None)
    assert storage_proof(unknown, "n1", nodes()) is None, "an unknown report is no testimony"


def test_peers_reporting_the_connection_down_is_proof_only_when_all_do():
    r1 = replica("n1", in_use=True, may_promote=False)
    both = resource(r1, replica("n2", peers={"n1": False}), replica("n3", diskful=False, peers={"n1": False}))
    assert "report their DRBD connection to n1 down" in storage_proof(both, "n1", nodes(n1="OFFLINE"))
    one = resource(r1, replica("n2", peers={"n1": False}), replica("n3", diskful=False, peers={"n1": True}))
    assert storage_proof(one, "n1", nodes(n1="OFFLINE")) is None, "n3 still talks to n1: not lost"


def test_grace_then_fence_with_the_healthy_replica_named():
    res = resource(replica("n1", in_use=True, may_promote=False), replica("n2"))
    obs = observed(res, nodes(n1="OFFLINE"), since={("r1", "n1"): 100.0})
    assert judge_pod(pod(), obs, 129.9, 30).verdict == WAITING
    decision = judge_pod(pod(), obs, 130.0, 30)
    assert decision.verdict == FENCE and decision.force, "Node NotReady: grace-0 delete"
    assert decision.volumes[0].healthy_replica == "n2"


def test_ready_node_is_evicted_not_force_deleted():
    res = resource(replica("n1", in_use=True, may_promote=False, peers={"n2": False}),
                   replica("n2", peers={"n1": False}), lost=None)
    states = nodes()
    decision = judge_pod(pod(), observed(res, states, since={("r1", "n1"): 0.0}), 60, 30)
    assert decision.verdict == FENCE and not decision.force


def test_refusals_each_have_their_reason():
    lost = nodes(n1="OFFLINE")
    since = {("r1", "n1"): 0.0}
    cases = [
        (resource(replica("n1"), replica("n2"), props={"DrbdOptions/Resource/quorum": "majority"}), NO_QUORUM_POLICY),
        (resource(replica("n1"), replica("n2", up_to_date=False)), NOWHERE_TO_GO),
        (resource(replica("n1"), replica("n2", in_use=True)), IN_USE_ELSEWHERE),
        (resource(replica("n1"), replica("n2", may_promote=False)), NO_PROMOTABLE_REPLICA),
        (resource(replica("n1"), replica("n2", diskful=False)), NOWHERE_TO_GO),
        (resource(replica("n1"), replica("n2"), props={**POLICY, "DrbdOptions/Resource/quorum": "1"}),
         NO_QUORUM_POLICY),
    ]
    for res, reason in cases:
        decision = judge_pod(pod(), observed(res, lost, since=since), 60, 30)
        assert (decision.verdict, decision.reason) == (REFUSE, reason), reason


def test_destination_node_must_be_online_and_not_notready():
    res = resource(replica("n1"), replica("n2"))
    states = nodes(n1="OFFLINE")
    states["n2"] = NodeState("n2", "ONLINE", False)  # LINSTOR fine, kubelet NotReady
    assert judge_pod(pod(), observed(res, states, since={("r1", "n1"): 0.0}), 60, 30).reason == NOWHERE_TO_GO


def test_unresolved_claim_blocks_the_pod():
    res = resource(replica("n1"), replica("n2"))
    p = pod(volumes=(PodVolume("default/data", "r1", "r1"), PodVolume("default/x", None, None, "PVC not seen")))
    decision = judge_pod(p, observed(res, nodes(n1="OFFLINE"), [p], since={("r1", "n1"): 0.0}), 60, 30)
    assert decision.reason == UNRESOLVED_VOLUME


def test_healthy_and_unscheduled_pods():
    res = resource(replica("n1"), replica("n2"), lost=None)
    assert judge_pod(pod(), observed(res, nodes()), 60, 30).verdict == HEALTHY
    assert judge(observed(res, nodes(), [pod(node=None)]), 60, 30) == []


def test_grace_timers_reset_on_recovery():
    timers = GraceTimers()
    assert timers.observe([("r1", "n1")], 10) == ({("r1", "n1")}, set())
    timers.observe([("r1", "n1")], 20)
    assert timers.since == {("r1", "n1"): 10}
    assert timers.observe([], 25) == (set(), {("r1", "n1")})
    timers.observe([("r1", "n1")], 30)
    assert timers.since == {("r1", "n1"): 30}, "a recovery starts the grace period again"


def test_quorum_policy_needs_quorum_and_a_blocking_action():
    def policy(**props):
        return ResourceState("r1", {}, {f"DrbdOptions/{k}": v for k, v in props.items()}).quorum_policy

    assert policy(**{"Resource/quorum": "majority", "Resource/on-no-quorum": "suspend-io"})
    assert policy(**{"Resource/quorum": "2", "Resource/on-no-quorum": "io-error"})
    assert policy(**{"Resource/quorum": "majority", "auto-quorum": "suspend-io"}), "LINSTOR's auto-quorum"
    assert policy(**{"Resource/quorum": "majority"}) is None, "no action: DRBD's default is not assumed"
    assert policy(**{"Resource/quorum": "off", "Resource/on-no-quorum": "suspend-io"}) is None
    assert policy(**{"Resource/on-no-quorum": "suspend-io"}) is None


def test_a_numeric_quorum_must_be_more_than_half_of_the_voters():
    def problem(quorum, *replicas):
        return ResourceState("r1", {r.node: r for r in replicas}, {**POLICY, "DrbdOptions/Resource/quorum": quorum}
                             ).quorum_problem()

    two_and_tb = (replica("n1"), replica("n2"), replica("n3", diskful=False))
    assert "not more than half of the 2 voters" in problem("1", *two_and_tb), "a node alone is quorate: refused"
    assert problem("2", *two_and_tb) is None
    assert problem("2", replica("n1"), replica("n2"), replica("n3"), replica("n4")) is not None, "2 of 4 is half"
    assert problem("all", *two_and_tb) is None and problem("majority", *two_and_tb) is None
    assert "not majority, all or a number" in problem("most", *two_and_tb)
    client = replica("n4", diskful=False)  # DRBD counts no diskless replica as a voter, tie-breaker or client
    assert problem("2", *two_and_tb, client) is None
    assert problem("2", *two_and_tb, replica("n5")) is None, "3 diskful voters: 2 is more than half"


def test_guards_refuse_in_the_documented_order():
    from fencing.guards import (
        BudgetGuard,
        DryRunGuard,
        GuardContext,
        RateLimitGuard,
        StaleDataGuard,
        StormGuard,
        apply,
    )

    res = resource(replica("n1", in_use=True, may_promote=False), replica("n2"))
    decision = judge_pod(pod(), observed(res, nodes(n1="OFFLINE"), since={("r1", "n1"): 0.0}), 60, 30)
    assert decision.verdict == FENCE
    budget, rate = BudgetGuard(1, 3600), RateLimitGuard(1, 0)
    guards = (StaleDataGuard(), StormGuard(), budget, rate, DryRunGuard(True))
    every = GuardContext(60, stale="LINSTOR read failed", storm="storm breaker: 3 of 6")
    assert apply(guards, decision, every).reason == "StaleData"
    assert apply(guards, decision, GuardContext(60, None, "storm breaker: 3 of 6")).reason == "StormBreaker"
    budget.record("default/db-0", "an-earlier-uid", 10)
    assert apply(guards, decision, GuardContext(60, None, None)).reason == "BudgetSpent"
    assert rate.take(60) and apply((rate,), decision, GuardContext(60, None, None)).reason == "RateLimited"
    assert apply((rate,), decision, GuardContext(60, None, None, frozenset({"uid-1"}))) is None, \
        "a fail-over already under way is not counted again"
    dry = apply(guards[4:], decision, GuardContext(60, None, None))
    assert (dry.reason, dry.event_type, dry.holds_verdict) == ("DryRun", "Normal", True)
    waiting = judge_pod(pod(), observed(res, nodes(n1="OFFLINE"), since={("r1", "n1"): 50.0}), 60, 30)
    assert apply(guards, waiting, GuardContext(60, None, "storm")).reason == "StormBreaker", \
        "a storm also holds the grace period"
    assert apply(guards[2:], waiting, GuardContext(60, None, None)) is None


def test_the_plan_of_a_removal_from_the_live_pod_and_what_was_sent():
    """intents.removal, pure: how a pod judged ``fence`` is removed now."""
    from fencing import intents

    res = resource(replica("n1", in_use=True, may_promote=False), replica("n2"))
    ready = nodes(n1="OFFLINE")
    ready["n1"] = NodeState("n1", "OFFLINE", True)  # kubelet still reports: the Eviction API
    evict = judge_pod(pod(), observed(res, ready, since={("r1", "n1"): 0.0}), 60, 30)
    force = judge_pod(pod(), observed(res, nodes(n1="OFFLINE"), since={("r1", "n1"): 0.0}), 60, 30)
    live = {"metadata": {"name": "db-0", "uid": "uid-1"}}
    assert intents.removal(force, live, False, None, None, 60, 60).kind == intents.DELETE
    step = intents.removal(evict, live, False, None, None, 60, 60)
    assert (step.kind, step.resources, step.overrides) == (intents.EVICT, ("r1",), "")
    assert intents.removal(evict, live, True, 30, "500 error", 60, 60) == intents.Wait(
        "", "evicted; waiting for the pod to terminate")
    late = intents.removal(evict, live, False, 0, "500 error", 60, 60)
    assert late.kind == intents.DELETE and "500 error" in late.overrides and "PodDisruptionBudget" in late.overrides
    kept = {"metadata": {**live["metadata"], "deletionGracePeriodSeconds": 0, "finalizers": ["x/y"]}}
    held = intents.removal(force, kept, True, None, None, 60, 60)
    assert held.reason == intents.HELD_BY_FINALIZER and "x/y" in held.detail


def test_the_next_pass_is_due_when_the_last_timed_volume_of_a_waiting_pod_turns():
    first = resource(replica("n1", in_use=True, may_promote=False), replica("n2"))
    second = resource(replica("n1", in_use=True, may_promote=False), replica("n2"), name="r2")
    volumes = (PodVolume("default/data", "r1", "r1"), PodVolume("default/logs", "r2", "r2"))
    obs = Observed(nodes(n1="OFFLINE"), {"r1": first, "r2": second}, (pod(volumes=volumes),),
                   {("r1", "n1"): 100.0, ("r2", "n1"): 104.0})
    decisions = judge(obs, 110.0, 30)
    assert [d.verdict for d in decisions] == [WAITING]
    assert grace_due(decisions, 30) == 134.0, "the pod waits for its later volume: r2's grace ends at 134"
    assert grace_due(judge(obs, 140.0, 30), 30) is None, "nobody waits any more"
    healthy = Observed(nodes(), {"r1": resource(replica("n1"), replica("n2"), lost=None)}, (pod(),), {})
    assert grace_due(judge(healthy, 110.0, 30), 30) is None
