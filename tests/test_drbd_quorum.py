"""DRBD's quorum rules (linstor_scheduler/drbd_quorum.py) against the cases LINBIT's own test suite
runs on real DRBD (LINBIT/drbd9-tests, tests/<name>), event by event, each node carrying what it
remembers from one change to the next."""

from __future__ import annotations

import pytest

from linstor_scheduler.drbd_quorum import (
    BOOTED,
    MAJORITY,
    Memory,
    Options,
    Outcome,
    Replica,
    Tally,
    decide,
    outcome,
    parse_setting,
    policy_problem,
    quorum_at,
)

MAJORITY_OPTIONS = Options(MAJORITY, on_no_quorum="io-error")


class Resource:
    """One resource on real nodes: links cut and restored, nodes powered off, as in a drbd9-tests case."""

    def __init__(self, diskful: str, diskless: str = "", primary: str = "", options: Options = MAJORITY_OPTIONS,
                 not_tiebreakers: str = "") -> None:
        self.replicas = {n: Replica(n, True, primary=n == primary) for n in diskful}
        self.replicas.update({n: Replica(n, False, primary=n == primary, tiebreaker=n not in not_tiebreakers)
                              for n in diskless})
        self.options = options
        self.blocked: set[frozenset[str]] = set()
        self.off: set[str] = set()
        self.memory: dict[str, Memory] = {}
        self.now = self.change()

    def links(self, a: str, b: str) -> bool:
        return a not in self.off and b not in self.off and frozenset((a, b)) not in self.blocked

    def change(self) -> Outcome:
        alive = [n for n in self.replicas if n not in self.off]
        self.now = outcome(self.replicas, alive, self.links, self.options, self.memory)
        self.memory = self.now.memory
        return self.now

    def block(self, *pairs: str) -> Outcome:
        self.blocked |= {frozenset(p) for p in pairs}
        return self.change()

    def unblock(self, *pairs: str) -> Outcome:
        self.blocked -= {frozenset(p) for p in pairs}
        return self.change()

    def power_off(self, *nodes: str) -> Outcome:
        self.off |= set(nodes)
        self.memory.update(dict.fromkeys(nodes, BOOTED))
        return self.change()

    def quorate(self) -> set[str]:
        return {n for n, q in self.now.quorum.items() if q.quorum}


def test_quorum_at_is_calc_quorum_at():
    assert [quorum_at(MAJORITY, v) for v in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert quorum_at("all", 3) == 3 and quorum_at(2, 5) == 2 and quorum_at("off", 3) == 0
    assert [parse_setting(t) for t in ("", "off", "Majority", "all", "2", "0", "most")] == [
        "off", "off", "majority", "all", 2, None, None]


def test_tiebreaker_case_1_a_b_cut_both_keep_quorum_through_c():
    """quorum-tiebreaker case 1: A --- B cut, both still reach diskless C: "both nodes keep quorum";
    B cannot promote (DRBD outdates it: A, the Primary, is reachable through C)."""
    r = Resource("AB", "C", primary="A")
    assert r.quorate() == {"A", "B", "C"}
    r.block("AB")
    assert r.quorate() == {"A", "B", "C"}
    assert r.now.promotable["B"] is False, "the Primary A is in B's partition (through C)"


def test_tiebreaker_case_2_the_tiebreaker_switching_sides_gives_nobody_quorum():
    """quorum-tiebreaker case 2: A-B and B-C cut: A keeps quorum (with C), B loses it. C then switches
    to B's side: B must not regain quorum, and A "never loses quorum (new with drbd-9.1.13)": B left
    A's quorate partition, so A knows it cannot have quorum. A-B back: B has quorum again."""
    r = Resource("AB", "C", primary="A")
    r.block("AB", "BC")
    assert r.quorate() == {"A", "C"}
    assert r.now.quorum["A"].tiebreaker or r.now.quorum["A"].voters == 1
    r.block("AC")
    r.unblock("BC")
    assert "B" not in r.quorate(), "the tie-breaker keeps quorum, it never gives it"
    assert "A" in r.quorate(), "B is quorumless to A"
    r.unblock("AB")
    assert {"A", "B"} <= r.quorate()


def test_tiebreaker_case_3_the_secondary_keeps_quorum_and_may_promote():
    """quorum-tiebreaker case 3 (and the issue's standard fail-over): the Primary A cut from B and C:
    A loses quorum, B keeps it and may promote. C switching to A's side gives A nothing."""
    r = Resource("AB", "C", primary="A")
    r.block("AB", "AC")
    assert "A" not in r.quorate() and "B" in r.quorate()
    assert r.now.promotable["B"] is True and r.now.promotable["A"] is False
    r.block("BC")
    r.unblock("AC")
    assert "A" not in r.quorate() and "B" in r.quorate()
    r.unblock("AB")
    assert "A" in r.quorate()


def test_a_primary_that_loses_power_leaves_the_secondary_promotable():
    r = Resource("AB", "C", primary="A")
    r.power_off("A")
    assert r.now.promotable == {"B": True, "C": True}, "C too, diskless: it reads and writes through B"
    assert r.now.quorum["B"].voters == 1, "after the membership commit A is quorumless: B is 1 voter of 1"


def test_the_tiebreaker_keeps_quorum_it_never_gives_it():
    """calc_quorum: an even number of voters, one vote short, a majority of the diskless peers
    connected, and quorum before (device->quorum[NOW])."""
    lost_one = Tally(up_to_date=1, unknown=1, diskless=1)
    kept = decide(lost_one, MAJORITY_OPTIONS, had_quorum=True)
    assert kept.quorum and kept.tiebreaker and "kept by the diskless tie-breaker" in kept.detail
    assert not decide(lost_one, MAJORITY_OPTIONS, had_quorum=False).quorum
    assert not decide(Tally(up_to_date=1, unknown=1, diskless=1, missing_diskless=1), MAJORITY_OPTIONS, True).quorum
    assert not decide(Tally(up_to_date=1, unknown=2, diskless=1), MAJORITY_OPTIONS, True).quorum, "3 voters: odd"


def test_without_a_diskless_peer_two_diskful_replicas_cannot_lose_one():
    r = Resource("AB", primary="A")
    r.power_off("A")
    assert r.quorate() == set() and r.now.promotable == {"B": False}
    assert r.now.quorum["B"].detail == "1 of 2 nodes visible, need 2 for quorum"


def test_check_quorumless_a_keeps_quorum_after_c_leaves_too():
    """quorum-check-quorumless: B isolated, A & C keep quorum; "when a bit later C disconnects from A,
    A can still be sure that B (and C) cannot re-gain quorum. Therefore A still has quorum."
    (DRBD 9.1.13 / 9.2.2)."""
    r = Resource("AB", "C")
    r.block("AB", "BC")
    assert r.quorate() == {"A", "C"}
    r.block("AC")
    assert "A" in r.quorate() and r.now.promotable["A"]
    assert "C" not in r.quorate(), "C alone: no diskful peer at all"


def test_quorum_partition_that_falls_below_half_loses_quorum():
    """tests/quorum part 2: secondaries break away one by one; the partition loses quorum once it has
    half or fewer of the nodes (the missing nodes might have quorum together)."""
    for nodes in ("ABC", "ABCDE"):
        r = Resource(nodes, primary="A")
        away: list[str] = []
        for moving in nodes[1:]:
            away.append(moving)
            r.block(*(moving + n for n in nodes if n != moving and n not in away))
            inside = len(nodes) - len(away)
            assert ("A" in r.quorate()) is (inside > len(nodes) // 2), (nodes, away)


def test_last_man_standing_outdated_peers_leave_the_voters():
    """tests/quorum "last man standing": secondaries taken down gracefully one after the other are
    Outdated to the Primary; with no unknown peer they leave the voters and it keeps quorum alone."""
    r = Resource("ABC", primary="A")
    r.memory["A"] = Memory(outdated=frozenset("BC"))
    r.power_off("B", "C")
    assert r.quorate() == {"A"}
    assert r.now.quorum["A"].voters == 1
    r = Resource("ABC", primary="A")
    r.power_off("B", "C")  # a crash, not a graceful leave: they might be up together
    assert r.quorate() == set()


def test_tiebreaker_flag_a_lost_diskless_access_node_counts_against_the_tiebreaker():
    """quorum-tiebreaker-flag: A + D (diskless access) on site 1, B on site 2, diskless tie-breaker C
    on site 3. Site 1 lost: with D a tie-breaker (DRBD's default) B has 1 of the 2 diskless peers, no
    majority: it loses quorum; with peer-tiebreaker no for D, B keeps it."""
    for excluded, keeps in (("", False), ("D", True)):
        r = Resource("AB", "CD", primary="A", not_tiebreakers=excluded)
        r.block("AB", "AC", "DB", "DC")
        assert ("B" in r.quorate()) is keeps


@pytest.mark.parametrize(("redundancy", "keeps"), [("off", True), (MAJORITY, True), (2, False)])
def test_quorum_minimum_redundancy_counts_uptodate_diskful_replicas(redundancy, keeps):
    """2 diskful + tie-breaker, A lost: B keeps quorum through the tie-breaker (which does not look at
    quorum-minimum-redundancy), then A is quorumless and B is 1 voter of 1: ``2`` UpToDate replicas
    cannot be met any more (drbd_state.c calc_quorum: min_redundancy_at of the voters)."""
    r = Resource("AB", "C", primary="A", options=Options(MAJORITY, redundancy, "suspend-io"))
    r.power_off("A")
    assert ("B" in r.quorate()) is keeps


def test_quorum_minimum_redundancy_with_three_diskful():
    r = Resource("ABC", primary="A", options=Options(MAJORITY, 2, "suspend-io"))
    r.power_off("C")
    assert r.quorate() == {"A", "B"}, "2 UpToDate of 2"
    r = Resource("ABC", primary="A", options=Options(MAJORITY, 2, "suspend-io"))
    r.replicas["B"] = Replica("B", True, up_to_date=False)  # resyncing (Inconsistent)
    r.power_off("C")
    assert "A" not in r.quorate(), "2 of 3 visible, 1 UpToDate"
    assert r.now.quorum["A"].detail == "1 of 3 nodes UpToDate, need 2 for quorum-minimum-redundancy"


def test_a_numeric_quorum_with_a_tiebreaker_loses_quorum_after_the_membership_commit():
    """quorum=2 on 2 diskful + tie-breaker: B keeps quorum only until A is quorumless (1 voter, still
    2 needed: the number does not shrink with the voters). ``majority`` shrinks and keeps it."""
    r = Resource("AB", "C", primary="A", options=Options(2, on_no_quorum="suspend-io"))
    r.power_off("A")
    assert r.quorate() == set()


def test_a_diskless_node_has_quorum_through_a_quorate_uptodate_peer():
    r = Resource("ABC", "D", primary="D")
    r.power_off("A")
    assert "D" in r.quorate() and r.now.quorum["D"].quorum
    r.block("DB", "DC")
    assert "D" not in r.quorate(), "cut from every diskful replica"


def test_a_node_that_boots_has_no_quorum_until_it_counts_one():
    r = Resource("AB", "C")
    r.power_off("B")
    r.power_off("A")
    r.off.discard("A")
    r.change()
    assert "A" not in r.quorate(), "1 of 2 voters and no quorum to keep: the tie-breaker does not give it"
    r.off.discard("B")
    r.change()
    assert {"A", "B"} <= r.quorate()


def test_the_policy_check_counts_drbds_voters():
    policy = {"DrbdOptions/Resource/quorum": "majority", "DrbdOptions/Resource/on-no-quorum": "suspend-io"}
    assert policy_problem(policy, 2) is None
    assert "not more than half of the 2 voters" in policy_problem({**policy, "DrbdOptions/Resource/quorum": "1"}, 2)
    assert policy_problem({**policy, "DrbdOptions/Resource/quorum": "2"}, 3) is None
    assert "is off" in policy_problem({**policy, "DrbdOptions/Resource/quorum": "off"}, 3)
    assert "on-no-quorum is not set" in policy_problem({"DrbdOptions/Resource/quorum": "majority"}, 3)
    assert policy_problem({"DrbdOptions/Resource/quorum": "all", "DrbdOptions/auto-quorum": "io-error"}, 3) is None
    assert Options.from_props({**policy, "DrbdOptions/Resource/quorum-minimum-redundancy": "2"}).minimum_redundancy == 2


def test_every_test_the_quorum_section_of_the_docs_cites_exists():
    """docs/fencing.md, "DRBD's quorum rules": each rule names the test that checks it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "fencing.md").read_text()
    section = doc[doc.index("## DRBD's quorum rules"):doc.index("## The emulator's DRBD model")]
    cited = set(re.findall(r"`(test_\w+)(?:\[[^\]]*\])?`", section))
    code = "\n".join(p.read_text() for p in (root / "tests").glob("test_*.py"))
    assert len(cited) >= 15
    assert sorted(name for name in cited if f"def {name}(" not in code) == []
