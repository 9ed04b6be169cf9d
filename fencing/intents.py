"""The plan of a pass: every write fencing may make, as data (an ``Intent``), decided by pure functions.

A pass is read -> judge -> plan -> execute. The verdicts (``verdict.py``) say what holds; this module
turns them into intents: taint a node, evict or delete a pod, delete a VolumeAttachment, untaint a
node, and say something (an Event). Each write names what it writes, the node, and the storage that
must still be lost on that node when it is written (``resources``: the executor re-reads it from
LINSTOR right before the write, executor.py). Every guard sees every write (``guards.hold``), not
only pod removals, so a rule added later (a pod without a controller owner, storage we cannot
fence) is one more guard. An Event goes to the same executor without the write checks: a refusal
on stale data must be said all the same.

Nothing here does I/O or reads a clock: the memory the choices depend on (when an eviction was first
sent, its last answer) comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from linstor_scheduler.kube import objects

from .records import AttachmentRecord, attachment_object
from .verdict import FENCE, REFUSE, Observed, PodDecision, PodState, judge_volume, witnesses

TAINT = "taint"
UNTAINT = "untaint"
EVICT = "pod_evict"
DELETE = "pod_delete"
DETACH = "attachment_delete"
EVENT = "event"
KINDS = (TAINT, EVICT, DELETE, DETACH, UNTAINT)  # the writes, by their metric label
REMOVALS = (EVICT, DELETE)

HELD_BY_FINALIZER = "HeldByFinalizer"
TAINT_EXPIRED = "TaintExpired"
TAINT_KEY = "linstor.csi.linbit.com/storage-lost"  # actions.TAINT_KEY, named here for the sentences


@dataclass(frozen=True, slots=True)
class Intent:
    """One write fencing means to make."""

    kind: str  # one of KINDS
    target: str  # what is written: the pod (namespace/name), the Node, the VolumeAttachment (names)
    node: str  # the lost node it is about
    resources: tuple[str, ...] = ()  # whose storage on ``node`` must still be lost at the write; () = none
    pod: PodState | None = None  # the pod it is for (removals; a detach: the pod whose volume it is)
    decision: PodDecision | None = None
    obj: dict[str, Any] = field(default_factory=dict, compare=False)  # the object as judged (for preconditions)
    why: str = ""  # one sentence: the verdict behind it
    overrides: str = ""  # what the write overrides (the PodDisruptionBudget after --eviction-timeout)
    reason: str = ""  # an Event's reason and type
    event_type: str = ""
    claim: str = ""  # a detach: the claim (namespace/name) whose users on the node keep the attachment

    @property
    def removal(self) -> bool:
        return self.kind in REMOVALS

    @property
    def uid(self) -> str:
        """The UID the write is bound to (a pod, a VolumeAttachment) or the Node's name."""
        if self.pod is not None and self.removal:
            return self.pod.uid
        return str(objects.uid(self.obj, self.target))


@dataclass(frozen=True, slots=True)
class Kept:
    """A write the plan does not make though a fault holds, said as a Warning on the pod."""

    pod: PodState
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Wait:
    """No write now for this pod, and why (its eviction is under way; a finalizer holds it)."""

    reason: str  # "" while simply waiting for the pod to terminate
    detail: str


def removal(decision: PodDecision, live: dict[str, Any], terminating: bool, evicting_since: float | None,
            last_eviction_answer: str | None, now: float, eviction_timeout: float) -> Intent | Wait:
    """How to remove the pod now, from what the API server says of it (``live``) and what was sent.

    A NotReady node cannot run kubelet's half of a deletion: grace 0. A Ready node's pod is evicted
    (PodDisruptionBudgets respected); an eviction that has not removed the pod after
    ``eviction_timeout``, whatever its answers were (429 from a budget, 500 from a broken webhook,
    none at all), becomes a grace-0 delete, and the Event says it overrode the budget. A pod that a
    grace-0 delete did not remove is held by its finalizers: sending the delete again changes
    nothing, so it is said once (``HELD_BY_FINALIZER``)."""
    pod = decision.pod
    if terminating and objects.deletion_grace_period_seconds(live) == 0:
        finalizers = ", ".join(objects.finalizers(live)) or "none listed"
        return Wait(HELD_BY_FINALIZER, f"pod {pod.key} was deleted with grace 0 from lost node {decision.node} and "
                    f"is still there, held by its finalizer(s) ({finalizers}): whoever owns them must remove them; "
                    "the delete is not sent again")
    force, overrides = decision.force, ""
    if not force and evicting_since is not None and now - evicting_since >= eviction_timeout:
        force = True
        overrides = (f"the eviction did not remove the pod within --eviction-timeout {eviction_timeout:g}s (last "
                     f"answer: {last_eviction_answer or 'none'}): deleted with grace 0, overriding any "
                     "PodDisruptionBudget")
    elif not force and terminating:
        return Wait("", "evicted; waiting for the pod to terminate")
    kind = DELETE if force else EVICT
    return Intent(kind, pod.key, decision.node, tuple(v.resource for v in decision.lost), pod, decision, live,
                  decision.detail, overrides)


def taint(node: str, obj: dict[str, Any], resources: tuple[str, ...], why: str) -> Intent:
    """Keep the scheduler off a node whose pods we remove, for as long as its storage is lost."""
    return Intent(TAINT, node, node, resources, obj=obj, why=why)


def untaint(node: str, obj: dict[str, Any]) -> Intent:
    """The node's storage is back and stable: our taint comes off (no storage proof needed)."""
    return Intent(UNTAINT, node, node, (), obj=obj, why="storage back and stable")


def event(obj: dict[str, Any], event_type: str, reason: str, message: str) -> Intent:
    """An Event about ``obj`` (a pod, a Node): what fencing saw, did or refused."""
    return Intent(EVENT, f"{obj.get('kind', '')}/{objects.name(obj, '')}", "", obj=obj, why=message, reason=reason,
                  event_type=event_type)


Attachments = Mapping[str, Mapping[str, Sequence[AttachmentRecord]]]  # PV -> node -> our VolumeAttachments


def detachments(observed: Observed, attachments: Attachments, decisions: Sequence[PodDecision], now: float,
                grace: float) -> list[Intent | Kept]:
    """Our VolumeAttachments to delete on lost nodes, and those kept for a rule (said on the pod).

    For each volume of each pod that asks for fencing (in whatever state: the StatefulSet's new pod
    is pending, the old one was just removed in this pass), each of our attachments of that PV on
    another node, or on the pod's own node once the pod is removed from it, whose (volume, node)
    has the full verdict. The executor deletes it only once a live list shows no pod there still
    using the claim (``Intent.claim``), with its UID as precondition."""
    removed = {d.pod.uid: d.node for d in decisions if d.verdict == FENCE}
    planned: list[Intent | Kept] = []
    seen: set[str] = set()
    for pod in observed.pods:
        if not pod.opted_in or pod.opted_out:
            continue
        for vol in pod.volumes:
            if not vol.resource or not vol.pv:
                continue
            for node, vas in sorted(attachments.get(vol.pv, {}).items()):
                if node == pod.node and removed.get(pod.uid) != node:
                    continue  # the pod itself still runs there: the pod goes first
                verdict = judge_volume(observed.resources.get(vol.resource), vol.resource, node, observed, now, grace)
                if verdict.verdict == REFUSE:
                    names = ", ".join(sorted(va.name for va in vas))
                    planned.append(Kept(pod, verdict.reason,
                                        f"VolumeAttachment {names} of {vol.pv} on node {node} kept: {verdict.detail}"))
                if verdict.verdict != FENCE:
                    continue
                for va in vas:
                    name = va.name
                    if name not in seen:
                        seen.add(name)
                        planned.append(Intent(
                            DETACH, name, node, (vol.resource,), pod, PodDecision(pod, node, FENCE, verdict.reason,
                                                                                  verdict.detail),
                            attachment_object(va),
                            f"VolumeAttachment {name} of {vol.pv} on lost node {node} deleted: {verdict.detail}",
                            claim=vol.claim))
    return planned


def untaints(observed: Observed, tainted: Mapping[str, dict[str, Any]], stable_since: Mapping[str, float],
             now: float, stable_seconds: float) -> tuple[list[Intent], dict[str, float]]:
    """Our taints to remove: on nodes whose storage is back (satellite ONLINE, no storage proof by
    both witnesses for any of its replicas) for ``stable_seconds``. Returns them and, per tainted
    node that is back, since when (a node lost again starts over)."""
    back: dict[str, float] = {}
    planned = []
    for name, obj in sorted(tainted.items()):
        state = observed.nodes.get(name)
        # Lost as every other decision judges it (both witnesses): a replica that reports every peer
        # down because its peers are the ones gone does not keep a healthy node tainted.
        lost = any(witnesses(res, name, observed.nodes).proof
                   for res in observed.resources.values() if name in res.replicas)
        if lost or state is None or not state.online:
            continue
        back[name] = stable_since.get(name, now)
        if now - back[name] >= stable_seconds:
            planned.append(untaint(name, obj))
    return planned, back


def expired_taints(tainted: Mapping[str, dict[str, Any]], backed: Mapping[str, float], leaving: set[str],
                   now: float, bound: float) -> list[Intent]:
    """Our taints with no fail-over behind them (no pod removal or detach wanted on the node since
    ``backed[node]``) for ``bound`` seconds, while the node's storage still looks lost (``leaving``:
    those coming off anyway, the storage back): removed, with a Warning (``TAINT_EXPIRED``).

    A taint kept for as long as the node stays lost blocks unrelated workloads and can deadlock the
    recovery itself: a LINSTOR satellite or CSI node pod recreated there that does not tolerate it
    never starts, so the storage never comes back (piraeus-operator #561, #825; piraeus-ha-controller
    1.3.0 added an option to turn its taints off). Its job, keeping the replacement off the node, is
    done once the fail-over is."""
    expired = []
    for name, obj in sorted(tainted.items()):
        since = backed.get(name, now)
        if name not in leaving and now - since >= bound:
            expired.append(Intent(
                UNTAINT, name, name, (), obj=obj, reason=TAINT_EXPIRED, event_type="Warning",
                why=f"taint {TAINT_KEY} removed from node {name}: no fail-over under way there for {now - since:.0f}s "
                f"(--taint-max-seconds {bound:g}), though its storage still looks lost; a taint kept longer blocks "
                "unrelated pods, and the storage's own pods that do not tolerate it"))
    return expired
