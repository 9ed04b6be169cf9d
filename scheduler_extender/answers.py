"""The answers to kube-scheduler's verbs, built beside the decision: a raw request body in, the
encoded extender v1 answer out (decode once, the pod's side from judge.py and its caches, the
finished answer from the answer cache or computed), counted in the metrics. No transport here:
http.py hands bodies in and writes bytes out; ``explain`` takes ``verdict_rows``.
"""

from __future__ import annotations

import logging
import operator
import time
from dataclasses import dataclass
from itertools import compress
from typing import Any

from .cache import GenerationCache
from .codec import BadRequest, ExtenderArgs, PriorityEncoder, decode_args, encode_error, encode_filter
from .judge import Decision, Extender
from .metrics import ExtenderMetrics
from .placements import PlacementReporter
from .scoring import NODE

log = logging.getLogger(__name__)
SCORE = operator.attrgetter("score")
FITS = operator.attrgetter("fits")
VERBS = ("filter", "prioritize")
ANSWERS_LIMIT = 64 * 1024 * 1024  # answers at 1,000 nodes are 15-40 KB


@dataclass(slots=True)
class Answer:
    body: bytes
    outcome: str  # ok | neutral
    passing: int = 0
    failed: int = 0
    message: str | None = None  # the filter's log line
    hold_on: list[str] | None = None  # filter, a pod with an unbound claim: the nodes it passed (held there)


def _answer_size(key: tuple[Any, ...], answer: Answer) -> int:
    names = key[-1]
    return len(answer.body) + (len(names) if isinstance(names, bytes) else 0) + 8 * len(answer.hold_on or ())


def verdict_rows(decision: Decision) -> list[dict[str, Any]]:
    """The per-node table for ``explain``: verdict, score, and one reason per volume."""
    if decision.verdicts is None:
        return [{"node": n, "verdict": "pass", "score": 0, "reasons": [f"neutral: {decision.neutral_reason}"]}
                for n in decision.names]
    return [{"node": n, "verdict": "pass" if v.fits else "fail", "score": v.score, "reasons": v.reasons(n)}
            for n, v in zip(decision.names, decision.verdicts, strict=True)]


class Answerer:
    """filter and prioritize on raw bodies.

    Finished answers are cached by (verb, the pod's verdict-table key, the raw NodeNames array):
    kube-scheduler sends the same candidate list for pod after pod of a wave, and filter then
    prioritize for each, so a repeat is one hash of the names' bytes and one look-up, with no
    per-node work in Python. The cache is a ``GenerationCache`` like the others, bounded by the
    bytes it holds.
    """

    def __init__(self, extender: Extender, metrics: ExtenderMetrics, placements: PlacementReporter | None = None,
                 ) -> None:
        """``placements``: told of every /filter, to judge the pod's binding later (live extender)."""
        self.extender = extender
        self.placements = placements
        self.priorities = PriorityEncoder()
        self.answers: GenerationCache[tuple[Any, ...], Answer] = GenerationCache(
            "answers", max_entries=100_000, max_bytes=ANSWERS_LIMIT, sizeof=_answer_size)
        self.counters = {(verb, outcome): metrics.requests.labels(verb, outcome)
                         for verb in VERBS for outcome in ("ok", "neutral", "bad_request", "error")}
        self.latency = {verb: metrics.latency.labels(verb) for verb in VERBS}
        self.passed_nodes = metrics.filtered_nodes.labels("pass")
        self.failed_nodes = metrics.filtered_nodes.labels("fail")

    def compute(self, verb: str, args: ExtenderArgs, decision: Decision) -> Answer:
        names = decision.names
        if decision.verdicts is None:
            if verb == "filter":
                return Answer(encode_filter(args, list(names), {}, {}), "neutral", len(names))
            return Answer(self.priorities.encode(list(names), [0] * len(names)), "neutral")
        if verb == "prioritize":
            scores = list(map(SCORE, decision.verdicts))
            return Answer(self.priorities.encode(list(names), scores), "ok")
        fits = list(map(FITS, decision.verdicts))
        passing = list(compress(names, fits))
        failed: dict[str, str] = {}
        if len(passing) < len(names):
            templates: dict[int, str] = {}  # nodes of a class share one verdict: render its reason once
            for name, verdict in zip(names, decision.verdicts, strict=True):
                if not verdict.fits:
                    template = templates.get(id(verdict))
                    if template is None:
                        template = templates[id(verdict)] = verdict.failure(NODE)
                    failed[name] = template.replace(NODE, name)
        sample = "; ".join(list(failed.values())[:3])
        message = (f"filter {decision.pod}: {len(passing)} of {len(names)} nodes pass"
                   + (f" (e.g. {sample})" if sample else ""))
        # Every reason we give is about storage: preempting other pods cannot fix it.
        promising = any(not c.bound and c.pending is None for c in decision.claims)
        return Answer(encode_filter(args, passing, {}, failed), "ok", len(passing), len(failed), message,
                      passing if promising else None)

    async def answer(self, verb: str, body: bytes) -> tuple[int, bytes]:
        """The whole verb on a raw body: decode once, look up or compute the answer, count it."""
        started = time.perf_counter()
        extender, answers = self.extender, self.answers
        try:
            args = decode_args(body)
            prepared = extender.prepared_for(args.raw_pod)
            if prepared is None:
                prepared = await extender.prepare(args.pod)
                extender.remember_bytes(args.raw_pod, prepared)
            key = None
            if args.raw_names is not None and (prepared.key is not None or prepared.static_neutral):
                key = (verb, extender.key_of(prepared), args.raw_names)
                result = answers.get(key, prepared.state.generation)
            else:
                result = None
            if result is None:
                result = self.compute(verb, args, extender.judge(prepared, args.node_names))
                if key is not None:
                    answers.put(key, prepared.state.generation, result)
            if result.hold_on is not None:
                extender.promise(prepared, result.hold_on)
        except BadRequest as exc:
            self.counters[verb, "bad_request"].inc()
            self.latency[verb].observe(time.perf_counter() - started)
            log.info("%s: bad request: %s", verb, exc.message)
            return exc.status, encode_error(exc.message)
        if verb == "filter" and self.placements is not None:
            self.placements.heard_filter(prepared, args)
        if verb == "filter" and result.outcome == "ok":
            self.passed_nodes.inc(result.passing)
            self.failed_nodes.inc(result.failed)
            if result.message:
                log.info("%s", result.message)
        self.counters[verb, result.outcome].inc()
        self.latency[verb].observe(time.perf_counter() - started)
        return 200, result.body
