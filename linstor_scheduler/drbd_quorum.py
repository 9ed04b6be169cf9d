"""DRBD 9's quorum rules, once: who votes, when a partition has quorum, what a node remembers between
state changes, and which replica may be promoted. Pure (no I/O, no clock); used by the LINSTOR
emulator (``devkit.linstor_emulator``), the drill's "after the failure" view (``locality.drill``) and
fencing's policy check (``fencing.verdict``).

What it follows, and where each rule comes from (docs/fencing.md, "DRBD's quorum rules", says the
same for operators):

- LINBIT/drbd ``drbd/drbd_state.c``: ``calc_quorum_at`` (majority = voters / 2 + 1, all, or N),
  ``__calc_quorum_with_disk`` / ``__calc_quorum_no_disk`` (how a node counts itself and each peer),
  ``calc_quorum`` (the decision: "the missing nodes might have quorum", outdated and quorumless
  peers leave the voters, ``quorum-minimum-redundancy``, the diskless tie-breaker and its
  stickiness), ``update_members`` and ``drbd_receiver.c`` (``resource->members``: the nodes of the
  last quorate partition), and the promotion checks (``SS_NO_QUORUM``, ``SS_TWO_PRIMARIES``);
- LINBIT/drbd ``ChangeLog``: 9.1.13 / 9.2.2 "when calculating if a partition has quorum, take into
  account if the missing nodes might have quorum" (the quorumless peers); 9.3.1 "per-peer_device
  tiebreaker config flag" (``peer-tiebreaker``, default yes: every diskless peer counts);
- LINBIT/drbd9-tests ``tests/quorum-tiebreaker`` (cases 1-3: "A --- B, C diskless"),
  ``tests/quorum-check-quorumless`` ("the remaining partition of A & C know that B can not have
  quorum"), ``tests/quorum`` ("last man standing"), ``tests/quorum-tiebreaker-flag``;
- the DRBD 9 User's Guide, "Configuring quorum", "Using a diskless node as a tiebreaker", "Last man
  standing" and drbd.conf(5) ``quorum``, ``quorum-minimum-redundancy``, ``on-no-quorum``.

How the options reach DRBD: LINSTOR writes the ``DrbdOptions/Resource/<option>`` properties
(inherited controller < resource group < resource definition) into the resource's ``options``
section; its auto-quorum sets ``quorum`` on the resource definition itself (majority with 3 diskful
replicas, or 2 and any diskless one; linstor-server ``CtrlRscAutoQuorumHelper.isQuorumFeasible``);
its tie-breaker (``DrbdOptions/auto-add-quorum-tiebreaker``) is an ordinary diskless replica flagged
``TIE_BREAKER``: to DRBD it is a diskless peer like any client.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

OFF, MAJORITY, ALL = "off", "majority", "all"
Setting = str | int  # "off", "majority", "all" or a number of nodes

QUORUM_KEY = "DrbdOptions/Resource/quorum"
MINIMUM_REDUNDANCY_KEY = "DrbdOptions/Resource/quorum-minimum-redundancy"
ON_NO_QUORUM_KEY = "DrbdOptions/Resource/on-no-quorum"
AUTO_QUORUM_KEY = "DrbdOptions/auto-quorum"  # LINSTOR's own switch: quorum plus this on-no-quorum action
QUORUM_ACTIONS = frozenset({"suspend-io", "io-error"})

Links = Callable[[str, str], bool]  # (node, peer) -> does node see its DRBD connection to peer up?


def parse_setting(text: str | None) -> Setting | None:
    """``off`` (also unset), ``majority``, ``all`` or a positive number; None when it is none of these."""
    value = (text or "").strip().lower()
    if value in ("", OFF):
        return OFF
    if value in (MAJORITY, ALL):
        return value
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number > 0 else None


@dataclass(frozen=True, slots=True)
class Options:
    """A resource's quorum options as DRBD gets them (unparseable values: ``off``)."""

    quorum: Setting = OFF
    minimum_redundancy: Setting = OFF
    on_no_quorum: str = ""  # suspend-io, io-error, or "" (not set: DRBD's default is not assumed)

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> Options:
        action = (props.get(ON_NO_QUORUM_KEY) or props.get(AUTO_QUORUM_KEY) or "").strip().lower()
        return cls(parse_setting(props.get(QUORUM_KEY)) or OFF,
                   parse_setting(props.get(MINIMUM_REDUNDANCY_KEY)) or OFF, action)


def quorum_at(setting: Setting, voters: int) -> int:
    """How many of ``voters`` a partition needs (``drbd_state.c`` ``calc_quorum_at``; ``off``: 0)."""
    if setting == MAJORITY:
        return voters // 2 + 1
    if setting == ALL:
        return voters
    return setting if isinstance(setting, int) else 0


def policy_problem(props: Mapping[str, str], voters: int) -> str | None:
    """Why a node cut off from its peers could keep writing under these options, or None when DRBD
    stops it. ``voters``: the diskful replicas (diskless peers never vote, ``__calc_quorum_with_disk``).

    Two disjoint partitions can both reach ``quorum=N`` when 2 N <= voters (``quorum=1``: a node alone
    is quorate); ``majority`` and ``all`` never let both sides count enough. Without ``on-no-quorum``
    suspend-io or io-error a node without quorum still completes writes."""
    raw = (props.get(QUORUM_KEY) or "").strip().lower()
    setting = parse_setting(raw)
    if setting == OFF:
        return f"{QUORUM_KEY} is {raw or 'not set'}"
    if setting is None:
        return f"{QUORUM_KEY}={raw} is not majority, all or a number"
    if isinstance(setting, int) and 2 * setting <= voters:
        return (f"{QUORUM_KEY}={setting} is not more than half of the {voters} voters "
                "(diskful replicas): a node cut off with that many could go on writing")
    action = Options.from_props(props).on_no_quorum
    if action not in QUORUM_ACTIONS:
        return f"{ON_NO_QUORUM_KEY} is {action or 'not set'} (suspend-io or io-error needed)"
    return None


@dataclass(frozen=True, slots=True)
class Replica:
    """One node's replica of a resource."""

    node: str
    diskful: bool  # False: intentionally diskless (a client, or LINSTOR's TIE_BREAKER)
    up_to_date: bool = True  # diskful: its disk is UpToDate (else Consistent, Outdated, Inconsistent...)
    primary: bool = False
    tiebreaker: bool = True  # diskless: counts for the tie-breaker (drbd.conf ``peer-tiebreaker``, default yes)


@dataclass(frozen=True, slots=True)
class Memory:
    """What a node's DRBD carries from one state change to the next.

    ``quorum``: its last quorum (``device->quorum[NOW]``: the tie-breaker keeps quorum, it never
    gains it). ``members``: the nodes of its last quorate partition (``resource->members``, set by the
    two-phase commit after a peer is lost); a missing peer outside them left earlier, without quorum
    ("quorumless", DRBD >= 9.1.13 / 9.2.2). None: every replica (a resource that was whole).
    ``outdated``: peers it knows Outdated (``MDF_PEER_OUTDATED``: they left gracefully, or a Primary
    outdated them); with no unknown peer they leave the voters ("last man standing")."""

    quorum: bool = True
    members: frozenset[str] | None = None
    outdated: frozenset[str] = frozenset()


WHOLE = Memory()
BOOTED = Memory(quorum=False, members=frozenset())  # a node that starts: no quorum until it counts one


@dataclass(frozen=True, slots=True)
class Tally:
    """How one node counts (``struct quorum_detail``)."""

    up_to_date: int = 0
    present: int = 0
    outdated: int = 0
    quorumless: int = 0
    unknown: int = 0
    diskless: int = 0
    missing_diskless: int = 0
    quorate_peers: int = 0


@dataclass(frozen=True, slots=True)
class Quorum:
    """One node's quorum, with the figures DRBD logs when it refuses a promotion."""

    quorum: bool
    voters: int
    visible: int  # up_to_date + present
    up_to_date: int
    quorum_at: int
    min_redundancy_at: int
    tiebreaker: bool = False  # kept only by the diskless tie-breaker

    @property
    def detail(self) -> str:
        if self.tiebreaker:
            return f"{self.visible} of {self.voters} voters, kept by the diskless tie-breaker"
        if self.quorum:
            return f"{self.visible} of {self.voters} voters (needs {self.quorum_at})"
        if self.visible < self.quorum_at:
            return f"{self.visible} of {self.voters} nodes visible, need {self.quorum_at} for quorum"
        return (f"{self.up_to_date} of {self.voters} nodes UpToDate, need {self.min_redundancy_at} for "
                "quorum-minimum-redundancy")


def tally(node: str, replicas: Mapping[str, Replica], links: Links, memory: Memory,
          quorate: Collection[str] = ()) -> Tally:
    """How ``node`` counts itself and its peers (``__calc_quorum_with_disk`` / ``__calc_quorum_no_disk``).
    ``quorate``: peers known to have quorum (a diskless node takes quorum from an UpToDate one)."""
    me = replicas[node]
    up_to_date = present = outdated = quorumless = unknown = diskless = missing_diskless = quorate_peers = 0
    if me.diskful:
        up_to_date, present = (1, 0) if me.up_to_date else (0, 1)
    else:
        diskless = 1
    knows_quorumless = memory.quorum  # only a node with quorum knows who was outside its partition
    members = memory.members
    for peer, replica in replicas.items():
        if peer == node or (not replica.diskful and not replica.tiebreaker):
            continue
        if not links(node, peer):
            if not replica.diskful:
                missing_diskless += 1
            elif peer in memory.outdated:
                outdated += 1
            elif knows_quorumless and members is not None and peer not in members:
                quorumless += 1
            else:
                unknown += 1
        elif not replica.diskful:
            diskless += 1
        elif replica.up_to_date:
            up_to_date += 1
            if not me.diskful and peer in quorate:
                quorate_peers += 1
        else:
            present += 1
    return Tally(up_to_date, present, outdated, quorumless, unknown, diskless, missing_diskless, quorate_peers)


def decide(counts: Tally, options: Options, had_quorum: bool) -> Quorum:
    """``calc_quorum``: the partition's decision from one node's tally. With quorum ``off`` DRBD still
    computes it (and enforces nothing): the result is reported as computed."""
    missing = counts.outdated + counts.quorumless + counts.unknown
    voters = missing + counts.up_to_date + counts.present
    unknown, quorumless = counts.unknown, counts.quorumless
    if missing >= quorum_at(options.quorum, voters):  # the missing nodes might have quorum themselves
        unknown, quorumless = unknown + quorumless, 0
    if not unknown:  # every absent voter is Outdated or was outside our partition: none of them can promote
        voters = counts.up_to_date + counts.present
    need = quorum_at(options.quorum, voters)
    redundancy = quorum_at(options.minimum_redundancy, voters)
    visible = counts.up_to_date + counts.present
    quorate = counts.quorate_peers > 0 or (visible >= need and counts.up_to_date >= redundancy)
    tied = (not quorate and voters != 0 and voters % 2 == 0 and visible == need - 1
            and counts.diskless >= quorum_at(MAJORITY, counts.diskless + counts.missing_diskless)
            and had_quorum)
    return Quorum(quorate or tied, voters, visible, counts.up_to_date, need, redundancy, tiebreaker=tied)


def partitions(alive: Collection[str], links: Links) -> dict[str, frozenset[str]]:
    """Per live node, the nodes it reaches through connected peers (DRBD's two-phase commits travel the
    mesh: a Primary two hops away is known, and a node outdated through a third one)."""
    nodes = list(alive)
    if all(links(a, b) for a in nodes for b in nodes if a != b):  # a whole partition: the usual case
        whole = frozenset(nodes)
        return dict.fromkeys(nodes, whole)
    out: dict[str, frozenset[str]] = {}
    for start in nodes:
        if start in out:
            continue
        seen, todo = {start}, [start]
        while todo:
            here = todo.pop()
            for peer in nodes:
                if peer not in seen and links(here, peer):
                    seen.add(peer)
                    todo.append(peer)
        found = frozenset(seen)
        out.update(dict.fromkeys(found, found))
    return out


def settle(replicas: Mapping[str, Replica], alive: Collection[str], links: Links, options: Options,
           memory: Mapping[str, Memory], reach: Mapping[str, frozenset[str]] | None = None
           ) -> tuple[dict[str, Quorum], dict[str, Memory]]:
    """Every live replica's quorum after a change, and what each then remembers.

    A change ends in DRBD with a two-phase commit that sets the quorate partition's ``members``
    (``update_members``, ``drbd_receiver.c``); the quorum is then recomputed with them. Repeated here
    until nothing changes (twice at most in practice). Members that are every replica are kept as
    None (a whole resource), so a healthy resource settles in one round."""
    live = [n for n in replicas if n in alive]
    everyone = frozenset(replicas)
    reach = reach if reach is not None else partitions(live, links)
    order = sorted(live, key=lambda n: not replicas[n].diskful)  # diskful first: diskless lean on them
    mem = {n: memory.get(n, WHOLE) for n in live}
    result: dict[str, Quorum] = {}
    for _ in range(len(live) + 2):
        result = {}
        for n in order:
            quorate = {p for p, q in result.items() if q.quorum}
            result[n] = decide(tally(n, replicas, links, mem[n], quorate), options, mem[n].quorum)
        after = {}
        for n in live:
            members = mem[n].members
            if result[n].quorum or any(result[p].quorum for p in live if p != n and links(n, p)):
                members = reach[n]
            elif members is not None:  # a fresh connection joins the members
                members = members | {p for p in live if p != n and links(n, p)}
            after[n] = Memory(result[n].quorum, None if members == everyone else members, mem[n].outdated)
        if after == mem:
            break
        mem = after
    return result, {**dict(memory), **mem}


def may_promote(node: str, replicas: Mapping[str, Replica], links: Links, quorum: Mapping[str, Quorum],
                reach: Collection[str]) -> bool:
    """Would DRBD let ``node`` become Primary now: not Primary already, quorum (``SS_NO_QUORUM``), data
    (its own UpToDate disk; diskless: a connected UpToDate peer), and no Primary in its partition
    ``reach`` (``SS_TWO_PRIMARIES``; the commit reaches every node the partition reaches)."""
    me = replicas[node]
    if me.primary or node not in quorum or not quorum[node].quorum:
        return False
    if me.diskful:
        data = me.up_to_date
    else:
        data = any(r.diskful and r.up_to_date and links(node, p) for p, r in replicas.items() if p != node)
    return data and not any(replicas[p].primary for p in reach if p != node)


@dataclass(frozen=True)
class Outcome:
    """A resource's DRBD state after a change: per live replica its quorum and whether it may promote."""

    quorum: dict[str, Quorum]
    promotable: dict[str, bool]
    memory: dict[str, Memory] = field(default_factory=dict)

    def kept_by(self, replicas: Mapping[str, Replica]) -> list[str]:
        """The live diskful replicas with quorum."""
        return sorted(n for n, q in self.quorum.items() if q.quorum and replicas[n].diskful)


def outcome(replicas: Mapping[str, Replica], alive: Collection[str], links: Links, options: Options,
            memory: Mapping[str, Memory] | None = None) -> Outcome:
    """``settle`` and ``may_promote`` for every live replica."""
    table = {(a, b): links(a, b) for a in replicas for b in replicas if a != b}  # each link asked once

    def known(a: str, b: str) -> bool:
        return table[(a, b)]

    reach = partitions([n for n in replicas if n in alive], known)
    quorum, remembered = settle(replicas, alive, known, options, memory or {}, reach)
    promotable = {n: may_promote(n, replicas, known, quorum, reach[n]) for n in quorum}
    return Outcome(quorum, promotable, remembered)
