"""The LINSTOR emulator keeps the real contract: its answers validate against the official OpenAPI
spec, and LINBIT's own python-linstor client can use it."""

from __future__ import annotations

from pathlib import Path

import httpx
import linstor
import pytest
from jsonschema import ValidationError

from devkit.linstor_emulator import LinstorEmulator

from .openapi_check import validate, validate_schema


@pytest.fixture
def emu_setup():
    """The served emulator ``emu`` (tests/conftest.py) of this module: a satellite with a thin pool, an OFFLINE one
    with a thick pool, a controller-only node; pvc-1 in use on w1, syncing on w2, a tie-breaker on ctl; quorum
    properties on every level."""
    def setup(emu: LinstorEmulator) -> None:
        emu.add_node("w1")
        emu.add_node("w2", connection_status="OFFLINE")
        emu.add_node("ctl", type="CONTROLLER", providers=())
        emu.add_storage_pool("w1", "thindata", "LVM_THIN")
        emu.add_storage_pool("w2", "data", "LVM")
        emu.add_resource("pvc-1", "w1", in_use=True)
        emu.add_resource("pvc-1", "w2", storage_pool="data")
        emu.set_disk_state("pvc-1", "w2", "Inconsistent", sync_peer="w1", done_percentage=12.5)
        emu.add_resource("pvc-1", "ctl", diskful=False, flags=["TIE_BREAKER"])
        emu.set_controller_props({"DrbdOptions/Resource/on-no-quorum": "suspend-io"})
        emu.set_rd_props("pvc-1", {"DrbdOptions/Resource/quorum": "majority"}, resource_group="ha")
        emu.set_resource_group("ha", {"DrbdOptions/Resource/quorum": "majority"})
    return setup


@pytest.mark.parametrize(
    ("url", "spec_path"),
    [
        ("/v1/nodes", "/v1/nodes"),
        ("/v1/view/storage-pools", "/v1/view/storage-pools"),
        ("/v1/nodes/w1/storage-pools", "/v1/nodes/{node}/storage-pools"),
        ("/v1/view/resources", "/v1/view/resources"),
        ("/v1/resource-definitions", "/v1/resource-definitions"),
        ("/v1/resource-groups", "/v1/resource-groups"),
        ("/v1/controller/properties", "/v1/controller/properties"),
        ("/v1/storage-pool-definitions", "/v1/storage-pool-definitions"),
        ("/v1/resource-definitions/pvc-1/resources", "/v1/resource-definitions/{resource}/resources"),
        ("/v1/controller/version", "/v1/controller/version"),
    ],
)
def test_get_responses_validate_against_the_spec(emu, url, spec_path):
    r = httpx.get(emu.url + url)
    assert r.status_code == 200
    validate(r.json(), spec_path)


def test_sizes_and_ratios_as_linstor_reports_them(emu):
    """A thin pool keeps its free space when a volume is created in it, a thick one loses the volume's
    gross size; the storage layer's usable size is that gross size (what LINSTOR reserves of the pool:
    linstor.capacity), the volume's own usable_size_kib is not set (linstor-server Json.apiToVolume);
    pool and pool-definition props are served where LINSTOR serves them."""
    from devkit.linstor_emulator import gross_kib

    def pool(node, name):
        return next(p for p in httpx.get(emu.url + "/v1/view/storage-pools").json()
                    if (p["node_name"], p["storage_pool_name"]) == (node, name))

    thin_free, thick_free = pool("w1", "thindata")["free_capacity"], pool("w2", "data")["free_capacity"]
    emu.add_resource("pvc-2", "w1", size_kib=10 * 1024**2)
    emu.add_resource("pvc-2", "w2", storage_pool="data", size_kib=10 * 1024**2)
    gross = gross_kib(10 * 1024**2)
    assert 10 * 1024**2 < gross < 10 * 1024**2 + 8 * 1024, "DRBD's meta-data, rounded up to 4 MiB extents"
    assert pool("w1", "thindata")["free_capacity"] == thin_free
    assert pool("w2", "data")["free_capacity"] == thick_free - gross
    items = {r["node_name"]: r for r in httpx.get(emu.url + "/v1/view/resources?resources=pvc-2").json()}
    for node, allocated in (("w1", 0), ("w2", gross)):
        vol = items[node]["volumes"][0]
        storage = next(layer["data"] for layer in vol["layer_data_list"] if layer["type"] == "STORAGE")
        assert (storage["usable_size_kib"], vol["allocated_size_kib"], "usable_size_kib" in vol) == \
            (gross, allocated, False)
    emu.remove_resource("pvc-2")
    assert pool("w2", "data")["free_capacity"] == thick_free, "a thick pool gets its space back"
    emu.set_pool_props("w1", "thindata", {"MaxOversubscriptionRatio": "1"})
    emu.set_pool_definition_props("data", {"MaxFreeCapacityOversubscriptionRatio": "2"})
    assert pool("w1", "thindata")["props"]["MaxOversubscriptionRatio"] == "1"
    definitions = {d["storage_pool_name"]: d["props"] for d in
                   httpx.get(emu.url + "/v1/storage-pool-definitions").json()}
    assert definitions == {"DfltDisklessStorPool": {}, "thindata": {},
                           "data": {"MaxFreeCapacityOversubscriptionRatio": "2"}}


def test_validation_can_fail():
    """The check is real: a node without its required name is refused."""
    with pytest.raises(ValidationError):
        validate([{"type": "SATELLITE"}], "/v1/nodes")


def test_error_and_write_answers_validate(emu):
    r = httpx.get(emu.url + "/v1/resource-definitions/nope/resources")
    assert r.status_code == 404
    # The spec declares OperationFailed as one ApiCallRc; controllers send a list (third_party/linstor/NOTES.md).
    validate_schema(r.json(), "ApiCallRcList")
    r = httpx.post(emu.url + "/v1/nodes/w1/storage-pools",
                   json={"storage_pool_name": "fast", "provider_kind": "LVM", "props": {"StorDriver/LvmVg": "vg1"}})
    assert r.status_code == 201
    validate_schema(r.json(), "ApiCallRcList")
    with pytest.raises(ValidationError):
        validate_schema([{"message": "no ret_code"}], "ApiCallRcList")


def test_python_linstor_reads_and_writes(emu):
    port = emu.url.rsplit(":", 1)[1]
    with linstor.Linstor(f"linstor://127.0.0.1:{port}") as lin:
        nodes = {n.name: (n.connection_status, n.type) for n in lin.node_list_raise().nodes}
        assert nodes == {"w1": ("ONLINE", "SATELLITE"), "w2": ("OFFLINE", "SATELLITE"),
                         "ctl": ("ONLINE", "CONTROLLER")}
        pools = {(p.node_name, p.name): p.provider_kind for p in lin.storage_pool_list_raise().storage_pools}
        assert pools[("w1", "thindata")] == "LVM_THIN" and pools[("w2", "data")] == "LVM"
        volumes = {(r.name, r.node_name): [v.state.disk_state for v in r.volumes]
                   for r in lin.volume_list_raise().resources}
        assert volumes[("pvc-1", "w1")] == ["UpToDate"] and volumes[("pvc-1", "w2")] == ["Inconsistent"]
        replies = lin.storage_pool_create("w1", "fast", "LVM", "vg_fast")
        assert replies and all(r.is_success() for r in replies)
        replies = lin.storage_pool_create("w1", "fastthin", "LVM_THIN", "vg_fast/thin")
        assert all(r.is_success() for r in replies)
        replies = lin.storage_pool_create("nope", "fast", "LVM", "vg_fast")
        assert any(r.is_error() for r in replies)
    pools = {(p["node_name"], p["storage_pool_name"]): p["props"] for p in emu.snapshot()["storage_pools"]}
    assert pools[("w1", "fastthin")]["StorDriver/LvmVg"] == "vg_fast"
    assert pools[("w1", "fastthin")]["StorDriver/ThinPool"] == "thin"


def test_storage_pool_rules(emu):
    def post(node, body):
        return httpx.post(f"{emu.url}/v1/nodes/{node}/storage-pools", json=body)

    r = post("w1", {"storage_pool_name": "x", "provider_kind": "LVM", "props": {}})
    assert r.status_code == 400 and "Invalid name" in r.json()[0]["message"]
    r = post("ctl", {"storage_pool_name": "data", "provider_kind": "LVM", "props": {}})
    assert r.status_code == 400 and "not supported" in r.json()[0]["message"]
    r = post("w1", {"storage_pool_name": "thindata", "provider_kind": "LVM_THIN", "props": {}})
    assert r.status_code == 409
    r = httpx.delete(f"{emu.url}/v1/nodes/w1/storage-pools/thindata")
    assert r.status_code == 409 and "pvc-1" in r.json()[0]["cause"]
    assert (r.json()[0]["ret_code"] & 0xC000000000000000) == 0xC000000000000000


def test_the_emulator_says_no_to_pools_as_linstor_does(emu):
    """Property values are checked against the REST spec's regex, and names compare case-insensitively:
    a client that sends what the real controller refuses is refused here too."""
    def post(name, props):
        return httpx.post(f"{emu.url}/v1/nodes/w1/storage-pools",
                          json={"storage_pool_name": name, "provider_kind": "LVM", "props": props})

    r = post("dotted", {"StorDriver/LvmVg": "vg.data"})
    assert r.status_code == 400
    assert r.json()[0]["message"] == "The value 'vg.data' is not valid for the key 'StorDriver/LvmVg'"
    r = post("ThinData", {"StorDriver/LvmVg": "vg0"})
    assert r.status_code == 409 and r.json()[0]["message"] == "Storage pool 'thindata' on node 'w1' already exists."
    assert post("plain", {"StorDriver/LvmVg": "vg_0-a"}).status_code == 201


def test_names_are_compared_case_insensitively_on_every_path(emu):
    """LINSTOR keeps a name as created and finds it by its upper-cased value (linstor-server
    com.linbit.GenericName, the base of NodeName, StorPoolName, ResourceName, ResourceGroupName):
    'W1' is node w1, answered as 'w1'. The emulator matched only list filters so; a path or a lookup
    in another case found nothing (404) or made a second object."""
    port = emu.url.rsplit(":", 1)[1]
    with linstor.Linstor(f"linstor://127.0.0.1:{port}") as lin:
        assert [n.name for n in lin.node_list_raise(filter_by_nodes=["W1"]).nodes] == ["w1"]
        pools = lin.storage_pool_list_raise(filter_by_nodes=["W2"], filter_by_stor_pools=["DATA"]).storage_pools
        assert [(p.node_name, p.name) for p in pools] == [("w2", "data")]
        assert all(r.is_success() for r in lin.storage_pool_create("W1", "Fast", "LVM", "vg_fast"))
        made = {p.name: p.node_name for p in lin.storage_pool_list_raise(filter_by_nodes=["w1"]).storage_pools}
        assert made["Fast"] == "w1", "the pool is the node's as LINSTOR spells it"
        again = lin.storage_pool_create("w1", "FAST", "LVM", "vg_other")
        assert any(r.is_error() for r in again), "one pool, whatever the case"
        assert all(r.is_success() for r in lin.storage_pool_delete("W1", "fast"))
        assert "Fast" not in {p.name for p in lin.storage_pool_list_raise(filter_by_nodes=["w1"]).storage_pools}
        in_use = lin.storage_pool_delete("W1", "THINDATA")
        assert any(r.is_error() and "pvc-1" in (r.cause or "") for r in in_use), "found, and in use"
        resources = lin.resource_list_raise(filter_by_nodes=["W2"], filter_by_resources=["PVC-1"]).resources
        assert [(r.name, r.node_name) for r in resources] == [("pvc-1", "w2")]
        rds = lin.resource_dfn_list_raise(filter_by_resource_definitions=["PVC-1"]).resource_definitions
        assert [d.name for d in rds] == ["pvc-1"]
        groups = lin.resource_group_list_raise(filter_by_resource_groups=["HA"]).resource_groups
        assert [g.name for g in groups] == ["ha"]
    # the paths python-linstor does not take
    assert httpx.get(f"{emu.url}/v1/nodes/W1").json()["name"] == "w1"
    assert {p["storage_pool_name"] for p in httpx.get(f"{emu.url}/v1/nodes/W2/storage-pools").json()} >= {"data"}
    assert httpx.get(f"{emu.url}/v1/resource-definitions/PVC-1").json()["name"] == "pvc-1"
    replicas = httpx.get(f"{emu.url}/v1/resource-definitions/Pvc-1/resources").json()
    assert sorted(r["node_name"] for r in replicas) == ["ctl", "w1", "w2"]
    # lookups behind properties: the group an rd names, in any case, is the one group
    emu.set_resource_group("HA", {"DrbdOptions/Resource/on-no-quorum": "io-error"})
    emu.set_rd_props("PVC-1", {}, resource_group="Ha")
    groups = {g["name"]: g["props"] for g in httpx.get(f"{emu.url}/v1/resource-groups").json()}
    assert "HA" not in groups and groups["ha"]["DrbdOptions/Resource/on-no-quorum"] == "io-error"
    assert httpx.get(f"{emu.url}/v1/resource-definitions/pvc-1").json()["resource_group_name"] == "ha"
    # and the test-facing calls: a node, a replica, a pool named in another case are the same ones
    emu.set_node_status("W2", "ONLINE")
    emu.set_disk_state("PVC-1", "W2", "UpToDate")
    emu.set_pool_free("W2", "Data", 5)
    view = {(i["name"], i["node_name"]): i for i in httpx.get(f"{emu.url}/v1/view/resources").json()}
    assert view[("pvc-1", "w2")]["volumes"][0]["state"]["disk_state"] == "UpToDate"
    assert {n["name"]: n["connection_status"] for n in httpx.get(f"{emu.url}/v1/nodes").json()}["w2"] == "ONLINE"
    with pytest.raises(ValueError, match="Node 'w1' already exists"):
        emu.add_node("W1")
    with pytest.raises(ValueError, match="Storage pool 'data' on node 'w2' already exists"):
        emu.add_storage_pool("w2", "DATA", "LVM")


def test_a_write_can_be_carried_out_and_its_answer_lost(emu):
    emu.inject(lose_answer=1, path_prefix="/v1/nodes/w1/storage-pools")
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{emu.url}/v1/nodes/w1/storage-pools",
                   json={"storage_pool_name": "lost", "provider_kind": "LVM", "props": {"StorDriver/LvmVg": "vg9"}})
    pools = httpx.get(f"{emu.url}/v1/view/storage-pools?nodes=w1").json()
    assert "lost" in {p["storage_pool_name"] for p in pools}, "the write was carried out"


def test_faults_and_state_changes(emu):
    emu.inject(fail=1, status=503, path_prefix="/v1/nodes")
    r = httpx.get(emu.url + "/v1/nodes")
    assert r.status_code == 503 and r.json()[0]["message"] == "Injected failure"
    assert httpx.get(emu.url + "/v1/nodes").status_code == 200
    emu.inject(garbage=1, path_prefix="/v1/nodes")
    assert httpx.get(emu.url + "/v1/nodes").content == b"[{this is not json"
    emu.inject(drop=1, path_prefix="/v1/nodes")
    with pytest.raises(httpx.TransportError):
        httpx.get(emu.url + "/v1/nodes")
    emu.set_node_status("w1", "OFFLINE")
    emu.set_connection("pvc-1", "w2", "w1", False)
    items = {(i["name"], i["node_name"]): i for i in httpx.get(emu.url + "/v1/view/resources").json()}
    assert items[("pvc-1", "w2")]["layer_object"]["drbd"]["connections"]["w1"]["connected"] is False
    assert {n["name"]: n["connection_status"] for n in httpx.get(emu.url + "/v1/nodes").json()}["w1"] == "OFFLINE"
    repl = items[("pvc-1", "w2")]["volumes"][0]["state"]["replication_states"]["w1"]
    assert repl == {"replication_state": "SyncTarget", "done_percentage": 12.5}


def test_filters(emu):
    got = httpx.get(emu.url + "/v1/view/resources", params=[("nodes", "w1"), ("nodes", "w2")]).json()
    assert sorted(i["node_name"] for i in got) == ["w1", "w2"]
    got = httpx.get(emu.url + "/v1/view/storage-pools", params={"storage_pools": "data"}).json()
    assert [(i["node_name"], i["storage_pool_name"]) for i in got] == [("w2", "data")]


# --- the DRBD model: network events on the reachability matrix -----------------------------------
@pytest.fixture
def drbd():
    """Three nodes; r2 = two diskful replicas and a diskless tie-breaker, in use (Primary) on a1."""
    emu = LinstorEmulator()
    for name in ("a1", "a2", "a3"):
        emu.add_node(name)
        emu.add_storage_pool(name, "thindata", "LVM_THIN")
    emu.set_controller_props({"DrbdOptions/Resource/on-no-quorum": "suspend-io"})
    emu.add_resource("r2", "a1", in_use=True)
    emu.add_resource("r2", "a2")
    emu.add_resource("r2", "a3", diskful=False, flags=["TIE_BREAKER"])
    with emu.serve() as srv:
        emu.url = srv.url
        yield emu


def view(emu) -> dict[tuple[str, str], dict]:
    return {(i["name"], i["node_name"]): i for i in httpx.get(emu.url + "/v1/view/resources").json()}


def drbd_of(emu, node: str) -> dict:
    return view(emu)[("r2", node)]["layer_object"]["drbd"]


def test_healthy_replicas_report_connected_peers_and_the_primary_blocks_promotion(drbd):
    assert drbd_of(drbd, "a2")["connections"] == {"a1": {"connected": True, "message": "Connected"},
                                                  "a3": {"connected": True, "message": "Connected"}}
    assert drbd_of(drbd, "a2")["may_promote"] is False, "a connected Primary (a1): no second one"
    assert drbd_of(drbd, "a1")["may_promote"] is False, "already Primary"
    assert drbd_of(drbd, "a2")["promotion_score"] > drbd_of(drbd, "a3")["promotion_score"]


def test_power_loss_the_satellite_is_offline_and_its_state_unknown_peers_may_promote(drbd):
    drbd.power_off("a1")
    assert {n["name"]: n["connection_status"] for n in httpx.get(drbd.url + "/v1/nodes").json()}["a1"] == "OFFLINE"
    lost = view(drbd)[("r2", "a1")]
    assert lost["state"] == {} and all("state" not in v for v in lost["volumes"]), "unknown, not the last good"
    assert "may_promote" not in lost["layer_object"]["drbd"] and "connections" not in lost["layer_object"]["drbd"]
    a2 = drbd_of(drbd, "a2")
    assert a2["connections"]["a1"] == {"connected": False, "message": "Connecting"}
    assert a2["may_promote"] is True, "1 of 2 voters kept by the diskless tie-breaker, UpToDate, no Primary left"
    drbd.power_off("a3")
    # DRBD >= 9.1.13: a1 left a2's quorate partition without quorum ("quorumless"), so a2 keeps it
    # alone (drbd9-tests tests/quorum-check-quorumless); a1 coming back alone could not promote either.
    assert drbd_of(drbd, "a2")["may_promote"] is True, "a1 is quorumless: a2 keeps quorum"
    drbd.power_off("a2")
    drbd.heal("a1")
    assert drbd_of(drbd, "a1")["may_promote"] is False, "a1 restarts alone: 1 of 2 voters, no tie-breaker"
    drbd.power_on("a2")
    drbd.heal("a1")
    drbd.heal("a3")
    assert drbd_of(drbd, "a2")["may_promote"] is False and drbd_of(drbd, "a2")["connections"]["a1"]["connected"]


def test_controller_partition_changes_what_linstor_knows_not_drbd(drbd):
    drbd.cut_controller("a1")
    assert view(drbd)[("r2", "a1")]["state"] == {}
    assert drbd_of(drbd, "a2")["connections"]["a1"]["connected"] is True, "DRBD still replicates"
    assert not drbd.io_suspended("r2", "a1")


def test_cut_from_its_peers_the_primary_loses_quorum_and_suspends_io(drbd):
    drbd.cut_peers("a1")
    assert drbd_of(drbd, "a1")["connections"] == {"a2": {"connected": False, "message": "Connecting"},
                                                  "a3": {"connected": False, "message": "Connecting"}}
    assert drbd.io_suspended("r2", "a1") and not drbd.has_quorum("r2", "a1")
    assert drbd_of(drbd, "a2")["may_promote"] is True
    drbd.set_rd_props("r2", {"DrbdOptions/Resource/quorum": "1"})
    assert drbd.has_quorum("r2", "a1") and not drbd.io_suspended("r2", "a1"), "quorum=1: a lone node writes on"
    drbd.set_rd_props("r2", {"DrbdOptions/Resource/quorum": "majority"})
    drbd.cut_peers("a1", cut=False)
    assert not drbd.io_suspended("r2", "a1")


def test_one_resource_link_only(drbd):
    drbd.add_resource("other", "a1")
    drbd.add_resource("other", "a2")
    drbd.cut_peers("a1", ["a2"], resource="r2")
    items = view(drbd)
    assert items[("r2", "a2")]["layer_object"]["drbd"]["connections"]["a1"]["connected"] is False
    assert items[("other", "a2")]["layer_object"]["drbd"]["connections"]["a1"]["connected"] is True


def test_network_events_reach_the_promotion_stream(drbd):
    import asyncio

    from linstor_scheduler.linstor.client import LinstorClient

    async def first_event():
        async with LinstorClient(drbd.url) as client:
            async for event, data in client.events("/v1/events/drbd/promotion"):
                return event, data

    async def scenario():
        task = asyncio.create_task(first_event())
        while not drbd._subscribers:
            await asyncio.sleep(0.01)
        drbd.power_off("a1")
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(scenario()) == ("may-promote-change", {"resource_name": "r2", "node_name": "a2",
                                                              "may_promote": True})


def test_unknown_and_disconnected_states_validate_against_the_spec(drbd):
    drbd.power_off("a1")
    drbd.cut_peers("a2", ["a3"])
    validate(httpx.get(drbd.url + "/v1/view/resources").json(), "/v1/view/resources")
    validate(httpx.get(drbd.url + "/v1/nodes").json(), "/v1/nodes")
    validate(httpx.get(drbd.url + "/v1/resource-definitions/r2/resources").json(),
             "/v1/resource-definitions/{resource}/resources")


def test_python_linstor_reads_a_powered_off_satellite(drbd):
    drbd.power_off("a1")
    port = drbd.url.rsplit(":", 1)[1]
    with linstor.Linstor(f"linstor://127.0.0.1:{port}") as lin:
        nodes = {n.name: n.connection_status for n in lin.node_list_raise().nodes}
        assert nodes == {"a1": "OFFLINE", "a2": "ONLINE", "a3": "ONLINE"}
        resources = {(r.name, r.node_name): r for r in lin.resource_list_raise().resources}
        assert set(resources) == {("r2", "a1"), ("r2", "a2"), ("r2", "a3")}
        volumes = {(r.name, r.node_name): [v.state.disk_state if v.state else None for v in r.volumes]
                   for r in lin.volume_list_raise().resources}
        assert volumes[("r2", "a2")] == ["UpToDate"]
        assert volumes[("r2", "a1")] != ["UpToDate"], "not the last good state"


def test_the_spec_is_part_of_the_repository():
    """A clone alone runs the spec checks above (none skips): the spec is in third_party/linstor with
    its source, version and licence noted."""
    from .openapi_check import SPEC_PATH, load_spec

    root = Path(__file__).resolve().parents[1]
    assert SPEC_PATH.is_relative_to(root) and SPEC_PATH.is_file()
    readme = (SPEC_PATH.parent / "README.md").read_text()
    assert "linstor-server" in readme and "GPL-3.0" in readme
    assert f"`info.version` {load_spec()['info']['version']}" in readme


def test_a_replica_added_after_an_event_is_a_member_not_quorumless():
    """r (b1 Primary, b2) lives through an event (the controller loses b1 for a moment), then gets
    replicas on b3 and b4. When b3 and b4 lose power, b1 must count them as unknown (they might be up
    together), not as nodes that left its partition without quorum: 2 of 4 voters, no tie-breaker,
    no quorum (drbd_state.c update_members: a fresh peer joins the members)."""
    emu = LinstorEmulator()
    for name in ("b1", "b2", "b3", "b4"):
        emu.add_node(name)
    emu.add_resource("r", "b1", in_use=True)
    emu.add_resource("r", "b2")
    emu.cut_controller("b1")
    emu.cut_controller("b1", cut=False)
    emu.add_resource("r", "b3")
    emu.add_resource("r", "b4")
    assert emu.has_quorum("r", "b1")
    emu.power_off("b3", "b4")
    assert not emu.has_quorum("r", "b1") and not emu.has_quorum("r", "b2")
