"""sync-node on real LVM as the host sees it: the host's filter, system ID and devices file, and what
LVM says about a VG (partial, exported, foreign, a duplicate name, a vanished device, a renamed tag).

Each test builds a "host /etc/lvm" in its tmp directory (``LVM_SYSTEM_DIR``) whose global_filter
accepts only the test's own loop devices, as an operator's filter would accept only some disks, so
the host's and the other tests' VGs are never seen. Loop devices and VGs: ``LoopVGs`` of
test_storage_lvm_real.py (skips without root/lvm2/loop devices, fails with
``LINSTOR_SCHEDULER_REQUIRE_LVM=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage_sync.lvm import LvmCommand, parse_system_id
from storage_sync.plan import MANAGED_PROP, MANAGED_VALUE, UUID_PROP
from tests import test_storage_lvm_real as real
from tests.test_storage_lvm_real import ENV, one_pass, sh

lvm, emu_setup = real.lvm, real.emu_setup  # the fixtures: loop-device VGs; node n1 in the emulator (`emu`, conftest)


class Host:
    """The host's /etc/lvm, as the DaemonSet mounts it read-only: lvm.conf (+ a devices file)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "host-etc-lvm"
        (self.dir / "devices").mkdir(parents=True)

    def configure(self, *, accept: list[str], reject: list[str] = (), system_id: str | None = None,
                  devicesfile: bool = False, uname: bool = False) -> None:
        patterns = [f'"r|^{d}$|"' for d in reject] + [f'"a|^{d}$|"' for d in accept] + ['"r|.*|"']
        text = f"devices {{\n  global_filter = [ {', '.join(patterns)} ]\n"
        text += f"  use_devicesfile = {1 if devicesfile else 0}\n}}\n"
        if system_id is not None:
            text += f'global {{\n  system_id_source = "lvmlocal"\n}}\nlocal {{\n  system_id = "{system_id}"\n}}\n'
        if uname:  # lvmsystemid(7): the system ID is uname(2)'s nodename
            text += 'global {\n  system_id_source = "uname"\n}\n'
        (self.dir / "lvm.conf").write_text(text)

    def source(self, **kw) -> LvmCommand:
        return LvmCommand(system_dir=str(self.dir), **kw)


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def registered(emu, pool, vg, uuid="", managed=True):
    """A pool registered on an earlier pass (or by hand when ``managed`` is False)."""
    props = {"StorDriver/LvmVg": vg}
    if managed:
        props.update({MANAGED_PROP: MANAGED_VALUE, UUID_PROP: uuid})
    emu.add_storage_pool("n1", pool, "LVM", props=props)


def vg_uuid(loop, name):
    return sh("vgs", "--devices", loop, "--noheadings", "-o", "vg_uuid", name).strip()


def writes(emu):
    return [(m, p) for m, p in emu.requests if m != "GET"]


def by_pool(result):
    return {(i.pool, i.action): i for i in result.plan.items}


def refused_alone(emu, devices, action, reason):
    """One pass over ``devices``: the one pool item is refused (``action``, ``reason``), nothing written."""
    result = one_pass(emu, LvmCommand(devices=devices))
    (item,) = [i for i in result.plan.items if i.pool]
    assert (item.action, item.reason) == (action, reason)
    assert writes(emu) == []
    return item, result


def test_a_device_the_host_filter_hides_gets_no_pool(lvm, emu, host):
    """The operator hid a shared SAN LUN from LVM with global_filter; its VG carries a pool tag (set
    by another host that uses it). Our DRBD exclusion used to replace the host's filter."""
    data, loop0 = lvm.vg("a", "linstor-data")
    shared, loop1 = lvm.vg("b", "linstor-shared")
    host.configure(accept=[loop0, loop1], reject=[loop1])
    result = one_pass(emu, host.source())
    assert [(i.action, i.pool, i.backing) for i in result.applied] == [("create", "data", data)]
    assert shared not in {vg.name for vg in host.source().scan().volume_groups}
    assert ("POST", "/v1/nodes/n1/storage-pools") in writes(emu) and len(writes(emu)) == 1


def test_a_vg_of_this_hosts_system_id_stays_registered_and_is_never_pruned(lvm, emu, host):
    """The host sets its system ID in lvmlocal.conf and owns the VG; the agent used to ship its own
    lvm.conf (no system ID), saw no VG, called the pool orphaned and --prune deleted it."""
    data, loop0 = lvm.vg("a", "linstor-data")
    registered(emu, "data", data, vg_uuid(loop0, data))
    sh("vgchange", "-y", "-q", "--devices", loop0, "--systemid", "hostA", data)
    lvm.foreign.add("hostA")
    host.configure(accept=[loop0], system_id="hostA")
    result = one_pass(emu, host.source(), prune=True)
    assert [(i.action, i.pool) for i in result.plan.items] == [("in-sync", "data")]
    assert writes(emu) == []


def test_a_foreign_vg_is_reported_and_neither_registered_nor_pruned(lvm, emu, host):
    """Another host's VG (system ID hostB) on a shared disk, tagged there; and a pool of ours whose VG
    another host has taken over: neither is touched here."""
    theirs, loop0 = lvm.vg("a", "linstor-theirs")
    moved, loop1 = lvm.vg("b")
    for vg, loop in ((theirs, loop0), (moved, loop1)):
        sh("vgchange", "-y", "-q", "--devices", loop, "--systemid", "hostB", vg)
    lvm.foreign.add("hostB")
    host.configure(accept=[loop0, loop1], system_id="hostA")
    registered(emu, "moved", moved)
    result = one_pass(emu, host.source(), prune=True)
    items = by_pool(result)
    assert items[("theirs", "invalid")].reason == "VgForeign"
    assert f"volume group {theirs} has the system ID hostB and this host's is hostA" in (
        items[("theirs", "invalid")].message)
    assert items[("moved", "unseen")].reason == "PoolBackingVgForeign"
    assert writes(emu) == [], "a foreign VG is another host's: no pool made, none pruned"


def test_a_vg_outside_the_devices_file_is_not_visible_and_its_pool_is_not_pruned(lvm, emu, host):
    """lvmdevices(8): with a devices file, LVM uses only the devices listed in it. The host lists
    one disk; a pool of ours on a VG of an unlisted disk is 'not visible', never 'untagged'."""
    _, loop0 = lvm.vg("a", "linstor-data")
    hidden, loop1 = lvm.vg("b", "linstor-hidden")
    host.configure(accept=[loop0, loop1], devicesfile=True)
    subprocess.run(["lvm", "lvmdevices", "-y", "--adddev", loop0], env={**ENV, "LVM_SYSTEM_DIR": str(host.dir)},
                   capture_output=True, check=True)
    registered(emu, "old", hidden)
    result = one_pass(emu, host.source(), prune=True)
    assert [(i.action, i.pool) for i in result.plan.items if i.pool] == [("create", "data"), ("unseen", "old")]
    assert "is not visible to LVM on this node" in by_pool(result)[("old", "unseen")].message
    assert not [w for w in writes(emu) if w[0] == "DELETE"]


def test_a_vanished_device_after_a_reboot_never_prunes_its_pool(lvm, emu):
    """A device named in --lvm-devices is gone after a reboot (renamed, or not yet there): its VG is
    not visible, so its empty pool is reported and kept, even with --prune."""
    _, loop0 = lvm.vg("a", "linstor-data")
    _, loop1 = lvm.vg("b", "linstor-other")
    source = LvmCommand(devices=[loop0, loop1])
    assert {i.pool for i in one_pass(emu, source).applied} == {"data", "other"}
    lvm.detach(loop1)
    result = one_pass(emu, source, prune=True)
    assert by_pool(result)[("other", "unseen")].reason == "PoolBackingVgNotVisible"
    assert not [w for w in writes(emu) if w[0] == "DELETE"]


def test_a_device_path_that_is_gone_after_a_reboot_is_reported(lvm, emu):
    """--lvm-devices names /dev/disk/by-id/... paths; after a reboot one is not there (a renamed LUN):
    LVM says "Device not found" and exits 0; the agent reports the path and keeps the pool on it."""
    data, loop0 = lvm.vg("a", "linstor-data")
    gone = f"/dev/disk/by-id/lstest-{lvm.tag}-gone"
    registered(emu, "san", "lstest_san_vg")
    result = one_pass(emu, LvmCommand(devices=[loop0, gone]), prune=True)
    vanished = [i for i in result.plan.items if i.reason == "LvmDeviceVanished"]
    assert [i.backing for i in vanished] == [gone] and "fix --lvm-devices" in vanished[0].message
    assert any(f"Device not found for {gone}" in i.message for i in result.plan.items if i.reason == "LvmWarning")
    assert by_pool(result)[("san", "unseen")].reason == "PoolBackingVgNotVisible"
    assert f"devices named for the scan are gone: {gone}" in by_pool(result)[("san", "unseen")].message
    assert writes(emu) == [("POST", "/v1/nodes/n1/storage-pools")], "data only; san kept"
    assert data in {i.backing for i in result.applied}


def test_a_partial_vg_is_reported_not_registered_and_its_pool_kept(lvm, emu):
    """A PV of a two-disk VG is missing: vg_attr says partial ('p'), LVM warns on stderr and exits 0."""
    loop0, loop1, loop2, loop3 = (lvm.device() for _ in range(4))
    used = lvm.vg_on("used", [loop0, loop1], "linstor-used")
    fresh = lvm.vg_on("fresh", [loop2, loop3], "linstor-fresh")
    registered(emu, "used", used, vg_uuid(loop0, used))
    result = one_pass(emu, LvmCommand(devices=[loop0, loop2]), prune=True)
    items = by_pool(result)
    assert items[("fresh", "invalid")].reason == "VgPartial"
    assert f"volume group {fresh} is partial" in items[("fresh", "invalid")].message
    assert items[("used", "invalid")].reason == "VgPartial", "a registered pool whose VG lost a PV is reported"
    assert writes(emu) == []
    warnings = [i.message for i in result.plan.items if i.reason == "LvmWarning"]
    assert any(f"VG {used} is missing PV" in w for w in warnings), warnings


def test_an_exported_vg_is_reported_and_not_registered(lvm, emu):
    moving, loop0 = lvm.vg("a", "linstor-moving")
    sh("vgexport", "-q", "--devices", loop0, moving)
    item, _ = refused_alone(emu, [loop0], "invalid", "VgExported")
    assert f"run vgimport {moving}" in item.message


def test_two_vgs_with_one_name_get_no_pool(lvm, emu):
    """LVM: "Multiple VGs found with the same name: skipping"; LINSTOR names a VG by name only."""
    loop0, loop1 = lvm.device(), lvm.device()
    name = lvm.vg_on("twin", [loop0], "linstor-twin")
    lvm.vg_on("twin", [loop1])
    item, result = refused_alone(emu, [loop0, loop1], "invalid", "DuplicateVgName")
    assert f"2 volume groups are named {name}" in item.message
    assert any("is used by VGs" in i.message for i in result.plan.items if i.reason == "LvmWarning")


def test_a_renamed_tag_on_a_vg_in_use_says_how_to_move_and_makes_no_second_pool(lvm, emu):
    """linstor-alpha -> linstor-beta on a VG whose pool holds a volume: a second pool on the same VG
    would report its free space twice."""
    vg, loop0 = lvm.vg("a", "linstor-alpha")
    source = LvmCommand(devices=[loop0])
    assert [i.pool for i in one_pass(emu, source).applied] == ["alpha"]
    emu.add_resource("pvc-1", "n1", storage_pool="alpha")
    sh("vgchange", "-q", "--devices", loop0, "--deltag", "linstor-alpha", "--addtag", "linstor-beta", vg)
    before = len(writes(emu))
    result = one_pass(emu, source, prune=True)
    items = by_pool(result)
    beta = items[("beta", "blocked")]
    assert beta.reason == "BackingInUse"
    assert "already backs LINSTOR pool alpha" in beta.message
    assert "renamed from linstor-alpha to linstor-beta" in beta.message and "pvc-1" in beta.message
    assert f"vgchange --deltag linstor-beta --addtag linstor-alpha {vg}" in beta.message
    assert "now tagged linstor-beta" in items[("alpha", "orphan")].message
    assert len(writes(emu)) == before, "no second pool, and alpha holds a volume: not pruned"


def test_tagging_a_vg_an_admin_registered_by_hand_makes_no_second_pool(lvm, emu):
    vg, loop0 = lvm.vg("a", "linstor-data")
    registered(emu, "handmade", vg, managed=False)
    item, _ = refused_alone(emu, [loop0], "blocked", "BackingInUse")
    assert "handmade was not created by linstor-scheduler and is left alone" in item.message


def test_a_vg_name_linstor_refuses_gets_no_pool(lvm, emu):
    """LVM allows '.' and '+' in VG names; StorDriver/LvmVg takes [a-zA-Z0-9_-]+ (REST spec)."""
    loop0 = lvm.device()
    name = lvm.vg_on("dot.ted", [loop0], "linstor-dotted")
    item, _ = refused_alone(emu, [loop0], "invalid", "InvalidVgName")
    assert f"vgrename {name} <new name>" in item.message


# --- thin pools, written into the real metadata (vgcfgbackup, an edit, vgcfgrestore --force) ----------
def test_a_tagged_thin_pool_becomes_an_lvm_thin_pool(lvm, emu):
    vg, loop0 = lvm.vg("a")
    thin = lvm.thin_pool(vg, loop0, "thin", "linstor-thindata")
    result = one_pass(emu, LvmCommand(devices=[loop0]))
    assert [(i.action, i.pool, i.provider_kind, i.backing) for i in result.applied] == [
        ("create", "thindata", "LVM_THIN", thin)]
    (pool,) = [p for p in emu.snapshot()["storage_pools"] if p["storage_pool_name"] == "thindata"]
    assert pool["props"]["StorDriver/LvmVg"] == vg and pool["props"]["StorDriver/ThinPool"] == "thin"


def test_a_renamed_tag_on_a_thin_pool_in_use_makes_no_second_pool(lvm, emu):
    vg, loop0 = lvm.vg("a")
    thin = lvm.thin_pool(vg, loop0, "thin", "linstor-alpha")
    source = LvmCommand(devices=[loop0])
    assert [i.pool for i in one_pass(emu, source).applied] == ["alpha"]
    emu.add_resource("pvc-1", "n1", storage_pool="alpha")
    sh("lvchange", "-q", "--devices", loop0, "--deltag", "linstor-alpha", "--addtag", "linstor-beta", thin)
    before = len(writes(emu))
    beta = by_pool(one_pass(emu, source, prune=True))[("beta", "blocked")]
    assert beta.reason == "BackingInUse" and f"thin pool {thin} is tagged linstor-beta" in beta.message
    assert f"lvchange --deltag linstor-beta --addtag linstor-alpha {thin}" in beta.message
    assert len(writes(emu)) == before


def test_a_thin_pool_in_a_partial_vg_is_reported_not_registered(lvm, emu):
    loop0, loop1 = lvm.device(), lvm.device()
    vg = lvm.vg_on("two", [loop0, loop1])
    lvm.thin_pool(vg, f"{loop0},{loop1}", "thin", "linstor-thindata")
    item, _ = refused_alone(emu, [loop0], "invalid", "VgPartial")
    assert f"volume group {vg} is partial" in item.message


# --- system_id_source = "uname" in a pod ------------------------------------------------------------
POD_HOSTNAME = "linstor-scheduler-sync-node-x7k2p"  # a pod's own UTS namespace carries the pod's name


def daemonset_run(host: Host) -> tuple[bool, dict[str, str]]:
    """How the rendered DaemonSet runs the agent, on this host: (whether the pod shares the host's UTS
    namespace, the container's environment). A pod has a UTS namespace of its own, named after the pod,
    unless ``hostNetwork: true`` (the CRI runtimes share the host's UTS namespace with its network:
    containerd and CRI-O leave both out of the sandbox). Paths under a hostPath mount become this
    host's paths; the host's /etc/lvm is the test's."""
    from tests.test_deploy import find, rendered

    spec = find(list(rendered("")), "DaemonSet", "linstor-scheduler-sync-node")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounted = {m["mountPath"]: ("/etc/lvm-of-the-test" if host_paths.get(m["name"]) == "/etc/lvm"
                                else host_paths[m["name"]]) for m in c["volumeMounts"] if m["name"] in host_paths}

    def here(value: str) -> str:
        for target, source in sorted(mounted.items(), key=lambda kv: -len(kv[0])):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                value = source + value[len(target):]
                break
        return value.replace("/etc/lvm-of-the-test", str(host.dir))

    env = {e["name"]: here(e["value"]) for e in c.get("env") or [] if "value" in e}
    # On a node /proc/1 is the host's init, in the host's UTS namespace. Here PID 1 may be a sandbox's
    # init the test cannot open (EACCES): the test's own process is in this host's UTS namespace too.
    own = f"/proc/{os.getpid()}/ns/uts"
    env = {k: own if v == "/proc/1/ns/uts" else v for k, v in env.items()}
    return bool(spec.get("hostNetwork")), env


def agent_in_pod(emu, host: Host, device: str, *, env: dict[str, str], host_uts: bool) -> dict:
    """``sync-node --once --dry-run --prune`` in the process environment ``env``: in a UTS namespace of
    its own whose hostname is the pod's (``unshare --uts``), unless it shares the host's."""
    argv = [sys.executable, "-c", "import sys; from linstor_scheduler.cli import main; sys.exit(main(sys.argv[1:]))",
            "sync-node", "--node-name", "n1", "--controllers", emu.url, "--once", "--dry-run", "--prune",
            "--no-events", "--output", "json", "--lvm-devices", device]
    if not host_uts:
        argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', POD_HOSTNAME, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          env={**ENV, **env, "LVM_SYSTEM_DIR": env.get("LVM_SYSTEM_DIR", str(host.dir))})
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_a_uname_system_id_inside_the_pod_is_the_hosts(lvm, emu, host):
    """The host takes its system ID from uname (system_id_source = "uname") and owns the VG of a pool
    we made. In a pod the nodename is the pod's: the agent saw the VG as another host's (VgForeign),
    its pool as not visible, and never in sync. Run as the rendered DaemonSet runs it (a UTS namespace
    of its own: no hostNetwork), the LVM tools now join the host's UTS namespace (the host's /proc,
    mounted read-only) and see the host's system ID; the agent keeps the pod's name."""
    data, loop0 = lvm.vg("a", "linstor-data")
    host.configure(accept=[loop0], uname=True)
    seen = subprocess.run(["lvm", "systemid"], capture_output=True, text=True, check=True,
                          env={**ENV, "LVM_SYSTEM_DIR": str(host.dir)})
    host_id = parse_system_id(seen.stdout)
    assert host_id and host_id != POD_HOSTNAME, seen.stdout + seen.stderr
    registered(emu, "data", data, vg_uuid(loop0, data))
    sh("vgchange", "-y", "-q", "--devices", loop0, "--systemid", host_id, data)
    lvm.foreign.add(host_id)

    shares_host_uts, env = daemonset_run(host)
    doc = agent_in_pod(emu, host, loop0, env=env, host_uts=shares_host_uts)
    assert [(i["action"], i["pool"]) for i in doc["items"] if i["pool"]] == [("in-sync", "data")], doc
    assert doc["in_sync"] is True
    assert writes(emu) == []

    # What the pod's own name does (the agent as shipped before: no host UTS namespace)
    without = {k: v for k, v in env.items() if k != "LINSTOR_SCHEDULER_HOST_UTS_NAMESPACE"}
    pod_view = agent_in_pod(emu, host, loop0, env=without, host_uts=False)
    (item,) = [i for i in pod_view["items"] if i["pool"]]
    assert (item["action"], item["reason"]) == ("invalid", "VgForeign"), pod_view
    assert f"has the system ID {host_id} and this host's is {POD_HOSTNAME}" in item["message"]
    assert writes(emu) == [], "a VG that looks foreign is never registered nor pruned"


def fake_lvm(directory: Path, system_id_source: str) -> str:
    """An ``lvm`` that answers ``lvmconfig ... global/system_id_source`` with ``system_id_source`` and
    everything else with nothing (a host without VGs)."""
    script = directory / "lvm"
    script.write_text('#!/bin/sh\ncase "$*" in\n'
                      f'  *global/system_id_source*) echo \'system_id_source="{system_id_source}"\';;\n'
                      '  vgs*) echo \'{"report": [{"vg": []}]}\';;\n'
                      '  lvs*) echo \'{"report": [{"lv": []}]}\';;\n'
                      'esac\n')
    script.chmod(0o755)
    return str(script)


def test_a_host_uts_namespace_that_cannot_be_opened_fails_a_uname_scan_with_its_name(tmp_path):
    """The mount missing while the host takes its system ID from uname: the scan fails (the pass
    writes nothing) and says which path and why."""
    from storage_sync.lvm import LvmError

    with pytest.raises(LvmError, match=r"the host's UTS namespace .*/gone: No such file or directory"):
        LvmCommand(host_uts=str(tmp_path / "gone"), lvm=fake_lvm(tmp_path, "uname")).scan()


@pytest.mark.parametrize("source", ["none", "lvmlocal", "machineid", "file"])
def test_no_namespace_is_joined_when_the_system_id_does_not_come_from_uname(tmp_path, source):
    """Only uname reads the nodename: with any other source the host's namespace is not even opened
    (a sandbox that refuses opening PID 1's namespaces does not stop the scan)."""
    inventory = LvmCommand(host_uts=str(tmp_path / "gone"), lvm=fake_lvm(tmp_path, source)).scan()
    assert inventory.volume_groups == ()
