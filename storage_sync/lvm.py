"""Reading LVM: ``vgs``/``lvs --reportformat json`` into dataclasses (the only subprocess in the agent).

Sizes in bytes (``--units b --nosuffix``). DRBD devices are filtered out of the scan, because a
DRBD device backed by an LV would otherwise show up as a PV of the VG above it (LVM on DRBD). In
tests, ``devices`` restricts the scan to the test's own loop devices so the host's VGs are never
seen. ``RecordedLvm`` feeds recorded real reports instead (thin pools need device-mapper, which
the CI machines lack).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

VG_FIELDS = "vg_name,vg_uuid,vg_tags,vg_size,vg_free"
LV_FIELDS = "lv_name,lv_uuid,vg_name,vg_uuid,lv_tags,lv_attr,lv_size,data_percent"
DRBD_FILTER = 'devices { global_filter = [ "r|^/dev/drbd|" ] }'


class LvmError(RuntimeError):
    """LVM could not be read: the pass is skipped, never acted on."""


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    uuid: str
    tags: tuple[str, ...] = ()
    size: int = 0
    free: int = 0


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    uuid: str
    vg_name: str
    vg_uuid: str
    tags: tuple[str, ...] = ()
    attr: str = ""
    size: int = 0

    @property
    def is_thin_pool(self) -> bool:
        """``lv_attr`` starts with ``t`` for a thin pool (``V`` is a thin volume, ``-`` a plain LV)."""
        return self.attr.startswith("t")


@dataclass(frozen=True)
class LvmInventory:
    """What LVM reported on this node in one scan."""

    volume_groups: tuple[VolumeGroup, ...] = ()
    logical_volumes: tuple[LogicalVolume, ...] = ()
    source: str = "lvm"
    warnings: tuple[str, ...] = field(default=())


def _tags(text: Any) -> tuple[str, ...]:
    return tuple(t for t in str(text or "").split(",") if t)


def _int(text: Any) -> int:
    try:
        return int(float(str(text).strip() or 0))
    except ValueError:
        return 0


def report_rows(text: str, kind: str) -> list[dict[str, Any]]:
    """Rows of one ``--reportformat json`` report (``kind`` ``vg`` or ``lv``)."""
    try:
        doc = json.loads(text)
        rows: list[dict[str, Any]] = []
        for report in doc["report"]:
            rows.extend(report.get(kind, []))
        return rows
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LvmError(f"unreadable {kind}s report: {exc}") from exc


def parse_vgs(text: str) -> list[VolumeGroup]:
    return [VolumeGroup(name=r["vg_name"], uuid=r["vg_uuid"], tags=_tags(r.get("vg_tags")),
                        size=_int(r.get("vg_size")), free=_int(r.get("vg_free"))) for r in report_rows(text, "vg")]


def parse_lvs(text: str) -> list[LogicalVolume]:
    return [LogicalVolume(name=r["lv_name"], uuid=r["lv_uuid"], vg_name=r["vg_name"], vg_uuid=r.get("vg_uuid", ""),
                          tags=_tags(r.get("lv_tags")), attr=r.get("lv_attr", ""), size=_int(r.get("lv_size")))
            for r in report_rows(text, "lv")]


class LvmSource(Protocol):
    def scan(self) -> LvmInventory: ...


class LvmCommand:
    """Runs the LVM tools. ``devices``: scan only these block devices (tests); else all but DRBD."""

    def __init__(self, *, devices: Sequence[str] = (), lvm: str = "lvm", timeout: float = 60.0) -> None:
        self.devices = list(devices)
        self.lvm = lvm
        self.timeout = timeout

    def available(self) -> bool:
        return shutil.which(self.lvm) is not None

    def _run(self, command: str, fields: str) -> str:
        argv = [self.lvm, command, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields,
                "--config", DRBD_FILTER]
        for device in self.devices:
            argv += ["--devices", device]
        env = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LvmError(f"{' '.join(argv[:2])}: {exc}") from exc
        if done.returncode != 0:
            raise LvmError(f"{' '.join(argv[:2])} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def scan(self) -> LvmInventory:
        vgs = parse_vgs(self._run("vgs", VG_FIELDS))
        lvs = parse_lvs(self._run("lvs", LV_FIELDS))
        return LvmInventory(tuple(vgs), tuple(lvs), source="lvm" + (f" ({', '.join(self.devices)})"
                                                                   if self.devices else ""))


class RecordedLvm:
    """Recorded ``vgs``/``lvs`` JSON output, read on every scan (so a test can change it between passes)."""

    def __init__(self, vgs_json: str, lvs_json: str) -> None:
        self.vgs_json, self.lvs_json = vgs_json, lvs_json

    def scan(self) -> LvmInventory:
        return LvmInventory(tuple(parse_vgs(self.vgs_json)), tuple(parse_lvs(self.lvs_json)), source="recorded")


class CombinedLvm:
    """Several sources as one inventory (real VGs from loop devices + recorded thin pools, in tests)."""

    def __init__(self, *sources: LvmSource) -> None:
        self.sources = sources

    def scan(self) -> LvmInventory:
        parts = [s.scan() for s in self.sources]
        return LvmInventory(tuple(vg for p in parts for vg in p.volume_groups),
                            tuple(lv for p in parts for lv in p.logical_volumes),
                            source=" + ".join(p.source for p in parts))
