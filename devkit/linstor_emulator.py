"""A LINSTOR controller emulator: the REST v1 paths we use, in their real shapes, over real HTTP.

Responses follow ``third_party/linstor/rest_v1_openapi.yaml`` (a test validates them against it) and are
read by LINBIT's python-linstor in a test, so they prove the wire format, not our reading of it.
Faults can be injected: latency, error answers with ApiCallRc bodies, dropped connections, garbage.
State is mutated from test threads while the server runs, under one lock.

DRBD and the satellites' reachability are modelled, not edited by hand (docs/fencing.md, "The
emulator's DRBD model", gives the sources): a reachability matrix (node power, controller <->
satellite, satellite <-> satellite per resource) drives everything a client reads, derived at read
time by ``drbd_model``: a satellite's ``connection_status``, each replica's
``layer_object.drbd.connections`` as its own node sees them, quorum and ``may_promote`` by DRBD's
own rules (``linstor_scheduler.drbd_quorum``, with what each node remembers from the previous
network event), ``promotion_score``, suspended I/O under ``on-no-quorum suspend-io``, and, for a
satellite the controller cannot reach, unknown states (no ``state``, no DRBD status) rather than the
last good ones. Scenarios are network events: ``power_off``, ``cut_controller``, ``cut_peers``,
``split``.

Names are LINSTOR's: compared case-insensitively on every path, filter and lookup (``same_name``:
a node, storage pool, resource definition, resource or resource group named in another case is the
same object, answered with the name as created; a second object differing only in case is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from devkit.base import HttpDouble, Subscriber
from linstor_scheduler import drbd_quorum as quorum_rules
from linstor_scheduler.aio import within
from linstor_scheduler.drbd_quorum import Memory
from linstor_scheduler.linstor.capacity import THIN_KINDS

MASK_ERROR = -0x4000000000000000  # 0xC000000000000000 as a signed int64
CREATED = 0x4000  # API_CREATED-ish info code with object bits
POOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{2,47}$")
# Property values the controller checks (rest_v1_openapi.yaml, "modify a storage pool": regex[...]);
# a value that does not match is refused with the key and the value (linstor-server FAIL_INVLD_PROP).
POOL_PROP_VALUES = {"StorDriver/LvmVg": re.compile(r"^[a-zA-Z0-9_-]+$"),
                    "StorDriver/ThinPool": re.compile(r"^[a-zA-Z0-9_-]+$"),
                    "StorDriver/ZPool": re.compile(r"^[a-zA-Z0-9_/-]+$"),
                    "StorDriver/ZPoolThin": re.compile(r"^[a-zA-Z0-9_/-]+$")}


class Names(frozenset):
    """The names of a list filter (``?nodes=``, ``?resources=``...) as given (iterating yields them),
    matched as LINSTOR matches them: case-insensitively."""

    def __init__(self, names: Any) -> None:
        super().__init__()
        self.upper = frozenset(n.upper() for n in self)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.upper() in self.upper


def same_name(a: str, b: str) -> bool:
    """LINSTOR compares object names case-insensitively: linstor-server's ``com.linbit.GenericName``,
    the base of ``NodeName``, ``StorPoolName``, ``ResourceName`` and ``ResourceGroupName``
    (``com.linbit.linstor.core.identifier``), keeps ``value = genName.toUpperCase()`` and the name as
    given in ``displayValue``; ``compareTo``, ``equals`` and ``hashCode`` use ``value``, answers carry
    ``displayValue``. 'Data' and 'data' are one pool; 'N1' finds node 'n1', answered as 'n1'."""
    return a.upper() == b.upper()


def stored_name(keys: Any, name: str) -> str | None:
    """The name as created of the object ``name`` designates among ``keys`` (LINSTOR's lookup by
    ``value``), or None. An exact spelling is found at once; another case costs one pass."""
    if name in keys:
        return name
    upper = name.upper()
    return next((k for k in keys if k.upper() == upper), None)
DISKLESS_POOL = "DfltDisklessStorPool"
EXTENT_KIB = 4 * 1024  # LVM's default extent: a logical volume's size is a multiple of it


def gross_kib(net_kib: int, peer_slots: int = 7) -> int:
    """The backing device of a DRBD volume of ``net_kib`` with internal meta-data: its size as the
    storage layer reports it (``usable_size_kib``). An estimate of drbdmeta's layout: the bitmap (one
    bit per 4 KiB per peer slot), the activity log (32 KiB) and the superblock (4 KiB), rounded up to
    LVM extents. What LINSTOR reserves of a pool for a volume is this gross size, not the net one."""
    bitmap = -(-net_kib // (32 * 1024)) * peer_slots  # KiB: 4 KiB per bit, 8 bits per byte
    gross = net_kib + bitmap + 36
    return -(-gross // EXTENT_KIB) * EXTENT_KIB


def api_rc(message: str, *, error: bool = False, cause: str | None = None, correction: str | None = None,
           code: int = 0) -> dict[str, Any]:
    rc: dict[str, Any] = {"ret_code": (MASK_ERROR | code) if error else (CREATED | code), "message": message,
                          "obj_refs": {}, "error_report_ids": []}
    if cause:
        rc["cause"] = cause
    if correction:
        rc["correction"] = correction
    return rc


@dataclass
class Faults:
    latency: float | None = None
    fail: int = 0
    status: int = 500
    drop: int = 0
    garbage: int = 0
    path_prefix: str = "/"
    lose_answer: int = 0  # the request is carried out, then the connection breaks before the answer


class LinstorEmulator(HttpDouble):
    def __init__(self, *, supports_events: bool = True) -> None:
        self.supports_events = supports_events
        super().__init__()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._pools: dict[tuple[str, str], dict[str, Any]] = {}
        self._resources: dict[tuple[str, str], dict[str, Any]] = {}  # (rd, node)
        self._rds: dict[str, dict[str, Any]] = {}
        self._rgs: dict[str, dict[str, Any]] = {"DfltRscGrp": self._rg_item("DfltRscGrp", {})}
        self._controller_props: dict[str, str] = {}
        self._pool_dfn_props: dict[str, dict[str, str]] = {}  # storage pool definition -> its props
        self._faults = Faults()
        self._minor = 1000
        self._net = Reachability()
        self._conn_override: dict[tuple[str, str, str], bool] = {}
        self._promote_override: dict[tuple[str, str], bool] = {}
        self._quorum_memory: dict[str, dict[str, Memory]] = {}  # rd -> node -> what its DRBD remembers
        # The resource view is cached (a 100,000-item body polled every few seconds): the whole body per
        # change generation, and each item's bytes until a change touches its resource definition.
        self._gen = 0
        self._resources_body: tuple[int, bytes] | None = None
        self._item_bytes: dict[tuple[str, str], bytes] = {}
        self._grouped: tuple[int, dict[str, dict[str, dict[str, Any]]]] | None = None
        self.emitted: dict[str, int] = {}  # events sent to subscribers, by name (tests wait for their delivery)
        self.app = self._build_app()

    # --- state ---------------------------------------------------------------------------------
    def add_node(self, name: str, *, type: str = "SATELLITE", connection_status: str = "ONLINE",
                 providers: tuple[str, ...] = ("DISKLESS", "LVM", "LVM_THIN", "FILE", "FILE_THIN"),
                 props: dict[str, str] | None = None, flags: list[str] | None = None) -> dict[str, Any]:
        node = {
            "name": name, "type": type, "flags": list(flags or []),
            "props": {"CurStltConnName": "default", "NodeUname": name, **(props or {})},
            "net_interfaces": [{"name": "default", "address": "10.0.0.1", "satellite_port": 3366,
                                "satellite_encryption_type": "PLAIN", "is_active": True, "uuid": str(uuid.uuid4())}],
            "connection_status": connection_status, "uuid": str(uuid.uuid4()),
            "storage_providers": list(providers), "resource_layers": ["DRBD", "STORAGE"],
            "unsupported_providers": {}, "unsupported_layers": {},
        }
        with self._lock:
            taken = stored_name(self._nodes, name)
            if taken not in (None, name):
                raise ValueError(f"Node '{taken}' already exists: LINSTOR compares names case-insensitively")
            self._changed()
            self._nodes[name] = node
            if type.upper() in ("SATELLITE", "COMBINED") and "DISKLESS" in providers:
                self._pools[(name, DISKLESS_POOL)] = self._pool_item(name, DISKLESS_POOL, "DISKLESS", None, None, {})
        self._emit("node-create", {"node": node})
        return node

    def set_node_status(self, name: str, connection_status: str) -> None:
        """A status the satellite itself causes (e.g. VERSION_MISMATCH). Network faults: the events below."""
        with self._lock:
            name = self._node_name(name)
            self._changed()
            self._nodes[name]["connection_status"] = connection_status
            node = dict(self._nodes[name])
        self._emit("node-online" if connection_status.upper() == "ONLINE" else "node-offline", {"node": node})

    def auto_evict(self, name: str) -> None:
        """LINSTOR's auto-evict: a satellite OFFLINE for longer than ``DrbdOptions/AutoEvictAfterTime``
        (60 min by default) is flagged EVICTED and its replicas are placed elsewhere; the node stays in
        the list, OFFLINE, until it is restored or removed (LINSTOR User's Guide, "Auto-evict";
        ``/v1/nodes/{node}/restore`` in the spec)."""
        with self._lock:
            flags = self._nodes[self._node_name(name)]["flags"]
            if "EVICTED" not in flags:
                flags.append("EVICTED")

    # --- network events: the reachability matrix ------------------------------------------------
    def power_off(self, *nodes: str) -> None:
        """The node(s) lose power at once (a rack): the satellite and every DRBD connection are gone."""
        names = [self._node_name(n) for n in nodes]
        self._network(lambda net: net.powered_off.update(names))

    def power_on(self, node: str) -> None:
        node = self._node_name(node)
        self._network(lambda net: net.powered_off.discard(node))

    def cut_controller(self, node: str, cut: bool = True) -> None:
        """The controller cannot reach the satellite (DRBD's own network is untouched)."""
        node = self._node_name(node)
        self._network(lambda net: (net.controller_cut.add if cut else net.controller_cut.discard)(node))

    def cut_peers(self, node: str, peers: Iterable[str] | None = None, *, resource: str | None = None,
                  cut: bool = True) -> None:
        """The replication network between ``node`` and ``peers`` (default: every other node) goes down
        (or, with ``cut=False``, comes back), for every resource or only ``resource``."""
        with self._lock:
            node = self._node_name(node)
            resource = None if resource is None else self._rd_name(resource)
            others = ([self._node_name(p) for p in peers] if peers is not None
                      else [n for n in self._nodes if n != node])

        def change(net: Reachability) -> None:
            for peer in others:
                link = frozenset((node, peer))
                target: set[Any] = net.peer_cut if resource is None else net.peer_cut_rsc
                key: Any = link if resource is None else (resource, link)
                (target.add if cut else target.discard)(key)

        self._network(change)

    def split(self, side: Iterable[str], cut: bool = True) -> None:
        """The replication network between the nodes of ``side`` and every other node goes down (or comes
        back) at once, for every resource: one event, as a switch failure is (``cut_peers`` node by node
        is one event per node, and DRBD remembers what happened in between)."""
        with self._lock:
            inside = {self._node_name(n) for n in side}
            links = {frozenset((a, b)) for a in inside for b in self._nodes if b not in inside}

        def change(net: Reachability) -> None:
            net.peer_cut = (net.peer_cut | links) if cut else (net.peer_cut - links)

        self._network(change)

    def heal(self, node: str) -> None:
        """Every link of ``node`` back and the node powered: the fault is over."""
        node = self._node_name(node)

        def change(net: Reachability) -> None:
            net.powered_off.discard(node)
            net.controller_cut.discard(node)
            net.peer_cut = {link for link in net.peer_cut if node not in link}
            net.peer_cut_rsc = {(r, link) for r, link in net.peer_cut_rsc if node not in link}

        self._network(change)

    def _changed(self, rds: Iterable[str] | None = None) -> None:
        """Something a client reads may have changed (in ``rds`` only, or anywhere): void the caches."""
        self._gen += 1
        if rds is None:
            self._item_bytes.clear()
            return
        wanted = set(rds)
        for key in [k for k in self._item_bytes if k[0] in wanted]:
            del self._item_bytes[key]

    def _network(self, change: Any, *, resources: Iterable[str] | None = None) -> None:
        """Apply a change to the matrix; emit node-online/-offline and may-promote-change as they follow.

        Only the resource definitions the change can touch are recomputed: those with a replica on a
        node whose links change (tried first on a copy of the matrix), or ``resources`` for a change
        that is not a link (an application opening a device)."""
        with self._lock:
            grouped = self._by_rd()
            if resources is None:
                trial = copy.deepcopy(self._net)
                change(trial)
                touched = _touched(self._net, trial)
                rds = [] if touched is None else [rd for rd, replicas in grouped.items()
                                                  if touched[0] & replicas.keys() or rd in touched[1]]
            else:
                rds = [rd for rd in resources if rd in grouped]
            before_nodes = {n: self._status(n) for n in self._nodes}
            before = self._promotion(rds, grouped)
            change(self._net)
            self._changed(rds)
            for rd in rds:  # DRBD's state change: each node remembers its quorum and partition
                self._quorum_memory[rd] = self._model(rd, grouped[rd]).memory
            after_nodes = {n: self._status(n) for n in self._nodes}
            after = self._promotion(rds, grouped)
        for name, status in after_nodes.items():
            if status != before_nodes.get(name):
                self._emit("node-online" if status == "ONLINE" else "node-offline", {"node": self._node_view(name)})
        for (rd, node), may in sorted(after.items()):
            if before.get((rd, node)) != may:
                self._emit("may-promote-change", {"resource_name": rd, "node_name": node, "may_promote": may})

    def io_suspended(self, resource: str, node: str) -> bool:
        """What DRBD does to the application on ``node``: I/O frozen (on-no-quorum suspend-io)."""
        with self._lock:
            drbd = self._drbd(self._rd_name(resource)).get(self._node_name(node))
            return bool(drbd and drbd.suspended)

    def has_quorum(self, resource: str, node: str) -> bool:
        with self._lock:
            drbd = self._drbd(self._rd_name(resource)).get(self._node_name(node))
            return bool(drbd and drbd.quorum)

    # --- derived views (under the lock) ----------------------------------------------------------
    def _status(self, node: str) -> str:
        return self._nodes[node]["connection_status"] if self._net.controller_reaches(node) else "OFFLINE"

    def _node_view(self, name: str) -> dict[str, Any]:
        with self._lock:
            return {**self._nodes[name], "connection_status": self._status(name)}

    def _effective_props(self, rd: str) -> dict[str, str]:
        definition = self._rds.get(rd) or {}
        group = self._rgs.get(self._rg_name(definition.get("resource_group_name") or "")) or {}
        return {**self._controller_props, **(group.get("props") or {}), **(definition.get("props") or {})}

    def _by_rd(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Replicas grouped by resource definition, in one pass, kept until the next change (every
        change to ``_resources`` happens under the lock after ``_changed``): a client asking for one
        resource (``?resources=X``) then costs that resource, not a pass over 60,000 items."""
        if self._grouped is not None and self._grouped[0] == self._gen:
            return self._grouped[1]
        grouped: dict[str, dict[str, dict[str, Any]]] = {}
        for (rd, node), item in self._resources.items():
            grouped.setdefault(rd, {})[node] = item
        self._grouped = (self._gen, grouped)
        return grouped

    def _drbd(self, rd: str, replicas: dict[str, dict[str, Any]] | None = None) -> dict[str, ReplicaDrbd]:
        return self._model(rd, replicas).replicas

    def _model(self, rd: str, replicas: dict[str, dict[str, Any]] | None = None) -> DrbdModel:
        if replicas is None:
            replicas = {n: r for (name, n), r in self._resources.items() if name == rd}
        return drbd_model(rd, replicas, self._net, self._effective_props(rd), self._conn_override,
                          self._quorum_memory.get(rd))

    def _promotion(self, rds: Iterable[str] | None = None,
                   grouped: dict[str, dict[str, dict[str, Any]]] | None = None) -> dict[tuple[str, str], bool]:
        grouped = grouped if grouped is not None else self._by_rd()
        out = {}
        for rd in grouped if rds is None else rds:
            for node, drbd in self._drbd(rd, grouped[rd]).items():
                out[(rd, node)] = drbd.may_promote
        return out

    def _resources_json(self) -> bytes:
        """The whole ``/v1/view/resources`` body, from the caches where nothing changed."""
        if self._resources_body is not None and self._resources_body[0] == self._gen:
            return self._resources_body[1]
        missing = [key for key in self._resources if key not in self._item_bytes]
        if missing:
            grouped = self._by_rd()
            for key, item in zip(missing, self._render_resources(missing, grouped), strict=True):
                self._item_bytes[key] = orjson.dumps(item)
        body = b"[" + b",".join(self._item_bytes[key] for key in self._resources) + b"]"
        self._resources_body = (self._gen, body)
        return body

    def _render_resources(self, keys: Iterable[tuple[str, str]],
                          grouped: dict[str, dict[str, dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
        """Resource items as the controller answers them now (see the module docstring)."""
        models: dict[str, dict[str, ReplicaDrbd]] = {}
        grouped = grouped if grouped is not None else self._by_rd()
        out = []
        for rd, node in keys:
            item = self._resources[(rd, node)]
            drbd_layer = {k: v for k, v in item["layer_object"]["drbd"].items()
                          if k not in ("connections", "may_promote", "promotion_score")}
            layer = {**item["layer_object"], "drbd": drbd_layer}
            if not self._net.controller_reaches(node):
                # The controller has no satellite state for it: in use, disk state, DRBD status unknown.
                out.append({**item, "state": {}, "layer_object": layer,
                            "volumes": [{k: v for k, v in vol.items() if k != "state"} for vol in item["volumes"]]})
                continue
            if rd not in models:
                models[rd] = self._drbd(rd, grouped[rd])
            drbd = models[rd].get(node)
            if drbd is not None:
                conns = {p: {"connected": up, "message": "Connected" if up else "Connecting"}
                         for p, up in drbd.connections.items()}
                drbd_layer.update(connections=conns, may_promote=self._promote_override.get((rd, node),
                                                                                            drbd.may_promote),
                                  promotion_score=drbd.promotion_score)
            out.append({**item, "layer_object": layer})
        return out

    # --- replicas moving, as LINSTOR moves them (the events PV node affinity falls behind) ----------
    def evacuate(self, node: str, to: str) -> None:
        """``linstor node evacuate``: the node is flagged EVACUATE, each of its diskful replicas is
        placed on ``to`` and, once synced, removed from it (LINSTOR User's Guide, "Evacuating a node")."""
        with self._lock:
            self._nodes[node]["flags"] = sorted({*self._nodes[node]["flags"], "EVACUATE"})
            moving = [rd for (rd, n), item in self._resources.items() if n == node and "DISKLESS" not in item["flags"]]
        for rd in moving:
            self.add_resource(rd, to)
            self.remove_resource(rd, node)

    def make_diskful(self, name: str, node: str) -> None:
        """Auto-diskful (``DrbdOptions/auto-diskful``): the diskless replica on ``node`` that has been
        Primary long enough gets a disk (``resource toggle-disk``); it syncs, then is UpToDate."""
        with self._lock:
            self._changed()
            item = self._resources[(name, node)]
            item["flags"] = [f for f in item["flags"] if f not in ("DISKLESS", "DRBD_DISKLESS")]
            for vol in item["volumes"]:
                vol["storage_pool_name"] = "thindata"
                vol["provider_kind"] = "LVM_THIN"
                vol["state"] = {"disk_state": "UpToDate"}

    def remove_node(self, name: str) -> None:
        with self._lock:
            name = self._node_name(name)
            self._changed()
            self._nodes.pop(name, None)
            for key in [k for k in self._pools if k[0] == name]:
                del self._pools[key]
            for key in [k for k in self._resources if k[1] == name]:
                del self._resources[key]
        self._emit("node-delete", {"node": {"name": name}})

    @staticmethod
    def _pool_item(node: str, name: str, kind: str, free: int | None, total: int | None,
                   props: dict[str, str]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "storage_pool_name": name, "node_name": node, "provider_kind": kind, "props": props,
            "static_traits": {"SupportsSnapshots": "true" if kind in ("LVM_THIN", "ZFS_THIN") else "false"},
            "free_space_mgr_name": f"{node};{name}", "uuid": str(uuid.uuid4()), "reports": [],
            "supports_snapshots": kind in ("LVM_THIN", "ZFS_THIN"), "external_locking": False,
        }
        if kind != "DISKLESS":
            item["free_capacity"] = free
            item["total_capacity"] = total
        else:
            item["free_capacity"] = 9223372036854775807
            item["total_capacity"] = 9223372036854775807
        return item

    def add_storage_pool(self, node: str, name: str, provider_kind: str = "LVM_THIN", *,
                         free_kib: int = 100 * 1024**2, total_kib: int = 100 * 1024**2,
                         props: dict[str, str] | None = None) -> dict[str, Any]:
        all_props = dict(props or {})
        if provider_kind in ("LVM", "LVM_THIN"):
            all_props.setdefault("StorDriver/LvmVg", f"linstor_{name}")
            if provider_kind == "LVM_THIN":
                all_props.setdefault("StorDriver/ThinPool", name)
            vg, thin = all_props["StorDriver/LvmVg"], all_props.get("StorDriver/ThinPool")
            all_props.setdefault("StorDriver/StorPoolName", f"{vg}/{thin}" if thin else vg)
        with self._lock:
            node = self._node_name(node)
            taken = self._pool_name(node, name)
            if taken != name and (node, taken) in self._pools:
                raise ValueError(f"Storage pool '{taken}' on node '{node}' already exists: LINSTOR compares names "
                                 "case-insensitively")
            item = self._pool_item(node, name, provider_kind, free_kib, total_kib, all_props)
            self._changed()
            self._pools[(node, name)] = item
        return item

    def set_pool_free(self, node: str, name: str, free_kib: int, total_kib: int | None = None) -> None:
        """What the satellite reports after volumes were created in the pool (and, with ``total_kib``,
        its size: a pool created over REST starts at 100 GiB)."""
        with self._lock:
            node = self._node_name(node)
            self._changed()
            item = self._pools[(node, self._pool_name(node, name))]
            item["free_capacity"] = free_kib
            if total_kib is not None:
                item["total_capacity"] = total_kib

    def add_resource(self, name: str, node: str, *, diskful: bool = True, disk_state: str | None = None,
                     in_use: bool = False, storage_pool: str | None = None, size_kib: int = 1024**2,
                     flags: list[str] | None = None, volumes: int = 1,
                     props: dict[str, str] | None = None) -> dict[str, Any]:
        """A replica of ``name`` on ``node`` with ``volumes`` volumes of ``size_kib`` (net, as the volume
        definition says) each. Sizes as LINSTOR reports them: the storage layer's ``usable_size_kib`` is
        the gross size (``gross_kib``: DRBD's internal meta-data added, rounded up to LVM extents), which
        is what the controller reserves of the pool (``linstor.capacity``); the volume's
        ``allocated_size_kib`` is what the backing device takes: all of it in a thick pool, nothing yet
        in a thin one. A thick pool's ``free_capacity`` drops by the gross size (the satellite's next
        report), a thin pool's stays (a new thin volume holds no data)."""
        all_flags = ([] if diskful else ["DISKLESS", "DRBD_DISKLESS"]) + list(flags or [])
        state = disk_state or ("UpToDate" if diskful else "Diskless")
        with self._lock:
            name, node = self._rd_name(name), self._node_name(node)
            pool = self._pool_name(node, storage_pool or ("thindata" if diskful else DISKLESS_POOL))
            self._changed()
            pool_item = self._pools.get((node, pool)) or {}
            kind = "DISKLESS" if not diskful else (pool_item.get("provider_kind") or "LVM_THIN")
            thin = kind in THIN_KINDS
            gross = gross_kib(size_kib) if diskful else 0
            if diskful and not thin and pool_item.get("free_capacity") is not None:
                pool_item["free_capacity"] = max(0, pool_item["free_capacity"] - gross * volumes)
            self._rds.setdefault(name, {"name": name, "props": {"DrbdOptions/Resource/quorum": "majority"},
                                        "flags": [], "resource_group_name": "DfltRscGrp",
                                        "uuid": str(uuid.uuid4()), "volume_definitions": [], "layer_data": []})
            minor = self._minor
            self._minor += 1
            node_id = sum(1 for k in self._resources if k[0] == name)
            vols = [{
                "volume_number": v, "storage_pool_name": pool, "provider_kind": kind,
                "device_path": f"/dev/drbd{minor + v}", "allocated_size_kib": 0 if thin else gross,
                "props": {}, "flags": [], "uuid": str(uuid.uuid4()),
                "state": {"disk_state": state},
                "layer_data_list": [
                    {"type": "DRBD", "data": {"drbd_volume_definition": {"volume_number": v, "minor_number": minor + v},
                                              "device_path": f"/dev/drbd{minor + v}",
                                              "allocated_size_kib": 0 if thin else gross,
                                              "usable_size_kib": size_kib}},
                    {"type": "STORAGE", "data": {"volume_number": v, "allocated_size_kib": 0 if thin else gross,
                                                 "usable_size_kib": gross}},
                ],
                "reports": [],
            } for v in range(volumes)]
            item = {
                "name": name, "node_name": node, "props": dict(props or {}), "flags": all_flags,
                "layer_object": {"children": [{"children": [], "type": "STORAGE", "storage": {"storage_volumes": []}}],
                                 "type": "DRBD", "drbd": {"node_id": node_id, "peer_slots": 7, "al_stripes": 1,
                                                          "al_size": 32, "flags": [], "drbd_volumes": []}},
                "state": {"in_use": in_use}, "uuid": str(uuid.uuid4()),
                "create_timestamp": int(time.time() * 1000), "volumes": vols,
            }
            self._resources[(name, node)] = item
            for peer, memory in (self._quorum_memory.get(name) or {}).items():  # a fresh peer joins the members
                if memory.members is not None:  # (drbd_state.c update_members)
                    self._quorum_memory[name][peer] = dataclasses.replace(memory, members=memory.members | {node})
        return item

    def set_disk_state(self, name: str, node: str, disk_state: str, *, sync_peer: str | None = None,
                       done_percentage: float | None = None) -> None:
        with self._lock:
            name, node = self._rd_name(name), self._node_name(node)
            sync_peer = None if sync_peer is None else self._node_name(sync_peer)
            self._changed()
            for vol in self._resources[(name, node)]["volumes"]:
                vol["state"] = {"disk_state": disk_state}
                if sync_peer:
                    vol["state"]["replication_states"] = {sync_peer: {
                        "replication_state": "SyncTarget", "done_percentage": done_percentage}}

    def set_in_use(self, name: str, node: str, in_use: bool) -> None:
        """The application on ``node`` opens (Primary) or closes the device."""
        with self._lock:
            name, node = self._rd_name(name), self._node_name(node)
        self._network(lambda _net: self._resources[(name, node)]["state"].__setitem__("in_use", in_use),
                      resources=[name])

    def set_connection(self, name: str, node: str, peer: str, connected: bool) -> None:
        """Override one direction of one connection (older scenarios; new ones use the network events)."""
        with self._lock:
            name, node, peer = self._rd_name(name), self._node_name(node), self._node_name(peer)
            self._changed()
            self._conn_override[(name, node, peer)] = connected

    def remove_resource(self, name: str, node: str | None = None) -> None:
        with self._lock:
            name, node = self._rd_name(name), None if node is None else self._node_name(node)
            self._changed()
            for key in [k for k in self._resources if k[0] == name and (node is None or k[1] == node)]:
                for vol in self._resources.pop(key).get("volumes", []):  # a thick pool gets its space back
                    pool_item = self._pools.get((key[1], vol.get("storage_pool_name") or ""))
                    if pool_item is not None and pool_item.get("provider_kind") not in THIN_KINDS | {"DISKLESS"} \
                            and pool_item.get("free_capacity") is not None:
                        pool_item["free_capacity"] += vol.get("allocated_size_kib") or 0
            if node is None or not any(k[0] == name for k in self._resources):
                self._rds.pop(name, None)
                self._quorum_memory.pop(name, None)  # a resource created again under this name starts whole

    def load(self, *, nodes: Iterable[dict[str, Any]] = (), resources: Iterable[dict[str, Any]] = (),
             storage_pools: Iterable[dict[str, Any]] = ()) -> None:
        with self._lock:
            self._changed()
            for n in nodes:
                self._nodes[n["name"]] = n
            for p in storage_pools:
                self._pools[(p["node_name"], p["storage_pool_name"])] = p
            for r in resources:
                self._resources[(r["name"], r["node_name"])] = r
                self._rds.setdefault(r["name"], {"name": r["name"], "props": {}, "flags": [],
                                                 "resource_group_name": "DfltRscGrp"})

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return orjson.loads(orjson.dumps({"nodes": [self._node_view(n) for n in self._nodes],
                                              "resources": self._render_resources(list(self._resources)),
                                              "storage_pools": list(self._pools.values())}))

    # --- names: LINSTOR's lookups are case-insensitive (``same_name``); under the lock ----------------
    def _node_name(self, name: str) -> str:
        """The node ``name`` designates, spelt as created (``name`` itself when there is none)."""
        return stored_name(self._nodes, name) or name

    def _rd_name(self, name: str) -> str:
        return stored_name(self._rds, name) or name

    def _rg_name(self, name: str) -> str:
        return stored_name(self._rgs, name) or name

    def _pool_name(self, node: str, name: str) -> str:
        """The pool ``name`` designates on ``node`` (already resolved), spelt as created."""
        if (node, name) in self._pools:
            return name
        return next((p for (n, p) in self._pools if n == node and same_name(p, name)), name)

    # --- faults --------------------------------------------------------------------------------
    def inject(self, *, latency: float | None = None, fail: int = 0, status: int = 500, drop: int = 0,
               garbage: int = 0, path_prefix: str = "/", lose_answer: int = 0) -> None:
        """``fail``/``drop``/``garbage``: the request is not carried out; ``lose_answer``: it is, and the
        client never hears so (a write applied whose answer a cut connection lost)."""
        with self._lock:
            self._faults = Faults(latency, fail, status, drop, garbage, path_prefix, lose_answer)

    def reset_faults(self) -> None:
        with self._lock:
            self._faults = Faults()

    # --- properties (LINSTOR inherits them: controller < resource group < definition < resource) ---
    @staticmethod
    def _rg_item(name: str, props: dict[str, str]) -> dict[str, Any]:
        return {"name": name, "description": "", "props": dict(props), "select_filter": {"place_count": 2},
                "uuid": str(uuid.uuid4())}

    def set_pool_props(self, node: str, name: str, props: dict[str, str | None]) -> None:
        """A storage pool's own properties (e.g. ``MaxOversubscriptionRatio``); None deletes a key."""
        with self._lock:
            node = self._node_name(node)
            self._changed()
            _apply_props(self._pools[(node, self._pool_name(node, name))]["props"], props)

    def set_pool_definition_props(self, name: str, props: dict[str, str | None]) -> None:
        """A storage pool definition's properties, inherited by the pools of that name on every node."""
        with self._lock:
            self._changed()
            known = stored_name(self._pool_dfn_props, name) or name
            _apply_props(self._pool_dfn_props.setdefault(known, {}), props)

    def _pool_definitions(self) -> list[dict[str, Any]]:
        """One definition per pool name (LINSTOR makes it with the first pool of that name), and the
        diskless pool's, which always exists."""
        names: dict[str, None] = {DISKLESS_POOL: None}
        for _, pool in self._pools:
            if stored_name(names, pool) is None:
                names[pool] = None
        for pool in self._pool_dfn_props:
            if stored_name(names, pool) is None:
                names[pool] = None
        return [{"storage_pool_name": n, "props": dict(self._pool_dfn_props.get(
            stored_name(self._pool_dfn_props, n) or n, {}))} for n in names]

    def set_controller_props(self, props: dict[str, str | None]) -> None:
        """Set (or, with None, delete) controller properties."""
        with self._lock:
            self._changed()
            _apply_props(self._controller_props, props)

    def set_resource_group(self, name: str, props: dict[str, str | None] | None = None) -> None:
        with self._lock:
            name = self._rg_name(name)
            self._changed()
            rg = self._rgs.setdefault(name, self._rg_item(name, {}))
            _apply_props(rg["props"], props or {})

    def set_rd_props(self, name: str, props: dict[str, str | None], *, resource_group: str | None = None) -> None:
        """Resource-definition properties (None deletes a key), optionally moving it to another group."""
        with self._lock:
            self._changed()
            rd = self._rds[self._rd_name(name)]
            _apply_props(rd["props"], props)
            if resource_group:
                resource_group = self._rg_name(resource_group)
                self._rgs.setdefault(resource_group, self._rg_item(resource_group, {}))
                rd["resource_group_name"] = resource_group

    def set_may_promote(self, name: str, node: str, may_promote: bool) -> None:
        """Override the derived value (older scenarios; new ones use the network events)."""
        with self._lock:
            name, node = self._rd_name(name), self._node_name(node)
            self._changed()
            self._promote_override[(name, node)] = may_promote
        self._emit("may-promote-change", {"resource_name": name, "node_name": node, "may_promote": may_promote})

    # --- events --------------------------------------------------------------------------------
    def _emit(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.emitted[event] = self.emitted.get(event, 0) + 1
            subs = list(self._subscribers)
        for sub in subs:
            sub.put((event, data))

    # --- HTTP ----------------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        emu = self

        def json(doc: Any, status: int = 200) -> Response:
            return Response(orjson.dumps(doc), status_code=status, media_type="application/json")

        def error(message: str, status: int, cause: str | None = None, correction: str | None = None) -> Response:
            return json([api_rc(message, error=True, cause=cause, correction=correction)], status)

        def wanted(request: Request, key: str) -> Names | None:
            values = [v for raw in request.query_params.getlist(key) for v in raw.split(",") if v]
            return Names(values) or None

        def page(request: Request, items: list[Any]) -> list[Any]:
            offset = int(request.query_params.get("offset") or 0)
            limit = int(request.query_params.get("limit") or 0)
            return items[offset:offset + limit] if limit else items[offset:]

        async def version(_: Request) -> Response:
            return json({"version": "1.28.0", "git_hash": "emulator", "build_time": "2026-01-01T00:00:00+00:00",
                         "rest_api_version": "1.28.0"})

        async def nodes(request: Request) -> Response:
            names = wanted(request, "nodes")
            with emu._lock:
                items = [emu._node_view(n) for n in emu._nodes if names is None or n in names]
                return json(page(request, items))

        async def node(request: Request) -> Response:
            with emu._lock:
                name = emu._node_name(request.path_params["node"])
                return json(emu._node_view(name)) if name in emu._nodes else error(f"Node '{name}' not found.", 404)

        async def view_pools(request: Request) -> Response:
            names, pools = wanted(request, "nodes"), wanted(request, "storage_pools")
            with emu._lock:
                items = [p for (n, sp), p in emu._pools.items()
                         if (names is None or n in names) and (pools is None or sp in pools)]
                return json(page(request, items))

        async def node_pools(request: Request) -> Response:
            node_name = request.path_params["node"]
            if request.method == "POST":
                return await create_pool(request, node_name)
            with emu._lock:
                node_name = emu._node_name(node_name)
                if node_name not in emu._nodes:
                    return error(f"Node '{node_name}' not found.", 404)
                return json([p for (n, _), p in emu._pools.items() if n == node_name])

        async def create_pool(request: Request, node_name: str) -> Response:
            try:
                body = orjson.loads(await request.body())
                name, kind = body["storage_pool_name"], body["provider_kind"]
                props = dict(body.get("props") or {})
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                return error("Invalid storage pool body", 400, correction="Send storage_pool_name and provider_kind")
            with emu._lock:
                node_name = emu._node_name(node_name)  # the pool is the node's as LINSTOR spells it
                node_item = emu._nodes.get(node_name)
                if node_item is None:
                    return error(f"Node '{node_name}' not found.", 404, cause="The specified node does not exist.")
                if not POOL_NAME.match(name):
                    return error(f"Invalid name: '{name}'", 400,
                                 cause="Storage pool names are 3..48 characters: a letter or '_', then letters, "
                                 "digits, '_' or '-'.")
                if kind not in node_item["storage_providers"]:
                    return error(f"Storage provider '{kind}' is not supported on node '{node_name}'", 400,
                                 cause="The satellite reported the provider as unsupported.")
                bad = next((k for k, v in props.items() if k in POOL_PROP_VALUES and not POOL_PROP_VALUES[k].match(v)),
                           None)
                if bad is not None:
                    return error(f"The value '{props[bad]}' is not valid for the key '{bad}'", 400,
                                 cause=f"{bad} must match {POOL_PROP_VALUES[bad].pattern}")
                taken = next((p for (n, p) in emu._pools if n == node_name and same_name(p, name)), None)
                if taken is not None:
                    return error(f"Storage pool '{taken}' on node '{node_name}' already exists.", 409,
                                 cause="Storage pool names are compared case-insensitively.")
                generic = props.get("StorDriver/StorPoolName")
                if generic and "StorDriver/LvmVg" not in props and kind in ("LVM", "LVM_THIN"):
                    vg, _, thin = generic.partition("/")
                    props["StorDriver/LvmVg"] = vg
                    if thin:
                        props["StorDriver/ThinPool"] = thin
                free = 100 * 1024**2 if kind != "DISKLESS" else None
                emu._pools[(node_name, name)] = emu._pool_item(node_name, name, kind, free, free, props)
            return json([api_rc(f"New storage pool '{name}' on node '{node_name}' registered.")], 201)

        async def delete_pool(request: Request) -> Response:
            node_name, name = request.path_params["node"], request.path_params["pool"]
            with emu._lock:
                node_name = emu._node_name(node_name)
                name = emu._pool_name(node_name, name)
                if (node_name, name) not in emu._pools:
                    return error(f"Storage pool '{name}' on node '{node_name}' not found.", 404)
                users = [rd for (rd, n), r in emu._resources.items()
                         if n == node_name and any(same_name(v.get("storage_pool_name") or "", name)
                                                   for v in r.get("volumes", []))]
                if users:
                    return error(f"Storage pool '{name}' on node '{node_name}' is still in use.", 409,
                                 cause=f"Resources use it: {', '.join(sorted(users))}",
                                 correction="Delete the resources first.")
                del emu._pools[(node_name, name)]
            return json([api_rc(f"Storage pool '{name}' on node '{node_name}' deleted.")])

        async def view_resources(request: Request) -> Response:
            names, rds, pools = wanted(request, "nodes"), wanted(request, "resources"), wanted(request, "storage_pools")
            with emu._lock:
                if names is None and rds is None and pools is None and not request.query_params.get(
                        "offset") and not request.query_params.get("limit"):
                    return Response(emu._resources_json(), media_type="application/json")
                grouped = emu._by_rd()
                candidates = (emu._resources.items() if rds is None else
                              [((rd, n), r) for rd in sorted({emu._rd_name(x) for x in rds})
                               for n, r in grouped.get(rd, {}).items()])
                keys = [(rd, n) for (rd, n), r in candidates
                        if (names is None or n in names)
                        and (pools is None or any(v.get("storage_pool_name") in pools for v in r.get("volumes", [])))]
                return json(page(request, emu._render_resources(keys)))

        async def rd_list(request: Request) -> Response:
            names = wanted(request, "resource_definitions")
            with emu._lock:
                return json(page(request, [d for n, d in emu._rds.items() if names is None or n in names]))

        async def rd_one(request: Request) -> Response:
            rd = request.path_params["rd"]
            if request.method == "PUT":  # ResourceDefinitionModify: override_props, delete_props
                try:
                    body = orjson.loads(await request.body() or b"{}")
                    changes: dict[str, str | None] = {str(k): str(v) for k, v in
                                                      (body.get("override_props") or {}).items()}
                    changes.update({str(k): None for k in body.get("delete_props") or ()})
                except (orjson.JSONDecodeError, AttributeError, TypeError):
                    return error("Invalid JSON body", 400)
                with emu._lock:
                    if emu._rd_name(rd) not in emu._rds:
                        return error(f"Resource definition '{rd}' not found.", 404)
                    emu.set_rd_props(rd, changes)
                return json([api_rc(f"Resource definition '{rd}' modified.")])
            with emu._lock:
                found = emu._rds.get(emu._rd_name(rd))
                return json(found) if found else error(f"Resource definition '{rd}' not found.", 404)

        async def rd_resources(request: Request) -> Response:
            with emu._lock:
                rd = emu._rd_name(request.path_params["rd"])
                if rd not in emu._rds:
                    return error(f"Resource definition '{rd}' not found.", 404)
                return json(emu._render_resources([(rd, n) for n in emu._by_rd().get(rd, {})]))

        async def rg_list(request: Request) -> Response:
            names = wanted(request, "resource_groups")
            with emu._lock:
                return json(page(request, [g for n, g in emu._rgs.items() if names is None or n in names]))

        async def controller_props(_: Request) -> Response:
            with emu._lock:
                return json(dict(emu._controller_props))

        async def pool_definitions(request: Request) -> Response:
            with emu._lock:
                return json(page(request, emu._pool_definitions()))

        async def events(request: Request) -> Response:
            if not emu.supports_events:
                return error("Not found", 404)
            sub = Subscriber(asyncio.get_running_loop())
            with emu._lock:
                emu._subscribers.append(sub)

            async def stream():
                try:
                    yield b": connected\n\n"
                    while not emu._closing:
                        try:
                            item = await within(sub.queue.get(), 0.5)
                        except TimeoutError:
                            if await request.is_disconnected():
                                return
                            continue
                        if item is None:
                            return
                        name, data = item
                        if request.url.path.endswith("/promotion") != (name == "may-promote-change"):
                            continue
                        yield b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                finally:
                    with emu._lock:
                        if sub in emu._subscribers:
                            emu._subscribers.remove(sub)

            return StreamingResponse(stream(), media_type="text/event-stream")

        async def not_found(request: Request) -> Response:
            return error(f"No such REST path: {request.method} {request.url.path}", 404)

        routes = [
            Route("/v1/controller/version", version),
            Route("/v1/nodes", nodes),
            Route("/v1/nodes/{node}", node),
            Route("/v1/nodes/{node}/storage-pools", node_pools, methods=["GET", "POST"]),
            Route("/v1/nodes/{node}/storage-pools/{pool}", delete_pool, methods=["DELETE"]),
            Route("/v1/view/storage-pools", view_pools),
            Route("/v1/view/resources", view_resources),
            Route("/v1/resource-definitions", rd_list),
            Route("/v1/resource-definitions/{rd}", rd_one, methods=["GET", "PUT"]),
            Route("/v1/resource-definitions/{rd}/resources", rd_resources),
            Route("/v1/resource-groups", rg_list),
            Route("/v1/controller/properties", controller_props),
            Route("/v1/storage-pool-definitions", pool_definitions),
            Route("/v1/events/nodes", events),
            Route("/v1/events/drbd/promotion", events),
            Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            emu._closing = False
            yield
            emu._closing = True  # open event streams end, so the server can stop

        app = Starlette(routes=routes, lifespan=lifespan)
        return _FaultMiddleware(app, self)  # type: ignore[return-value]


# --- the DRBD model ------------------------------------------------------------------------------


@dataclass
class Reachability:
    """Who can talk to whom. Everything a client reads about connections is derived from this."""

    powered_off: set[str] = field(default_factory=set)
    controller_cut: set[str] = field(default_factory=set)  # satellites the controller cannot reach
    peer_cut: set[frozenset[str]] = field(default_factory=set)  # replication links down, every resource
    peer_cut_rsc: set[tuple[str, frozenset[str]]] = field(default_factory=set)  # one resource's link down

    def controller_reaches(self, node: str) -> bool:
        return node not in self.powered_off and node not in self.controller_cut

    def peers_talk(self, a: str, b: str, resource: str) -> bool:
        link = frozenset((a, b))
        return (a not in self.powered_off and b not in self.powered_off and link not in self.peer_cut
                and (resource, link) not in self.peer_cut_rsc)


@dataclass(frozen=True)
class ReplicaDrbd:
    """One replica's DRBD status as its own node reports it (``drbdsetup events2``)."""

    connections: dict[str, bool]
    quorum: bool
    may_promote: bool
    promotion_score: int
    suspended: bool  # I/O frozen: Primary without quorum under on-no-quorum suspend-io


def _touched(before: Reachability, after: Reachability) -> tuple[set[str], set[str]] | None:
    """(nodes whose links changed, resources with a per-resource link change), or None if no link did."""
    nodes = (before.powered_off ^ after.powered_off) | (before.controller_cut ^ after.controller_cut)
    for link in before.peer_cut ^ after.peer_cut:
        nodes |= link
    rds = {rd for rd, _link in before.peer_cut_rsc ^ after.peer_cut_rsc}
    return (nodes, rds) if nodes or rds else None


def _flag(item: dict[str, Any], flag: str) -> bool:
    return flag in (item.get("flags") or [])


def _up_to_date(item: dict[str, Any]) -> bool:
    states = [((v.get("state") or {}).get("disk_state") or "") for v in item.get("volumes") or []]
    return bool(states) and all(s == "UpToDate" for s in states)


@dataclass(frozen=True)
class DrbdModel:
    """A resource's DRBD: every powered replica's view, and what each node remembers for the next change."""

    replicas: dict[str, ReplicaDrbd]
    memory: dict[str, quorum_rules.Memory]


def drbd_model(resource: str, replicas: dict[str, dict[str, Any]], net: Reachability,
               props: dict[str, str], overrides: dict[tuple[str, str, str], bool] | None = None,
               memory: dict[str, quorum_rules.Memory] | None = None) -> DrbdModel:
    """Every powered replica's DRBD view of ``resource``, from the reachability matrix and what each
    node remembers (``memory``, from the previous network event).

    Quorum and ``may_promote`` are DRBD's own rules (``linstor_scheduler.drbd_quorum``): diskful
    replicas vote, every diskless one (client or TIE_BREAKER) counts for the tie-breaker,
    ``quorum-minimum-redundancy`` applies. A node that lost power starts again without quorum.
    """
    live = {n: r for n, r in replicas.items() if not (_flag(r, "DELETE") or _flag(r, "INACTIVE"))}
    model = {n: quorum_rules.Replica(n, not _flag(r, "DISKLESS"), _up_to_date(r),
                                     bool((r.get("state") or {}).get("in_use"))) for n, r in live.items()}
    alive = {n for n in live if n not in net.powered_off}
    overrides = overrides or {}
    table = {(a, b): overrides.get((resource, a, b), net.peers_talk(a, b, resource))
             for a in live for b in live if a != b}

    def links(node: str, peer: str) -> bool:
        return table[(node, peer)]

    options = quorum_rules.Options.from_props(props)
    result = quorum_rules.outcome(model, alive, links, options, memory)
    out: dict[str, ReplicaDrbd] = {}
    for node in sorted(alive):
        conns = {p: table[(node, p)] for p in live if p != node}
        quorum = result.quorum[node].quorum
        diskful, up_to_date = model[node].diskful, model[node].up_to_date
        data = up_to_date if diskful else any(up and model[p].diskful and model[p].up_to_date
                                               for p, up in conns.items())
        score = ((10000 if diskful and up_to_date else 0) + 100 * sum(conns.values()) + (2 if quorum else 0)
                 if diskful or data else 1)
        out[node] = ReplicaDrbd(conns, quorum, result.promotable[node], score,
                                suspended=model[node].primary and not quorum and options.on_no_quorum == "suspend-io")
    remembered = {**result.memory, **{n: quorum_rules.BOOTED for n in live if n not in alive}}
    return DrbdModel(out, remembered)


def _apply_props(target: dict[str, str], changes: dict[str, str | None]) -> None:
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


class _FaultMiddleware:
    """Records every request and applies the injected faults before the app sees it."""

    def __init__(self, app: Any, emu: LinstorEmulator) -> None:
        self.app = app
        self.emu = emu

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        query = scope.get("query_string", b"").decode()
        emu = self.emu
        action = None
        with emu._lock:
            emu.requests.append((scope["method"], path + (f"?{query}" if query else "")))
            f = emu._faults
            latency = f.latency if path.startswith(f.path_prefix) else None
            if path.startswith(f.path_prefix):
                if f.fail > 0:
                    f.fail -= 1
                    action = "fail"
                elif f.drop > 0:
                    f.drop -= 1
                    action = "drop"
                elif f.garbage > 0:
                    f.garbage -= 1
                    action = "garbage"
                elif f.lose_answer > 0:
                    f.lose_answer -= 1
                    action = "lose"
            status = f.status
        if latency:
            await asyncio.sleep(latency)  # injected latency, the fault under test
        if action == "fail":
            body = orjson.dumps([api_rc("Injected failure", error=True, cause="fault injection",
                                        correction="retry later")])
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if action == "drop":
            await _cut_short(send)
            raise ConnectionAbortedError("injected dropped connection")
        if action == "lose":
            async def swallow(message: dict[str, Any]) -> None:
                return None  # the write is done; its answer goes nowhere
            await self.app(scope, receive, swallow)
            await _cut_short(send)  # as "drop": the client sees a broken connection, not a 500
            raise ConnectionAbortedError("injected: the answer of a write that was carried out is lost")
        if action == "garbage":
            body = b"[{this is not json"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


async def _cut_short(send: Any) -> None:
    """Promise a body, send part of it: with the exception that follows, a broken connection."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
    await send({"type": "http.response.body", "body": b"[{", "more_body": True})
