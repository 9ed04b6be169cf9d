"""Where pods land as kube-scheduler really runs: its cycle (bench/placement_cycle.py, re-created from
its source) with the scheduler configuration deploy/ ships, asking the real extender over HTTP.

    .venv/bin/python bench/placement.py                          # 100 / 1,000 / 5,000 nodes
    .venv/bin/python bench/placement.py --nodes 100 1000 --pods 40
    .venv/bin/python bench/placement.py --percentage 100         # override what deploy/ says

Prints, per cluster size and StorageClass kind, the share of pods placed next to a diskful replica,
once with percentageOfNodesToScore unset (kube-scheduler's adaptive default) and once with what
``kubectl kustomize deploy/`` renders (or ``--percentage``). Kinds: "remote" (bound volumes of 2
replicas, remote access allowed), "strict" (allowRemoteVolumeAccess false: the PV's node affinity
and the extender's filter keep only replica nodes), "wffc" (unbound WaitForFirstConsumer claims: the
replica is made where the pod lands, so "local" means a node with the StorageClass's pool).
A quarter of the nodes (``--storage-share``) carry storage; the others are diskless satellites.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import extender_bench as eb  # noqa: E402
import placement_cycle as pc  # noqa: E402

from devkit import kube_objects as k  # noqa: E402

KINDS = ("remote", "strict", "wffc")
CLASSES = {"remote": "linstor-r2-remote", "strict": "linstor-r2-strict", "wffc": "linstor-wffc"}
PROFILE = "linstor"
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
GIB = 1024**3


# --- the scheduler configuration deploy/ ships ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    url_prefix: str
    filter_verb: str
    prioritize_verb: str
    weight: int
    node_cache_capable: bool
    percentage: int | None  # the profile's percentageOfNodesToScore, else the global one; None: unset
    source: str  # how the configuration was read


def rendered_deploy(deploy: Path = ROOT / "deploy") -> tuple[list[dict[str, Any]], str]:
    """``kubectl kustomize deploy/`` when kubectl is installed; else the base's files as they are
    (the default entry point patches no ConfigMap, so the config reads the same)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(deploy)], capture_output=True, text=True, check=True)
        return [d for d in yaml.safe_load_all(out.stdout) if d], "kubectl kustomize deploy/"
    docs = [d for f in sorted((deploy / "base").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return docs, "deploy/base/*.yaml (kubectl not installed)"


def scheduler_settings(objects: list[dict[str, Any]], source: str) -> SchedulerSettings:
    """The KubeSchedulerConfiguration in the ConfigMap kube-scheduler reads, as kube-scheduler reads it."""
    config = next(yaml.safe_load(o["data"]["config.yaml"]) for o in objects
                  if o.get("kind") == "ConfigMap" and "config.yaml" in (o.get("data") or {}))
    profile = next(p for p in config.get("profiles", []) if p.get("schedulerName") == PROFILE)
    ext = config["extenders"][0]
    percentage = profile.get("percentageOfNodesToScore", config.get("percentageOfNodesToScore"))
    return SchedulerSettings(url_prefix=ext["urlPrefix"], filter_verb=ext["filterVerb"],
                             prioritize_verb=ext["prioritizeVerb"], weight=int(ext.get("weight", 1)),
                             node_cache_capable=bool(ext.get("nodeCacheCapable", False)),
                             percentage=percentage, source=source)


# --- the cluster ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    pod: pc.Pod
    body_pod: dict[str, Any]  # the Pod as kube-scheduler sends it to the extender
    local: frozenset[str]  # nodes where the pod is next to a diskful replica


def make_cluster(nodes: int, pods_per_kind: int, storage_share: float, seed: int = 7
                 ) -> tuple[dict[str, Any], list[str], list[Workload]]:
    """(extender snapshot, node names, the pods in arrival order: kinds interleaved)."""
    rnd = random.Random(seed)
    names = [f"node-{i:05d}" for i in range(nodes)]
    # Storage nodes anywhere among the workers (the first 3 nodes are the control plane)
    storage = sorted(rnd.sample(names[3:], max(2, int(nodes * storage_share))))
    linstor_nodes = [eb.node_item(n) for n in names]
    pools = [eb.pool_item(n, rnd.randint(50, 400) * eb.GIB_KIB) for n in storage]
    kube: list[dict[str, Any]] = []
    for i, n in enumerate(names):
        kube.append(k.node(n, zone=f"zone-{i % 3}", region="eu-1"))
    kube += [k.storage_class(CLASSES["remote"], wffc=False),
             k.storage_class(CLASSES["strict"], remote=False, wffc=False),
             k.storage_class(CLASSES["wffc"], wffc=True)]
    resources: list[dict[str, Any]] = []
    work: list[Workload] = []
    for i in range(pods_per_kind):
        for kind in KINDS:
            claim, app = f"{kind}-claim-{i}", f"app-{kind}"
            if kind == "wffc":
                kube.append(k.pvc(claim, storage_class=CLASSES[kind], size="10Gi"))
                local, affinity = frozenset(storage), None
            else:
                volume = f"pvc-{kind}-{i:06d}"
                where = rnd.sample(storage, 2)
                resources += [eb.resource_item(volume, n) for n in where]
                strict = kind == "strict"
                kube += k.bound_volume(claim, volume, storage_class=CLASSES[kind],
                                       affinity_nodes=where if strict else None)
                local, affinity = frozenset(where), frozenset(where) if strict else None
            name = f"{kind}-{i}"
            pod = pc.Pod(name, app, cpu_m=250, mem=GIB // 2, affinity=affinity)
            work.append(Workload(kind, pod, k.pod(name, claims=[claim], labels={"app": app}), local))
    snapshot = {"linstor": {"nodes": linstor_nodes, "storage_pools": pools, "resources": resources},
                "kubernetes": {"items": kube}}
    return snapshot, names, work


def cache_nodes(names: list[str], seed: int = 11) -> list[pc.Node]:
    """The scheduler cache's nodes: 32 cores / 128 GiB, 0-60 % already requested by other pods."""
    rnd = random.Random(seed)
    out = []
    for i, n in enumerate(names):
        node = pc.Node(n, f"zone-{i % 3}", {pc.HOSTNAME: n, pc.ZONE: f"zone-{i % 3}"}, cpu_m=32000, mem=128 * GIB,
                       taints=(CONTROL_PLANE_TAINT,) if i < 3 else ())
        node.cpu_req_m = rnd.randint(0, 60) * 320
        node.mem_req = rnd.randint(0, 60) * 128 * GIB // 100
        node.pods = rnd.randint(0, 40)
        out.append(node)
    return out


# --- the extender over HTTP ----------------------------------------------------------------------
class HttpExtender:
    """The configured verbs, called as kube-scheduler's HTTPExtender does with nodeCacheCapable."""

    def __init__(self, base_url: str, settings: SchedulerSettings, pods: dict[str, dict[str, Any]]) -> None:
        if not settings.node_cache_capable:
            raise SystemExit("the bench sends node names only (nodeCacheCapable: true)")
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.settings = settings
        self.pods = pods

    def _post(self, verb: str, pod: pc.Pod, names: list[str]) -> Any:
        body = orjson.dumps({"Pod": self.pods[pod.name], "Nodes": None, "NodeNames": names})
        r = self.http.post(f"/{verb}", content=body, headers={"content-type": "application/json"})
        r.raise_for_status()
        return r.json()

    def filter(self, pod: pc.Pod, names: list[str]) -> list[str]:
        answer = self._post(self.settings.filter_verb, pod, names)
        if answer.get("Error"):
            raise RuntimeError(answer["Error"])
        return answer.get("NodeNames") or []

    def prioritize(self, pod: pc.Pod, names: list[str]) -> dict[str, int]:
        return {h["Host"]: int(h["Score"]) for h in self._post(self.settings.prioritize_verb, pod, names)}

    def as_extender(self) -> pc.Extender:
        return pc.Extender(self.settings.weight, self.filter, self.prioritize)


def start_extender(snapshot: dict[str, Any], tmp: Path) -> eb.Server:
    """The real extender app, served as the CLI serves its verbs (bench/extender_bench.py's Server)."""
    path = tmp / "snapshot.json"
    path.write_bytes(orjson.dumps(snapshot))
    return eb.Server("extender", str(path))


# --- one run -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Tally:
    pods: int = 0
    local: int = 0
    reachable: int = 0  # a local node was among the nodes the extender was asked about
    unscheduled: int = 0

    def share(self) -> float:
        return self.local / self.pods if self.pods else 0.0

    def share_where_reachable(self) -> float:
        return self.local / self.reachable if self.reachable else 1.0


def run(names: list[str], work: list[Workload], extender: pc.Extender, percentage: int | None,
        seed: int = 3) -> dict[str, Tally]:
    """Every pod through one scheduler, in arrival order, each bind changing the next pod's view."""
    sched = pc.Scheduler(cache_nodes(names), extender, percentage, random.Random(seed))
    tallies = {kind: Tally() for kind in KINDS}
    for w in work:
        outcome = sched.schedule(w.pod)
        t = tallies[w.kind]
        t.pods += 1
        t.reachable += bool(w.local.intersection(outcome.candidates))
        t.local += outcome.host in w.local
        t.unscheduled += outcome.host is None
    return tallies


def measure(nodes: int, pods_per_kind: int, storage_share: float, settings: SchedulerSettings,
            percentages: dict[str, int | None]) -> dict[str, dict[str, Tally]]:
    """label -> kind -> tally, one extender for all labels (the same cluster, fresh node use each)."""
    snapshot, names, work = make_cluster(nodes, pods_per_kind, storage_share)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_extender(snapshot, Path(tmp))
        try:
            ext = HttpExtender(server.url, settings, {w.pod.name: w.body_pod for w in work})
            return {label: run(names, work, ext.as_extender(), p) for label, p in percentages.items()}
        finally:
            server.stop()


def describe(p: int | None) -> str:
    return "unset" if p is None else str(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--pods", type=int, default=100, help="pods per StorageClass kind")
    ap.add_argument("--storage-share", type=float, default=0.25, help="share of nodes with a storage pool")
    ap.add_argument("--percentage", type=int, default=None,
                    help="percentageOfNodesToScore for the second run (default: what deploy/ renders)")
    a = ap.parse_args(argv)
    settings = scheduler_settings(*rendered_deploy())
    fixed = a.percentage if a.percentage is not None else settings.percentage
    percentages = {"unset (kube-scheduler's default)": None,
                   f"{'--percentage' if a.percentage is not None else 'deploy/'}: {describe(fixed)}": fixed}
    print(f"configuration: {settings.source}; extender weight {settings.weight}, "
          f"percentageOfNodesToScore {describe(settings.percentage)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{a.pods} pods per kind, {a.storage_share:.0%} of nodes with storage")
    print(f"{'nodes':>6} {'percentageOfNodesToScore':<36} {'kind':<7} {'to find':>7} {'local':>7} "
          f"{'reachable':>9} {'local where reachable':>21} {'seconds':>7}")
    for n in a.nodes:
        t0 = time.monotonic()
        results = measure(n, a.pods, a.storage_share, settings, percentages)
        took = time.monotonic() - t0
        for label, by_kind in results.items():
            for kind, t in by_kind.items():
                to_find = pc.num_feasible_nodes_to_find(percentages[label], None, n)
                print(f"{n:>6} {label:<36} {kind:<7} {to_find:>7} {t.share():>7.1%} {t.reachable / t.pods:>9.1%} "
                      f"{t.share_where_reachable():>21.1%} {took:>7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
