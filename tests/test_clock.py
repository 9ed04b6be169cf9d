"""Ages, grace periods and Lease deadlines count time the host spent suspended.

A leader suspended 60 s between its read and its write must wake up with evidence 60 s older and
a Lease 60 s nearer its end. ``time.monotonic`` stops during suspend; ``CLOCK_BOOTTIME`` does not
(clock_gettime(2)). A suspend cannot be made in a test, so this checks that every default clock of
the components is the boot-time one, and that nothing in the product reads ``time.monotonic`` for
an age (a grep over the product's packages: only the shutdown log line's duration may).
"""

from __future__ import annotations

import inspect
import re
import time
from pathlib import Path

from linstor_scheduler import clock

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("linstor_scheduler", "scheduler_extender", "admission", "fencing", "storage_sync", "locality")


def test_the_clock_is_the_boot_time_clock():
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    now = clock.now()
    assert before <= now <= time.clock_gettime(time.CLOCK_BOOTTIME)


def test_every_default_clock_is_the_boot_time_clock():
    from fencing.controller import FencingController
    from linstor_scheduler.kube.lease import LeaderElector
    from locality.exporter import LocalityExporter
    from scheduler_extender.refresh import Syncer
    from storage_sync.agent import NodeAgent
    from storage_sync.class_sync import ClassReconciler

    for cls in (LeaderElector, FencingController, LocalityExporter, Syncer, NodeAgent, ClassReconciler):
        default = inspect.signature(cls.__init__).parameters["clock"].default
        assert default is clock.now, f"{cls.__name__}'s clock is {default!r}"


def test_no_age_in_the_product_is_measured_on_the_monotonic_clock():
    uses = [f"{path.relative_to(ROOT)}:{n}" for pkg in PRODUCT for path in sorted((ROOT / pkg).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"time\.monotonic\b", line) and path.name not in ("clock.py", "runtime.py")]
    assert uses == []
