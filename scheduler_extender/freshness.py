"""How stale the extender's view is: one value, read by everything that must agree on it.

``/readyz`` (503 and its ``detail``), the ``linstor_scheduler_state_age_seconds`` and
``linstor_scheduler_state_stale`` gauges and the neutral answer of a decision all read one
``Freshness``, measured by ``Extender.freshness`` at the moment they ask. They used to compute the
same comparison each on its own; a probe that says "fresh" while the verbs answer "stale" is the
disagreement this record makes impossible. Pure: the ages and the clock are measured by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NOT_SYNCED = "no LINSTOR/Kubernetes state yet (first sync not finished): not steering"


def stale_reason(linstor_age: float, kube_age: float, bound: float, *, last_error: str | None,
                 kube_detail: str = "") -> str | None:
    """Why the state is too old to judge from, naming each source older than ``bound``; None while
    both are within it. The probe, the log and the neutral answer all say the same."""
    parts = []
    if linstor_age > bound:
        parts.append(f"LINSTOR state {linstor_age:.0f}s old (last error: {last_error or 'none'})")
    if kube_age > bound:
        parts.append(f"Kubernetes view {kube_age:.0f}s old" + (f" ({kube_detail})" if kube_detail else ""))
    return f"{'; '.join(parts)}; limit {bound:.0f}s" if parts else None


@dataclass(slots=True)
class Freshness:
    """The view's age at one moment, and what follows from it.

    ``ages`` is (LINSTOR, Kubernetes) in seconds: since the last good LINSTOR read, and since the
    API server last confirmed the Kubernetes view; None before the first sync and in snapshot mode
    (a snapshot never ages). ``reason`` names the sources past ``limit``, None while both are within.
    """

    ready: bool  # the first full sync finished (snapshot mode: loaded)
    ages: tuple[float, float] | None
    limit: float
    reason: str | None

    @property
    def age(self) -> float | None:
        """The stalest source's age: the state is as old as its oldest part."""
        return None if self.ages is None else max(self.ages)

    @property
    def stale(self) -> bool | None:
        """Past the limit; None before the first full sync (nothing read: neither stale nor fresh,
        ``linstor_scheduler_ready`` 0 says that)."""
        return None if not self.ready else self.reason is not None

    @property
    def neutral_reason(self) -> str | None:
        """Why a pod with LINSTOR volumes gets the neutral answer now (every node passes, score 0);
        None while the extender steers."""
        if not self.ready:
            return NOT_SYNCED
        if self.reason is not None:
            return f"{self.reason}: not steering on stale data"
        return None


def measure(ready: bool, ages: tuple[float, float] | None, limit: float, last_error: str | None,
            kube_detail: Callable[[], str]) -> Freshness:
    """The record for ``ages`` (LINSTOR, Kubernetes) against ``limit``. ``kube_detail`` (which informer
    is stalest, and why) is asked only when the Kubernetes view is past the limit: naming it walks
    the informers, which the request path cannot afford each time (positional arguments: this runs
    on every request)."""
    reason = None
    if ages is not None and max(ages) > limit:
        reason = stale_reason(*ages, limit, last_error=last_error,
                              kube_detail=kube_detail() if ages[1] > limit else "")
    return Freshness(ready, ages, limit, reason)
