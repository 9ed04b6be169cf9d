"""What fencing keeps instead of the objects: a Node's and one of our VolumeAttachments'
records (fencing/records.py), a replica's peers as a flat tuple (verdict.Peers), a definition's
quorum options only (compact.QuorumPropsItem). Each must read exactly as the object did."""

from __future__ import annotations

import msgspec

from devkit import kube_objects as k
from fencing.actions import has_taint, index_attachments
from fencing.kubeview import CachedKube
from fencing.observe import kube_ready, pool_kinds, storage_nodes
from fencing.records import (
    TRANSFORMS,
    AttachmentRecord,
    NodeRecord,
    attachment_object,
    attachment_record,
    node_object,
    node_record,
)
from fencing.verdict import POLICY_KEYS, Peers
from linstor_scheduler.linstor.compact import ResourceDefinitionItem, StoragePoolItem
from linstor_scheduler.linstor.models import ResourceDefinition
from linstor_scheduler.volumes import CSI_DRIVER


def _node(**kw):
    obj = k.full_node("n1", zone="z1", **kw)
    obj["metadata"].update({"uid": "u-1", "resourceVersion": "42"})
    return obj


def test_a_node_record_reads_as_the_object():
    obj = _node()
    obj["spec"]["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                             {"key": "linstor.csi.linbit.com/storage-lost", "effect": "NoSchedule",
                              "timeAdded": "2026-01-01T00:00:00Z"}]
    record = node_record(obj)
    assert record == NodeRecord("n1", "u-1", "42", True, tuple(tuple(t.items()) for t in obj["spec"]["taints"]))
    assert kube_ready(record) is kube_ready(obj) is True
    assert has_taint(record) and has_taint(obj)
    # what a taint patch and an Event read: every taint whole, in order; name, UID, resourceVersion
    back = node_object(record)
    assert back["spec"]["taints"] == obj["spec"]["taints"]
    assert back["metadata"] == {"name": "n1", "uid": "u-1", "resourceVersion": "42"}
    assert back["kind"] == "Node" and back["apiVersion"] == "v1"
    assert node_record(back) == record


def test_ready_as_the_condition_says_and_not_ready_without_one():
    assert node_record(_node(ready=False)).ready is False
    bare = _node()
    bare["status"]["conditions"] = [c for c in bare["status"]["conditions"] if c["type"] != "Ready"]
    assert node_record(bare).ready is False and kube_ready(bare) is False
    unknown = _node()
    unknown["status"]["conditions"][0]["status"] = "Unknown"
    assert kube_ready(node_record(unknown)) is False
    assert kube_ready(None) is None
    assert not has_taint(node_record(_node())) and not has_taint(None)


def test_only_our_attachments_are_kept_and_indexed_by_pv_and_node():
    ours = k.volume_attachment("pvc-1", "n1")
    ours["metadata"]["uid"] = "va-1"
    theirs = k.volume_attachment("pvc-2", "n1", attacher="ebs.csi.aws.com")
    no_node = k.volume_attachment("pvc-3", "n1")
    del no_node["spec"]["nodeName"]
    record = attachment_record(ours)
    assert record == AttachmentRecord(ours["metadata"]["name"], "va-1", "pvc-1", "n1")
    assert attachment_record(theirs) is None and attachment_record(no_node) is None
    assert index_attachments([ours, theirs, no_node]) == index_attachments([record]) == {"pvc-1": {"n1": [record]}}
    back = attachment_object(record)
    assert back["spec"] == {"attacher": CSI_DRIVER, "nodeName": "n1", "source": {"persistentVolumeName": "pvc-1"}}
    assert back["metadata"] == {"name": ours["metadata"]["name"], "uid": "va-1"}


def test_the_informers_keep_records_of_nodes_and_attachments():
    from kubernetes import client as k8s

    from linstor_scheduler.claims import claim_record, volume_record

    caches = CachedKube(k8s.ApiClient()).caches  # built, not started: no API server needed
    assert caches["Node"].transform is node_record and caches["VolumeAttachment"].transform is attachment_record
    assert caches["PersistentVolumeClaim"].transform is claim_record
    assert caches["PersistentVolume"].transform is volume_record
    assert {"Node": node_record, "VolumeAttachment": attachment_record} == TRANSFORMS


def test_peers_read_as_the_dict_they_replace():
    as_dict = {"n2": True, "n3": False, "n4": None}
    peers = Peers(as_dict)
    assert Peers.from_flat(["n2", True, "n3", False, "n4", None]) == peers
    assert peers == as_dict and dict(peers) == as_dict and {**peers} == as_dict
    assert len(peers) == 3 and list(peers) == list(as_dict) and bool(peers) and not Peers()
    assert list(peers.items()) == list(as_dict.items()) and list(peers.values()) == list(as_dict.values())
    assert "n3" in peers and "n9" not in peers and True not in peers
    assert peers["n3"] is False and peers.get("n4") is None and peers.get("n9", True) is True
    assert peers != {"n2": True} and Peers(peers) == peers and hash(Peers(peers)) == hash(peers)
    try:
        peers["n9"]
    except KeyError:
        pass
    else:
        raise AssertionError("a peer that is not there must raise KeyError, as the dict did")


def test_a_definition_keeps_exactly_its_quorum_options():
    props = {"DrbdOptions/Resource/quorum": "majority", "DrbdOptions/Resource/on-no-quorum": "io-error",
             "DrbdOptions/auto-quorum": "suspend-io", "DrbdOptions/Resource/quorum-minimum-redundancy": "2",
             "DrbdPrimarySetOn": "N1", "Aux/csi-provisioning-completed-by": "linstor-csi/v1.6.4",
             "DrbdOptions/Net/allow-two-primaries": "no"}
    for given in (props, {"DrbdPrimarySetOn": "N1"}, {}):
        body = msgspec.json.encode([{"name": "pvc-1", "props": given, "resource_group_name": "rg"}])
        compact = msgspec.json.decode(body, type=list[ResourceDefinitionItem])[0]
        model = msgspec.json.decode(body[1:-1], type=ResourceDefinition)
        assert compact.props == {k_: v for k_, v in model.props.items() if k_ in POLICY_KEYS}
        assert compact.resource_group_name == "rg"
    assert msgspec.json.decode(b'[{"name": "x"}]', type=list[ResourceDefinitionItem])[0].props == {}


def test_the_pools_kept_give_the_same_storm_population():
    from fencing.observe import LinstorView
    from linstor_scheduler.linstor.compact import NodeItem

    nodes = [NodeItem(n, "SATELLITE", [], "ONLINE") for n in ("n1", "n2", "n3")]
    pools = [StoragePoolItem("thin", "n1", "LVM_THIN", 1, 2), StoragePoolItem("thick", "n1", "LVM", 1, 2),
             StoragePoolItem("DfltDisklessStorPool", "n1", "DISKLESS"),
             StoragePoolItem("DfltDisklessStorPool", "n2", "DISKLESS"), StoragePoolItem("thin", "n3", "ZFS_THIN")]
    kept = pool_kinds(pools)
    assert len(kept) == 4  # n1 diskful, n1 diskless, n2 diskless, n3 diskful
    assert storage_nodes(LinstorView(nodes, {}, {}, 0.0, kept)) == storage_nodes(LinstorView(nodes, {}, {}, 0.0, pools))
    assert storage_nodes(LinstorView(nodes, {}, {}, 0.0, kept)) == ({"n1", "n3"}, {"n2"})
