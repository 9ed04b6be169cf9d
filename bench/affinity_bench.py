"""affinity-sync at scale, measured from outside: N PVs (each with its bound claim and a running pod),
1 % of them stale (a replica moved off a node the PV's affinity names), served by the Kubernetes API
stand-in (with the PV rules of devkit/pv_rules.py: immutable affinity, pv-protection, the PV
controller) and the LINSTOR emulator over loopback. The worker runs as the CLI runs it, one
``affinity-sync --once`` process per pass:

1. a dry run (what the first pass of a new install does): judge everything, change nothing;
2. acting (``--no-dry-run --max-per-pass`` = the stale count, ``--rate 0``): every stale PV
   replaced (``--mode auto``: one patch refused with 422, then the replacement's steps);
3. acting again: all in step, the steady state.

Per pass: wall time of the process, Kubernetes API calls by verb (the stand-in's request log), LINSTOR
calls, the process's peak RSS (VmHWM from /proc/<pid>/status, read from outside until it exits).

    .venv/bin/python bench/affinity_bench.py               # 10,000 PVs (a few minutes on 2 cores)
    .venv/bin/python bench/affinity_bench.py --pvs 2000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from extender_bench import node_item, pool_item, resource_item  # noqa: E402

from devkit import kube_objects as k  # noqa: E402
from devkit.kube_standin import KubeStandin  # noqa: E402
from devkit.linstor_emulator import LinstorEmulator  # noqa: E402
from devkit.pv_rules import PvRules  # noqa: E402
from linstor_scheduler.volumes import RemoteAccess  # noqa: E402
from locality.affinity import node_affinity, segments, wanted_terms  # noqa: E402

GIB_KIB = 1024 * 1024
STRICT = RemoteAccess(False)


def build(pvs: int, nodes: int, stale_every: int) -> tuple[KubeStandin, LinstorEmulator, int]:
    """Every PV provisioned on nodes (a, b) with a pod on a; every ``stale_every``-th has since had
    its replica on a moved to c and its pod on b (so the fix may go ahead)."""
    ks, emu = KubeStandin(pv_rules=PvRules()), LinstorEmulator(supports_events=False)
    names = [f"n{i}" for i in range(nodes)]
    segs = {n: segments(n, None) for n in names}
    emu.load(nodes=[node_item(n) for n in names], storage_pools=[pool_item(n, 400 * GIB_KIB) for n in names])
    for n in names:
        ks.add(k.node(n))
    ks.add(k.storage_class("strict", remote=False))
    resources, stale = [], 0
    for i in range(pvs):
        a, b, c = names[i % nodes], names[(i + 1) % nodes], names[(i + 2) % nodes]
        handle, ns = f"pvc-{i:08d}", f"ns-{i % 50}"
        claim, pv = k.bound_volume(f"data-{i}", handle, namespace=ns, storage_class="strict")
        claim["metadata"]["uid"] = pv["spec"]["claimRef"]["uid"]
        pv["spec"]["nodeAffinity"] = node_affinity(wanted_terms(STRICT, [a, b], segs))
        moved = i % stale_every == 0
        stale += moved
        pod = k.pod(f"app-{i}", namespace=ns, claims=[f"data-{i}"], node_name=b if moved else a)
        pod["status"] = {"phase": "Running"}
        for obj in (claim, pv, pod):
            ks.add(obj)
        resources += [resource_item(handle, c if moved else a), resource_item(handle, b)]
    emu.load(resources=resources)
    return ks, emu, stale


def run_pass(ks: KubeStandin, emu: LinstorEmulator, kurl: str, lurl: str, extra: list[str]) -> dict[str, Any]:
    ks.clear_requests()
    emu.clear_requests()
    cmd = [str(ROOT / ".venv" / "bin" / "linstor-scheduler"), "affinity-sync", "--once", "--no-leader-elect",
           "--controllers", lurl, "--kube-api-url", kurl, "--min-age", "0", "--rate", "0",
           "--api-timeout", "120", "--linstor-timeout", "120", "--log-level", "error", "--output", "json", *extra]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, text=True)
    peak = [0]

    def watch() -> None:
        path = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in path.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                break
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=3600)
    seconds = time.monotonic() - started
    watcher.join(5)
    import json

    doc = json.loads(out)
    verbs: Counter[str] = Counter()
    for method, path in ks.requests:
        if "/events" in path:
            verbs[f"{method} events"] += 1
        else:
            verbs[method] += 1
    outcomes = Counter(a["outcome"] for a in doc["actions"])
    return {"seconds": seconds, "pass_seconds": doc["seconds"], "peak_rss": peak[0], "kube": dict(verbs),
            "kube_total": sum(verbs.values()), "linstor": dict(Counter(m for m, _ in emu.requests)),
            "outcomes": dict(outcomes), "stale": len(doc["stale"]), "exit": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pvs", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--stale-every", type=int, default=100, help="one PV in this many is stale (1 %%)")
    args = parser.parse_args()
    t0 = time.monotonic()
    ks, emu, stale = build(args.pvs, args.nodes, args.stale_every)
    print(f"built {args.pvs:,} PVs + claims + pods on {args.nodes} nodes, {stale} stale, "
          f"in {time.monotonic() - t0:.0f} s", flush=True)
    with ks.serve() as ksrv, emu.serve() as lsrv:
        passes = [("dry run", []), ("acting", ["--no-dry-run", "--max-per-pass", str(max(stale, 1))]),
                  ("in step", ["--no-dry-run"])]
        for name, extra in passes:
            r = run_pass(ks, emu, ksrv.url, lsrv.url, extra)
            kube = ", ".join(f"{v} {n}" for v, n in sorted(r["kube"].items()))
            print(f"pass '{name}': {r['pass_seconds']:.1f} s in the pass ({r['seconds']:.1f} s for the process), "
                  f"peak RSS {r['peak_rss'] / (1 << 20):.1f} MiB, {r['stale']} stale found, "
                  f"outcomes {r['outcomes']}, exit {r['exit']}", flush=True)
            print(f"    Kubernetes API calls: {r['kube_total']} ({kube}); LINSTOR calls: {r['linstor']}", flush=True)
    lost = ks.pv_rules.claims_lost
    bound = sum(1 for c in ks.list("PersistentVolumeClaim") if c["status"]["phase"] == "Bound")
    print(f"claims Bound at the end: {bound:,} of {args.pvs:,} (Lost for a moment during replacement: {lost})")


if __name__ == "__main__":
    main()
