"""Locality exporter memory at scale, measured from outside: the ``locality-exporter`` process's RSS
(/proc/<pid>/status) with an empty cluster and with N running pods, each with its own LINSTOR volume
(a PVC, a PV, two diskful replicas), served by the Kubernetes API stand-in and the LINSTOR emulator
over loopback.

    .venv/bin/python bench/locality_bench.py               # 100,000 pods (~5 minutes on 2 cores)
    .venv/bin/python bench/locality_bench.py --pods 10000

Prints RSS (current and peak) for both runs, the growth per pod, and, measured in this process with
tracemalloc, what the exporter keeps per pod (a PodRecord) against the whole Pod object.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from extender_bench import free_port, node_item, pool_item, resource_item  # noqa: E402

from devkit import kube_objects as k  # noqa: E402
from devkit.kube_standin import KubeStandin  # noqa: E402
from devkit.linstor_emulator import LinstorEmulator  # noqa: E402

GIB_KIB = 1024 * 1024


def a_pod(i: int, nodes: int) -> dict[str, Any]:
    """A StatefulSet-like pod as the API server returns it (containers, probes, status), bound to a node."""
    pod = k.pod(f"app-{i}", namespace=f"ns-{i % 50}", claims=[f"data-app-{i}"], node_name=f"n{i % nodes}",
                labels={"app": f"app-{i % 500}", "controller-revision-hash": "app-7d9f8c6b5"})
    pod["metadata"].update({"uid": f"00000000-0000-0000-0000-{i:012d}", "resourceVersion": str(1000 + i),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "app",
                                                 "uid": "sts", "controller": True}]})
    container = pod["spec"]["containers"][0]
    container.update({"env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                      "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                      "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5}})
    pod["status"] = {"phase": "Running", "podIP": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                     "conditions": [{"type": t, "status": "True"} for t in ("Initialized", "Ready",
                                                                            "ContainersReady", "PodScheduled")],
                     "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                            "image": "busybox", "imageID": "docker.io/library/busybox@sha256:0"}]}
    return pod


def build(pods: int, nodes: int) -> tuple[KubeStandin, LinstorEmulator]:
    ks, emu = KubeStandin(), LinstorEmulator(supports_events=False)
    names = [f"n{i}" for i in range(nodes)]
    emu.load(nodes=[node_item(n) for n in names], storage_pools=[pool_item(n, 400 * GIB_KIB) for n in names])
    for n in names:
        ks.add(k.node(n, zone=f"z{int(n[1:]) % 3}"))
    ks.add(k.storage_class("linstor-thindata-r2"))
    resources = []
    for i in range(pods):
        handle = f"pvc-{i:08d}"
        for obj in k.bound_volume(f"data-app-{i}", handle, namespace=f"ns-{i % 50}"):
            ks.add(obj)
        ks.add(a_pod(i, nodes))
        # the pod's node has a replica for 90% of the pods, the others run on a diskless one
        local = f"n{i % nodes}" if i % 10 else f"n{(i + 1) % nodes}"
        resources += [resource_item(handle, local), resource_item(handle, f"n{(i + 2) % nodes}")]
    emu.load(resources=resources)
    return ks, emu


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes, read from outside the process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def measure(pods: int, nodes: int, wait: float = 1500) -> tuple[int, int, float]:
    """The exporter's settled RSS, peak RSS and seconds until its first figures, for ``pods`` pods."""
    ks, emu = build(pods, nodes)
    with ks.serve() as ksrv, emu.serve() as lsrv:
        port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [str(ROOT / ".venv" / "bin" / "linstor-scheduler"), "locality-exporter", "--controllers", lsrv.url,
               "--kube-api-url", ksrv.url, "--no-leader-elect", "--port", str(port), "--interval", "2",
               "--poll-interval", "600", "--max-staleness", "1800", "--linstor-timeout", "600",
               "--log-level", "warning"]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env)
        try:
            deadline = started + wait
            done = threading.Event()
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"the exporter exited with {proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
                    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                if line.startswith("linstor_scheduler_locality_pods{"))
                    if total == pods and (pods == 0 or "linstor_scheduler_volume_locality{" in text):
                        break
                done.wait(1.0)
            else:
                raise TimeoutError("the exporter did not report every pod")
            ready_after = time.monotonic() - started
            done.wait(6.0)  # a few more computations: the settled figure, not a transient
            now, peak = rss(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    return now, peak, ready_after


def per_pod_bytes(count: int = 20000) -> tuple[float, float]:
    """Bytes held per pod: the whole Pod dict (as an informer would keep it) vs. a PodRecord."""
    from locality.pods import pod_record

    objs_source = [a_pod(i, 100) for i in range(count)]
    import orjson

    raw = [orjson.dumps(o) for o in objs_source]
    del objs_source
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    whole = [orjson.loads(r) for r in raw]
    whole_bytes = tracemalloc.get_traced_memory()[0] - base
    del whole
    base = tracemalloc.get_traced_memory()[0]
    records = [pod_record(orjson.loads(r)) for r in raw]
    record_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert all(records)
    return whole_bytes / count, record_bytes / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    empty_now, empty_peak, _ = measure(0, args.nodes)
    now, peak, ready = measure(args.pods, args.nodes)
    whole, record = per_pod_bytes()
    mib = 1 << 20
    print(f"locality-exporter RSS, {args.nodes} nodes, no pods:        {empty_now / mib:7.1f} MiB "
          f"(peak {empty_peak / mib:.1f} MiB)")
    print(f"locality-exporter RSS, {args.nodes} nodes, {args.pods:,} pods: {now / mib:7.1f} MiB "
          f"(peak {peak / mib:.1f} MiB); first figures after {ready:.0f} s")
    print(f"growth per pod (pod + PVC + PV + LINSTOR volume with 2 replicas): {(now - empty_now) / args.pods:.0f} B")
    print(f"kept per pod: PodRecord {record:.0f} B vs. the whole Pod {whole:.0f} B ({whole / record:.1f}x less)")


if __name__ == "__main__":
    main()
