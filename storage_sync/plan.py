"""What to do on one node: the LVM tags' pools against LINSTOR's pools there. Pure, no I/O.

Rules (each a line in docs/storage-sync.md):
- a tagged pool LINSTOR lacks is **created**, once the node is ONLINE and supports the provider;
- a pool LINSTOR has with another kind or backing VG/thin pool is a **mismatch**: reported, never
  re-pointed, because it may hold data;
- one VG (or thin pool) backs at most one pool on a node, whoever made the other one: a tag asking
  for a second pool on a backing LINSTOR already uses is **blocked** (``BackingInUse``), since both
  pools would report the same free space and LINSTOR would count it twice; a renamed tag says how to
  move;
- a pool we created (it carries our ``Aux/`` marker) whose tag is gone is an **orphan**: reported,
  and deleted only with ``--prune`` and only when LINSTOR shows no resource in it on this node. It is
  judged so only when LVM shows its VG (and thin pool) plainly: a backing that is not visible, or
  partial, exported, foreign or ambiguous (``backing.backing_refusal``) is reported as such, never
  orphaned, never pruned: "not visible" is not "untagged".
  Pools we did not create are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from linstor_scheduler.linstor.models import Node, StoragePool

from .backing import backing_refusal
from .tags import LVM_THIN, TAG_PREFIX, DesiredPool, Problem, TagVerdict

MANAGED_PROP = "Aux/linstor-scheduler/managed-by"
MANAGED_VALUE = "linstor-scheduler"
UUID_PROP = "Aux/linstor-scheduler/lvm-uuid"

CREATE, IN_SYNC, MISMATCH, ORPHAN, PRUNE, INVALID, BLOCKED, UNSEEN, LVM_WARNING = (
    "create", "in-sync", "mismatch", "orphan", "prune", "invalid", "blocked", "unseen", "lvm-warning")
STATES = (CREATE, IN_SYNC, MISMATCH, ORPHAN, PRUNE, INVALID, BLOCKED, UNSEEN)
WRITES = frozenset({CREATE, PRUNE})
PROBLEMS = frozenset({MISMATCH, ORPHAN, INVALID, BLOCKED, UNSEEN})
# reported like a problem (log, Event, metric) but not one of a pool: LVM's own warnings
NOTICES = frozenset({LVM_WARNING})


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
    def reported(self) -> list[PlanItem]:
        """What the agent reports (log, Warning Event, metric): the problems and LVM's warnings."""
        return [i for i in self.items if i.action in PROBLEMS or i.action in NOTICES]

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
        taken = next((p for p in pools if p.upper() == name.upper()), None)
        if taken is not None:  # linstor-server compares names upper-cased (GenericName): 'Data' is 'data'
            items.append(PlanItem(BLOCKED, name, desired.provider_kind, desired.backing, (
                f"LINSTOR already has pool {taken} on node {node_name}, and it compares pool names "
                f"case-insensitively: {name} cannot be created beside it; rename the tag on {desired.backing}, "
                f"or tag it {TAG_PREFIX}{taken} if {taken} is meant to be this pool"), "PoolNameTaken"))
            continue
        holder = next((p for p in pools.values() if _same_backing(p, desired)), None)
        if holder is not None:
            items.append(PlanItem(BLOCKED, name, desired.provider_kind, desired.backing,
                                  _backing_in_use(desired, holder, tags, pool_users), "BackingInUse"))
            continue
        items.append(PlanItem(CREATE, name, desired.provider_kind, desired.backing,
                              f"create {desired.provider_kind} pool {name} on {desired.backing}", "PoolCreated",
                              creation_props(desired)))
    for name, current in sorted(pools.items()):
        if name in tags.pools or name in tags.tagged_names or not is_managed(current):
            continue  # a tag still asks for it (maybe invalid right now), or it is not ours
        vg, thin = backing_of(current)
        backing = f"{vg}/{thin}" if thin else str(vg)
        unseen = backing_refusal(tags.inventory, vg, thin)
        if unseen:
            items.append(PlanItem(UNSEEN, name, current.provider_kind, backing,
                                  f"pool {name} is registered on {backing}, which no tag asks for now, but LVM "
                                  f"does not show it plainly: {unseen[1]}", "PoolBacking" + unseen[0]))
            continue
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
        successor = next((d.name for d in tags.pools.values() if _same_backing(current, d)), None)
        if successor:
            detail += f"; {backing} is now tagged {TAG_PREFIX}{successor} (see pool {successor})"
        items.append(PlanItem(ORPHAN, name, current.provider_kind, backing,
                              f"pool {name} was created from a tag that is gone; {detail}", "PoolOrphaned"))
    items += [PlanItem(LVM_WARNING, None, message=f"LVM warns: {w}", reason="LvmWarning")
              for w in tags.inventory.warnings]
    items += [PlanItem(LVM_WARNING, None, backing=d, reason="LvmDeviceVanished", message=(
        f"device {d}, named for the scan (--lvm-devices), does not exist: pools on it are not visible and "
        "so are neither created nor pruned; fix --lvm-devices or bring the device back"))
        for d in tags.inventory.missing_devices]
    return NodePlan(node_name, tuple(items))


def _same_backing(pool: StoragePool, desired: DesiredPool) -> bool:
    return pool.provider_kind.upper() in ("LVM", LVM_THIN) and backing_of(pool) == (desired.vg, desired.thin_pool)


def _backing_in_use(desired: DesiredPool, holder: StoragePool, tags: TagVerdict,
                    pool_users: Mapping[str, list[str]] | None) -> str:
    """Why a second pool on one backing is refused, and what to do: a renamed tag gets the steps."""
    old, new, where = holder.storage_pool_name, desired.name, desired.backing
    obj = f"{'thin pool' if desired.thin_pool else 'volume group'} {where}"
    head = (f"{obj} is tagged {TAG_PREFIX}{new} but already backs LINSTOR pool {old}: one VG or thin pool backs at "
            "most one pool on a node (two would report the same free space, LINSTOR would count it twice and "
            "volumes would fail at lvcreate after their node was chosen)")
    retag = f"vgchange --deltag {TAG_PREFIX}{new} --addtag {TAG_PREFIX}{old} {desired.vg}" if not desired.thin_pool \
        else f"lvchange --deltag {TAG_PREFIX}{new} --addtag {TAG_PREFIX}{old} {where}"
    if not is_managed(holder):
        return (f"{head}; {old} was not created by linstor-scheduler and is left alone: remove the tag "
                f"{TAG_PREFIX}{new}, or tag the object {TAG_PREFIX}{old} to mark the existing pool as wanted")
    if old in tags.tagged_names:
        return f"{head}; remove one of the tags"
    users = (pool_users or {}).get(old)
    held = (f"it holds {len(users)} resource(s) on this node ({', '.join(sorted(users)[:5])})" if users
            else "it holds no resources" if users == [] else "its resources could not be read")
    return (f"{head}. The tag was renamed from {TAG_PREFIX}{old} to {TAG_PREFIX}{new}, and LINSTOR cannot rename "
            f"a pool; {held}. To keep {old}: {retag}. To move to {new}: move or delete {old}'s resources on this "
            f"node (linstor resource delete / toggle-disk --diskless after placing the replica elsewhere), then "
            f"run sync-node with --prune: {old} is deleted and {new} created on {where}")


def _invalid(problem: Problem) -> PlanItem:
    return PlanItem(INVALID, problem.pool, "", ", ".join(o.name for o in problem.objects), problem.message,
                    problem.kind)


def _node_block(node_name: str, node: Node | None) -> str | None:
    if node is None:
        return (f"node {node_name} is not registered in LINSTOR: register it (linstor node create), or, if "
                "LINSTOR knows this host under another name (its FQDN, say), start sync-node with "
                "--linstor-node-name <that name>")
    if not node.online:
        return (f"node {node_name} is {node.connection_status or 'in an unknown state'} in LINSTOR: "
                "pools are registered once it is ONLINE")
    return None


def orphan_candidates(tags: TagVerdict, existing: Iterable[StoragePool]) -> list[str]:
    """Managed pools no tag asks for, on a backing LVM shows plainly: only then does a pass read the
    node's resources (to say what an orphan holds, or what a renamed tag's old pool holds)."""
    return sorted(p.storage_pool_name for p in existing
                  if is_managed(p) and p.storage_pool_name not in tags.pools
                  and p.storage_pool_name not in tags.tagged_names
                  and not backing_refusal(tags.inventory, *backing_of(p)))
