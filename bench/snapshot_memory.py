"""Memory of ``linstor-scheduler extender --snapshot FILE``, measured from outside the process.

Writes a JSON snapshot of N nodes, M resource items (the REST shapes of extender_bench.py,
written item by item so this script stays small) and a bound PVC + PV per resource definition (the
shapes ``kubectl get -o json`` shows, managedFields and all), starts the real CLI on it, waits until
``/readyz`` answers 200, and reads the server's VmRSS and VmHWM (peak) from /proc. Prints one
JSON line; tests/test_snapshot_files.py runs it at 5,000 nodes and 100,000 resources.

    python bench/snapshot_memory.py --nodes 5000 --resources 100000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extender_bench import GIB_KIB, free_port, k, node_item, pool_item, resource_item

from devkit.kube_standin import managed_fields


def served(obj: dict, number: int) -> dict:
    """``obj`` as ``kubectl get -o json`` shows it: uid, resourceVersion, creationTimestamp and the
    managedFields the API server records (the stand-in's, devkit/kube_standin.py ``managed_fields``)."""
    meta = obj["metadata"]
    meta.update({"uid": f"00000000-0000-0000-0000-{number:012d}", "resourceVersion": str(10_000 + number),
                 "creationTimestamp": "2026-12-01T00:00:00Z"})
    meta["managedFields"] = managed_fields(obj, meta["creationTimestamp"])
    return obj


def claim_items(definitions: int, claims: int) -> Iterator[dict]:
    """A bound PVC + PV for each of the first ``claims`` resource definitions (``pvc-<n>``)."""
    for c in range(min(claims, definitions)):
        for i, obj in enumerate(k.bound_volume(f"claim-{c}", f"pvc-{c}", storage_class="linstor-thindata-r3",
                                               labels={"app.kubernetes.io/name": f"app-{c % 500}"})):
            yield served(obj, 2 * c + i)


def write_snapshot(path: Path, nodes: int, resources: int, seed: int = 5, claims: int = 0) -> None:
    rnd = random.Random(seed)
    names = [f"node-{i:05d}" for i in range(nodes)]

    def items(values) -> bytes:
        return b",".join(orjson.dumps(v) for v in values)

    with path.open("wb") as f:
        f.write(b'{"linstor":{"nodes":[' + items(node_item(n) for n in names) + b'],"storage_pools":['
                + items(pool_item(n, rnd.randint(10, 400) * GIB_KIB) for n in names) + b'],"resources":[')
        for r in range(resources):
            definition, slot = divmod(r, 3)
            if slot == 0:
                trio = rnd.sample(names, 3)
            f.write((b"," if r else b"") + orjson.dumps(resource_item(f"pvc-{definition}", trio[slot], slot == 2)))
        f.write(b']},"kubernetes":{"items":[' + items(k.node(n, zone=f"zone-{i % 3}") for i, n in enumerate(names)))
        if claims:
            f.write(b"," + items([k.storage_class("linstor-thindata-r3", replicas=3)]) + b","
                    + items(claim_items(-(-resources // 3), claims)))
        f.write(b"]}}")


def measure(path: Path) -> dict[str, float]:
    port, metrics_port = free_port(), free_port()
    while metrics_port == port:  # released and picked again: the two listeners need two ports
        metrics_port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "linstor_scheduler.cli", "extender", "--snapshot", str(path),
                             "--listen-address", "127.0.0.1", "--port", str(port),
                             "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port)],
                            stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the snapshot is loaded before uvicorn starts serving: wait for its line
            if f"Uvicorn running on http://127.0.0.1:{port}" in line:  # the verbs' server: started last
                break
        else:
            raise RuntimeError(f"the extender exited with {proc.wait()}")
        ready = time.monotonic() - started
        if httpx.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=10).status_code != 200:
            raise RuntimeError("the extender is not ready")
        status = Path(f"/proc/{proc.pid}/status").read_text()
    finally:
        proc.terminate()
        proc.wait(30)

    def mb(field: str) -> float:
        return round(int(re.search(rf"{field}:\s+(\d+)", status).group(1)) / 1024, 1)

    return {"rss_mb": mb("VmRSS"), "peak_rss_mb": mb("VmHWM"), "seconds_to_ready": round(ready, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--resources", type=int, default=100_000, help="resource items (definitions x 3)")
    parser.add_argument("--claims", type=int, default=None,
                        help="bound PVC + PV pairs (default: one per resource definition)")
    args = parser.parse_args()
    claims = -(-args.resources // 3) if args.claims is None else args.claims
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.json"
        write_snapshot(path, args.nodes, args.resources, claims=claims)
        result = {"nodes": args.nodes, "resources": args.resources, "claims": claims,
                  "file_mb": round(path.stat().st_size / 2**20, 1), **measure(path)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
