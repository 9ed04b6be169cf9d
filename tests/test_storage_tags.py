"""LVM tags -> desired pools, every validation rule with its exact message, and the node plan. Pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from linstor_scheduler.linstor.models import Node, StoragePool
from storage_sync.lvm import LogicalVolume, LvmError, LvmInventory, RecordedLvm, VolumeGroup, parse_lvs, parse_vgs
from storage_sync.plan import (
    BLOCKED,
    CREATE,
    IN_SYNC,
    INVALID,
    MANAGED_PROP,
    MANAGED_VALUE,
    MISMATCH,
    ORPHAN,
    PRUNE,
    UUID_PROP,
    orphan_candidates,
    plan_node,
)
from storage_sync.tags import LVM, LVM_THIN, desired_pools, pool_name_problem

FIXTURES = Path(__file__).parent / "fixtures" / "lvm"


def vg(name, *tags, uuid=None):
    return VolumeGroup(name, uuid or f"uuid-{name}", tuple(tags), 10 << 30, 10 << 30)


def lv(vg_name, name, *tags, attr="twi-aotz--", uuid=None):
    return LogicalVolume(name, uuid or f"uuid-{vg_name}-{name}", vg_name, f"uuid-{vg_name}", tuple(tags), attr, 1 << 30)


def inv(*objs):
    return LvmInventory(tuple(o for o in objs if isinstance(o, VolumeGroup)),
                        tuple(o for o in objs if isinstance(o, LogicalVolume)))


def messages(verdict):
    return [(p.kind, p.message) for p in verdict.problems]


def test_recorded_reports_parse_into_an_lvm_and_a_thin_pool():
    scan = RecordedLvm((FIXTURES / "vgs.json").read_text(), (FIXTURES / "lvs.json").read_text()).scan()
    assert [v.name for v in scan.volume_groups] == ["linstor_data", "vg0"]
    assert scan.volume_groups[1].tags == ("linstor-data",) and scan.volume_groups[1].size == 998579896320
    thin, vol = scan.logical_volumes
    assert thin.is_thin_pool and not vol.is_thin_pool
    verdict = desired_pools(scan)
    assert verdict.problems == ()
    assert verdict.pools["data"].provider_kind == LVM and verdict.pools["data"].props == {"StorDriver/LvmVg": "vg0"}
    assert verdict.pools["thindata"].provider_kind == LVM_THIN
    assert verdict.pools["thindata"].props == {"StorDriver/LvmVg": "linstor_data", "StorDriver/ThinPool": "thindata"}
    assert verdict.pools["thindata"].uuid == "2fYd0K-q8Wc-Bz3R-Zt0a-Jd7X-MxV4-Pq1sLe"


def test_multiple_tags_and_empty_values_parse():
    text = '{"report":[{"vg":[{"vg_name":"a","vg_uuid":"u","vg_tags":"x,linstor-y","vg_size":"","vg_free":"1"}]}]}'
    (only,) = parse_vgs(text)
    assert only.tags == ("x", "linstor-y") and only.size == 0 and only.free == 1
    with pytest.raises(LvmError, match="unreadable lvs report"):
        parse_lvs("lvm: command not found")


def test_duplicate_pool_tag_on_one_node_registers_neither():
    verdict = desired_pools(inv(vg("vg0", "linstor-data"), vg("vg1", "linstor-data"), vg("vg2", "linstor-other")))
    assert set(verdict.pools) == {"other"}
    assert messages(verdict) == [("DuplicatePoolTag", (
        "tag linstor-data is on 2 objects of this node (volume group vg0, volume group vg1); a pool tag must be "
        "unique on a node: neither is registered until all but one tag are removed"))]


def test_duplicate_between_a_vg_and_a_thin_pool():
    verdict = desired_pools(inv(vg("vg0", "linstor-data"), lv("vg1", "thin", "linstor-data")))
    assert verdict.pools == {}
    assert "(volume group vg0, logical volume vg1/thin)" in verdict.problems[0].message


def test_same_vg_listed_twice_is_one_object():
    verdict = desired_pools(inv(vg("vg0", "linstor-data", uuid="same"), vg("vg0", "linstor-data", uuid="same")))
    assert set(verdict.pools) == {"data"} and verdict.problems == ()


def test_two_pool_tags_on_one_object():
    verdict = desired_pools(inv(vg("vg0", "linstor-a1b", "linstor-c2d")))
    assert verdict.pools == {}
    assert messages(verdict) == [("MultiplePoolTags", (
        "volume group vg0 has 2 pool tags (linstor-a1b, linstor-c2d); one object can back only one pool: "
        "remove all but one"))]


@pytest.mark.parametrize("tag", ["linstor", "linstor-"])
def test_bare_tag(tag):
    verdict = desired_pools(inv(vg("vg0", tag)))
    assert verdict.pools == {}
    assert messages(verdict) == [("BarePoolTag", (
        f"volume group vg0 has the tag {tag!r}, which names no pool: use linstor-<pool>, e.g. linstor-data"))]


def test_unrelated_tags_are_ignored():
    verdict = desired_pools(inv(vg("vg0", "backup", "linstorx", "mylinstor-data")))
    assert verdict.pools == {} and verdict.problems == ()


@pytest.mark.parametrize("pool", ["ab", "1data", "-data", "da.ta", "x" * 49])
def test_names_linstor_refuses(pool):
    verdict = desired_pools(inv(vg("vg0", f"linstor-{pool}")))
    assert verdict.pools == {}
    assert messages(verdict) == [("InvalidPoolName", (
        f"volume group vg0: LINSTOR refuses the storage pool name {pool!r}: it must be 3 to 48 characters, "
        "start with a letter or '_', and contain only letters, digits, '_' and '-'"))]


def test_name_that_cannot_form_a_storage_class_name():
    verdict = desired_pools(inv(vg("vg0", "linstor-Data_1")))
    assert verdict.pools == {}
    assert messages(verdict) == [("PoolNameNotAStorageClassName", (
        "volume group vg0: pool name 'Data_1' cannot form the StorageClass name linstor-Data_1-r1: StorageClass "
        "names are lowercase DNS-1123 names (a-z, 0-9, '-'), and 'Data_1' contains uppercase letters and '_'; "
        "use e.g. linstor-data-1"))]
    assert pool_name_problem("fast_ssd")[1].endswith("contains '_'; use e.g. linstor-fast-ssd")
    assert pool_name_problem("ssd-2") is None
    assert pool_name_problem("x" * 48) is None


@pytest.mark.parametrize(("attr", "what"), [("-wi-ao----", "not a thin pool (lv_attr -wi-ao----)"),
                                            ("Vwi-aotz--", "a thin volume")])
def test_pool_tag_on_an_lv_that_is_not_a_thin_pool(attr, what):
    verdict = desired_pools(inv(lv("vg0", "lv0", "linstor-fast", attr=attr)))
    assert verdict.pools == {} and "fast" in verdict.tagged_names
    assert messages(verdict) == [("TagOnNonThinLV", (
        f"logical volume vg0/lv0 is tagged linstor-fast but is {what}: only volume groups and thin pools can "
        "back a pool (tag the VG for an LVM pool)"))]


# --- the node plan -------------------------------------------------------------------------------
def lnode(name="n1", status="ONLINE", providers=("DISKLESS", "LVM", "LVM_THIN"), unsupported=None):
    return Node(name=name, type="SATELLITE", connection_status=status, storage_providers=list(providers),
                unsupported_providers=unsupported or {})


def lpool(name, kind="LVM", vg_name="vg0", thin=None, managed=True, uuid=None, node="n1"):
    props = {"StorDriver/LvmVg": vg_name}
    if thin:
        props["StorDriver/ThinPool"] = thin
    if managed:
        props[MANAGED_PROP] = MANAGED_VALUE
    if uuid:
        props[UUID_PROP] = uuid
    return StoragePool(storage_pool_name=name, node_name=node, provider_kind=kind, props=props)


def actions(plan):
    return [(i.action, i.pool) for i in plan.items]


def test_plan_creates_missing_pools_with_our_marker():
    tags = desired_pools(inv(vg("vg0", "linstor-data"), lv("vg1", "thin", "linstor-thindata")))
    plan = plan_node("n1", tags, lnode(), [])
    assert actions(plan) == [(CREATE, "data"), (CREATE, "thindata")]
    data, thin = plan.items
    assert dict(data.props) == {"StorDriver/LvmVg": "vg0", MANAGED_PROP: MANAGED_VALUE, UUID_PROP: "uuid-vg0"}
    assert dict(thin.props) == {"StorDriver/LvmVg": "vg1", "StorDriver/ThinPool": "thin",
                                MANAGED_PROP: MANAGED_VALUE, UUID_PROP: "uuid-vg1-thin"}
    assert not plan.in_sync


def test_plan_steady_state_and_generic_props_are_in_sync():
    tags = desired_pools(inv(vg("vg0", "linstor-data"), lv("vg1", "thin", "linstor-thindata")))
    generic = StoragePool(storage_pool_name="thindata", node_name="n1", provider_kind="LVM_THIN",
                          props={"StorDriver/StorPoolName": "vg1/thin"})
    plan = plan_node("n1", tags, lnode(), [lpool("data", uuid="uuid-vg0"), generic])
    assert actions(plan) == [(IN_SYNC, "data"), (IN_SYNC, "thindata")]
    assert plan.in_sync and plan.writes == []
    assert plan.items[1].message == "registered (not created by us)"


def test_plan_mismatch_is_reported_never_repointed():
    tags = desired_pools(inv(vg("vg0", "linstor-data"), lv("vg1", "thin", "linstor-thindata"),
                             vg("vg2", "linstor-moved")))
    existing = [lpool("data", kind="LVM_THIN", thin="t"), lpool("thindata", kind="LVM_THIN", vg_name="vg1", thin="old"),
                lpool("moved", vg_name="vg2", uuid="uuid-of-a-vg-that-was-replaced")]
    plan = plan_node("n1", tags, lnode(), existing)
    assert actions(plan) == [(MISMATCH, "data"), (MISMATCH, "moved"), (MISMATCH, "thindata")]
    assert plan.writes == []
    by_pool = {i.pool: i.message for i in plan.items}
    assert by_pool["data"].startswith("LINSTOR pool data is LVM_THIN but the tag is on volume group vg0 (LVM)")
    assert by_pool["thindata"].startswith("LINSTOR pool thindata is backed by vg1/old but the tag is on vg1/thin")
    assert "was registered for LVM object uuid-of-a-vg-that-was-replaced, but vg2 is now uuid-vg2" in by_pool["moved"]
    assert by_pool["data"].endswith("it is never re-pointed because it may hold data: fix the tag or migrate the "
                                    "pool by hand")


def test_plan_orphans_only_our_pools_and_prunes_only_empty_ones():
    tags = desired_pools(inv(vg("vg0", "linstor-Bad_Name")))
    existing = [lpool("gone"), lpool("used"), lpool("manual", managed=False), lpool("Bad_Name")]
    assert orphan_candidates(tags, existing) == ["gone", "used"], "a pool whose tag is only invalid is no orphan"
    users = {"gone": [], "used": ["pvc-1"]}
    plan = plan_node("n1", tags, lnode(), existing, pool_users=users)
    assert actions(plan) == [(INVALID, "Bad_Name"), (ORPHAN, "gone"), (ORPHAN, "used")]
    assert plan.items[1].message == ("pool gone was created from a tag that is gone; it holds no resources; run "
                                     "with --prune to delete it")
    assert plan.items[2].message == "pool used was created from a tag that is gone; still holds 1 resource(s): pvc-1"
    pruned = plan_node("n1", tags, lnode(), existing, pool_users=users, prune=True)
    assert actions(pruned) == [(INVALID, "Bad_Name"), (PRUNE, "gone"), (ORPHAN, "used")]
    unknown = plan_node("n1", tags, lnode(), existing, pool_users=None, prune=True)
    assert [i.action for i in unknown.items if i.pool == "gone"] == [ORPHAN], "unread users: never pruned"


def test_plan_waits_for_an_online_node_and_a_supported_provider():
    tags = desired_pools(inv(vg("vg0", "linstor-data"), lv("vg1", "thin", "linstor-thindata")))
    offline = plan_node("n1", tags, lnode(status="OFFLINE"), [])
    assert actions(offline) == [(BLOCKED, "data"), (BLOCKED, "thindata")]
    assert offline.items[0].message == "node n1 is OFFLINE in LINSTOR: pools are registered once it is ONLINE"
    missing = plan_node("n1", tags, None, [])
    assert missing.items[0].message == (
        "node n1 is not registered in LINSTOR: register it (linstor node create), or, if LINSTOR knows this host "
        "under another name (its FQDN, say), start sync-node with --linstor-node-name <that name>")
    no_thin = plan_node("n1", tags, lnode(providers=("LVM",), unsupported={"LVM_THIN": ["'thin_check' not found"]}),
                        [])
    assert actions(no_thin) == [(CREATE, "data"), (BLOCKED, "thindata")]
    assert no_thin.items[1].message == "node n1 does not support LVM_THIN: 'thin_check' not found"
    assert no_thin.items[1].reason == "ProviderUnsupported"


# --- reading LVM as the host does (pure parts of lvm.py; real LVM: test_storage_lvm_host.py) -----------
def test_the_drbd_reject_goes_in_front_of_the_hosts_filter_never_instead():
    from storage_sync.lvm import filter_config, parse_filter

    host = parse_filter('global_filter=["a|^/dev/nvme|","r|^/dev/sdb$|","r|.*|"]\n')
    assert host == ["a|^/dev/nvme|", "r|^/dev/sdb$|", "r|.*|"]
    assert parse_filter('global_filter="r|^/dev/sdc$|"') == ["r|^/dev/sdc$|"], "a single string, not a list"
    assert filter_config(host) == ('devices { global_filter = [ "r|^/dev/drbd|", "a|^/dev/nvme|", '
                                   '"r|^/dev/sdb$|", "r|.*|" ] obtain_device_list_from_udev = 0 }')


def test_lvm_says_its_system_id_and_warnings_and_we_keep_them():
    from storage_sync.lvm import lvm_warnings, parse_system_id

    assert parse_system_id("  system ID: hostA\n") == "hostA"
    assert parse_system_id("  system ID: \n") == "", "a host without a system ID"
    stderr = ("File descriptor 10 (/dev/null) leaked on lvm invocation. Parent PID 1: bash\n"
              "  WARNING: VG vg0 is missing PV abc (last written to /dev/sdb).\n\n")
    assert lvm_warnings(stderr) == ["WARNING: VG vg0 is missing PV abc (last written to /dev/sdb)."]


@pytest.mark.parametrize(("attr", "system_id", "host_id", "reason"), [
    ("wz-pn-", "", "", "VgPartial"), ("wzx-n-", "", "", "VgExported"), ("wz--n-", "hostB", "hostA", "VgForeign"),
    ("wz--n-", "hostB", "", "VgForeign"), ("wz--n-", "hostA", "hostA", None), ("wz--n-", "", "hostA", None)])
def test_what_lvm_says_about_a_vg_decides_whether_it_backs_a_pool(attr, system_id, host_id, reason):
    """vgs(8) vg_attr and lvmsystemid(7): a VG without a system ID is usable by any host; one with
    another host's (or any, on a host without one) is foreign."""
    from storage_sync.backing import vg_refusal

    data = VolumeGroup("vg0", "uuid-vg0", ("linstor-data",), 1 << 30, 1 << 30, attr, system_id)
    inventory = LvmInventory((data,), host_system_id=host_id)
    refused = vg_refusal(inventory, data)
    assert (refused[0] if refused else None) == reason
    verdict = desired_pools(inventory)
    assert ("data" in verdict.pools) == (reason is None) and "data" in verdict.tagged_names
