"""What to do on one node: the LVM tags' pools against LINSTOR's pools there. Pure, no I/O.

Rules (each a line in docs/storage-sync.md):
- a tagged pool LINSTOR lacks is **created**, once the node is ONLINE and supports the provider;
- a pool LINSTOR has with another kind or backing VG/thin pool is a **mismatch**: reported, never
  re-pointed, because it may hold data;
- a pool we created (it carries our ``Aux/`` marker) whose tag is gone is an **orphan**: reported,
  and deleted only with ``--prune`` and only when LINSTOR shows no resource in it on this node.
  Pools we did not create are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from linstor_scheduler.linstor.models import Node, StoragePool

from .tags import LVM_THIN, DesiredPool, Problem, TagVerdict

MANAGED_PROP = "Aux/linstor-scheduler/managed-by"
MANAGED_VALUE = "linstor-scheduler"
UUID_PROP = "Aux/linstor-scheduler/lvm-uuid"

CREATE, IN_SYNC, MISMATCH, ORPHAN, PRUNE, INVALID, BLOCKED = (
    "create", "in-sync", "mismatch", "orphan", "prune", "invalid", "blocked")
WRITES = frozenset({CREATE, PRUNE})
PROBLEMS = frozenset({MISMATCH, ORPHAN, INVALID, BLOCKED})


@dataclass(frozen=True)
class PlanItem:
    action: str
    pool: str | None
    provider_kind: str = ""
    backing: str = ""
    message: str = ""
    reason: str = ""  # a CamelCase reason for Events and metrics
    props: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodePlan:
    node: str
    items: tuple[PlanItem, ...]

    @property
    def writes(self) -> list[PlanItem]:
        return [i for i in self.items if i.action in WRITES]

    @property
    def problems(self) -> list[PlanItem]:
        return [i for i in self.items if i.action in PROBLEMS]

    @property
    def in_sync(self) -> bool:
        """Nothing to write and nothing wrong: ``--once`` exits 0 only then."""
        return not self.writes and not self.problems


def backing_of(pool: StoragePool) -> tuple[str | None, str | None]:
    """(VG, thin pool) a LINSTOR pool points at: the specific props, else the generic StorPoolName."""
    vg = pool.props.get("StorDriver/LvmVg")
    thin = pool.props.get("StorDriver/ThinPool")
    if vg is None and "StorDriver/StorPoolName" in pool.props:
        vg, _, rest = pool.props["StorDriver/StorPoolName"].partition("/")
        thin = rest or None
    return vg, thin


def is_managed(pool: StoragePool) -> bool:
    return pool.props.get(MANAGED_PROP) == MANAGED_VALUE


def creation_props(desired: DesiredPool) -> dict[str, str]:
    return {**desired.props, MANAGED_PROP: MANAGED_VALUE, UUID_PROP: desired.uuid}


def _mismatch(desired: DesiredPool, existing: StoragePool) -> str | None:
    kind = existing.provider_kind.upper()
    if kind != desired.provider_kind:
        return (f"LINSTOR pool {desired.name} is {kind or 'of unknown kind'} but the tag is on "
                f"{'thin pool' if desired.provider_kind == LVM_THIN else 'volume group'} {desired.backing} "
                f"({desired.provider_kind})")
    vg, thin = backing_of(existing)
    if (vg, thin or None) != (desired.vg, desired.thin_pool):
        actual = f"{vg}/{thin}" if thin else str(vg)
        return f"LINSTOR pool {desired.name} is backed by {actual} but the tag is on {desired.backing}"
    recorded = existing.props.get(UUID_PROP)
    if recorded and recorded != desired.uuid:
        return (f"LINSTOR pool {desired.name} was registered for LVM object {recorded}, but {desired.backing} "
                f"is now {desired.uuid} (recreated under the same name?)")
    return None


def plan_node(node_name: str, tags: TagVerdict, node: Node | None, existing: Iterable[StoragePool],
              *, pool_users: Mapping[str, list[str]] | None = None, prune: bool = False) -> NodePlan:
    """``pool_users``: resource names per pool on this node (read only when an orphan needs it)."""
    items: list[PlanItem] = [_invalid(p) for p in tags.problems]
    pools = {p.storage_pool_name: p for p in existing if p.node_name in ("", node_name)}
    blocked_node = _node_block(node_name, node)
    for name, desired in sorted(tags.pools.items()):
        current = pools.get(name)
        if current is not None:
            why = _mismatch(desired, current)
            if why:
                items.append(PlanItem(MISMATCH, name, desired.provider_kind, desired.backing,
                                      why + "; it is never re-pointed because it may hold data: fix the tag or "
                                      "migrate the pool by hand", "PoolMismatch"))
            else:
                items.append(PlanItem(IN_SYNC, name, desired.provider_kind, desired.backing,
                                      "registered" if is_managed(current) else "registered (not created by us)"))
            continue
        if blocked_node:
            items.append(PlanItem(BLOCKED, name, desired.provider_kind, desired.backing, blocked_node, "NodeNotOnline"))
            continue
        assert node is not None
        if desired.provider_kind not in {p.upper() for p in node.storage_providers}:
            why = "; ".join(node.unsupported_providers.get(desired.provider_kind, [])) or "not in its storage_providers"
            items.append(PlanItem(BLOCKED, name, desired.provider_kind, desired.backing,
                                  f"node {node_name} does not support {desired.provider_kind}: {why}",
                                  "ProviderUnsupported"))
            continue
        items.append(PlanItem(CREATE, name, desired.provider_kind, desired.backing,
                              f"create {desired.provider_kind} pool {name} on {desired.backing}", "PoolCreated",
                              creation_props(desired)))
    for name, current in sorted(pools.items()):
        if name in tags.pools or name in tags.tagged_names or not is_managed(current):
            continue  # a tag still asks for it (maybe invalid right now), or it is not ours
        vg, thin = backing_of(current)
        backing = f"{vg}/{thin}" if thin else str(vg)
        users = None if pool_users is None else pool_users.get(name, [])
        if prune and users == [] and not blocked_node:
            items.append(PlanItem(PRUNE, name, current.provider_kind, backing,
                                  f"delete pool {name}: its tag is gone and it holds no resources", "PoolPruned"))
            continue
        if users:
            detail = f"still holds {len(users)} resource(s): {', '.join(sorted(users)[:5])}"
        elif users is None:
            detail = "its resources could not be read"
        else:
            detail = "it holds no resources" + ("" if prune else "; run with --prune to delete it")
        if prune and blocked_node:
            detail += f"; not pruned: {blocked_node}"
        items.append(PlanItem(ORPHAN, name, current.provider_kind, backing,
                              f"pool {name} was created from a tag that is gone; {detail}", "PoolOrphaned"))
    return NodePlan(node_name, tuple(items))


def _invalid(problem: Problem) -> PlanItem:
    return PlanItem(INVALID, problem.pool, "", ", ".join(o.name for o in problem.objects), problem.message,
                    problem.kind)


def _node_block(node_name: str, node: Node | None) -> str | None:
    if node is None:
        return f"node {node_name} is not registered in LINSTOR"
    if not node.online:
        return (f"node {node_name} is {node.connection_status or 'in an unknown state'} in LINSTOR: "
                "pools are registered once it is ONLINE")
    return None


def orphan_candidates(tags: TagVerdict, existing: Iterable[StoragePool]) -> list[str]:
    """Managed pools no tag asks for: only then does a pass read the node's resources."""
    return sorted(p.storage_pool_name for p in existing
                  if is_managed(p) and p.storage_pool_name not in tags.pools
                  and p.storage_pool_name not in tags.tagged_names)
