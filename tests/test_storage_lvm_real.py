"""sync-node against real LVM: volume groups on the test's own loop devices, tagged and re-tagged.

Needs root, the LVM tools and loop devices. Without them these tests skip, saying why; with
``LINSTOR_SCHEDULER_REQUIRE_LVM=1`` (set by .ci/run) a missing prerequisite is a failure instead,
so CI cannot pass by skipping them. Only the test's own loop devices are scanned (``--devices``).
Device-mapper is absent on the CI machines, so thin pools come from recorded reports
(tests/fixtures/lvm) combined with the real scan.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.cli import main
from linstor_scheduler.linstor.client import LinstorClient
from storage_sync.agent import NodeAgent
from storage_sync.lvm import CombinedLvm, LvmCommand, RecordedLvm

REQUIRED = os.environ.get("LINSTOR_SCHEDULER_REQUIRE_LVM") == "1"
FIXTURES = Path(__file__).parent / "fixtures" / "lvm"
ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "not root (LVM and loop devices need root)"
    for tool in ("lvm", "losetup", "pvcreate", "vgcreate"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install lvm2)"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control (no loop devices in this sandbox)"
    return None


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


class LoopVGs:
    """Loop devices with VGs on them; removes everything it made, whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.loops, self.vgs = tmp, [], []
        self.tag = uuid.uuid4().hex[:6]
        self.foreign: set[str] = set()  # system IDs our VGs were given (lvmsystemid(7)): to remove them

    def device(self) -> str:
        image = self.tmp / f"pv{len(self.loops)}.img"
        with image.open("wb") as fh:
            fh.truncate(32 * 1024 * 1024)
        loop = sh("losetup", "--find", "--show", str(image)).strip()
        self.loops.append(loop)
        sh("pvcreate", "-q", "--devices", loop, loop)
        return loop

    def vg(self, stem: str, *tags: str) -> tuple[str, str]:
        loop = self.device()
        return self.vg_on(stem, [loop], *tags), loop

    def vg_on(self, stem: str, loops: list[str], *tags: str) -> str:
        """A VG over ``loops`` (several: a VG that can become partial; the same stem twice: two VGs of
        one name, each made seeing only its own devices)."""
        name = f"lstest_{self.tag}_{stem}"
        argv = ["vgcreate", "-q", "--devices", ",".join(loops), name, *loops]
        for tag in tags:
            argv += ["--addtag", tag]
        sh(*argv)
        self.vgs.append((name, ",".join(loops)))
        return name

    def thin_pool(self, vg: str, loops: str, name: str, *tags: str) -> str:
        """A thin pool written into the real metadata of the (new, LV-less) VG ``vg``: device-mapper is
        absent here, so lvcreate -T cannot make one, but LVM reads (and tags) what vgcfgrestore wrote:
        ``lvs`` reports it with lv_attr ``twi---tz--``, as a thin pool that is not active."""
        backup = self.tmp / f"{vg}.vg"
        sh("vgcfgbackup", "-q", "--devices", loops, "-f", str(backup), vg)
        text = backup.read_text()
        extents = int(re.search(r"pe_count = (\d+)", text).group(1))
        data = max(1, extents // 2)
        quoted = ", ".join(f'"{t}"' for t in tags)

        def lv_uuid() -> str:
            h = uuid.uuid4().hex + uuid.uuid4().hex
            return "-".join(h[a:b] for a, b in ((0, 6), (6, 10), (10, 14), (14, 18), (18, 22), (22, 26), (26, 32)))

        def lv(lv_name: str, status: str, segment: str, extra: str = "") -> str:
            return (f"{lv_name} {{\nid = \"{lv_uuid()}\"\nstatus = [{status}]\nflags = []\n{extra}"
                    f"segment_count = 1\nsegment1 {{\nstart_extent = 0\n{segment}\n}}\n}}\n")

        block = "logical_volumes {\n" + lv(
            name, '"READ", "WRITE", "VISIBLE"', f'extent_count = {data}\ntype = "thin-pool"\nmetadata = '
            f'"{name}_tmeta"\npool = "{name}_tdata"\ntransaction_id = 0\nchunk_size = 128\n'
            'discards = "passdown"\nzero_new_blocks = 1', f"tags = [{quoted}]\n") + lv(
            f"{name}_tdata", '"READ", "WRITE"', f'extent_count = {data}\ntype = "striped"\nstripe_count = 1\n'
            'stripes = ["pv0", 0]') + lv(
            f"{name}_tmeta", '"READ", "WRITE"', f'extent_count = 1\ntype = "striped"\nstripe_count = 1\n'
            f'stripes = ["pv0", {data}]') + "}\n"
        end = text.rindex("}")
        backup.write_text(text[:end] + block + text[end:])
        sh("vgcfgrestore", "--force", "-q", "--devices", loops, "-f", str(backup), vg)
        return f"{vg}/{name}"

    def detach(self, loop: str) -> None:
        """The device vanishes (as after a reboot that renamed it); it is no longer ours to clean up."""
        sh("losetup", "-d", loop)
        self.loops.remove(loop)

    def cleanup(self) -> None:
        ids = ", ".join(f'"{i}"' for i in sorted(self.foreign))
        own = ["--config", f"local/extra_system_ids=[{ids}]"] if ids else []
        for name, loops in self.vgs:
            present = ",".join(d for d in loops.split(",") if d in self.loops)
            if not present:
                continue
            for step in (["vgimport", "-q"], ["vgremove", "-f", "-q"]):  # an exported VG is imported first
                subprocess.run([*step, *own, "--devices", present, name], capture_output=True, env=ENV, check=False)
        for loop in self.loops:
            subprocess.run(["pvremove", "-ff", "-y", "-q", "--devices", loop, loop], capture_output=True, env=ENV,
                           check=False)
            subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)


@pytest.fixture
def lvm(tmp_path):
    why = _missing()
    if why:
        if REQUIRED:
            pytest.fail(f"LINSTOR_SCHEDULER_REQUIRE_LVM=1 but {why}")
        pytest.skip(why)
    made = LoopVGs(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def emu_setup():
    """The served emulator ``emu`` (tests/conftest.py) of this module: one satellite, n1, with no pools."""
    def setup(emu: LinstorEmulator) -> None:
        emu.add_node("n1")
    return setup


def one_pass(emu, source, **kw):
    async def go():
        async with LinstorClient(emu.url) as client:
            return await NodeAgent("n1", source, client, **kw).run_pass()
    return asyncio.run(go())


def test_scan_sees_only_the_tests_devices_with_real_tags(lvm):
    data, loop0 = lvm.vg("a", "linstor-data", "unrelated")
    plain, loop1 = lvm.vg("b")
    scan = LvmCommand(devices=[loop0, loop1]).scan()
    by_name = {v.name: v for v in scan.volume_groups}
    assert set(by_name) == {data, plain}
    assert set(by_name[data].tags) == {"linstor-data", "unrelated"}
    assert len(by_name[data].uuid) == 38 and by_name[data].size > 0
    assert scan.logical_volumes == ()
    assert LvmCommand(devices=[loop1]).scan().volume_groups[0].name == plain


def test_real_tags_become_pools_and_retagging_is_noticed(lvm, emu):
    data, loop0 = lvm.vg("a", "linstor-data")
    other, loop1 = lvm.vg("b")
    source = LvmCommand(devices=[loop0, loop1])
    first = one_pass(emu, source)
    assert [(i.action, i.pool, i.backing) for i in first.applied] == [("create", "data", data)]
    sh("vgchange", "-q", "--devices", loop1, "--addtag", "linstor-fast", other)
    second = one_pass(emu, source)
    assert [(i.pool, i.backing) for i in second.applied] == [("fast", other)]
    sh("vgchange", "-q", "--devices", loop1, "--deltag", "linstor-fast", other)
    third = one_pass(emu, source)
    assert [(i.action, i.pool) for i in third.plan.items] == [("in-sync", "data"), ("orphan", "fast")]
    assert not [m for m, _ in emu.requests if m == "DELETE"], "an orphan is only reported without --prune"


def test_real_duplicate_tag_is_reported_and_neither_registered(lvm, emu):
    a, loop0 = lvm.vg("a", "linstor-data")
    b, loop1 = lvm.vg("b", "linstor-data")
    result = one_pass(emu, LvmCommand(devices=[loop0, loop1]))
    assert result.applied == []
    (problem,) = result.plan.problems
    assert problem.reason == "DuplicatePoolTag"
    assert f"volume group {a}" in problem.message and f"volume group {b}" in problem.message


def test_cli_once_dry_run_with_real_vgs_and_recorded_thin_pools(lvm, emu, capsys):
    data, loop0 = lvm.vg("a", "linstor-real")
    argv = ["sync-node", "--node-name", "n1", "--controllers", emu.url, "--once", "--no-events",
            "--lvm-devices", loop0, "--recorded-vgs", str(FIXTURES / "vgs.json"),
            "--recorded-lvs", str(FIXTURES / "lvs.json")]
    assert main([*argv, "--dry-run", "--output", "json"]) == 1, "pools to create: not in sync"
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] is True
    assert {(i["action"], i["pool"], i["backing"]) for i in doc["items"]} == {
        ("create", "real", data), ("create", "data", "vg0"), ("create", "thindata", "linstor_data/thindata")}
    assert not [m for m, _ in emu.requests if m != "GET"]
    assert main(argv) == 0, "one pass creates them all"
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("node n1 (dry run: nothing changed): in sync\nACTION")
    assert "IN-SYNC  thindata  LVM_THIN  linstor_data/thindata" in out
    source = CombinedLvm(LvmCommand(devices=[loop0]), RecordedLvm((FIXTURES / "vgs.json").read_text(),
                                                                 (FIXTURES / "lvs.json").read_text()))
    assert len(source.scan().volume_groups) == 3
