"""kube-scheduler's scheduling cycle for one pod, re-created from its source. Pure: no I/O.

The extender is asked through two callables (``extender_filter``, ``extender_prioritize``), so the
bench (bench/placement.py) runs the real extender over HTTP and a test can hand in plain functions.

Read from kubernetes/kubernetes at commit 003b4460edb5 (the 1.35 line: it has OpportunisticBatching):

- ``pkg/scheduler/schedule_one.go``
  - ``schedulePod``: filter, then (more than one feasible node) prioritize and take the best node.
  - ``findNodesThatFitPod``: the node list from the snapshot; after the filters
    ``nextStartNodeIndex = (nextStartNodeIndex + processedNodes) % len(allNodes)``, where
    processedNodes = feasible nodes + nodes that failed a filter; then ``findNodesThatPassExtenders``.
  - ``findNodesThatPassFilters``: checks nodes from ``nextStartNodeIndex`` on and stops once
    ``numFeasibleNodesToFind`` nodes passed. Go checks in parallel (16 workers) and may look at a
    few more nodes before the cancel lands; modelled sequentially (the exact cut-off).
  - ``numFeasibleNodesToFind``: fewer than 100 nodes -> all; the profile's percentageOfNodesToScore,
    else the global one; 0 (the default) -> ``50 - numAllNodes/125``, at least 5; then
    ``numAllNodes * percentage / 100``, at least 100.
  - ``findNodesThatPassExtenders``: the extender filters only the nodes the plugins let through.
  - ``prioritizeNodes``: plugin scores (each normalised to 0..MaxNodeScore=100, times its weight)
    plus, per extender, ``score * weight * (MaxNodeScore / MaxExtenderPriority)`` = score x weight x 10.
  - the best node: ``newSortedNodeScores`` (a heap by TotalScore, ties by a random ``Randomizer``);
    up to 1.33, ``selectHost`` with reservoir sampling over the top-scored nodes. Both pick
    uniformly among the nodes sharing the highest score, as ``select_host`` does here.
- ``pkg/scheduler/backend/cache/node_tree.go`` ``list``: the node list interleaves zones (the first
  node of each zone, then the second of each, ...), zones in the order they were first seen.
- ``pkg/scheduler/apis/config/v1/default_plugins.go``: score weights TaintToleration 3, NodeAffinity 2,
  NodeResourcesFit 1, PodTopologySpread 2, InterPodAffinity 2, BalancedAllocation 1, ImageLocality 1.
  NodeAffinity, InterPodAffinity, ImageLocality and TaintToleration score every node alike for these
  pods (no preferred terms, no images, no PreferNoSchedule taints) and are left out: a constant does
  not change the choice.
- Filters that matter for these pods: TaintToleration (NoSchedule taints), NodeResourcesFit (cpu,
  memory, pod count against allocatable), VolumeBinding (a bound PV's node affinity; an unbound
  WaitForFirstConsumer claim without allowedTopologies or CSIStorageCapacity passes every node).
- Scores: NodeResourcesFit LeastAllocated (``noderesources/least_allocated.go``: per resource
  ``(allocatable - requested) * 100 / allocatable``, cpu and memory weight 1), BalancedAllocation
  (``noderesources/balanced_allocation.go``: ``(1 - std(requested/allocatable)) * 100``),
  PodTopologySpread's system default constraints (``podtopologyspread/plugin.go``
  ``systemDefaultConstraints``: hostname maxSkew 3, zone maxSkew 5, ScheduleAnyway; scoring in
  ``podtopologyspread/scoring.go``: ``cnt * log(size + 2) + maxSkew - 1`` summed per constraint,
  normalised to ``100 * (max + min - s) / max``), counting the pods of the same app (owner).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MAX_NODE_SCORE = 100  # k8s.io/kube-scheduler/framework MaxNodeScore
MAX_EXTENDER_PRIORITY = 10  # k8s.io/kube-scheduler/extender/v1 MaxExtenderPriority
MIN_FEASIBLE_NODES_TO_FIND = 100  # schedule_one.go minFeasibleNodesToFind
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5  # schedule_one.go minFeasibleNodesPercentageToFind
WEIGHTS = {"NodeResourcesFit": 1, "NodeResourcesBalancedAllocation": 1, "PodTopologySpread": 2}
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
DEFAULT_CONSTRAINTS = ((HOSTNAME, 3), (ZONE, 5))  # podtopologyspread systemDefaultConstraints


def num_feasible_nodes_to_find(profile_percentage: int | None, global_percentage: int | None,
                               num_all_nodes: int) -> int:
    """schedule_one.go ``numFeasibleNodesToFind``, Go's int32 arithmetic included (all values are
    non-negative, so Go's truncating division is Python's floor division)."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    percentage = profile_percentage if profile_percentage is not None else (global_percentage or 0)
    if percentage == 0:
        percentage = 50 - num_all_nodes // 125
        if percentage < MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND:
            percentage = MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND
    num_nodes = num_all_nodes * percentage // 100
    return max(num_nodes, MIN_FEASIBLE_NODES_TO_FIND)


@dataclass(slots=True)
class Node:
    """What the scheduler cache knows of a node, and what bind changes (requested, pods per app)."""

    name: str
    zone: str
    labels: dict[str, str]
    cpu_m: int  # allocatable
    mem: int
    max_pods: int = 110
    taints: tuple[str, ...] = ()  # keys of NoSchedule taints
    cpu_req_m: int = 0
    mem_req: int = 0
    pods: int = 0
    apps: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    app: str  # the owner whose pods PodTopologySpread's default constraints count
    cpu_m: int
    mem: int
    affinity: frozenset[str] | None = None  # bound PV's node affinity (hostnames); None: any node
    tolerations: frozenset[str] = frozenset()


def node_tree_order(nodes: Iterable[Node]) -> list[Node]:
    """node_tree.go ``list``: zones interleaved, zones in first-seen order."""
    zones: dict[str, list[Node]] = {}
    for n in nodes:
        zones.setdefault(n.zone, []).append(n)
    out: list[Node] = []
    for i in range(max((len(z) for z in zones.values()), default=0)):
        out += [z[i] for z in zones.values() if i < len(z)]
    return out


def passes_filters(pod: Pod, node: Node) -> bool:
    """TaintToleration, NodeResourcesFit, VolumeBinding (the PV's node affinity)."""
    if any(t not in pod.tolerations for t in node.taints):
        return False
    if node.pods + 1 > node.max_pods or node.cpu_req_m + pod.cpu_m > node.cpu_m or node.mem_req + pod.mem > node.mem:
        return False
    return pod.affinity is None or node.labels.get(HOSTNAME) in pod.affinity


def find_nodes_that_pass_filters(pod: Pod, nodes: Sequence[Node], start: int, to_find: int) -> tuple[list[Node], int]:
    """(feasible nodes, nodes processed) from ``start`` on, stopping at ``to_find`` feasible."""
    feasible: list[Node] = []
    processed = 0
    for i in range(len(nodes)):
        node = nodes[(start + i) % len(nodes)]
        processed += 1
        if passes_filters(pod, node):
            feasible.append(node)
            if len(feasible) == to_find:
                break
    return feasible, processed


def least_allocated(pod: Pod, node: Node) -> int:
    cpu = (node.cpu_m - node.cpu_req_m - pod.cpu_m) * MAX_NODE_SCORE // node.cpu_m
    mem = (node.mem - node.mem_req - pod.mem) * MAX_NODE_SCORE // node.mem
    return (max(cpu, 0) + max(mem, 0)) // 2


def balanced_allocation(pod: Pod, node: Node) -> int:
    cpu = min((node.cpu_req_m + pod.cpu_m) / node.cpu_m, 1.0)
    mem = min((node.mem_req + pod.mem) / node.mem, 1.0)
    std = abs(cpu - mem) / 2  # the standard deviation of two fractions
    return int((1 - std) * MAX_NODE_SCORE)


def topology_spread(pod: Pod, feasible: Sequence[Node], all_nodes: Sequence[Node]) -> dict[str, int]:
    """PodTopologySpread's normalised scores with the system default constraints."""
    zones = {n.zone for n in feasible}
    zone_count = {z: 0 for z in zones}
    for n in all_nodes:
        if n.zone in zone_count:
            zone_count[n.zone] += n.apps.get(pod.app, 0)
    w_host, w_zone = math.log(len(feasible) + 2), math.log(len(zones) + 2)
    (_, skew_host), (_, skew_zone) = DEFAULT_CONSTRAINTS
    raw = {n.name: round(n.apps.get(pod.app, 0) * w_host + skew_host - 1
                         + zone_count[n.zone] * w_zone + skew_zone - 1) for n in feasible}
    top, low = max(raw.values()), min(raw.values())
    if top == 0:
        return dict.fromkeys(raw, MAX_NODE_SCORE)
    return {name: MAX_NODE_SCORE * (top + low - s) // top for name, s in raw.items()}


def extender_points(score: int, weight: int) -> int:
    """prioritizeNodes: ``score * weight * (MaxNodeScore / MaxExtenderPriority)`` (integers)."""
    return score * weight * (MAX_NODE_SCORE // MAX_EXTENDER_PRIORITY)


def plugin_scores(pod: Pod, feasible: Sequence[Node], all_nodes: Sequence[Node]) -> dict[str, int]:
    spread = topology_spread(pod, feasible, all_nodes)
    return {n.name: WEIGHTS["NodeResourcesFit"] * least_allocated(pod, n)
            + WEIGHTS["NodeResourcesBalancedAllocation"] * balanced_allocation(pod, n)
            + WEIGHTS["PodTopologySpread"] * spread[n.name] for n in feasible}


def select_host(totals: Mapping[str, int], rnd: random.Random) -> str:
    """The highest total; ties uniformly at random (reservoir sampling, as selectHost did)."""
    best, chosen, seen = None, "", 0
    for name, score in totals.items():
        if best is None or score > best:
            best, chosen, seen = score, name, 1
        elif score == best:
            seen += 1
            if rnd.randrange(seen) == 0:
                chosen = name
    return chosen


@dataclass(frozen=True, slots=True)
class Extender:
    """The configured extender: its weight and the two verbs (names in, names/scores out)."""

    weight: int
    filter: Callable[[Pod, list[str]], list[str]]
    prioritize: Callable[[Pod, list[str]], dict[str, int]]


@dataclass(frozen=True, slots=True)
class Outcome:
    host: str | None  # None: no feasible node
    candidates: tuple[str, ...]  # the nodes the extender was asked about (after the plugins' filters)
    feasible: tuple[str, ...]  # after the extender's filter


class Scheduler:
    """One profile's cycle over a node list, with ``nextStartNodeIndex`` carried between pods."""

    def __init__(self, nodes: Iterable[Node], extender: Extender, percentage: int | None,
                 rnd: random.Random) -> None:
        self.nodes = node_tree_order(nodes)
        self.extender = extender
        self.percentage = percentage  # the profile's, else the global one (None: neither set)
        self.rnd = rnd
        self.next_start_node_index = 0

    def schedule(self, pod: Pod) -> Outcome:
        """schedulePod, then bind: the chosen node's use changes for the next pod."""
        to_find = num_feasible_nodes_to_find(self.percentage, None, len(self.nodes))
        found, processed = find_nodes_that_pass_filters(pod, self.nodes, self.next_start_node_index, to_find)
        self.next_start_node_index = (self.next_start_node_index + processed) % len(self.nodes)
        candidates = [n.name for n in found]
        kept = set(self.extender.filter(pod, candidates)) if found else set()
        feasible = [n for n in found if n.name in kept]
        host: str | None
        if not feasible:
            host = None
        elif len(feasible) == 1:
            host = feasible[0].name
        else:
            totals = plugin_scores(pod, feasible, self.nodes)
            for name, score in self.extender.prioritize(pod, [n.name for n in feasible]).items():
                if name in totals:
                    totals[name] += extender_points(score, self.extender.weight)
            host = select_host(totals, self.rnd)
        if host is not None:
            bind(pod, next(n for n in feasible if n.name == host))
        return Outcome(host, tuple(candidates), tuple(n.name for n in feasible))


def bind(pod: Pod, node: Node) -> None:
    """The scheduler cache's assume: the pod's requests count on the node from now on."""
    node.cpu_req_m += pod.cpu_m
    node.mem_req += pod.mem
    node.pods += 1
    node.apps[pod.app] = node.apps.get(pod.app, 0) + 1
