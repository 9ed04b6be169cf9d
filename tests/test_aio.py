"""Bounded waits lose no cancellation (linstor_scheduler/aio.py): a loop told to stop stops, even when
the stop lands in the same loop iteration as the thing it waited for. CPython 3.11's
``asyncio.wait_for`` returns the result then (python/cpython#86296), and a ``while True`` loop around
it runs on after its ``stop()`` awaited it: seen in CI as an extender polling its emulator minutes
after its test, its uvicorn thread outliving the module."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from linstor_scheduler.aio import all_of, wait_set, within

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("linstor_scheduler", "scheduler_extender", "storage_sync", "fencing", "admission", "locality", "devkit")


def cancelled_as_it_completes(wait: Callable[[asyncio.Future[int], asyncio.Event], Awaitable[object]]) -> bool:
    """A loop that waits with ``wait`` until stopped; the stop (a cancel) comes in the very iteration
    in which what it waited for completes. Whether the loop ended."""

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        rounds = 0

        async def poller() -> None:
            nonlocal rounds
            while True:  # as Syncer's, the fencing pass loop, every worker loop
                rounds += 1
                fut, event = loop.create_future(), asyncio.Event()
                current.append((fut, event))
                await wait(fut, event)

        current: list[tuple[asyncio.Future[int], asyncio.Event]] = []
        task = asyncio.create_task(poller())
        await asyncio.sleep(0)  # the poller waits now
        fut, event = current[-1]
        fut.set_result(1)  # what it waited for arrives ...
        event.set()
        task.cancel()  # ... and the stop with it, in the same iteration
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            task.cancel()  # clean up the loop that did not stop
            await asyncio.wait({task}, timeout=1.0)
        return bool(done) and task.cancelled()

    return asyncio.run(scenario())


@pytest.mark.parametrize("wait", [
    pytest.param(lambda fut, _event: within(fut, 10), id="within"),
    pytest.param(lambda _fut, event: wait_set(event, 10), id="wait_set"),
])
def test_a_stop_that_lands_as_the_wait_completes_ends_the_loop(wait):
    assert cancelled_as_it_completes(wait)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 rewrote wait_for on asyncio.timeout")
def test_the_race_is_real_on_this_python_wait_for_loses_the_stop():
    """The control: the same scenario with ``asyncio.wait_for`` keeps the loop running on 3.11."""
    assert not cancelled_as_it_completes(lambda fut, _event: asyncio.wait_for(fut, 10))


def test_within_bounds_what_it_awaits_and_wait_set_tells_a_timeout():
    async def scenario() -> tuple[bool, bool]:
        started = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await within(started, 0.01)
        return started.cancelled(), await wait_set(asyncio.Event(), 0.01)

    assert asyncio.run(scenario()) == (True, False)


def test_no_product_module_waits_with_asyncio_wait_for():
    uses = [f"{path.relative_to(ROOT)}:{n}" for pkg in PRODUCT for path in sorted((ROOT / pkg).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"\bwait_for\(", line) and path.name != "aio.py"]
    assert uses == []


def test_all_of_a_failed_read_stops_its_siblings_and_raises_its_own_error():
    """fencing's pass reads six lists at once: one failing must not leave the resource stream
    decoding after the pass gave up (``asyncio.gather`` did), nor come out as an ExceptionGroup."""

    class ReadFailed(Exception):
        pass

    async def scenario() -> tuple[list[str], bool]:
        streamed: list[str] = []
        stream_task: list[asyncio.Task[None]] = []

        async def stream() -> None:
            stream_task.append(asyncio.current_task())  # type: ignore[arg-type]
            while True:
                streamed.append("batch")
                await asyncio.sleep(0)

        async def nodes() -> None:
            await asyncio.sleep(0)
            raise ReadFailed("GET /v1/nodes: 500")

        with pytest.raises(ReadFailed):
            await all_of(stream(), nodes())
        so_far = len(streamed)
        for _ in range(5):
            await asyncio.sleep(0)
        return streamed[so_far:], stream_task[0].cancelled()

    assert asyncio.run(scenario()) == ([], True)


def test_all_of_gives_the_results_in_order_and_a_stop_cancels_every_read():
    async def scenario() -> tuple[list[int], bool]:
        async def value(n: int) -> int:
            await asyncio.sleep(0)
            return n

        results = await all_of(value(1), value(2))
        started = asyncio.Event()
        children: list[asyncio.Task[None]] = []

        async def forever() -> None:
            children.append(asyncio.current_task())  # type: ignore[arg-type]
            started.set()
            await asyncio.Event().wait()

        outer = asyncio.create_task(all_of(forever(), forever()))
        await started.wait()
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return results, all(child.cancelled() for child in children)

    assert asyncio.run(scenario()) == ([1, 2], True)


def test_no_product_module_gathers_without_return_exceptions():
    """``asyncio.gather`` leaves the other awaitables running after one fails: ``all_of`` instead."""
    uses = [f"{path.relative_to(ROOT)}:{n}" for pkg in PRODUCT for path in sorted((ROOT / pkg).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"\bgather\(", line) and "return_exceptions=True" not in line and path.name != "aio.py"]
    assert uses == []
