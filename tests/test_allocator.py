"""The HTTP services keep multi-MB request buffers in the heap (linstor_scheduler/allocator.py).

Measured in a child process the way the regression showed itself in the bench: the minor page
faults of four 3 MB buffers (a full-Node request's body, chunks and answer) made and freed again and
again. With glibc's defaults the heap is trimmed after each round and every page faults back in;
tuned, none does. The control run (an operator's own glibc.malloc tunable, so we stand aside)
proves the measurement can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from linstor_scheduler import allocator

ROUND = """
import sys
from pathlib import Path
from linstor_scheduler.allocator import keep_large_buffers

def minflt():
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[7])

outcome = keep_large_buffers()
size = 3 * 1024 * 1024
for _ in range(5):  # warm up: the heap reaches its working size
    bufs = [b"x" * size for _ in range(4)]
    del bufs
before = minflt()
for _ in range(50):
    bufs = [b"x" * size for _ in range(4)]
    del bufs
print(outcome)
print((minflt() - before) / 50)
"""


def faults_per_round(**env: str) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if k not in allocator.OPERATOR_VARIABLES and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", ROUND], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return out[0], float(out[1])


needs_glibc = pytest.mark.skipif(not (allocator.is_glibc() and os.path.exists("/proc/self/stat")),
                                 reason="the tuning is for glibc malloc, measured through Linux /proc")


@needs_glibc
def test_tuned_service_faults_no_page_back_in_per_request():
    outcome, faults = faults_per_round()
    assert outcome.startswith("tuned"), outcome
    assert faults < 50, f"{faults} page faults per round of four 3 MB buffers"


@needs_glibc
def test_operator_setting_is_left_alone_and_the_control_faults():
    # tcache_count=7 is glibc's own default: the process runs exactly as glibc ships
    outcome, faults = faults_per_round(GLIBC_TUNABLES="glibc.malloc.tcache_count=7")
    assert outcome == "left to the operator (GLIBC_TUNABLES is set)"
    assert faults > 1000, f"only {faults} faults per round: the control no longer shows the trimming"


@pytest.mark.parametrize(("env", "named"), [
    ({}, None),
    ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_"),
    ({"MALLOC_TOP_PAD_": "0"}, "MALLOC_TOP_PAD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, "GLIBC_TUNABLES"),
    ({"GLIBC_TUNABLES": "glibc.rtld.nns=8"}, None),  # not a malloc tunable: ours stands
    ({"MALLOC_ARENA_MAX": "2"}, None),  # arenas: not what we set
])
def test_which_operator_settings_count(env, named):
    assert allocator.operator_setting(env) == named


def test_serve_asgi_tunes_before_serving(monkeypatch):
    """Both HTTP services (extender, webhook) go through serve_asgi: that is where the tuning sits."""
    import uvicorn

    from linstor_scheduler import runtime

    calls: list[str] = []
    monkeypatch.setattr(allocator, "keep_large_buffers", lambda: calls.append("tuned") or "tuned")
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: calls.append("served"))
    assert runtime.serve_asgi(lambda *a: None, host="127.0.0.1", port=0, log_level="warning") == 0
    assert calls == ["tuned", "served"]
