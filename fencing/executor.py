"""The one writer of the fencing controller: every intent of a pass (intents.py) is written here.

Right before each write it checks, at that moment:
- the Lease is still ours and the evidence (LINSTOR and Kubernetes) younger than ``--max-staleness``
  (``preconditions``, the controller's);
- for a taint, an eviction, a delete or a detach, the node's storage is still lost: a bounded read
  of that node's and its peers' replicas of the intent's resources (``observe.read_node_storage``).
  A node whose power and kubelet came back while the pass was reading is not written to.

And it knows each write's outcome even when the answer was lost. A write that got no HTTP status (a
cut connection, no answer within ``--api-timeout``) is checked with a live read; if its effect is not
there yet, it is *in doubt*: the API server may still carry it out (an answer late is not a write
undone). It is not sent again while in doubt; each pass reads again, and the write is accounted for
the moment its effect shows. Only after ``IN_DOUBT_SECONDS`` without effect is it given up
("unanswered") and may be sent again.

Every write is accounted exactly once, when its outcome is known: one sample of
``..._actions_total{kind,outcome}``, one entry in the pass report, and for a pod removal that was
carried out one entry of the fail-over budget, one observation of the fault-to-deletion histogram
and one Event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from linstor_scheduler.kube import objects

from .actions import KubeActions, Outcome, WriteAnswer, has_taint
from .intents import DELETE, DETACH, EVICT, TAINT, UNTAINT, Intent
from .metrics import FencingMetrics

log = logging.getLogger("linstor_scheduler.fencing")

# kube-apiserver's --request-timeout (default 1m0s: k8s.io/apiserver pkg/server/config.go,
# NewConfig ``RequestTimeout: time.Duration(60) * time.Second``): a request the server still holds
# after this long has been ended by it. A write in doubt is not sent again before then.
IN_DOUBT_SECONDS = 60.0
UNANSWERED = "unanswered"  # the outcome of a write given up in doubt (its effect never showed)
# Why a write was not sent (``WriteAnswer.held_by``):
PRECONDITIONS = "preconditions"  # the Lease or the evidence's age
STORAGE_RECOVERED = "StorageRecovered"  # the node's storage is no longer lost (the decision's reason too)
STORAGE_UNREAD = "storage_unread"  # the storage could not be re-read
IN_DOUBT = "in_doubt"  # sent before, no answer, its effect not seen yet
_DOUBT = "in doubt: sent, no answer, its effect not seen yet"


class Report(Protocol):
    actions: list[tuple[str, str, str]]


class Recorder(Protocol):
    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None: ...


class Calls(Protocol):
    async def read(self, fn: Callable[..., Any], *args: Any) -> Any: ...
    async def send(self, fn: Callable[..., Any], *args: Any) -> Any: ...


@dataclass
class _Doubt:
    intent: Intent
    sent_at: float


class Executor:
    """``await executor.execute(intent, report)`` -> the write's ``WriteAnswer`` (``held`` when not sent)."""

    def __init__(self, actions: KubeActions, calls: Calls, recorder: Recorder, metrics: FencingMetrics, *,
                 clock: Callable[[], float], preconditions: Callable[[], str | None],
                 storage: Callable[[str, tuple[str, ...]], Awaitable[str | None]],
                 done: Callable[[Intent, float], Awaitable[None]]) -> None:
        """``storage(node, resources)``: why the node is no longer lost (None: still lost); raises
        when it cannot be read. ``done(intent, now)``: what a carried-out write leaves besides the
        metric (the Event; for a removal, the budget and the histogram), called once per write."""
        self.actions, self.calls, self.recorder, self.metrics = actions, calls, recorder, metrics
        self.clock, self.preconditions, self.storage, self.done = clock, preconditions, storage, done
        self.in_doubt: dict[tuple[str, str, str], _Doubt] = {}
        self._unread: str | None = None  # this pass: a storage re-read failed (every later one would too)

    def begin_pass(self) -> None:
        self._unread = None

    # --- the checks at the moment of the write --------------------------------------------------
    async def _held(self, intent: Intent) -> tuple[str, str] | None:
        """(which check, why) holds the write now, or None."""
        held = self.preconditions()
        if held:
            return PRECONDITIONS, held
        if not intent.resources:
            return None
        if self._unread:  # once in a pass: 20 pods of a node must not wait 20 deadlines for the same silence
            return STORAGE_UNREAD, self._unread
        try:
            back = await self.storage(intent.node, intent.resources)
        except Exception as exc:  # cannot re-check: the write waits for a pass that can
            why = "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)
            self._unread = f"cannot re-read the storage from LINSTOR in this pass (node {intent.node}: {why})"
            return STORAGE_UNREAD, self._unread
        return (STORAGE_RECOVERED, back) if back else None

    # --- one Event --------------------------------------------------------------------------------
    def say(self, intent: Intent) -> None:
        """An Event intent: queued for the recorder's own thread (kube/events.py), which sends it and
        counts it; never waits for the API server, never fails the pass."""
        try:
            self.recorder.record(intent.obj, intent.event_type, intent.reason, intent.why)
        except Exception as exc:
            log.warning("event %s not recorded: %s", intent.reason, exc)

    # --- one write --------------------------------------------------------------------------------
    async def execute(self, intent: Intent, report: Report) -> WriteAnswer:
        key = (intent.kind, intent.target, intent.uid)
        if key in self.in_doubt:
            answer = await self._settle(key, report)
            if answer is not None:
                return answer
        held = await self._held(intent)
        if held:
            log.warning("%s %s not sent: %s", intent.kind, intent.target, held[1])
            report.actions.append((intent.kind, intent.target, "held"))
            return WriteAnswer(Outcome.ERROR, held=held[1], held_by=held[0])
        sent_at = self.clock()
        try:
            answer = await self.calls.send(self._write(intent), *self._args(intent))
        except Exception as exc:  # the deadline passed: it may or may not have happened
            log.warning("%s %s: %r", intent.kind, intent.target, exc)
            answer = WriteAnswer(Outcome.ERROR)
        if answer.lost:
            reached = await self._effect(intent)
            if not reached:
                log.warning("%s %s: the answer was lost and its effect is not there (yet): in doubt, not sent "
                            "again for %.0fs; read again each pass", intent.kind, intent.target, IN_DOUBT_SECONDS)
                self.in_doubt[key] = _Doubt(intent, sent_at)
                report.actions.append((intent.kind, intent.target, "in_doubt"))
                return WriteAnswer(Outcome.ERROR, held=_DOUBT, held_by=IN_DOUBT)
            log.info("%s %s: the answer was lost, but a live read shows it done", intent.kind, intent.target)
            answer = WriteAnswer(Outcome.DONE)
        await self._account(intent, answer, report)
        return answer

    async def settle(self, report: Report) -> None:
        """Each pass: every write in doubt is read again; done ones are accounted now."""
        for key in list(self.in_doubt):
            await self._settle(key, report)

    async def _settle(self, key: tuple[str, str, str], report: Report) -> WriteAnswer | None:
        """The in-doubt write's outcome if known now (DONE, or given up), else a held WriteAnswer; None
        when it was given up and may be sent again."""
        doubt = self.in_doubt.get(key)
        if doubt is None:
            return None
        intent = doubt.intent
        if await self._effect(intent):
            del self.in_doubt[key]
            log.info("%s %s: the write in doubt is carried out (its answer came late or never)", intent.kind,
                     intent.target)
            answer = WriteAnswer(Outcome.DONE)
            await self._account(intent, answer, report)
            return answer
        if self.clock() - doubt.sent_at < IN_DOUBT_SECONDS:
            report.actions.append((intent.kind, intent.target, "in_doubt"))
            return WriteAnswer(Outcome.ERROR, held=_DOUBT, held_by=IN_DOUBT)
        del self.in_doubt[key]
        log.warning("%s %s: no effect %.0fs after a write whose answer was lost: given up, sent again when still "
                    "needed", intent.kind, intent.target, IN_DOUBT_SECONDS)
        self.metrics.actions.labels(intent.kind, UNANSWERED).inc()
        report.actions.append((intent.kind, intent.target, UNANSWERED))
        return None

    async def _account(self, intent: Intent, answer: WriteAnswer, report: Report) -> None:
        report.actions.append((intent.kind, intent.target, answer.value))
        self.metrics.actions.labels(intent.kind, answer.value).inc()
        if answer.outcome is Outcome.DONE:
            await self.done(intent, self.clock())

    # --- the writes and their effects ------------------------------------------------------------
    def _write(self, intent: Intent) -> Callable[..., WriteAnswer]:
        return {TAINT: self.actions.set_taint, UNTAINT: self.actions.set_taint, EVICT: self.actions.evict_pod,
                DELETE: self.actions.delete_pod, DETACH: self.actions.delete_attachment}[intent.kind]

    @staticmethod
    def _args(intent: Intent) -> tuple[Any, ...]:
        if intent.kind in (TAINT, UNTAINT):
            return (intent.obj, intent.kind == TAINT)
        if intent.kind == DETACH:
            return (intent.obj,)
        assert intent.pod is not None
        return (intent.pod.namespace, intent.pod.name, intent.pod.uid)

    async def _effect(self, intent: Intent) -> bool:
        """Is the write's effect there, as the API server has it now? A read that fails says no."""
        try:
            if intent.kind in (TAINT, UNTAINT):
                return has_taint(await self.calls.read(self.actions.get_node, intent.target)) == (intent.kind == TAINT)
            if intent.kind == DETACH:
                live = await self.calls.read(self.actions.get_attachment, intent.target)
                return live is None or objects.uid(live) != objects.uid(intent.obj)
            assert intent.pod is not None
            live = await self.calls.read(self.actions.get_pod, intent.pod.namespace, intent.pod.name)
        except Exception as exc:
            log.warning("%s %s: a live read to learn the write's outcome failed: %r", intent.kind, intent.target, exc)
            return False
        # the pod is gone or replaced (a new UID); after an eviction, being deleted is enough
        return live is None or objects.uid(live) != intent.pod.uid or (
            intent.kind == EVICT and bool(objects.deletion_timestamp(live)))
