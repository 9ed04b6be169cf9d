"""A clock that moves only when told: tests and the demo fast-forward grace periods and leases."""

from __future__ import annotations


class FakeClock:
    """``clock()`` returns ``clock.now``; assign or ``advance`` to move time."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
