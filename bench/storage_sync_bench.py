"""LINSTOR calls of storage sync: 100 nodes x 3 tagged pools from an empty LINSTOR, then steady state.

    .venv/bin/python bench/storage_sync_bench.py [--nodes 100]

Runs one sync-node agent per node (in one process, each with its own LVM inventory of an LVM VG,
a second VG and a thin pool, all tagged) against the LINSTOR emulator over HTTP, then sync-classes
against the emulator and the Kubernetes API stand-in, and prints the calls each made, by method
and path, for the first pass and a steady-state pass. docs/storage-sync.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.linstor.client import LinstorClient
from storage_sync import ClassReconciler, LogicalVolume, LvmInventory, NodeAgent, VolumeGroup


class NodeLvm:
    def __init__(self, node: str) -> None:
        self.inventory = LvmInventory(
            (VolumeGroup("vg_data", f"{node}-vg-data", ("linstor-data",), 1 << 40, 1 << 40),
             VolumeGroup("vg_ssd", f"{node}-vg-ssd", ("linstor-ssd",), 1 << 39, 1 << 39),
             VolumeGroup("linstor_thin", f"{node}-vg-thin", (), 1 << 41, 0)),
            (LogicalVolume("thindata", f"{node}-thin", "linstor_thin", f"{node}-vg-thin", ("linstor-thindata",),
                           "twi-aotz--", 1 << 41),))

    def scan(self) -> LvmInventory:
        return self.inventory


def summary(requests: list[tuple[str, str]]) -> str:
    counts = collections.Counter((m, re.sub(r"^/v1/nodes/[^/]+/", "/v1/nodes/{node}/", p.split("?")[0]))
                                 for m, p in requests)
    total = sum(counts.values())
    writes = sum(c for (m, _), c in counts.items() if m != "GET")
    parts = ", ".join(f"{m} {p}: {c}" for (m, p), c in sorted(counts.items()))
    return f"{total} calls ({writes} writes): {parts}"


async def main(nodes: int) -> None:
    emu, ks = LinstorEmulator(), KubeStandin()
    names = [f"node-{i:03d}" for i in range(nodes)]
    for name in names:
        emu.add_node(name)
    with emu.serve() as lsrv, ks.serve() as ksrv:
        async with LinstorClient(lsrv.url) as client:
            agents = [NodeAgent(n, NodeLvm(n), client) for n in names]
            for label in ("first pass (empty LINSTOR)", "steady state"):
                emu.clear_requests()
                started = time.perf_counter()
                results = [await a.run_pass() for a in agents]
                took = time.perf_counter() - started
                assert all(r.ok for r in results)
                print(f"sync-node x{nodes}, {label}: {summary(emu.requests)}; "
                      f"{len(emu.requests) / nodes:.1f} per node; {took:.2f}s")
            api = ks.api_client(ksrv.url)
            rec = ClassReconciler(client, api)
            for label in ("first pass", "steady state"):
                emu.clear_requests()
                ks.clear_requests()
                result = await rec.run_pass()
                assert result.ok
                print(f"sync-classes, {label}: LINSTOR {summary(emu.requests)}; Kubernetes {summary(ks.requests)}")
        pools = [p for p in emu.snapshot()["storage_pools"] if p["provider_kind"] != "DISKLESS"]
        print(f"pools in LINSTOR: {len(pools)}; StorageClasses: {len(ks.list('StorageClass'))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    asyncio.run(main(parser.parse_args().nodes))
