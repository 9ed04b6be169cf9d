"""What a bound claim costs each component that follows claims, measured from outside the process.

    .venv/bin/python bench/claims_memory.py                       # 33,334 claims: webhook and extender
    .venv/bin/python bench/claims_memory.py --claims 5000 --components webhook

For each component, twice: against the Kubernetes API stand-in with no claims, then with
``--claims`` PVC + PV pairs in the shapes the API server returns them (kube_objects' bound
volumes: the PV controller's annotations, finalizers, status; the stand-in adds managedFields;
lists paged by the informers as from the API server). The real subcommand runs as a subprocess;
once ``/readyz`` answers 200 and its RSS has settled, VmRSS and VmHWM are read from
``/proc/<pid>/status``. Bytes per claim = the RSS difference / claims. The webhook's review latency
(a pod with one bound claim, over HTTPS, 300 reviews on one connection) is timed in both runs.
The extender's LINSTOR is the emulator with 3 nodes and no resources: the claims' cost alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale_bench import percentile, proc_status  # noqa: E402

from devkit import kube_objects as k  # noqa: E402
from devkit.kube_standin import KubeStandin  # noqa: E402
from devkit.linstor_emulator import LinstorEmulator  # noqa: E402
from tests.waiting import free_ports, stop_child  # noqa: E402

CLASS = "linstor-thindata-r3"


def standin(claims: int) -> KubeStandin:
    ks = KubeStandin(history_limit=100)
    for n in range(3):
        ks.add(k.node(f"n{n}", zone=f"z{n}"))
    ks.add(k.storage_class(CLASS, replicas=3))
    for c in range(claims):
        for obj in k.bound_volume(f"data-app-{c}", f"pvc-{c:08d}", namespace=f"ns-{c % 50}", storage_class=CLASS,
                                  labels={"app.kubernetes.io/name": f"app-{c % 500}"}):
            ks.add(obj)
    return ks


def review_body(namespace: str, claim: str) -> dict[str, Any]:
    pod = k.pod("probe", namespace=namespace, claims=[claim], scheduler="")
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                        "namespace": namespace, "object": pod}}


def settled(pid: int, rounds: int = 5) -> tuple[int, int]:
    """VmRSS once it stopped moving by more than 1 MiB between samples 0.5 s apart, and VmHWM (KiB)."""
    last = proc_status(pid)["VmRSS"]
    for _ in range(rounds * 4):
        time.sleep(0.5)  # sampling an outside process
        now = proc_status(pid)["VmRSS"]
        if abs(now - last) < 1024:
            break
        last = now
    status = proc_status(pid)
    return status["VmRSS"], status["VmHWM"]


def run(component: str, claims: int) -> dict[str, Any]:
    ks = standin(claims)
    emu = LinstorEmulator(supports_events=False)
    for n in range(3):
        emu.add_node(f"n{n}")
    port, metrics_port = free_ports(2)
    with ks.serve() as kube, emu.serve() as linstor:
        common = ["--kube-api-url", kube.url, "--listen-address", "127.0.0.1", "--port", str(port),
                  "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port), "--log-level", "warning"]
        if component == "webhook":
            cmd = ["webhook", *common, "--tls-secret", "", "--webhook-config-name", "", "--namespace", "default"]
        else:
            cmd = ["extender", *common, "--controllers", linstor.url]
        started = time.monotonic()
        child = subprocess.Popen([str(ROOT / ".venv/bin/linstor-scheduler"), *cmd])
        try:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5).status_code == 200:
                        break
                if child.poll() is not None or time.monotonic() - started > 900:
                    raise RuntimeError(f"{component} not ready (exit status {child.poll()})")
                time.sleep(0.2)  # polling an outside process
            ready = time.monotonic() - started
            rss, peak = settled(child.pid)
            out = {"component": component, "claims": claims, "ready_s": round(ready, 1),
                   "rss_mib": round(rss / 1024, 1), "peak_mib": round(peak / 1024, 1)}
            if component == "webhook":
                out.update(review_latency(port, claims))
        finally:
            stop_child(child)
    return out


def review_latency(port: int, claims: int, reviews: int = 300) -> dict[str, Any]:
    namespace, claim = ("ns-7", "data-app-7") if claims > 7 else ("default", "missing")
    body = json.dumps(review_body(namespace, claim)).encode()
    times = []
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=10) as client:
        for _ in range(reviews):
            t = time.perf_counter()
            resp = client.post("/mutate", content=body, headers={"Content-Type": "application/json"})
            times.append((time.perf_counter() - t) * 1000)
            resp.raise_for_status()
    verdict = resp.json()["response"]
    return {"review_p50_ms": round(percentile(times, 50), 2), "review_p99_ms": round(percentile(times, 99), 2),
            "mutated": "patch" in verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=33334)
    parser.add_argument("--components", nargs="+", default=["webhook", "extender"], choices=["webhook", "extender"])
    args = parser.parse_args()
    for component in args.components:
        empty, full = run(component, 0), run(component, args.claims)
        per_claim = (full["rss_mib"] - empty["rss_mib"]) * 2**20 / args.claims
        print(json.dumps({"empty": empty, "full": full, "bytes_per_claim": round(per_claim)}), flush=True)


if __name__ == "__main__":
    main()
