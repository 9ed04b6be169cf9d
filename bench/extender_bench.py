"""Extender benchmark: our extender vs. a bare-endpoint floor vs. a per-request-LINSTOR-lookup
baseline (what the Go extenders do), all measured in one run with wrk on loopback.

    apt-get install wrk                     # the load generator (C; leaves the CPU to the server)
    .venv/bin/python bench/extender_bench.py [--nodes 1000 --resources 20000 --duration 10]
    .venv/bin/python bench/extender_bench.py --quick

Each server runs in its own process under uvicorn (uvloop + httptools, one worker, access log off).
Prints requests/s, p50 and p99 per server and the ratios; docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devkit import kube_objects as k  # noqa: E402

GIB_KIB = 1024 * 1024
GLIBC_DEFAULTS = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"}


# --- the generated cluster (REST shapes, the same for the extender and the emulator) -------------
def node_item(name: str) -> dict[str, Any]:
    return {"name": name, "type": "SATELLITE", "connection_status": "ONLINE", "flags": [], "props": {},
            "storage_providers": ["DISKLESS", "LVM", "LVM_THIN"], "uuid": name}


def pool_item(node: str, free: int) -> dict[str, Any]:
    return {"storage_pool_name": "thindata", "node_name": node, "provider_kind": "LVM_THIN",
            "free_capacity": free, "total_capacity": 500 * GIB_KIB, "props": {"StorDriver/LvmVg": "vg"}}


def resource_item(name: str, node: str, diskless: bool = False) -> dict[str, Any]:
    """A realistic /v1/view/resources item (~1.5 KB as JSON)."""
    return {
        "name": name, "node_name": node, "props": {"StorPoolName": "thindata"},
        "flags": ["DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"] if diskless else [],
        "layer_object": {"type": "DRBD", "children": [{"type": "STORAGE", "children": [], "storage": {}}],
                         "drbd": {"node_id": 0, "peer_slots": 7, "al_stripes": 1, "al_size": 32, "flags": [],
                                  "connections": {"peer": {"connected": True, "message": "Connected"}},
                                  "promotion_score": 10102, "may_promote": True, "drbd_volumes": []}},
        "state": {"in_use": False}, "uuid": f"{name}-{node}", "create_timestamp": 1700000000000,
        "volumes": [{"volume_number": 0, "storage_pool_name": "DfltDisklessStorPool" if diskless else "thindata",
                     "provider_kind": "DISKLESS" if diskless else "LVM_THIN", "device_path": "/dev/drbd1000",
                     "allocated_size_kib": 0 if diskless else GIB_KIB, "usable_size_kib": GIB_KIB, "props": {},
                     "flags": [], "state": {"disk_state": "Diskless" if diskless else "UpToDate"},
                     "layer_data_list": [{"type": "DRBD", "data": {}}, {"type": "STORAGE", "data": {}}],
                     "uuid": f"{name}-{node}-0", "reports": []}],
    }


def full_node(name: str, zone: str) -> dict[str, Any]:
    """A v1.Node as kube-scheduler sends it with nodeCacheCapable: false (~3 KB)."""
    obj = k.full_node(name, zone=zone, region="eu-1")
    obj["metadata"].update({"uid": f"uid-{name}", "resourceVersion": "12345",
                            "creationTimestamp": "2026-01-01T00:00:00Z"})
    return obj


def make_cluster(nodes: int, resources: int, pvcs: int, seed: int = 7) -> dict[str, Any]:
    rnd = random.Random(seed)
    names = [f"node-{i:05d}" for i in range(nodes)]
    res = []
    for r in range(resources):
        a, b, c = rnd.sample(names, 3)
        res += [resource_item(f"pvc-{r}", a), resource_item(f"pvc-{r}", b), resource_item(f"pvc-{r}", c, True)]
    kube: list[dict[str, Any]] = [k.node(n, zone=f"zone-{i % 3}", region="eu-1") for i, n in enumerate(names)]
    kube.append(k.storage_class("linstor-thindata-r2"))
    for r in range(pvcs):
        kube += k.bound_volume(f"claim-{r}", f"pvc-{r}")
    for r in range(pvcs // 10):
        kube.append(k.pvc(f"unbound-{r}", size="20Gi"))
    return {"linstor": {"nodes": [node_item(n) for n in names],
                        "storage_pools": [pool_item(n, rnd.randint(10, 400) * GIB_KIB) for n in names],
                        "resources": res},
            "kubernetes": {"items": kube}, "names": names}


def make_bodies(cluster: dict[str, Any], count: int, pvcs: int, full_nodes: bool, seed: int = 11,
                prefix: str = "bench") -> list[bytes]:
    rnd = random.Random(seed)
    names = cluster["names"]
    node_list = {"kind": "NodeList", "apiVersion": "v1", "metadata": {},
                 "items": [full_node(n, f"zone-{i % 3}") for i, n in enumerate(names)]} if full_nodes else None
    bodies = []
    for i in range(count):
        claims = [f"claim-{rnd.randrange(pvcs)}" for _ in range(rnd.randint(1, 3))]
        if i % 10 == 0:
            claims.append(f"unbound-{rnd.randrange(max(1, pvcs // 10))}")
        pod = k.pod(f"{prefix}-{i}", claims=claims)
        # As kube-scheduler writes ExtenderArgs (Go field order, no omitempty: the unused field is null)
        args = ({"Pod": pod, "Nodes": node_list, "NodeNames": None} if full_nodes
                else {"Pod": pod, "Nodes": None, "NodeNames": names})
        bodies.append(orjson.dumps(args))
    return bodies


# --- the servers (each run in its own process) ------------------------------------------------
def floor_app(echo: bool) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        out = body if echo else b'{"Error":""}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app


def extender_app(snapshot: str) -> Any:
    from linstor_scheduler import gcpolicy
    from scheduler_extender import create_app, snapshot_extender

    extender = snapshot_extender(snapshot)
    gcpolicy.SERVICE.published(new_content=True)  # as ``extender --snapshot`` does for the state it serves
    return create_app(extender).verbs  # what the CLI serves on the verbs' listener


def baseline_app(snapshot: str, linstor_url: str) -> Any:
    """Per request: GET /v1/nodes + GET /v1/view/resources?resources=X per volume, then score."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from linstor_scheduler.linstor.models import Node, Resource
    from linstor_scheduler.snapshot import read_snapshot
    from linstor_scheduler.volumes import resolve_pod_claims
    from scheduler_extender import (
        ClusterState,
        ExtenderKubeView,
        PriorityEncoder,
        ResourceIndexer,
        Weights,
        decode_args,
        judge_many,
        node_class,
        prepare,
    )

    snap = read_snapshot(snapshot, resources=ResourceIndexer())
    kube = ExtenderKubeView.from_objects([*snap.kube_items, *snap.claims])  # the state's Kubernetes view
    http = httpx.AsyncClient(base_url=linstor_url, timeout=30)
    enc = PriorityEncoder()

    async def prioritize(request: Request) -> Response:
        args = decode_args(await request.body())
        empty = ClusterState(0, {}, {}, kube, 0, 0, {})
        claims = resolve_pod_claims(args.pod, empty.get_pvc, empty.get_pv, empty.get_sc)
        nodes = [Node.parse(n) for n in (await http.get("/v1/nodes")).json()]
        items = []
        for c in claims:
            if c.resource:
                got = await http.get("/v1/view/resources", params={"resources": c.resource})
                items += [Resource.parse(i) for i in got.json()]
        state = ClusterState.build(generation=1, nodes=nodes, pools=[], resources=items, kube=kube,
                                   linstor_synced_at=0, kube_synced_at=0)
        ctx = prepare(claims, [state.resources.get(c.resource) if c.resource else None for c in claims], state)
        classes = {n: node_class(n, state) for n in args.node_names}
        table = judge_many(args.node_names, ctx, state, Weights(), classes)
        return Response(enc.encode(args.node_names, [table[n].score for n in args.node_names]),
                        media_type="application/json")

    return Starlette(routes=[Route("/prioritize", prioritize, methods=["POST"])])


def emulator_app(snapshot: str) -> Any:
    from devkit.linstor_emulator import LinstorEmulator

    doc = orjson.loads(Path(snapshot).read_bytes())
    emu = LinstorEmulator(supports_events=False)
    emu.load(**doc["linstor"])
    emu.requests = _Discard()  # type: ignore[assignment]  # no request log growth during the run
    return emu.app


class _Discard(list):
    def append(self, _: object) -> None:
        pass


def serve(kind: str, port: int, snapshot: str, linstor_url: str, loop: str, http: str) -> None:
    import uvicorn

    from linstor_scheduler.allocator import keep_large_buffers

    keep_large_buffers()  # as serve_asgi does for the extender and the webhook: every server here alike

    app = {"floor": lambda: floor_app(False), "echo": lambda: floor_app(True),
           "extender": lambda: extender_app(snapshot), "baseline": lambda: baseline_app(snapshot, linstor_url),
           "emulator": lambda: emulator_app(snapshot)}[kind]()
    uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, http=http, access_log=False, log_level="warning",
                interface="asgi3")


# --- running ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, kind: str, snapshot: str, linstor_url: str = "", loop: str = "uvloop",
                 http: str = "httptools", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--port", str(self.port), "--snapshot", snapshot,
             "--linstor-url", linstor_url, "--loop", loop, "--http", http], env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 300
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.05)  # waiting for a child process to listen: no condition to wait on
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


LUA = """
local bodies = {}
local i = 0
local dir = "%s"
local n = %d
for j = 0, n - 1 do
  local f = io.open(dir .. "/" .. j .. ".json", "rb")
  bodies[j] = f:read("*all")
  f:close()
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local path = "%s"
request = function()
  local body, p
  if path == "cycle" then
    -- kube-scheduler's order: filter, then prioritize, for each pod
    body = bodies[math.floor(i / 2) %% n]
    if i %% 2 == 0 then p = "/filter" else p = "/prioritize" end
  else
    body = bodies[i %% n]
    p = path
  end
  i = i + 1
  return wrk.format(nil, p, nil, body)
end
"""


def minor_faults(pid: int) -> int:
    """The process's minor page faults so far (/proc/PID/stat field 10): pages the kernel had to
    hand it again, e.g. after malloc trimmed the heap."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def wrk(url: str, path: str, bodies: list[bytes], duration: int, connections: int,
        pid: int | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        for j, b in enumerate(bodies):
            Path(tmp, f"{j}.json").write_bytes(b)
        script = Path(tmp, "bodies.lua")
        script.write_text(LUA % (tmp, len(bodies), path))
        subprocess.run(["wrk", "-t1", "-c", str(connections), "-d", "2s", "-s", str(script), url],
                       capture_output=True, check=True)  # warm-up
        faults = minor_faults(pid) if pid else 0
        out = subprocess.run(["wrk", "-t1", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s",
                              str(script), url], capture_output=True, text=True, check=True).stdout
        faults = minor_faults(pid) - faults if pid else 0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {m.group(1): m.group(2) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": _ms(lat.get("50", "0ms")), "p99": _ms(lat.get("99", "0ms")),
            "errors": int(errors.group(1)) if errors else 0, "socket_errors": sock_err.group(1) if sock_err else "",
            "faults": round(faults / max(total, 1), 1)}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def memory_probe(nodes: int, resources: int) -> None:
    """Build the index the way the live sync does (item by item, raw items dropped); print RSS."""
    import msgspec

    from linstor_scheduler.linstor.models import Node, Resource, StoragePool
    from scheduler_extender import ClusterState, ExtenderKubeView, index_resources

    rnd = random.Random(3)
    names = [f"node-{i:05d}" for i in range(nodes)]
    started = time.perf_counter()

    def items():
        for r in range(resources // 3):
            a, b, c = rnd.sample(names, 3)
            for node, diskless in ((a, False), (b, False), (c, True)):
                yield msgspec.json.decode(orjson.dumps(resource_item(f"pvc-{r}", node, diskless)), type=Resource)

    index = index_resources(items())
    state = ClusterState.build(
        generation=1, nodes=[Node.parse(node_item(n)) for n in names],
        pools=[StoragePool.parse(pool_item(n, GIB_KIB)) for n in names], resources=index,
        kube=ExtenderKubeView.from_objects([k.node(n, zone="z") for n in names]), linstor_synced_at=0, kube_synced_at=0)
    built = time.perf_counter() - started
    gc.collect()
    status = Path("/proc/self/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    print(json.dumps({"nodes": len(state.nodes), "resource_items": resources, "resources": len(state.resources),
                      "rss_mb": round(rss, 1), "peak_rss_mb": round(hwm, 1), "build_seconds": round(built, 2)}))


def polls_probe(cluster: dict[str, Any], bodies: list[bytes], polls: int = 5) -> dict[str, Any]:
    """The live sync (refresh.Syncer) and the answer path in one process: after a warm-up pass over
    the pods (filter then prioritize each), ``polls`` LINSTOR polls each followed by one more pass.
    Unchanged polls keep the state generation, so the caches answer; for contrast, polls where one
    pool's free space moved (a new generation: every cache starts empty)."""
    import msgspec

    from linstor_scheduler import gcpolicy
    from linstor_scheduler.linstor.compact import (
        ArraySplitter,
        NodeItem,
        ResourceItem,
        StoragePoolDefinitionItem,
        StoragePoolItem,
    )
    from scheduler_extender import EXTENDER_KINDS, Answerer, Extender, ExtenderMetrics, StateHolder, Syncer

    linstor = cluster["linstor"]
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in EXTENDER_KINDS}
    for item in cluster["kubernetes"]["items"]:
        by_kind.setdefault(item["kind"], []).append(item)
    nodes_body, resources_body = orjson.dumps(linstor["nodes"]), orjson.dumps(linstor["resources"])

    class Linstor:
        """LinstorClient's read methods without the HTTP: each poll decodes the bytes afresh, as the
        client does the wire's (new records every poll; the resources cut into batches as they stream)."""

        def __init__(self) -> None:
            self.pools = linstor["storage_pools"]

        async def get_nodes_compact(self) -> list[NodeItem]:
            return msgspec.json.decode(nodes_body, type=list[NodeItem])

        async def get_storage_pools_compact(self) -> list[StoragePoolItem]:
            return msgspec.json.decode(orjson.dumps(self.pools), type=list[StoragePoolItem])

        async def get_storage_pool_definitions_compact(self) -> list[StoragePoolDefinitionItem]:
            return []

        async def get_controller_properties(self) -> dict[str, str]:
            return {}

        async def iter_resource_batches(self) -> Any:
            splitter = ArraySplitter(ResourceItem)
            for start in range(0, len(resources_body), 65536):  # as the body arrives: 64 KiB chunks
                batch = splitter.feed(resources_body[start:start + 65536])
                if batch:
                    yield batch
            yield splitter.close()

    class Informer:
        def __init__(self, items: list[dict[str, Any]]) -> None:
            self._items = items

        def items(self) -> list[dict[str, Any]]:
            return list(self._items)

    class Caches:
        synced = True

        def __getitem__(self, kind: str) -> Informer:
            return Informer(by_kind[kind])

        def wait_synced(self, _: float) -> bool:
            return True

        def age(self) -> float:
            return 0.0

    async def run() -> dict[str, Any]:
        holder, client, metrics = StateHolder(), Linstor(), ExtenderMetrics()
        syncer = Syncer(holder, client, Caches(), poll_interval=3600, use_events=False, metrics=metrics,
                        gc_policy=gcpolicy.SERVICE)  # the collector as the live service has it
        extender = Extender(holder)
        answerer = Answerer(extender, metrics)
        await syncer.start()
        while not holder.ready:
            await asyncio.sleep(0.01)  # the first sync runs in the syncer's tasks

        async def one_pass() -> float:
            started = time.perf_counter()
            for body in bodies:
                await answerer.answer("filter", body)
                await answerer.answer("prioritize", body)
            return (time.perf_counter() - started) / (2 * len(bodies)) * 1e6

        await one_pass()
        result: dict[str, Any] = {}
        for label, change in (("unchanged", False), ("changed", True)):
            hits, misses, poll_ms, request_us = extender.answers.hits, extender.answers.misses, [], []
            for i in range(polls):
                if change:
                    client.pools = [dict(p, free_capacity=p["free_capacity"] + i + 1) if n == 0 else p
                                    for n, p in enumerate(client.pools)]
                started = time.perf_counter()
                await syncer.sync_linstor_once()
                poll_ms.append((time.perf_counter() - started) * 1000)
                request_us.append(await one_pass())
            looked = extender.answers.hits - hits + extender.answers.misses - misses
            result[label] = {"answer_hit_rate": round((extender.answers.hits - hits) / looked, 3),
                             "poll_ms": round(statistics.median(poll_ms)), "us_per_request": round(
                                 statistics.median(request_us), 1), "generation": holder.state.generation}
        await syncer.stop()
        return result

    return asyncio.run(run())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--resources", type=int, default=20000, help="resource definitions (3 replicas each)")
    p.add_argument("--pvcs", type=int, default=2000, help="bound claims pods can use")
    p.add_argument("--pods", type=int, default=200, help="distinct pod bodies cycled through")
    p.add_argument("--new-pods", type=int, default=4000,
                   help="distinct pods of the every-pod-new run (more than the answer and verdict caches hold)")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="short runs (about a minute in all)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-polls", action="store_true", help="skip the cache-across-polls probe")
    p.add_argument("--skip-wrk", action="store_true", help="only the cache-across-polls probe (no servers)")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--snapshot", help=argparse.SUPPRESS)
    p.add_argument("--linstor-url", default="", help=argparse.SUPPRESS)
    p.add_argument("--loop", default="uvloop", help=argparse.SUPPRESS)
    p.add_argument("--http", default="httptools", help=argparse.SUPPRESS)
    p.add_argument("--memory-probe", nargs=2, type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        serve(a.serve, a.port, a.snapshot, a.linstor_url, a.loop, a.http)
        return
    if a.memory_probe:
        memory_probe(*a.memory_probe)
        return
    if a.skip_wrk:
        cluster = make_cluster(a.nodes, a.resources, a.pvcs)
        print(f"cache across polls: {polls_probe(cluster, make_bodies(cluster, a.pods, a.pvcs, full_nodes=False))}")
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    if a.quick:
        a.duration = 4
    cluster = make_cluster(a.nodes, a.resources, a.pvcs)
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp, "cluster.json")
        snap.write_bytes(orjson.dumps({"linstor": cluster["linstor"], "kubernetes": cluster["kubernetes"]}))
        names_bodies = make_bodies(cluster, a.pods, a.pvcs, full_nodes=False)
        hot_body = names_bodies[:1]
        full_bodies = make_bodies(cluster, 20, a.pvcs, full_nodes=True)
        rows: list[tuple[str, dict[str, float]]] = []

        def measure(label: str, kind: str, path: str, bodies: list[bytes], **server_kw: Any) -> None:
            srv = Server(kind, str(snap), **server_kw)
            try:
                rows.append((label, wrk(srv.url, path, bodies, a.duration, a.connections, srv.proc.pid)))
                print(f"{label:<44} {rows[-1][1]}", flush=True)
            finally:
                srv.stop()

        new_bodies = make_bodies(cluster, a.new_pods, a.pvcs, full_nodes=False, seed=13, prefix="new")
        measure("floor (names bodies)", "floor", "cycle", names_bodies)
        measure(f"extender cycle, {a.pods} pods repeated", "extender", "cycle", names_bodies)
        measure(f"extender cycle, every pod new ({a.new_pods})", "extender", "cycle", new_bodies)
        measure(f"extender prioritize, {a.pods} pods repeated", "extender", "/prioritize", names_bodies)
        measure("extender prioritize, one pod (hot)", "extender", "/prioritize", hot_body)
        measure("extender cycle repeated, asyncio + h11", "extender", "cycle", names_bodies, loop="asyncio",
                http="h11")
        measure("echo floor (full Node bodies)", "echo", "/filter", full_bodies)
        measure("extender filter, full Node objects", "extender", "/filter", full_bodies)
        # The same with glibc's malloc defaults: an operator's glibc.malloc tunable (here tcache_count=7,
        # glibc's own default) makes linstor_scheduler.allocator stand aside.
        measure("echo floor, glibc malloc defaults (full Node)", "echo", "/filter", full_bodies, env=GLIBC_DEFAULTS)
        measure("extender filter, glibc malloc defaults (full Node)", "extender", "/filter", full_bodies,
                env=GLIBC_DEFAULTS)
        emu = Server("emulator", str(snap))
        try:
            measure("baseline: LINSTOR lookups per request", "baseline", "/prioritize", names_bodies,
                    linstor_url=emu.url)
        finally:
            emu.stop()
        memory = None
        if not a.skip_memory:
            out = subprocess.run([sys.executable, __file__, "--memory-probe", "5000", "100000"], capture_output=True,
                                 text=True, check=True).stdout
            memory = json.loads(out.strip().splitlines()[-1])
        polls = None if a.skip_polls else polls_probe(cluster, names_bodies)
    by = dict(rows)
    floor = by["floor (names bodies)"]["rps"]
    print()
    print(f"machine: {os.cpu_count()} cores, {_cpu()}, Python {platform.python_version()}; "
          f"{a.nodes} nodes, {a.resources} resources x 3 replicas, {a.pods} pod bodies, wrk -t1 -c{a.connections} "
          f"-d{a.duration}s")
    print(f"{'server':<44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs floor':>9} {'errors':>7} {'faults/req':>11}")
    for label, r in rows:
        base = floor
        if "full Node" in label:
            base = by["echo floor, glibc malloc defaults (full Node)" if "glibc" in label else
                      "echo floor (full Node bodies)"]["rps"]
        print(f"{label:<44} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['rps'] / base:>8.0%} "
              f"{r['errors']:>7} {r['faults']:>11.1f}")
    if memory:
        print(f"memory at 5,000 nodes / 100,000 resource items: {memory}")
    if polls:
        print(f"cache across LINSTOR polls (in-process, {a.pods} pods, filter+prioritize each, after every poll): "
              f"{polls}")
    print(f"command: {' '.join(sys.argv)}")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
