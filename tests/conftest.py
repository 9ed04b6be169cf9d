"""Fixtures several test modules share."""

from __future__ import annotations

import sys
import threading
import time
import traceback

import pytest

from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator

from .fencing_rig import Rig


@pytest.fixture
def ks():
    """The Kubernetes API stand-in, served over HTTP, with ``url`` and an official-client ``api``."""
    ks = KubeStandin()
    with ks.serve() as srv:
        ks.url = srv.url
        ks.api = ks.api_client(srv.url)
        yield ks


@pytest.fixture
def rig():
    """Fencing over real HTTP on the doubles with a fake clock (tests/fencing_rig.py ``Rig``), one per test."""
    with Rig() as rig:
        yield rig


@pytest.fixture
def emu(emu_setup):
    """The LINSTOR emulator, served over HTTP, with ``url``. What is in it is the module's own
    ``emu_setup`` fixture: a function given the emulator before it is served."""
    emu = LinstorEmulator()
    emu_setup(emu)
    with emu.serve() as srv:
        emu.url = srv.url
        yield emu


def _loop_thread(thread: threading.Thread) -> bool:
    """A thread that runs one of our loops: a server (uvicorn's), an informer, the extender's LINSTOR
    reader. Idle pool threads (Kubernetes calls, Events) are left out: they poll nothing."""
    return thread.name == "uvicorn-thread" or thread.name.startswith("informer-") or thread.name == "linstor-read"


@pytest.fixture(autouse=True, scope="module")
def _no_server_outlives_its_module(request):
    """Every HTTP server a module starts (uvicorn's thread: a component, a double) and every loop
    thread of a component (an informer, the LINSTOR reader) has ended once the module's fixtures are
    torn down. One that lives on keeps its app's loops running against doubles that are gone, and
    logs into a captured stream that is closed: a later module's test then reads "--- Logging error
    ---" in its own stderr (seen as a full run's failure in test_flag_ranges), and after the last test
    that logging buries pytest's summary (a CI run's whole tail was an extender, its stop lost to
    asyncio.wait_for, polling its emulator: tests/test_aio.py)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 15
    for thread in [t for t in threading.enumerate() if t not in before and _loop_thread(t)]:
        thread.join(max(0.0, deadline - time.monotonic()))  # waits on the thread's end itself
    alive = [t for t in threading.enumerate() if t not in before and _loop_thread(t) and t.is_alive()]
    if alive:
        frames = sys._current_frames()
        where = "".join(traceback.format_stack(frames[alive[0].ident])) if alive[0].ident in frames else "?"
        pytest.fail(f"{len(alive)} loop thread(s) started in {request.module.__name__} outlived it "
                    f"({', '.join(sorted(t.name for t in alive))}); the first is at:\n{where}", pytrace=False)
