"""Reading LVM as the host sees it: ``vgs``/``lvs --reportformat json`` into dataclasses (the only
subprocess in the agent).

The agent must see what the host's own LVM commands see, or it registers devices the operator hid
and misses VGs the host owns. So the LVM tools run with the host's configuration (``LVM_SYSTEM_DIR``
pointing at the host's ``/etc/lvm``, mounted read-only: its lvm.conf, lvmlocal.conf with the system
ID, and devices/system.devices, the devices file of lvmdevices(8)). The one thing we add is the DRBD
exclusion: a DRBD device backed by an LV would otherwise show up as a PV of the VG above it. It is
put *in front of* the host's own ``devices/global_filter`` (read with ``lvmconfig``), never instead
of it: lvm.conf(5) says the first pattern that matches a path decides, so DRBD is rejected and every
other device is judged by the host's patterns as the host's commands judge it.

Each scan also reads what LVM itself says about the VGs: ``vg_attr`` (vgs(8): the 3rd character
``x`` is an exported VG, the 4th ``p`` a partial one, a PV missing), ``vg_systemid`` against the
host's system ID (``lvm systemid``; lvmsystemid(7): a VG with another system ID is foreign and may
be in use by another host; ``--foreign`` makes it reported instead of silently skipped), and the
warnings LVM writes on stderr while exiting 0 (a missing PV, duplicate VG names, a device named on
the command line that does not exist). Sizes in bytes (``--units b --nosuffix``). ``devices``
restricts the scan to given devices (``--devices``; lvm(8): this overrides the devices file).
``RecordedLvm`` feeds recorded real reports instead.

The host's name, too: with ``system_id_source = "uname"`` LVM's system ID is ``uname(2)``'s nodename
(lvmsystemid(7)), and in a pod without ``hostNetwork`` that is the pod's name (its own UTS
namespace), so every VG of the host would look foreign. ``host_uts`` names the host's UTS namespace
(``/host/proc/1/ns/uts``, the host's /proc mounted read-only): each LVM command joins it
(setns(2), ``CLONE_NEWUTS``) between fork and exec, and so sees the host's nodename, whatever
LVM derives from it. The agent itself keeps the pod's.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

VG_FIELDS = "vg_name,vg_uuid,vg_tags,vg_size,vg_free,vg_attr,vg_systemid"
LV_FIELDS = "lv_name,lv_uuid,vg_name,vg_uuid,lv_tags,lv_attr,lv_size,data_percent"
DRBD_REJECT = "r|^/dev/drbd|"
# The container's udev database need not be the host's: LVM scans /dev itself (lvm.conf(5)).
CONTAINER_DEVICES = "obtain_device_list_from_udev = 0"
# LVM_SUPPRESS_FD_WARNINGS silences these; they are about our process, not about LVM's state
_NOISE = ("File descriptor ", "leaked on ")


CLONE_NEWUTS = 0x04000000  # <linux/sched.h>


class LvmError(RuntimeError):
    """LVM could not be read: the pass is skipped, never acted on."""


def _setns(fd: int, nstype: int) -> None:
    """setns(2), from libc (``os.setns`` is Python 3.12's)."""
    join = getattr(os, "setns", None)
    if join is not None:
        join(fd, nstype)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def in_uts_namespace(path: str) -> tuple[int, Any]:
    """(fd, preexec_fn) that makes a child process join the UTS namespace at ``path`` (opened here,
    in the parent, so a missing or unreadable path is an error with its name; the caller closes fd)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LvmError(f"the host's UTS namespace {path}: {exc.strerror or exc} (the DaemonSet mounts the "
                       "host's /proc at /host/proc: --host-uts-namespace /host/proc/1/ns/uts)") from None
    return fd, lambda: _setns(fd, CLONE_NEWUTS)


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    uuid: str
    tags: tuple[str, ...] = ()
    size: int = 0
    free: int = 0
    attr: str = ""  # vg_attr, vgs(8)
    system_id: str = ""  # vg_systemid, lvmsystemid(7); "" for a VG without one

    @property
    def exported(self) -> bool:
        """vg_attr 3rd character ``x``: vgexport'ed, meant to be imported elsewhere (vgs(8))."""
        return len(self.attr) > 2 and self.attr[2] == "x"

    @property
    def partial(self) -> bool:
        """vg_attr 4th character ``p``: one or more PVs are missing (vgs(8))."""
        return len(self.attr) > 3 and self.attr[3] == "p"


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
    host_system_id: str = ""  # the host's system ID ("" when it has none: lvmsystemid(7))
    missing_devices: tuple[str, ...] = ()  # devices named for the scan that do not exist (vanished)

    def is_foreign(self, vg: VolumeGroup) -> bool:
        """lvmsystemid(7): a VG whose system ID is set and is not the host's belongs to another host
        (a host without a system ID cannot use any VG that has one)."""
        return bool(vg.system_id) and vg.system_id != self.host_system_id

    def vgs_named(self, name: str) -> list[VolumeGroup]:
        """The distinct VGs (by UUID) that carry ``name``: more than one is LVM's "Multiple VGs found
        with the same name", and LINSTOR, which names a VG by name only, cannot tell them apart."""
        found: dict[str, VolumeGroup] = {}
        for vg in self.volume_groups:
            if vg.name == name:
                found.setdefault(vg.uuid, vg)
        return list(found.values())


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
                        size=_int(r.get("vg_size")), free=_int(r.get("vg_free")), attr=str(r.get("vg_attr") or ""),
                        system_id=str(r.get("vg_systemid") or "")) for r in report_rows(text, "vg")]


def parse_lvs(text: str) -> list[LogicalVolume]:
    return [LogicalVolume(name=r["lv_name"], uuid=r["lv_uuid"], vg_name=r["vg_name"], vg_uuid=r.get("vg_uuid", ""),
                          tags=_tags(r.get("lv_tags")), attr=r.get("lv_attr", ""), size=_int(r.get("lv_size")))
            for r in report_rows(text, "lv")]


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_filter(text: str) -> list[str]:
    """The patterns of ``lvmconfig --type full devices/global_filter`` (``global_filter=["a|x|",...]``,
    or a single string), kept as LVM escaped them."""
    _, _, value = text.strip().partition("=")
    return _QUOTED.findall(value)


def filter_config(host_patterns: Sequence[str]) -> str:
    """The ``--config`` of every scan: DRBD rejected first, then the host's own patterns in their order
    (lvm.conf(5): the first pattern that matches decides; a path no pattern matches is accepted)."""
    patterns = ", ".join(f'"{p}"' for p in [DRBD_REJECT, *host_patterns])
    return f"devices {{ global_filter = [ {patterns} ] {CONTAINER_DEVICES} }}"


def config_value(text: str) -> str:
    """The value of ``lvmconfig --type full section/key`` (``system_id_source="uname"`` -> ``uname``)."""
    _, _, value = text.strip().partition("=")
    return value.strip().strip('"')


def parse_system_id(text: str) -> str:
    """``lvm systemid`` prints ``  system ID: <id>`` (empty when the host has none)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "system ID":
            return value.strip()
    return ""


def lvm_warnings(stderr: str) -> list[str]:
    """What LVM said on stderr although it exited 0: each line a finding (a missing PV, duplicate VG
    names, a named device not found), minus the file-descriptor notices about our own process."""
    return [line.strip() for line in stderr.splitlines()
            if line.strip() and not all(n in line for n in _NOISE)]


class LvmSource(Protocol):
    def scan(self) -> LvmInventory: ...


class LvmCommand:
    """Runs the LVM tools with the host's configuration. ``system_dir``: the host's ``/etc/lvm`` as
    mounted in the container (``LVM_SYSTEM_DIR``; None: the environment's). ``devices``: scan only
    these block devices (``--devices``, which overrides the devices file)."""

    def __init__(self, *, devices: Sequence[str] = (), lvm: str = "lvm", timeout: float = 60.0,
                 system_dir: str | None = None, host_uts: str | None = None) -> None:
        self.devices = list(devices)
        self.lvm = lvm
        self.timeout = timeout
        self.system_dir = system_dir
        self.host_uts = host_uts  # the host's UTS namespace (module docstring); None: this process's

    def _exec(self, argv: list[str], uts: str | None = None) -> tuple[str, list[str]]:
        """``uts``: the UTS namespace the command runs in (None: this process's)."""
        env = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")
        if self.system_dir:
            env["LVM_SYSTEM_DIR"] = self.system_dir
        fd, join = in_uts_namespace(uts) if uts else (None, None)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, env=env, check=False,
                                  preexec_fn=join)
        except subprocess.SubprocessError as exc:
            if isinstance(exc, subprocess.TimeoutExpired):
                raise LvmError(f"{' '.join(argv[:2])}: {exc}") from exc
            raise LvmError(f"{' '.join(argv[:2])}: could not join the host's UTS namespace {self.host_uts} "
                           "(setns needs CAP_SYS_ADMIN: the DaemonSet's container is privileged)") from exc
        except OSError as exc:
            raise LvmError(f"{' '.join(argv[:2])}: {exc}") from exc
        finally:
            if fd is not None:
                os.close(fd)
        if done.returncode != 0:
            raise LvmError(f"{' '.join(argv[:2])} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout, lvm_warnings(done.stderr)

    def _report(self, command: str, fields: str, config: str, uts: str | None) -> tuple[str, list[str]]:
        # --foreign: VGs of other system IDs are reported (and then refused), not silently left out
        argv = [self.lvm, command, "--reportformat", "json", "--units", "b", "--nosuffix", "--foreign",
                "-o", fields, "--config", config]
        for device in self.devices:
            argv += ["--devices", device]
        return self._exec(argv, uts)

    def scan(self) -> LvmInventory:
        """The host's namespace is joined only where it changes what LVM sees: with
        ``system_id_source = "uname"``. Any other source (none, lvmlocal, machineid, file) does not
        read the nodename, and then no namespace is entered at all (one privilege less used; some
        hosts' sandboxes refuse opening PID 1's namespaces even to a privileged container)."""
        source, notes = self._exec([self.lvm, "lvmconfig", "--type", "full", "global/system_id_source"])
        uts = self.host_uts if config_value(source) == "uname" else None
        host_filter, more_notes = self._exec([self.lvm, "lvmconfig", "--type", "full", "devices/global_filter"])
        system_id, more = self._exec([self.lvm, "systemid"], uts)
        config = filter_config(parse_filter(host_filter))
        vgs_out, vg_notes = self._report("vgs", VG_FIELDS, config, uts)
        lvs_out, lv_notes = self._report("lvs", LV_FIELDS, config, uts)
        warnings = list(dict.fromkeys([*notes, *more_notes, *more, *vg_notes, *lv_notes]))
        missing = tuple(d for d in self.devices if not os.path.exists(d))
        return LvmInventory(tuple(parse_vgs(vgs_out)), tuple(parse_lvs(lvs_out)),
                            source="lvm" + (f" ({', '.join(self.devices)})" if self.devices else ""),
                            warnings=tuple(warnings), host_system_id=parse_system_id(system_id),
                            missing_devices=missing)


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
                            source=" + ".join(p.source for p in parts),
                            warnings=tuple(w for p in parts for w in p.warnings),
                            host_system_id=next((p.host_system_id for p in parts if p.host_system_id), ""),
                            missing_devices=tuple(d for p in parts for d in p.missing_devices))
