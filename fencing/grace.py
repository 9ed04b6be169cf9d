"""Grace timers per (volume, node): when we first observed a storage fault, reset by any recovery.

Kept in memory on purpose: a restarted controller or a new leader starts every timer fresh, so it
waits a full grace period of its own observations before acting, which is always safe (it can only
act later, never on something it did not see). A gap in observation (a failed LINSTOR read) also
resets them: we cannot know that the fault held while we were blind.
"""

from __future__ import annotations

from collections.abc import Iterable

Key = tuple[str, str]  # (resource, node)


class GraceTimers:
    def __init__(self) -> None:
        self.since: dict[Key, float] = {}

    def observe(self, faults: Iterable[Key], now: float) -> tuple[set[Key], set[Key]]:
        """Record one complete observation; returns (new faults, recovered faults)."""
        current = set(faults)
        new = current - self.since.keys()
        recovered = self.since.keys() - current
        for key in recovered:
            del self.since[key]
        for key in new:
            self.since[key] = now
        return new, set(recovered)

    def reset(self) -> None:
        self.since.clear()

    def restart(self, resources: set[str]) -> set[Key]:
        """DRBD reported a change for these resources between two reads (the promotion stream): the
        fault did not provably hold without a break, so their timers start again. Returns those reset."""
        gone = {key for key in self.since if key[0] in resources}
        for key in gone:
            del self.since[key]
        return gone
