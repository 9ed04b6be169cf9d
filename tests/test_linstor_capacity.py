"""LINSTOR's admission rule for a storage pool (linstor_scheduler/linstor/capacity.py), the sizes it
reads from the REST shapes, and the pools of the extender's index judged by it: on the live extender
too, where a volume LINSTOR lists counts against its pool as LINSTOR counts it."""

from __future__ import annotations

import msgspec
import pytest

from linstor_scheduler.linstor import capacity
from linstor_scheduler.linstor.compact import ResourceItem, StoragePoolItem
from linstor_scheduler.linstor.models import Resource
from scheduler_extender.state import index_nodes, reserved_by_pool

from .cluster import lnode
from .waiting import wait_for

GiB = 1024**2  # KiB


@pytest.mark.parametrize(("kind", "expected"), [("LVM_THIN", 20.0), ("ZFS_THIN", 20.0), ("FILE_THIN", 20.0),
                                                ("STORAGE_SPACES_THIN", 20.0), ("lvm_thin", 20.0),
                                                ("LVM", 1.0), ("ZFS", 1.0), ("FILE", 1.0), ("SPDK", 1.0)])
def test_the_default_ratio_is_20_for_thin_kinds_and_1_for_thick_ones(kind, expected):
    assert capacity.ratios(kind) == (expected, expected)


def test_each_ratio_is_looked_up_on_the_pool_then_its_definition_then_the_controller():
    pool, definition, controller = {"MaxOversubscriptionRatio": "2"}, {"MaxOversubscriptionRatio": "3"}, \
        {"MaxOversubscriptionRatio": "4"}
    assert capacity.ratios("LVM_THIN", pool, definition, controller) == (2.0, 2.0)
    assert capacity.ratios("LVM_THIN", {}, definition, controller) == (3.0, 3.0)
    assert capacity.ratios("LVM_THIN", {}, {}, controller) == (4.0, 4.0)
    assert capacity.ratios("LVM", {}, {}, controller) == (4.0, 4.0), "a thick pool takes the property too"


def test_the_free_and_total_ratios_fall_back_to_the_common_one_each_on_its_own():
    """getFreeCapacityCurrentEstimationPrivileged: each specific ratio, found at any level, wins over
    MaxOversubscriptionRatio; a missing one falls back to it (or to the kind's default)."""
    assert capacity.ratios("LVM_THIN", {"MaxFreeCapacityOversubscriptionRatio": "5"}) == (5.0, 20.0)
    assert capacity.ratios("LVM_THIN", {"MaxOversubscriptionRatio": "2"},
                           controller_props={"MaxTotalCapacityOversubscriptionRatio": "7"}) == (2.0, 7.0)
    assert capacity.ratios("LVM_THIN", {}, {"MaxFreeCapacityOversubscriptionRatio": "1.5"}) == (1.5, 20.0)
    assert capacity.ratios("LVM_THIN", {"MaxOversubscriptionRatio": "oops"}) == (20.0, 20.0), \
        "a value that is no number is skipped, not fatal to the extender"


def test_admitted_is_the_smaller_of_the_free_and_the_total_terms():
    assert capacity.admissible_kib(70 * GiB, 70 * GiB, 0, 1.0, 1.0) == 70 * GiB
    assert capacity.admissible_kib(70 * GiB, 70 * GiB, 60 * GiB, 1.0, 1.0) == 10 * GiB, "a thin volume counts"
    assert capacity.admissible_kib(70 * GiB, 70 * GiB, 60 * GiB, 20.0, 20.0) == 1340 * GiB
    assert capacity.admissible_kib(5 * GiB, 500 * GiB, 0, 20.0, 20.0) == 100 * GiB, "the free term bounds"
    assert capacity.admissible_kib(10, 10, 11, 1.0, 1.0) == -1
    assert capacity.admissible_kib(None, 10, 0, 1.0, 1.0) is None, "unknown: LINSTOR admits (orElse(true))"
    assert capacity.admissible_kib(10, None, 0, 1.0, 1.0) is None
    assert capacity.admissible_kib(3, 10, 0, 1.5, 1.0) == 4, "Java's (long) cast truncates"


def rest_resource(node: str, pool: str, usable: int | None, *, top_usable: int | None = None,
                  flags: tuple[str, ...] = ()) -> dict:
    """A /v1/view/resources item as linstor-server's Json.apiToVolume writes it: sizes in the layers."""
    storage: dict = {"volume_number": 0, "allocated_size_kib": 0}
    if usable is not None:
        storage["usable_size_kib"] = usable
    vol: dict = {"volume_number": 0, "storage_pool_name": pool, "provider_kind": "LVM_THIN",
                 "allocated_size_kib": 0, "state": {"disk_state": "UpToDate"},
                 "layer_data_list": [{"type": "DRBD", "data": {"usable_size_kib": 1}},
                                     {"type": "STORAGE", "data": storage}]}
    if top_usable is not None:
        vol["usable_size_kib"] = top_usable
    return {"name": f"pvc-{node}-{usable}", "node_name": node, "flags": list(flags), "volumes": [vol]}


def test_reserved_is_the_storage_layers_usable_size_per_node_and_pool_from_records_and_models_alike():
    items = [rest_resource("w1", "thin", 60 * GiB + 4096), rest_resource("w1", "thin", 10 * GiB, flags=("DELETE",)),
             rest_resource("w2", "thin", None, top_usable=5 * GiB), rest_resource("w2", "thin", None),
             rest_resource("w2", "other", 3)]
    records = msgspec.json.decode(msgspec.json.encode(items), type=list[ResourceItem])
    models = [Resource.parse(i) for i in items]
    expected = {("w1", "thin"): 70 * GiB + 4096, ("w2", "thin"): 5 * GiB, ("w2", "other"): 3}
    assert reserved_by_pool(records) == reserved_by_pool(models) == expected


def test_the_index_gives_each_pool_the_room_linstor_would_admit():
    nodes = [lnode("w1"), lnode("w2")]
    pools = [StoragePoolItem("thin", "w1", "LVM_THIN", 70 * GiB, 70 * GiB),
             StoragePoolItem("thin", "w2", "LVM_THIN", 70 * GiB, 70 * GiB, {"MaxOversubscriptionRatio": "1"}),
             StoragePoolItem("thick", "w1", "LVM", 50 * GiB, 100 * GiB),
             StoragePoolItem("full", "w1", "LVM_THIN", 10, 10, {"MaxOversubscriptionRatio": "1"}),
             StoragePoolItem("unknown", "w2", "LVM_THIN", None, None),
             StoragePoolItem("DfltDisklessStorPool", "w1", "DISKLESS", 2**63 - 1, 2**63 - 1)]
    reserved = {("w1", "thin"): 60 * GiB, ("w2", "thin"): 60 * GiB, ("w1", "thick"): 50 * GiB, ("w1", "full"): 20}
    index = index_nodes(nodes, pools, reserved)
    room = {(n, p): info.free_kib for n, node in index.items() for p, info in node.pools.items()}
    assert room == {("w1", "thin"): 1340 * GiB, ("w2", "thin"): 10 * GiB, ("w1", "thick"): 50 * GiB,
                    ("w1", "full"): 0, ("w2", "unknown"): None}
    definitions = {"thin": {"MaxOversubscriptionRatio": "2"}}
    by_definition = index_nodes(nodes, pools, reserved, definitions, {"MaxOversubscriptionRatio": "9"})
    assert by_definition["w1"].pools["thin"].free_kib == 80 * GiB, "the definition's ratio: min(140, 140 - 60)"
    assert by_definition["w2"].pools["thin"].free_kib == 10 * GiB, "the pool's own ratio first"
    assert by_definition["w1"].pools["thick"].free_kib == 450 * GiB, "the controller's ratio for the thick pool"


def test_the_pool_records_keep_of_the_props_the_ratios_alone_and_are_read_like_the_props():
    body = msgspec.json.encode([{"storage_pool_name": "thin", "node_name": "w1", "provider_kind": "LVM_THIN",
                                 "free_capacity": 5, "total_capacity": 10,
                                 "props": {"StorDriver/LvmVg": "vg", "MaxFreeCapacityOversubscriptionRatio": "3",
                                           "MaxOversubscriptionRatio": "2"}}])
    pool = msgspec.json.decode(body, type=list[StoragePoolItem])[0]
    assert msgspec.structs.asdict(pool.props) == {"max_ratio": "2", "max_free_ratio": "3", "max_total_ratio": None}
    assert capacity.ratios(pool.provider_kind, pool.props) == (3.0, 2.0)


# --- a volume LINSTOR lists counts against its pool by LINSTOR's rule, on the live extender -------
def a_70_gib_thin_pool_on_w2(emu, _ks) -> None:
    """w2's thindata: an empty thin pool of 70 GiB (its data space all free; no volume in it yet), with
    the props (the over-subscription ratio) the cluster gave it."""
    props = next(p for p in emu.snapshot()["storage_pools"]
                 if (p["node_name"], p["storage_pool_name"]) == ("w2", "thindata"))["props"]
    emu.add_storage_pool("w2", "thindata", "LVM_THIN", free_kib=70 * 1024**2, total_kib=70 * 1024**2, props=props)


def explained(http, pod: dict) -> dict[str, str]:
    """node -> verdict ("pass"/"fail") from /explain, which judges as /filter does and holds nothing."""
    r = http.post("/explain", json={"Pod": pod, "NodeNames": ["w1", "w2", "w3"]})
    assert r.status_code == 200, r.text
    return {row["node"]: row["verdict"] for row in r.json()["nodes"]}


def provision(emu, ks, claim: str, node: str, size: str = "60Gi") -> None:
    """The CSI driver creates the claim's volume on ``node`` (a thin volume: the pool's free data space
    stays as it was) and binds the claim."""
    from devkit import kube_objects as k

    emu.add_resource(f"pvc-{claim}", node, size_kib=int(size.removesuffix("Gi")) * 1024**2)
    ks.add(k.pv(f"pvc-{claim}", claim=("default", claim), storage_class="local", size=size))
    ks.patch("PersistentVolumeClaim", claim, {"spec": {"volumeName": f"pvc-{claim}"}, "status": {"phase": "Bound"}},
             namespace="default")


def test_a_thin_volume_just_provisioned_still_counts_against_its_pool():
    """Pool thindata on w2 (LVM_THIN): 70 GiB, empty, its over-subscription ratios 1 (the pools'
    ``MaxOversubscriptionRatio`` in tests/test_reservations.py ``populated``: no over-commit).
    kube-scheduler places p0 (a 60 GiB claim) on w2; the CSI driver creates the thin volume there and
    binds the claim. LINSTOR now lists the volume, and w2's free space is still 70 GiB: a fresh thin LV
    holds no data. p1 (60 GiB more) must not be promised w2: LINSTOR itself would refuse it there
    (min(70 x 1, 70 x 1 - 60) = 10 GiB, linstor.capacity). Before, the extender judged pools by the
    REST free_capacity alone: the hold was released and w2 passed again."""
    from .test_reservations import cluster, holds, passing, pod, select

    with cluster(poll_interval=0.5, setup=a_70_gib_thin_pool_on_w2) as (emu, ks, http, _):
        assert "w2" in passing(http, pod(0))
        select(ks, "data-0", "w2")
        wait_for(lambda: holds(http).get("default/data-0") == (("w2",), "selected"), what="the hold on w2")
        assert "w2" not in passing(http, pod(1)), "60 of w2's 70 GiB are promised"
        provision(emu, ks, "data-0", "w2")
        wait_for(lambda: "default/data-0" not in holds(http), what="LINSTOR's poll shows the volume")
        assert "w2" not in passing(http, pod(1)), "the volume LINSTOR lists takes 60 of w2's 70 GiB"


def test_with_linstors_default_ratio_a_thin_pool_admits_twenty_times_its_space_less_its_volumes():
    """The same 70 GiB thin pool on w2 without ratio properties: LINSTOR's default for thin pools,
    MaxOversubscriptionRatio 20 (StorPool.java getOversubscriptionRatio; LinStor.java
    OVERSUBSCRIPTION_RATIO_DEFAULT), admits min(70 x 20, 70 x 20 - reserved). p1 passes w2 after p0's
    volume is there, as LINSTOR would place it there; the volume still counts: a claim of 1,390 GiB
    fits w2 before (1,400 GiB) and no longer after (1,340 GiB). w3's 30 GiB free admit 600 GiB."""
    from devkit import kube_objects as k

    from .test_reservations import cluster, holds, passing, pod, select

    def setup(emu, ks):
        a_70_gib_thin_pool_on_w2(emu, ks)
        ks.add(k.pvc("huge", storage_class="local", size="1390Gi"))

    huge = k.pod("p-huge", claims=["huge"])
    with cluster(poll_interval=0.5, ratio=None, setup=setup) as (emu, ks, http, _):
        assert explained(http, huge)["w2"] == "pass", "1,400 GiB on w2 by LINSTOR's rule"
        assert passing(http, pod(0)) == ["w1", "w2", "w3"], "30 GiB free x 20 is room for 60 GiB"
        select(ks, "data-0", "w2")
        wait_for(lambda: holds(http).get("default/data-0") == (("w2",), "selected"), what="the hold on w2")
        provision(emu, ks, "data-0", "w2")
        wait_for(lambda: "default/data-0" not in holds(http), what="LINSTOR's poll shows the volume")
        assert explained(http, huge)["w2"] == "fail", "w2 admits 1,340 GiB now: its volume counts"
        assert "w2" in passing(http, pod(1)), "LINSTOR would place p1 on w2: 1,340 GiB admitted"
