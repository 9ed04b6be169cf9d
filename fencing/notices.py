"""What fencing says about its decisions: the decisions metric and the Events, each worth saying once.

Every decision is counted (``..._decisions_total{verdict,reason}``) each pass; what it says on the
pod is rationed: a fault being timed is announced once (``StorageFaultObserved``), and the same
warning about the same object (a refusal, a hold, a notice) is said at most every
``WARN_REPEAT_SECONDS`` (the Event's ``count`` goes up in between). Events are intents said by the
executor (executor.py), the one writer, whose recorder thread sends them: nothing here waits for the
API server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .intents import Intent, event
from .metrics import FencingMetrics
from .verdict import HEALTHY, NODE_UNKNOWN_TO_LINSTOR, NOTICES, REFUSE, WAITING, PodDecision, PodState

log = logging.getLogger("linstor_scheduler.fencing")

WARN_REPEAT_SECONDS = 300.0  # the same warning on the same pod at most this often (the metric counts every pass)


def as_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """List items carry no kind/apiVersion; Events need them in involvedObject."""
    return {"apiVersion": "v1", "kind": "Pod", **obj}


class Notices:
    def __init__(self, say: Callable[[Intent], None], metrics: FencingMetrics, grace_period: float) -> None:
        self.say, self.metrics, self.grace_period = say, metrics, grace_period
        self._warned: dict[tuple[str, str, str], float] = {}
        self.announced: dict[str, tuple[str, str, str]] = {}  # pod uid -> (namespace, name, node): fault timed

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        self.say(event(obj, event_type, reason, message))

    def decision(self, decision: PodDecision, raw: dict[str, Any], now: float, term: float | None) -> None:
        """Count it; say what is worth saying (``term``: when this leadership began)."""
        self.metrics.decisions.labels(decision.verdict, decision.reason or "none").inc()
        pod = decision.pod
        if decision.verdict == HEALTHY:
            self.announced.pop(pod.uid, None)
            if decision.reason in NOTICES:  # one witness only: said, never acted on
                self.warn(raw, pod, decision.reason, decision.detail, now, event="Normal")
            elif decision.reason == NODE_UNKNOWN_TO_LINSTOR:  # cannot be judged at all: never silent
                self.warn(raw, pod, decision.reason, decision.detail, now)
            return
        if decision.verdict == WAITING:
            if pod.uid not in self.announced:
                self.announced[pod.uid] = (pod.namespace, pod.name, decision.node)
                since = decision.fault_since if decision.fault_since is not None else now
                continued = (f" (timed for {now - since:.0f}s already, by the previous Lease holder: this "
                             "leader's first read saw the same fault)") if term is not None and since < term else ""
                self.record(as_pod(raw), "Normal", "StorageFaultObserved",
                            f"{decision.detail}; the pod fails over after {self.grace_period:.0f}s{continued} "
                            "unless the storage recovers")
            return
        if decision.verdict == REFUSE:
            self.warn(raw, pod, decision.reason, decision.detail, now)

    def left_view(self, seen: set[str]) -> list[tuple[str, str, str, str]]:
        """Pods whose fault was being timed and that are no longer judged: (uid, namespace, name, node)."""
        gone = [(uid, *where) for uid, where in self.announced.items() if uid not in seen]
        for uid, *_ in gone:
            del self.announced[uid]
        return gone

    def _first_in_a_while(self, key: tuple[str, str, str], now: float) -> bool:
        """The same warning about the same object at most every WARN_REPEAT_SECONDS."""
        last = self._warned.get(key)
        if last is not None and now - last < WARN_REPEAT_SECONDS:
            return False
        self._warned[key] = now
        if len(self._warned) > 4096:
            for old in sorted(self._warned, key=self._warned.__getitem__)[:1024]:
                del self._warned[old]
        return True

    def warn_node(self, obj: dict[str, Any], node: str, reason: str, detail: str, now: float) -> None:
        if self._first_in_a_while((f"node/{node}", reason, detail), now):
            self.record(obj, "Warning", reason, detail)

    def warn(self, raw: dict[str, Any], pod: PodState, reason: str, detail: str, now: float,
             event: str = "Warning") -> None:
        if not self._first_in_a_while((pod.uid, reason, detail), now):
            return
        if raw:
            self.record(as_pod(raw), event, reason, detail)
        else:
            log.warning("%s %s: %s", reason, pod.key, detail)
