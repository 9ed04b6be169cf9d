"""The process's collector and thread switching are set in one place (linstor_scheduler/gcpolicy.py)
and only by the live services: building a StateHolder, a snapshot's Extender (explain, the drill,
the locality report) or a Syncer without the service's policy leaves them as they were."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from linstor_scheduler import gcpolicy
from scheduler_extender.holder import StateHolder
from scheduler_extender.refresh import Syncer
from scheduler_extender.snapshot_mode import snapshot_extender

from .cluster import standard
from .test_refresh import FakeCaches, FakeClient, until

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("linstor_scheduler", "scheduler_extender", "storage_sync", "fencing", "admission", "locality", "devkit")
SETTINGS = {("gc", "freeze"), ("gc", "unfreeze"), ("gc", "set_threshold"), ("gc", "disable"), ("gc", "enable"),
            ("gc", "collect"), ("sys", "setswitchinterval")}


@pytest.fixture
def collector() -> Iterator[None]:
    """A low young threshold to begin with (an earlier test may have run a live service in this
    process), and the process's collector as it was afterwards."""
    threshold, enabled, interval = gc.get_threshold(), gc.isenabled(), sys.getswitchinterval()
    gc.set_threshold(700, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        (gc.enable if enabled else gc.disable)()
        sys.setswitchinterval(interval)


def process_gc() -> tuple[object, ...]:
    return gc.get_threshold(), gc.get_freeze_count(), gc.isenabled(), sys.getswitchinterval()


def test_building_a_state_holder_and_swapping_states_leaves_the_collector_alone(collector):
    before = process_gc()
    holder = StateHolder()
    assert holder.swap(standard()) is True  # a new generation
    assert holder.swap(dataclasses.replace(holder.state, linstor_synced_at=5.0)) is False  # re-stamped
    assert holder.swap(dataclasses.replace(standard(), generation=2)) is True
    assert process_gc() == before
    assert gc.get_threshold()[0] == 700


def test_a_snapshot_s_extender_leaves_the_collector_alone(collector):
    """explain, the drill and the locality report judge through one."""
    before = process_gc()
    extender = snapshot_extender(standard())
    assert extender.holder.ready
    assert process_gc() == before


class Recording(gcpolicy.GcPolicy):
    def __init__(self) -> None:
        self.calls: list[object] = []

    def published(self, new_content: bool) -> None:
        self.calls.append(("published", new_content))

    @contextlib.contextmanager
    def big_read(self) -> Iterator[None]:
        self.calls.append("read")
        yield
        self.calls.append("read done")


def test_a_syncer_tells_its_policy_and_leaves_the_collector_alone_without_one(collector):
    async def scenario(policy: gcpolicy.GcPolicy | None) -> StateHolder:
        holder, client = StateHolder(), FakeClient()
        options = {} if policy is None else {"gc_policy": policy}
        syncer = Syncer(holder, client, FakeCaches(), poll_interval=3600, use_events=False, **options)
        await syncer.start()
        await until(lambda: holder.ready)
        assert await syncer.sync_linstor_once()  # the same content: the state is re-stamped
        await syncer.stop()
        return holder

    before = process_gc()
    asyncio.run(scenario(None))
    assert process_gc() == before
    recording = Recording()
    asyncio.run(scenario(recording))
    assert recording.calls[-3:] == ["read", ("published", False), "read done"]
    assert ("published", True) in recording.calls
    assert process_gc() == before


def test_the_service_policy_freezes_new_states_and_raises_the_young_threshold(collector):
    frozen = gc.get_freeze_count()
    try:
        gcpolicy.SERVICE.published(new_content=False)
        assert gc.get_threshold()[0] == gcpolicy.YOUNG_THRESHOLD
        assert gc.get_freeze_count() == frozen  # nothing new to freeze
        gcpolicy.SERVICE.published(new_content=True)
        assert gc.get_freeze_count() > frozen
        with gcpolicy.SERVICE.big_read():
            assert not gc.isenabled()
        assert gc.isenabled()
        gcpolicy.SERVICE.reading_in_thread()
        assert sys.getswitchinterval() == pytest.approx(gcpolicy.SWITCH_INTERVAL)
    finally:
        gc.unfreeze()


def test_no_module_but_gcpolicy_sets_the_collector_or_the_switch_interval():
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "linstor_scheduler" / "gcpolicy.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and (node.value.id, node.attr) in SETTINGS):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    assert found == []
