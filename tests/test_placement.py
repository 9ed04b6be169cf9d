"""Placed next to its data or not: the pure judgement of a bound pod against its last /filter."""

from __future__ import annotations

from scheduler_extender.placement import (
    LOCAL,
    NO_LOCAL_CHOICE,
    NOT_CHOSEN,
    NOT_OFFERED,
    FilterRecord,
    ReplicaNode,
    judge_placement,
)


def record(*replicas: ReplicaNode, volumes: int = 1, candidates: int = 100) -> FilterRecord:
    return FilterRecord("apps/db-0", volumes, candidates, replicas)


def test_bound_to_a_replica_node_is_local_and_says_nothing():
    rec = record(ReplicaNode("w1", 1, True, True, 10, ""), ReplicaNode("w2", 1, True, True, 10, ""))
    assert judge_placement(rec, "w2").outcome == LOCAL
    assert not judge_placement(rec, "w2").announced


def test_offered_and_passing_replica_node_passed_over_is_not_chosen_and_named():
    rec = record(ReplicaNode("w1", 1, True, True, 10, ""))
    placement = judge_placement(rec, "w7")
    assert placement.outcome == NOT_CHOSEN and placement.announced
    assert placement.message.startswith("bound to node w7, which holds no diskful replica of its volumes")
    assert "w1 (1 of 1 volumes): offered, passed our filter, our score 10 of 10" in placement.message
    assert "100 candidates" in placement.message


def test_replica_node_never_offered_but_passing_our_filter_is_not_offered():
    """The 46 % of issue 19 at 2,000 nodes: the replica node was never among the candidates."""
    rec = record(ReplicaNode("w1", 1, False, True, 10, ""), ReplicaNode("w2", 1, True, False, 0, "w2 is OFFLINE"))
    placement = judge_placement(rec, "w9")
    assert placement.outcome == NOT_OFFERED
    assert "w1 (1 of 1 volumes): kube-scheduler did not offer it" in placement.message
    assert "percentageOfNodesToScore?); our filter would pass it" in placement.message
    assert "w2 (1 of 1 volumes): failed our filter: w2 is OFFLINE" in placement.message


def test_an_offered_passing_node_outranks_one_not_offered():
    rec = record(ReplicaNode("w1", 1, False, True, 10, ""), ReplicaNode("w2", 1, True, True, 10, ""))
    assert judge_placement(rec, "w9").outcome == NOT_CHOSEN


def test_no_replica_node_passing_our_filter_means_no_local_choice():
    rec = record(ReplicaNode("w1", 1, True, False, 0, "pool full"), ReplicaNode("w2", 1, False, False, 0, "cordoned"))
    placement = judge_placement(rec, "w9")
    assert placement.outcome == NO_LOCAL_CHOICE and not placement.announced and placement.message == ""


def test_two_volumes_a_node_with_both_beats_a_node_with_one():
    rec = record(ReplicaNode("w1", 2, True, True, 10, ""), ReplicaNode("w2", 1, True, True, 6, ""), volumes=2)
    placement = judge_placement(rec, "w2")
    assert placement.outcome == NOT_CHOSEN
    assert "which holds a diskful replica of 1 of its 2 volumes" in placement.message
    assert "w1 (2 of 2 volumes)" in placement.message and "w2 (" not in placement.message
    assert judge_placement(rec, "w1").outcome == LOCAL


def test_two_volumes_on_disjoint_nodes_either_is_as_local_as_it_gets():
    rec = record(ReplicaNode("w1", 1, True, True, 5, ""), ReplicaNode("w2", 1, True, True, 5, ""), volumes=2)
    assert judge_placement(rec, "w1").outcome == LOCAL
    assert judge_placement(rec, "w3").outcome == NOT_CHOSEN
