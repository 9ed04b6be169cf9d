"""The process's garbage collector and thread switching: every setting in one place, applied by the
live services alone.

A live service holds a big, long-lived state that forms no reference cycles (the extender's index,
fencing's LINSTOR view: ~100,000 replica records at 5,000 nodes; replaced states are freed by
reference counting) and reads big answers in one go. Python's defaults cost it dearly:

- **Young threshold** (``YOUNG_THRESHOLD``). Requests allocate few cycles; the default threshold
  (700) ran a young collection every few requests and cost 30% of a new pod's answer (measured:
  658 -> 461 us at 1,000 nodes).
- **Freeze after publishing a new state** (``gc.freeze``). The collector otherwise rescanned the
  index on every full collection (80 ms request stalls). Only when the content is new: an unchanged
  poll brings no new index, and each freeze also pins whatever request cycles happen to be alive.
- **Collector off around a big read** (``collector_off``). A collection scans every object made
  since the last freeze: up to 35 ms of CPU in one piece at 100,000 items on the extender's loop,
  a quarter of fencing's read (1.15-1.32 s with collections, 0.84-0.92 s without).
- **GIL switch interval** (``SWITCH_INTERVAL``). The extender reads LINSTOR in a thread of its own;
  its serving thread then waits at most this long for the GIL when a request comes (default 5 ms).
- **Fencing's settle after each pass** (``settle``). What is alive after a pass moves out of the
  collector's way (its full collections otherwise rescanned every object on each pass, a large
  share of a pass's CPU at 5,000 nodes); every ``FULL_EVERY`` passes a full collection runs first,
  so cyclic garbage caught in a freeze is reclaimed.

All of it is process-wide, so nothing does it by itself: the objects that publish a state or read
big (``scheduler_extender.refresh.Syncer``, ``fencing.controller.FencingController``) call the
``GcPolicy`` they are given, ``LEAVE`` (nothing) unless the wiring that builds the live service
gives them ``SERVICE``. Building a ``StateHolder``, ``explain``, the drill and the tests leave the
process's collector as they found it.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager

YOUNG_THRESHOLD = 20_000
SWITCH_INTERVAL = 0.001  # seconds
FULL_EVERY = 100  # fencing's passes between full collections (~8 min at the default poll interval)


def raise_young_threshold() -> None:
    if gc.get_threshold()[0] < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """No cyclic collection inside; the collector as it was after (on again only if it was on)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def shorten_switch_interval() -> None:
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))


def settle(passes: int) -> None:
    """After fencing's pass number ``passes``: freeze what is alive, with a full collection first
    every ``FULL_EVERY`` passes."""
    if passes % FULL_EVERY == 0:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


class GcPolicy:
    """The moments a live service tells the collector about. This one does nothing (``LEAVE``)."""

    def published(self, new_content: bool) -> None:
        """A state was published to be served from (``new_content``: a new generation, not the last
        one re-stamped)."""

    def big_read(self) -> AbstractContextManager[None]:
        """Around one big read and what it builds."""
        return contextlib.nullcontext()

    def reading_in_thread(self) -> None:
        """Reads are about to run in a thread beside the serving one."""

    def pass_ended(self, passes: int) -> None:
        """Fencing's pass number ``passes`` has ended."""


class ServicePolicy(GcPolicy):
    """The live services' settings (the module's docstring says why each)."""

    def published(self, new_content: bool) -> None:
        if new_content:
            gc.freeze()
        raise_young_threshold()

    def big_read(self) -> AbstractContextManager[None]:
        return collector_off()

    def reading_in_thread(self) -> None:
        shorten_switch_interval()

    def pass_ended(self, passes: int) -> None:
        settle(passes)


LEAVE = GcPolicy()
SERVICE = ServicePolicy()
