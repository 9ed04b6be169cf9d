"""Bounded waits that never lose a cancellation.

CPython 3.11's ``asyncio.wait_for`` returns the awaited result when its task is cancelled in the same
loop iteration in which the awaited future completes: the cancellation is lost (python/cpython#86296,
#107547; 3.12 rewrote ``wait_for`` on ``asyncio.timeout``, python/cpython#96764). Every loop of ours
is ``while True: ... await <bounded wait>``, so a lost cancellation is a loop that never ends: its
``stop()`` awaits it forever, uvicorn's lifespan shutdown with it, and the service keeps polling
after it was told to exit (seen in CI: an extender's LINSTOR poll outliving its test by minutes,
logging into a closed stream). ``asyncio.timeout`` (3.11) counts cancellations (``Task.uncancel``)
and loses none. tests/test_aio.py keeps ``asyncio.wait_for`` out of the product.

``all_of`` is ``asyncio.gather`` that leaves nothing running: gather, on a child's failure, raises
and lets the others go on (a failed node read left fencing's 100,000-replica stream decoding after
its pass had given up), and ``TaskGroup`` raises an ``ExceptionGroup`` that every caller's
``except LinstorError`` would miss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``awaitable``'s result, or ``TimeoutError`` once ``seconds`` passed (None: no bound); what
    it awaits is cancelled at the bound, as ``asyncio.wait_for`` does."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def wait_set(event: asyncio.Event, seconds: float | None) -> bool:
    """Waits until ``event`` is set or ``seconds`` passed: whether it is set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


async def all_of(*awaitables: Awaitable[Any]) -> list[Any]:
    """The results of ``awaitables``, run concurrently, in their order. The first failure cancels the
    others, waits for them to end, and is raised as it is; a cancellation of the caller cancels them
    all and is raised."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    done: set[asyncio.Future[Any]] = set()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)  # they end here, not later on their own
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]
