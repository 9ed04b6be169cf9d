"""Which StorageClasses the cluster's storage pools call for, and what to change. Pure, no I/O.

For every non-diskless LINSTOR pool present on ``c`` nodes we want ``linstor-<pool>-r<N>`` for
N = 1..min(3, c). Only classes with our ``app.kubernetes.io/managed-by`` label are ever changed;
StorageClass parameters are immutable, so a stale managed class is *recreated* (delete + create),
keeping the user's labels and annotations (the default-class annotation, say). A class is never
deleted because its pool went away: that is reported (volumes may still use it).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from linstor_scheduler.kube import objects
from linstor_scheduler.linstor.models import StoragePool
from linstor_scheduler.volumes import CSI_DRIVER

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "linstor-scheduler"
POOL_ANNOTATION = "linstor-scheduler/storage-pool"
P = "linstor.csi.linbit.com/"
PROP = "property.linstor.csi.linbit.com/"

# Every class. WaitForFirstConsumer: the volume is placed after the pod's node is chosen (by our
# extender), so the first replica can be local. Delete: volumes of deleted claims are freed.
DEFAULT_PARAMETERS: dict[str, str] = {}
# Classes with 2 or more replicas. quorum=majority + on-no-quorum=suspend-io: a node cut off from
# its peers freezes I/O instead of writing data that diverges (split brain); fencing relies on it.
# on-no-data-accessible=suspend-io: when no replica is reachable, I/O waits instead of failing.
# on-suspended-primary-outdated=force-secondary: a primary frozen by an outdated disk steps down, so
# the pod can start elsewhere. rr-conflict=retry-connect: a resync conflict retries the connection
# instead of giving up. (The same set piraeus recommends for its HA controller.)
DEFAULT_REPLICATED_PARAMETERS: dict[str, str] = {
    PROP + "DrbdOptions/Resource/quorum": "majority",
    PROP + "DrbdOptions/Resource/on-no-quorum": "suspend-io",
    PROP + "DrbdOptions/Resource/on-no-data-accessible": "suspend-io",
    PROP + "DrbdOptions/Resource/on-suspended-primary-outdated": "force-secondary",
    PROP + "DrbdOptions/Net/rr-conflict": "retry-connect",
}

IN_SYNC, CREATE, RECREATE, CONFLICT, POOL_GONE = "in-sync", "create", "recreate", "conflict", "pool-gone"
# reports about pools (no class object to act on): a name no StorageClass can carry; provider kinds mixed
NO_CLASS, MIXED_PROVIDERS = "no-class", "mixed-providers"
STATES = (IN_SYNC, CREATE, RECREATE, CONFLICT, POOL_GONE, NO_CLASS, MIXED_PROVIDERS)

# The API server's rule for StorageClass names (apimachinery IsDNS1123Subdomain, at most 253 characters)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# LINSTOR's controller property that lets one volume's replicas sit in pools of different provider
# kinds (LINSTOR User's Guide, "Mixing storage pools of different storage providers"); off by default.
ALLOW_MIXING_PROP = "AllowMixingStoragePoolDriver"

# LINSTOR's own locality keeper (REST API property list, rest_v1_openapi.yaml): a resource that has
# been a diskless Primary for ``auto-diskful`` minutes gets a disk on that node (toggle-disk), and
# with ``auto-diskful-allow-cleanup`` (LINSTOR's controller default: True) the surplus diskful
# replica is removed once the resync finished. linstor-csi turns ``property.linstor.csi.linbit.com/<key>``
# parameters into LINSTOR properties of the volume's objects (its README: "override LINSTOR properties").
AUTO_DISKFUL = PROP + "DrbdOptions/auto-diskful"
AUTO_DISKFUL_CLEANUP = PROP + "DrbdOptions/auto-diskful-allow-cleanup"


@dataclass(frozen=True)
class AutoDiskful:
    """``autoDiskful`` of the class config: off unless ``after_minutes`` is set."""

    after_minutes: int | None = None
    allow_cleanup: bool = True

    @classmethod
    def from_mapping(cls, doc: Any) -> AutoDiskful:
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise ValueError("autoDiskful must be a mapping with afterMinutes and allowCleanup")
        unknown = set(doc) - {"afterMinutes", "allowCleanup"}
        if unknown:
            raise ValueError(f"unknown keys in autoDiskful: {', '.join(sorted(unknown))} "
                             "(known: afterMinutes, allowCleanup)")
        minutes = doc.get("afterMinutes")
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1):
            raise ValueError("autoDiskful.afterMinutes must be a whole number of minutes, 1 or more")
        cleanup = doc.get("allowCleanup", True)
        if not isinstance(cleanup, bool):
            raise ValueError("autoDiskful.allowCleanup must be true or false")
        return cls(minutes, cleanup)

    def parameters(self) -> dict[str, str]:
        if self.after_minutes is None:
            return {}
        return {AUTO_DISKFUL: str(self.after_minutes), AUTO_DISKFUL_CLEANUP: "True" if self.allow_cleanup else "False"}


@dataclass(frozen=True)
class ClassConfig:
    parameters: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PARAMETERS))
    replicated_parameters: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REPLICATED_PARAMETERS))
    reclaim_policy: str = "Delete"
    volume_binding_mode: str = "WaitForFirstConsumer"
    allow_volume_expansion: bool = True
    max_replicas: int = 3
    auto_diskful: AutoDiskful = field(default_factory=AutoDiskful)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> ClassConfig:
        """The config file's keys (camelCase, as in a StorageClass); unknown keys are an error."""
        known = {"parameters", "replicatedParameters", "reclaimPolicy", "volumeBindingMode",
                 "allowVolumeExpansion", "maxReplicas", "autoDiskful"}
        unknown = set(doc) - known
        if unknown:
            raise ValueError(f"unknown keys in the class config: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")
        base = cls()

        def strings(key: str, default: Mapping[str, str]) -> dict[str, str]:
            value = doc.get(key, default)
            if not isinstance(value, Mapping):
                raise ValueError(f"{key} must be a mapping of strings")
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}

        replicas = int(doc.get("maxReplicas", base.max_replicas))
        if not 1 <= replicas <= 9:
            raise ValueError("maxReplicas must be between 1 and 9")
        if doc.get("reclaimPolicy", "Delete") not in ("Delete", "Retain"):
            raise ValueError("reclaimPolicy must be Delete or Retain")
        if doc.get("volumeBindingMode", "WaitForFirstConsumer") not in ("WaitForFirstConsumer", "Immediate"):
            raise ValueError("volumeBindingMode must be WaitForFirstConsumer or Immediate")
        return cls(strings("parameters", base.parameters), strings("replicatedParameters", base.replicated_parameters),
                   doc.get("reclaimPolicy", base.reclaim_policy),
                   doc.get("volumeBindingMode", base.volume_binding_mode),
                   bool(doc.get("allowVolumeExpansion", base.allow_volume_expansion)), replicas,
                   AutoDiskful.from_mapping(doc.get("autoDiskful")))


def class_name(pool: str, replicas: int) -> str:
    return f"linstor-{pool}-r{replicas}"


def class_name_problem(pool: str) -> str | None:
    """Why LINSTOR pool ``pool`` can have no StorageClass (its class names are not names the API server
    accepts); None when it can. LINSTOR's own ``DfltStorPool``, or ``pool_ssd``, are such pools."""
    name = class_name(pool, 1)
    if len(class_name(pool, 9)) <= 253 and DNS1123_SUBDOMAIN.match(name):
        return None
    return (f"LINSTOR pool {pool} gets no StorageClass: {name} is not a valid StorageClass name (a lowercase "
            "DNS-1123 subdomain: a-z, 0-9, '-' and '.'; uppercase letters and '_' are refused). The pool is "
            f"left alone; for classes, register the storage under a name like {pool.lower().replace('_', '-')}")


def pool_kinds(pools: Iterable[StoragePool]) -> dict[str, dict[str, set[str]]]:
    """Pool name -> provider kind -> nodes, diskless pools left out."""
    out: dict[str, dict[str, set[str]]] = {}
    for pool in pools:
        if not pool.diskless:
            out.setdefault(pool.storage_pool_name, {}).setdefault(pool.provider_kind.upper(), set()).add(
                pool.node_name)
    return out


def mixed_pools(pools: Iterable[StoragePool]) -> list[str]:
    """Pools whose nodes do not all share one provider kind: only then is the controller's
    ``AllowMixingStoragePoolDriver`` read (steady state stays one LINSTOR call)."""
    return sorted(name for name, kinds in pool_kinds(pools).items() if len(kinds) > 1)


def pool_nodes(pools: Iterable[StoragePool]) -> dict[str, set[str]]:
    """Pool name -> nodes that have it, diskless pools left out."""
    out: dict[str, set[str]] = {}
    for pool in pools:
        if not pool.diskless:
            out.setdefault(pool.storage_pool_name, set()).add(pool.node_name)
    return out


def desired_class(pool: str, replicas: int, config: ClassConfig) -> dict[str, Any]:
    params = {**config.parameters, P + "storagePool": pool, P + "placementCount": str(replicas)}
    if replicas >= 2:
        params.update(config.replicated_parameters)
    params.update(config.auto_diskful.parameters())  # every class: a pod on a diskless node gets its data
    return {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": class_name(pool, replicas), "labels": {MANAGED_BY: MANAGER},
                     "annotations": {POOL_ANNOTATION: pool}},
        "provisioner": CSI_DRIVER, "parameters": params, "reclaimPolicy": config.reclaim_policy,
        "volumeBindingMode": config.volume_binding_mode, "allowVolumeExpansion": config.allow_volume_expansion,
    }


SPEC_FIELDS = ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode", "allowVolumeExpansion")


def _differences(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    diffs = []
    for key in SPEC_FIELDS:
        w, h = want.get(key), have.get(key)
        if key == "parameters":
            h = h or {}
            changed = sorted(k for k in set(w) | set(h) if w.get(k) != h.get(k))
            if changed:
                diffs.append("parameters " + ", ".join(changed))
        elif key == "reclaimPolicy" and w == "Delete" and h is None:
            continue  # the API server's default
        elif w != h:
            diffs.append(f"{key} {h!r} -> {w!r}")
    return diffs


def as_wanted(want: Mapping[str, Any], have: Mapping[str, Any] | None) -> bool:
    """``have`` is ours and says what ``want`` says: a create whose answer was lost (or that another
    instance made first) left exactly the class we meant, so there is nothing to do or to report."""
    if have is None:
        return False
    return objects.labels(have).get(MANAGED_BY) == MANAGER and not _differences(want, have)


@dataclass(frozen=True)
class ClassAction:
    action: str
    name: str
    pool: str
    message: str
    body: dict[str, Any] | None = None  # what to create
    current: dict[str, Any] | None = None  # the object as read (UID/resourceVersion preconditions)


def merged_body(want: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """``want`` with the user's labels and annotations from ``current`` kept (ours win on our keys)."""
    body = copy.deepcopy(want)
    meta = objects.writable_meta(body)
    meta["labels"] = {**objects.labels(current), **meta["labels"]}
    meta["annotations"] = {**objects.annotations(current), **meta["annotations"]}
    return body


def plan_classes(pools: Iterable[StoragePool], existing: Iterable[Mapping[str, Any]],
                 config: ClassConfig, *, allow_mixing: bool = False) -> list[ClassAction]:
    """``allow_mixing``: the controller's ``AllowMixingStoragePoolDriver`` is true (only read when a
    pool mixes provider kinds)."""
    pools = list(pools)
    by_name = {objects.name(c): c for c in existing}
    nodes = pool_nodes(pools)
    kinds = pool_kinds(pools)
    actions: list[ClassAction] = []
    wanted: set[str] = set()
    limits: dict[str, tuple[int, str]] = {}  # pool -> (most replicas, why no more)
    for pool, holders in sorted(nodes.items()):
        bad = class_name_problem(pool)
        if bad:
            actions.append(ClassAction(NO_CLASS, class_name(pool, 1), pool, bad))
            continue
        most, why = min(config.max_replicas, len(holders)), (
            f"maxReplicas is {config.max_replicas}" if config.max_replicas < len(holders)
            else f"pool {pool} is on {len(holders)} node(s) only")
        if len(kinds[pool]) > 1 and not allow_mixing:
            spread = "; ".join(f"{kind} on {', '.join(sorted(n))}" for kind, n in sorted(kinds[pool].items()))
            most, why = 1, f"pool {pool} mixes provider kinds ({spread})"
            actions.append(ClassAction(MIXED_PROVIDERS, class_name(pool, 2), pool, (
                f"{why}: LINSTOR places the replicas of one volume only in pools of one provider kind unless "
                f"the controller property {ALLOW_MIXING_PROP} is true (LINSTOR User's Guide, \"Mixing storage "
                f"pools of different storage providers\"), so only {class_name(pool, 1)} is made; give the pool "
                f"one kind on every node, or run linstor controller set-property {ALLOW_MIXING_PROP} true")))
        limits[pool] = (most, why)
        for replicas in range(1, most + 1):
            want = desired_class(pool, replicas, config)
            name = objects.name(want)
            wanted.add(name)
            current = by_name.get(name)
            if current is None:
                actions.append(ClassAction(CREATE, name, pool, f"create StorageClass {name} ({replicas} replica(s) "
                                           f"in pool {pool}, on {len(holders)} node(s))", want))
                continue
            labels = objects.labels(current)
            if labels.get(MANAGED_BY) != MANAGER:
                actions.append(ClassAction(CONFLICT, name, pool, f"StorageClass {name} exists but is not managed by "
                                           f"{MANAGER} (label {MANAGED_BY}={labels.get(MANAGED_BY)!r}): left alone",
                                           current=dict(current)))
                continue
            diffs = _differences(want, current)
            if diffs:
                actions.append(ClassAction(RECREATE, name, pool, f"recreate StorageClass {name}: "
                                           f"{'; '.join(diffs)} (StorageClass parameters are immutable)",
                                           merged_body(want, current), dict(current)))
            else:
                actions.append(ClassAction(IN_SYNC, name, pool, f"StorageClass {name} is up to date"))
    for name, current in sorted(by_name.items()):
        if name in wanted or objects.labels(current).get(MANAGED_BY) != MANAGER:
            continue
        pool = objects.annotations(current).get(POOL_ANNOTATION) or ""
        why = limits[pool][1] if pool in limits else f"pool {pool} no longer exists in LINSTOR"
        actions.append(ClassAction(POOL_GONE, str(name), pool, f"StorageClass {name} is kept although {why}: "
                                   "volumes may still use it; delete it by hand when it is no longer needed",
                                   current=dict(current)))
    return actions
