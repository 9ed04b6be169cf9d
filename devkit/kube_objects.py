"""Builders of Kubernetes objects in their JSON form, for the demo cluster, tests and benchmarks.

Complete enough for the official client's strict models (the API stand-in serves them) and for
our own readers; nothing here is used by production code paths.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from linstor_scheduler.kube import objects
from linstor_scheduler.volumes import CSI_DRIVER, PARAM_PREFIX

ZONE = "topology.kubernetes.io/zone"
REGION = "topology.kubernetes.io/region"


def node(name: str, *, zone: str | None = None, region: str | None = None, ready: bool = True,
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    all_labels = {"kubernetes.io/hostname": name, "linbit.com/hostname": name, **(labels or {})}
    if zone:
        all_labels[ZONE] = zone
    if region:
        all_labels[REGION] = region
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "reason": "KubeletReady" if ready else "NodeStatusUnknown"}]},
    }


def full_node(name: str, *, zone: str | None = None, region: str | None = None, ready: bool = True) -> dict[str, Any]:
    """A Node as the kubelet registers and reports it (~3 KB of JSON before the API server's
    managedFields): the kubelet's labels and annotations, capacity, allocatable, addresses,
    nodeInfo, images (the kubelet reports up to 50; 6 here), daemonEndpoints and four conditions.
    What a component that follows every Node receives from its informer."""
    labels = {"node-role.kubernetes.io/worker": "", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    obj = node(name, zone=zone, region=region, ready=ready, labels=labels)
    objects.writable_meta(obj)["annotations"] = {
        "node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true",
        "csi.volume.kubernetes.io/nodeid": json.dumps({CSI_DRIVER: name})}
    obj["spec"] = {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}
    obj["status"].update({
        "capacity": {"cpu": "32", "memory": "131891432Ki", "pods": "110", "ephemeral-storage": "479151816Ki"},
        "allocatable": {"cpu": "31800m", "memory": "131276008Ki", "pods": "110", "ephemeral-storage": "441586867213"},
        "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"machineID": "a" * 32, "systemUUID": "b" * 36, "bootID": "c" * 36,
                     "kernelVersion": "6.1.0-18-amd64",
                     "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.13",
                     "kubeletVersion": "v1.31.2", "kubeProxyVersion": "v1.31.2", "operatingSystem": "linux",
                     "architecture": "amd64"},
        "images": [{"names": [f"registry.example/image-{i}@sha256:{'d' * 64}", f"registry.example/image-{i}:v1"],
                    "sizeBytes": 123456789} for i in range(6)],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    })
    obj["status"]["conditions"] += [{"type": t, "status": "False", "reason": f"No{t}",
                                      "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z", "message": f"kubelet has no {t}"}
                                     for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
    return obj


def storage_class(name: str, *, pool: str | None = "thindata", replicas: int | None = 2,
                  remote: bool | list[dict[str, Any]] = True, wffc: bool = True,
                  provisioner: str = CSI_DRIVER, extra: dict[str, str] | None = None) -> dict[str, Any]:
    params: dict[str, str] = {}
    if pool:
        params[PARAM_PREFIX + "storagePool"] = pool
    if replicas:
        params[PARAM_PREFIX + "placementCount"] = str(replicas)
    if isinstance(remote, list):
        params[PARAM_PREFIX + "allowRemoteVolumeAccess"] = yaml.safe_dump(remote, default_flow_style=False)
    else:
        params[PARAM_PREFIX + "allowRemoteVolumeAccess"] = "true" if remote else "false"
    params.update(extra or {})
    return {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": provisioner, "parameters": params,
        "reclaimPolicy": "Delete", "allowVolumeExpansion": True,
        "volumeBindingMode": "WaitForFirstConsumer" if wffc else "Immediate",
    }


# What the PV controller and external-provisioner write on the objects they bind and create
# (kubernetes pkg/controller/volume/persistentvolume/pv_controller.go ``bindClaimToVolume``
# (bind-completed, bound-by-controller), ``setClaimProvisioner`` (storage-provisioner);
# kubernetes-csi/external-provisioner pkg/controller/controller.go ``Provision`` (provisioned-by,
# the deletion-secret annotations, the finalizer, the provisioner identity attribute)).
PVC_BOUND_ANNOTATIONS = {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
                         "volume.beta.kubernetes.io/storage-provisioner": CSI_DRIVER,
                         "volume.kubernetes.io/storage-provisioner": CSI_DRIVER}
PV_ANNOTATIONS = {"pv.kubernetes.io/provisioned-by": CSI_DRIVER,
                  "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                  "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""}
PROVISIONER_IDENTITY = "1764547200000-8081-" + CSI_DRIVER


def pvc(name: str, *, namespace: str = "default", storage_class: str | None = "linstor-thindata-r2",
        size: str = "10Gi", volume: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A claim as the API server returns it: bound ones with the PV controller's annotations, the
    protection finalizer and the bound status."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                            "volumeMode": "Filesystem"}
    if storage_class:
        spec["storageClassName"] = storage_class
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "finalizers": ["kubernetes.io/pvc-protection"]}
    if labels:
        meta["labels"] = labels
    status: dict[str, Any] = {"phase": "Pending"}
    if volume:
        spec["volumeName"] = volume
        meta["annotations"] = dict(PVC_BOUND_ANNOTATIONS)
        status = {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec, "status": status}


def pv(name: str, *, claim: tuple[str, str] | None = None, storage_class: str = "linstor-thindata-r2",
       size: str = "10Gi", driver: str = CSI_DRIVER, handle: str | None = None,
       affinity_nodes: list[str] | None = None) -> dict[str, Any]:
    """A PV as external-provisioner creates it; ``affinity_nodes``: one node selector term per node
    (the provisioner turns each accessible topology segment linstor-csi returns into a term)."""
    spec: dict[str, Any] = {
        "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Delete", "storageClassName": storage_class, "volumeMode": "Filesystem",
        "csi": {"driver": driver, "volumeHandle": handle or name, "fsType": "ext4",
                "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": PROVISIONER_IDENTITY}},
    }
    if claim:
        spec["claimRef"] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": claim[0],
                            "name": claim[1], "resourceVersion": "1", "uid": f"uid-{claim[0]}-{claim[1]}"}
    if affinity_nodes is not None:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "linbit.com/hostname", "operator": "In", "values": affinity_nodes}]}]}}
    meta = {"name": name, "annotations": dict(PV_ANNOTATIONS) if driver == CSI_DRIVER else {},
            "finalizers": ["external-provisioner.volume.kubernetes.io/finalizer", "kubernetes.io/pv-protection"]}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta, "spec": spec,
            "status": {"phase": "Bound" if claim else "Available",
                       "lastPhaseTransitionTime": "2026-12-01T00:00:00Z"}}


def pod(name: str, *, namespace: str = "default", claims: list[str] = (), ephemeral: dict[str, dict] | None = None,
        scheduler: str = "linstor", labels: dict[str, str] | None = None, node_name: str | None = None,
        extra_volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A pod mounting ``claims`` (PVC names) and generic ephemeral volumes ``{volume: template}``."""
    volumes: list[dict[str, Any]] = [
        {"name": f"vol{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)
    ]
    for vol_name, template in (ephemeral or {}).items():
        volumes.append({"name": vol_name, "ephemeral": {"volumeClaimTemplate": template}})
    volumes += extra_volumes or []
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [{"name": "app", "image": "busybox",
                        "volumeMounts": [{"name": v["name"], "mountPath": f"/mnt/{v['name']}"} for v in volumes]}],
        "volumes": volumes,
    }
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": spec, "status": {"phase": "Pending"}}


def claim_template(storage_class: str, size: str = "1Gi") -> dict[str, Any]:
    return {"spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                     "resources": {"requests": {"storage": size}}}}


def bound_volume(claim_name: str, resource: str, *, namespace: str = "default",
                 storage_class: str = "linstor-thindata-r2", size: str = "10Gi",
                 affinity_nodes: list[str] | None = None, labels: dict[str, str] | None = None,
                 ) -> list[dict[str, Any]]:
    """A PVC bound to a LINSTOR PV whose volumeHandle is ``resource``."""
    return [pvc(claim_name, namespace=namespace, storage_class=storage_class, size=size, volume=resource,
                labels=labels),
            pv(resource, claim=(namespace, claim_name), storage_class=storage_class, size=size,
               affinity_nodes=affinity_nodes)]


def volume_attachment(pv_name: str, node_name: str, *, attacher: str = CSI_DRIVER, attached: bool = True,
                      name: str | None = None) -> dict[str, Any]:
    """A VolumeAttachment as the attach/detach controller creates it (name: ``csi-<hash>`` in real life)."""
    return {
        "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
        "metadata": {"name": name or f"csi-{pv_name}-{node_name}-{attacher.split('.')[0]}"},
        "spec": {"attacher": attacher, "nodeName": node_name, "source": {"persistentVolumeName": pv_name}},
        "status": {"attached": attached},
    }
