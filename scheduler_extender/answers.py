"""The answers to kube-scheduler's verbs, built from the extender's decision: a raw request body
in, the encoded extender v1 answer out, counted in the metrics. The decision and every cache of
the request path are the extender's (``Extender.decide``, judge.py); here only the wire: decode the
body once, encode the decision (once per verb and candidate list: ``Decision.answer``). No
transport: http.py hands bodies in and writes bytes out; ``explain`` takes ``verdict_rows``.
"""

from __future__ import annotations

import logging
import operator
import time
from dataclasses import dataclass
from itertools import compress
from typing import Any

from .codec import BadRequest, ExtenderArgs, PriorityEncoder, decode_args, encode_error, encode_filter
from .judge import Decision, Extender
from .metrics import ExtenderMetrics
from .placements import PlacementReporter
from .scoring import NODE

log = logging.getLogger(__name__)
SCORE = operator.attrgetter("score")
FITS = operator.attrgetter("fits")
VERBS = ("filter", "prioritize")


@dataclass(slots=True)
class VerbAnswer:
    body: bytes
    outcome: str  # ok | neutral
    passing: int = 0
    failed: int = 0
    message: str | None = None  # the filter's log line, after the pod's name (the answer may be another pod's)
    hold_on: list[str] | None = None  # filter, a pod with an unbound claim: the nodes it passed (held there)

    @property
    def size(self) -> int:
        """Bytes held while kept (the answer cache's bound)."""
        return len(self.body) + 8 * len(self.hold_on or ())


def verdict_rows(decision: Decision) -> list[dict[str, Any]]:
    """The per-node table for ``explain``: verdict, score, and one reason per volume."""
    if decision.verdicts is None:
        return [{"node": n, "verdict": "pass", "score": 0, "reasons": [f"neutral: {decision.neutral_reason}"]}
                for n in decision.names]
    return [{"node": n, "verdict": "pass" if v.fits else "fail", "score": v.score, "reasons": v.reasons(n)}
            for n, v in zip(decision.names, decision.verdicts, strict=True)]


class Answerer:
    """filter and prioritize on raw bodies: the Pod's and the NodeNames array's exact bytes go to
    ``Extender.decide``, so a repeat (kube-scheduler sends the same candidate list for pod after pod
    of a wave, and filter then prioritize for each) is a hash of those bytes and look-ups, with no
    per-node work in Python."""

    def __init__(self, extender: Extender, metrics: ExtenderMetrics, placements: PlacementReporter | None = None,
                 ) -> None:
        """``placements``: told of every /filter, to judge the pod's binding later (live extender)."""
        self.extender = extender
        self.placements = placements
        self.priorities = PriorityEncoder()
        self.counters = {(verb, outcome): metrics.requests.labels(verb, outcome)
                         for verb in VERBS for outcome in ("ok", "neutral", "bad_request", "error")}
        self.latency = {verb: metrics.latency.labels(verb) for verb in VERBS}
        self.passed_nodes = metrics.filtered_nodes.labels("pass")
        self.failed_nodes = metrics.filtered_nodes.labels("fail")

    def compute(self, verb: str, args: ExtenderArgs, decision: Decision) -> VerbAnswer:
        names = decision.names
        verdicts = decision.verdicts
        if verdicts is None:
            if verb == "filter":
                return VerbAnswer(encode_filter(args, list(names), {}, {}), "neutral", len(names))
            return VerbAnswer(self.priorities.encode(list(names), [0] * len(names)), "neutral")
        if verb == "prioritize":
            scores = list(map(SCORE, verdicts))
            return VerbAnswer(self.priorities.encode(list(names), scores), "ok")
        fits = list(map(FITS, verdicts))
        passing = list(compress(names, fits))
        failed: dict[str, str] = {}
        if len(passing) < len(names):
            templates: dict[int, str] = {}  # nodes of a class share one verdict: render its reason once
            for name, verdict in zip(names, verdicts, strict=True):
                if not verdict.fits:
                    template = templates.get(id(verdict))
                    if template is None:
                        template = templates[id(verdict)] = verdict.failure(NODE)
                    failed[name] = template.replace(NODE, name)
        sample = "; ".join(list(failed.values())[:3])
        message = f"{len(passing)} of {len(names)} nodes pass" + (f" (e.g. {sample})" if sample else "")
        # Every reason we give is about storage: preempting other pods cannot fix it.
        promising = any(not c.bound and c.pending is None for c in decision.claims)
        return VerbAnswer(encode_filter(args, passing, {}, failed), "ok", len(passing), len(failed), message,
                      passing if promising else None)

    async def answer(self, verb: str, body: bytes) -> tuple[int, bytes]:
        """The whole verb on a raw body: decode once, decide, encode (or find the encoding), count."""
        started = time.perf_counter()
        extender = self.extender
        try:
            args = decode_args(body)
            decision = await extender.decide(args.raw_pod, args.raw_names if args.raw_names is not None
                                             else args.node_names)
            result = decision.answer(verb, lambda: self.compute(verb, args, decision))
            if result.hold_on is not None:
                extender.promise(decision, result.hold_on)
        except BadRequest as exc:
            self.counters[verb, "bad_request"].inc()
            self.latency[verb].observe(time.perf_counter() - started)
            log.info("%s: bad request: %s", verb, exc.message)
            return exc.status, encode_error(exc.message)
        if verb == "filter":
            if self.placements is not None:
                self.placements.heard_filter(decision, args)
            if result.outcome == "ok":
                self.passed_nodes.inc(result.passing)
                self.failed_nodes.inc(result.failed)
                if result.message:
                    log.info("filter %s: %s", decision.pod, result.message)
        self.counters[verb, result.outcome].inc()
        self.latency[verb].observe(time.perf_counter() - started)
        return 200, result.body
