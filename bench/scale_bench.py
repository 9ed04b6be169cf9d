"""Scale benchmark: the REAL extender service (live mode) at 5,000 nodes / 100,000 replicas,
measured from outside the process.

    .venv/bin/python bench/scale_bench.py                        # 5,000 nodes, 33,334 x 3 replicas
    .venv/bin/python bench/scale_bench.py --nodes 500 --resources 3334 --polls 3   # quick

One child process serves the LINSTOR emulator (items in the emulator's shape, which a test validates
against LINSTOR's OpenAPI document: nodes, 2 storage pools a node, resource definitions x 3 diskful
replicas) and the Kubernetes API stand-in (Nodes, a bound claim per volume: PVC + PV in the shapes the
API server returns, lists paged). Then ``linstor-scheduler extender``
starts as a subprocess and this process measures:

- time to ready (/readyz 200), RSS after ready (/proc VmRSS), RSS over ``--polls`` polls (max and
  last), peak (VmHWM);
- CPU per poll: the read thread's own CPU (``linstor_scheduler_sync_cpu_seconds``: read, decode,
  index), and utime+stime of the whole service (/proc/<pid>/stat, which includes answering the
  probes) over the polls counted by its ``linstor_scheduler_sync_total``; the sync's wall duration;
- prioritize latency (client side, keep-alive connection) of a probe sent every ``--probe-every``
  seconds while polls run back to back (``--poll-interval 0``) and ``--churn`` informer updates a
  second arrive (claims' annotations, Nodes' status), p50/p99/max, and every answer checked: the
  probed pod's replica nodes must score highest;
- LINSTOR calls per request: the service's fallback-read and LINSTOR request counters.

``--fencing`` also starts ``linstor-scheduler fencing`` (for real, no --dry-run) against the same
doubles, with ``--pods`` labelled pods each holding a VolumeAttachment, and reports its RSS (after
the first pass, steady, peak), CPU per pass, LINSTOR read duration, fault -> deletion after a power
failure of the nodes running ``--fault-pods`` of them (every deletion checked: wrong and missed
ones counted), and the time from SIGTERM (sent mid-pass) to exit.

    .venv/bin/python bench/scale_bench.py --no-extender --fencing      # fencing at 5,000 / 100,000

Prints the load average next to the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CLK_TCK = os.sysconf("SC_CLK_TCK")
FENCING_LOG = "/tmp/scale_bench_fencing.log"


# --- the doubles, in a child process -----------------------------------------------------------
def serve_doubles(args: argparse.Namespace) -> int:
    """Child: populate and serve both doubles; print their URLs; serve until stdin closes."""
    from scale_cluster import STORAGE_CLASS, populate_kube, populate_linstor

    from devkit import kube_objects as k
    from devkit.kube_standin import KubeStandin
    from devkit.linstor_emulator import LinstorEmulator

    started = time.perf_counter()
    emu = LinstorEmulator()
    populate_linstor(emu, args.nodes, args.resources)
    ks = KubeStandin(history_limit=100)
    populate_kube(ks, args.nodes, args.claims, args.resources, pods=args.pods)
    populated = time.perf_counter() - started
    deleted: dict[str, float] = {}  # "Pod ns/name" or "VolumeAttachment name" -> when the API server deleted it
    delete = ks.delete

    def recording_delete(kind: str, name: str, namespace: str | None = None) -> Any:
        gone = delete(kind, name, namespace)
        if gone is not None:
            deleted.setdefault(f"{kind} {namespace + '/' if namespace else ''}{name}", time.monotonic())
        return gone

    ks.delete = recording_delete  # the eviction and delete routes both end here
    with emu.serve() as lsrv, ks.serve() as ksrv:
        body = len(httpx.get(lsrv.url + "/v1/view/resources", timeout=120).content)
        print(json.dumps({"linstor": lsrv.url, "kube": ksrv.url, "resources_body_bytes": body,
                          "populate_s": round(populated, 1)}), flush=True)
        for line in sys.stdin:  # commands from the parent: real-world events
            cmd = json.loads(line)
            if cmd["op"] == "bind":  # a claim bound to a volume LINSTOR does not show yet
                for obj in k.bound_volume(cmd["claim"], cmd["resource"], storage_class=STORAGE_CLASS):
                    ks.add(obj)
            elif cmd["op"] == "churn":  # informer updates while the probes run (see churn())
                threading.Thread(target=churn, args=(ks, args, cmd["per_second"]), daemon=True).start()
            elif cmd["op"] == "pools":  # thin pools fill and empty (see pools_change())
                threading.Thread(target=pools_change, args=(emu, args, cmd["per_second"]), daemon=True).start()
            elif cmd["op"] == "create":  # LINSTOR now shows the volume's replicas
                for node in cmd["nodes"]:
                    emu.add_resource(cmd["resource"], node, storage_pool="thindata")
            elif cmd["op"] == "power_off":  # the nodes lose power at once
                fault = time.monotonic()
                emu.power_off(*cmd["nodes"])
                print(json.dumps({"done": "power_off", "at": fault, "applied_s": time.monotonic() - fault}),
                      flush=True)
                continue
            elif cmd["op"] == "deleted":
                print(json.dumps({"done": "deleted", "deleted": deleted}), flush=True)
                continue
            print(json.dumps({"done": cmd["op"], "at": time.monotonic()}), flush=True)
    return 0


def churn(ks: Any, args: argparse.Namespace, per_second: float) -> None:
    """Updates as a cluster makes them all the time, alternately: a claim's annotations change (a
    backup tool's marker, a resize's conditions) and a Node's status is reported again (the kubelet
    writes it at least every nodeStatusReportFrequency, 5 min: 17 a second at 5,000 nodes). Each is a
    MODIFIED event to every watcher; the service's view must follow without stalling requests."""
    from scale_cluster import node_names

    names = node_names(args.nodes)
    claims = min(args.claims, args.resources)
    i = 0
    while True:
        i += 1
        if i % 2 and claims:
            ks.patch("PersistentVolumeClaim", f"claim-{i % claims}",
                     {"metadata": {"annotations": {"backup.example.com/last": str(i)}}}, "default")
        else:
            beat = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            ks.patch("Node", names[i % len(names)], {"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": beat}]}})
        time.sleep(1 / per_second)  # a rate of real-world events, not synchronisation


def pools_change(emu: Any, args: argparse.Namespace, per_second: float) -> None:
    """Thin pools' free space moves as their volumes are written and trimmed: one pool's a time.
    Each change makes the next poll a new state (new generation: the extender's caches start
    empty, the index is frozen anew), as in a cluster whose volumes are in use."""
    from scale_cluster import POOL, node_names

    names = node_names(args.nodes)
    i = 0
    while True:
        i += 1
        emu.set_pool_free(names[i % len(names)], POOL, (100 + i % 300) * 1024**2)
        time.sleep(1 / per_second)  # a rate of real-world events, not synchronisation


# --- measuring from outside --------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def metric(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of ``name`` whose label set contains ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        if labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def get(http: httpx.Client, path: str) -> httpx.Response:
    """A GET that survives the keep-alive race: a service whose loop was busy for longer than its
    keep-alive timeout closes the idle connection just as the next request goes out on it."""
    try:
        return http.get(path)
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError):
        return http.get(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


class Prober(threading.Thread):
    """POST /prioritize every ``every`` s on one keep-alive connection; checks every answer."""

    def __init__(self, url: str, pods: list[tuple[dict[str, Any], list[str]]], names: list[str],
                 every: float) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, timeout=30)
        self.bodies = [(orjson.dumps({"Pod": pod, "NodeNames": names + [n for n in where if n not in names]}),
                        set(where)) for pod, where in pods]
        self.every = every
        self.latencies: list[float] = []
        self.wrong = 0
        self.neutral = 0
        self._halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._halt.is_set():
            body, where = self.bodies[i % len(self.bodies)]
            i += 1
            t = time.perf_counter()
            r = self.http.post("/prioritize", content=body, headers={"Content-Type": "application/json"})
            self.latencies.append(time.perf_counter() - t)
            scores = {h["Host"]: h["Score"] for h in r.json()}
            top = max(scores.values())
            if top == 0:
                self.neutral += 1
            elif any(scores[n] != top for n in where) or any(s == top for n, s in scores.items() if n not in where):
                self.wrong += 1
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.http.close()


class FloorProber(threading.Thread):
    """GET /healthz (the metrics port, its own thread in the same process) at the same pace: what any
    request waits for on this machine at this moment (the CPU and the GIL are shared), to read the
    prioritize figures against."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, timeout=30)
        self.every = every
        self.latencies: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.perf_counter()
            self.http.get("/healthz")
            self.latencies.append(time.perf_counter() - t)
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.http.close()


def probe_pods(args: argparse.Namespace) -> list[tuple[dict[str, Any], list[str]]]:
    from scale_cluster import placements

    from devkit import kube_objects as k

    where = placements(args.nodes, args.resources)
    count = min(args.claims, args.resources, 50)
    return [(k.pod(f"probe-{c}", claims=[f"claim-{c}"]), where[c][1]) for c in range(count)]


def wait(cond, timeout: float, what: str, every: float = 0.05) -> float:
    started = time.monotonic()
    while True:
        try:
            if cond():
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(what)
        time.sleep(every)  # polling an outside process: there is nothing to wait on


def run_extender(args: argparse.Namespace, urls: dict[str, Any], doubles: subprocess.Popen) -> dict[str, Any]:
    port, metrics_port = free_port(), free_port()
    while metrics_port == port:  # released and picked again: the two listeners need two ports
        metrics_port = free_port()
    cmd = [str(ROOT / ".venv/bin/linstor-scheduler"), "extender", "--port", str(port), "--listen-address",
           "127.0.0.1", "--controllers", urls["linstor"], "--kube-api-url", urls["kube"],
           "--poll-interval", str(args.poll_interval), "--linstor-timeout", "120", "--log-level", "warning",
           *([] if args.poll_min_factor is None else ["--poll-min-factor", str(args.poll_min_factor)]),
           *args.extender_args,
           # health and metrics on their own port (issue 13), kept on loopback here as well
           "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL if not args.verbose else None)
    url = f"http://127.0.0.1:{port}"  # the verbs
    out: dict[str, Any] = {"command": " ".join([*cmd[1:3], "...", *cmd[9:-4]])}
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=30)  # /readyz, /metrics
        out["time_to_ready_s"] = wait(lambda: get(http, "/readyz").status_code == 200, 600, "extender ready", 0.1)
        out["rss_ready_mb"] = proc_status(proc.pid)["VmRSS"] / 1024
        text = get(http, "/metrics").text
        polls0 = metric(text, "linstor_scheduler_sync_total", 'outcome="ok",source="linstor"')
        sync_n0 = metric(text, "linstor_scheduler_sync_seconds_count")
        sync_s0 = metric(text, "linstor_scheduler_sync_seconds_sum")
        read_cpu0 = metric(text, "linstor_scheduler_sync_cpu_seconds_total")
        kept0, new0 = (metric(text, "linstor_scheduler_state_publishes_total", f'result="{r}"')
                       for r in ("kept", "new"))
        hits0, misses0 = (metric(text, "linstor_scheduler_extender_cache", f'cache="answers",stat="{s}"')
                          for s in ("hits", "misses"))
        cpu0 = cpu_seconds(proc.pid)
        if args.churn:
            command(doubles, {"op": "churn", "per_second": args.churn})
        if args.pool_changes:
            command(doubles, {"op": "pools", "per_second": args.pool_changes})
        prober = Prober(url, probe_pods(args), rnd_candidates(args), args.probe_every)
        prober.start()
        floor = FloorProber(f"http://127.0.0.1:{metrics_port}", args.probe_every)
        floor.start()
        rss: list[float] = []
        polls = polls0
        started = time.monotonic()
        while polls - polls0 < args.polls:
            rss.append(proc_status(proc.pid)["VmRSS"] / 1024)
            time.sleep(0.2)  # sampling an outside process
            polls = metric(get(http, "/metrics").text, "linstor_scheduler_sync_total", 'outcome="ok",source="linstor"')
            if time.monotonic() - started > 120 * args.polls or proc.poll() is not None:
                raise TimeoutError(f"polls did not happen (exit status {proc.poll()})")
        cpu1 = cpu_seconds(proc.pid)
        elapsed = time.monotonic() - started
        prober.stop()
        floor.stop()
        text = get(http, "/metrics").text
        n = polls - polls0
        sync_n = metric(text, "linstor_scheduler_sync_seconds_count") - sync_n0
        sync_s = metric(text, "linstor_scheduler_sync_seconds_sum") - sync_s0
        lat = [x * 1000 for x in prober.latencies]
        out.update({
            "polls": int(n), "window_s": elapsed,
            "read_cpu_per_poll_s": (metric(text, "linstor_scheduler_sync_cpu_seconds_total") - read_cpu0) / sync_n
            if sync_n else float("nan"),
            "process_cpu_per_poll_s": (cpu1 - cpu0) / n, "process_cpu_share": (cpu1 - cpu0) / elapsed,
            "sync_duration_s": sync_s / sync_n if sync_n else float("nan"),
            "rss_steady_max_mb": max(rss), "rss_steady_last_mb": rss[-1],
            # what stays behind per poll: a read that leaves memory alive shows here before the peak does
            "rss_growth_mb_per_poll": (rss[-1] - rss[0]) / n,
            "probes": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "max_ms": max(lat),
            "healthz_p50_ms": percentile([x * 1000 for x in floor.latencies], 50),
            "healthz_p99_ms": percentile([x * 1000 for x in floor.latencies], 99),
            "healthz_max_ms": max(floor.latencies, default=float("nan")) * 1000,
            "wrong_answers": prober.wrong, "neutral_answers": prober.neutral,
            "fallback_reads": metric(text, "linstor_scheduler_fallback_reads_total"),
            "poll_interval_s": metric(text, "linstor_scheduler_poll_interval_seconds"),
            # With --pool-changes 0 nothing changes in the window and every publish keeps the generation.
            "publishes_kept": metric(text, "linstor_scheduler_state_publishes_total", 'result="kept"') - kept0,
            "publishes_new": metric(text, "linstor_scheduler_state_publishes_total", 'result="new"') - new0,
        })
        hits = metric(text, "linstor_scheduler_extender_cache", 'cache="answers",stat="hits"') - hits0
        misses = metric(text, "linstor_scheduler_extender_cache", 'cache="answers",stat="misses"') - misses0
        out["answer_cache_hit_rate"] = hits / (hits + misses) if hits + misses else float("nan")
        out["linstor_calls_per_request"] = out["fallback_reads"] / max(1, len(lat))
        if args.fresh_volume:
            with httpx.Client(base_url=url, timeout=30) as verbs:
                out.update(fresh_volume(args, http, verbs, doubles))
        out["rss_peak_mb"] = max(proc_status(proc.pid)["VmHWM"] / 1024, max(rss))
        http.close()
    finally:
        stop(proc)
    return out


def fresh_volume(args: argparse.Namespace, http: httpx.Client, verbs: httpx.Client,
                 doubles: subprocess.Popen) -> dict[str, Any]:
    """A claim bound to a volume LINSTOR shows only later: how long the pod is answered neutral
    after LINSTOR shows it (the fallback's cached 'not found', or the next poll, whichever first).
    ``http`` reaches the metrics port, ``verbs`` the extender's verbs (/prioritize)."""
    from scale_cluster import node_names

    from devkit import kube_objects as k

    where = node_names(args.nodes)[:3]
    names = rnd_candidates(args)
    body = orjson.dumps({"Pod": k.pod("fresh-0", claims=["fresh"]), "NodeNames": names + where})

    def steering() -> bool:
        resp = verbs.post("/prioritize", content=body, headers={"Content-Type": "application/json"})
        scores = {h["Host"]: h["Score"] for h in resp.json()}
        return max(scores.values()) > 0

    command(doubles, {"op": "bind", "claim": "fresh", "resource": "pvc-fresh"})
    wait(lambda: metric(get(http, "/metrics").text, "linstor_scheduler_fallback_reads_total",
                        'outcome="miss"') >= 1 or steering(), 60, "the fallback read's miss", 0.01)
    command(doubles, {"op": "create", "resource": "pvc-fresh", "nodes": where})
    return {"fresh_volume_neutral_after_linstor_s": wait(steering, 120, "steering on the fresh volume", 0.01)}


def command(doubles: subprocess.Popen, cmd: dict[str, Any]) -> dict[str, Any]:
    doubles.stdin.write(json.dumps(cmd) + "\n")
    doubles.stdin.flush()
    return json.loads(doubles.stdout.readline())


def rnd_candidates(args: argparse.Namespace) -> list[str]:
    """What kube-scheduler sends at this size: percentageOfNodesToScore's adaptive default is
    max(5, 50 - nodes/125) percent of the nodes (10% = 500 at 5,000 nodes)."""
    from scale_cluster import node_names

    names = node_names(args.nodes)
    share = max(5.0, 50 - args.nodes / 125) / 100
    return names[:: max(1, round(1 / share))][: max(1, int(args.nodes * share))]


def run_fencing(args: argparse.Namespace, urls: dict[str, Any], doubles: subprocess.Popen) -> dict[str, Any]:
    """The fencing service, for real (no --dry-run): RSS after its first pass, over the steady passes
    and peak; CPU per pass; its LINSTOR read duration against --max-staleness; then a power failure
    of the nodes running ``--fault-pods`` labelled pods, timed from the fault to each deletion (and
    every deletion checked: only those pods and their VolumeAttachments); then SIGTERM sent while a
    pass runs, timed to the exit."""
    port = free_port()
    cmd = [str(ROOT / ".venv/bin/linstor-scheduler"), "fencing", "--port", str(port), "--listen-address",
           "127.0.0.1", "--controllers", urls["linstor"], "--kube-api-url", urls["kube"],
           "--linstor-timeout", "120", "--log-level", "warning", "--no-leader-elect", *args.fencing_args]
    log = open(FENCING_LOG, "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=None if args.verbose else log,
                            stderr=None if args.verbose else subprocess.STDOUT)
    out: dict[str, Any] = {"command": " ".join([*cmd[1:2], "...", *cmd[10:]])}
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)  # fencing serves /readyz, /metrics on --port
    reads_ok = 'outcome="ok",source="linstor"'
    rss: list[float] = []

    def passes() -> float:
        return metric(get(http, "/metrics").text, "linstor_scheduler_fencing_reads_total", reads_ok)

    try:
        out["time_to_ready_s"] = wait(lambda: get(http, "/readyz").status_code == 200, 600, "fencing ready", 0.1)
        wait(lambda: passes() >= 1 and metric(get(http, "/metrics").text,
                                              "linstor_scheduler_fencing_decisions_total") > 0, 600, "first pass", 0.1)
        out["rss_after_first_pass_mb"] = proc_status(proc.pid)["VmRSS"] / 1024
        passes0 = passes()
        cpu0, started, read_s = cpu_seconds(proc.pid), time.monotonic(), []
        done = passes0
        while done - passes0 < args.fencing_passes:
            rss.append(proc_status(proc.pid)["VmRSS"] / 1024)
            time.sleep(0.2)  # sampling an outside process
            text = get(http, "/metrics").text
            done = metric(text, "linstor_scheduler_fencing_reads_total", reads_ok)
            read_s.append(metric(text, "linstor_scheduler_fencing_linstor_read_seconds"))
            if time.monotonic() - started > 120 * args.fencing_passes or proc.poll() is not None:
                raise TimeoutError(f"fencing passes did not happen (exit status {proc.poll()})")
        n = done - passes0
        out.update({"passes": int(n), "cpu_per_pass_s": (cpu_seconds(proc.pid) - cpu0) / n,
                    "rss_steady_max_mb": max(rss), "rss_steady_last_mb": rss[-1],
                    "rss_growth_mb_per_pass": (rss[-1] - rss[0]) / n,
                    "linstor_read_max_s": max(read_s)})
        if args.fault_pods:
            fault_reads: list[float] = []
            out.update(fault(args, doubles, proc, rss, fault_reads, http))
            # includes the wait for the emulator, which holds its lock while it applies the power failure
            out["linstor_read_max_after_fault_s"] = max(fault_reads, default=float("nan"))
        out["rss_peak_mb"] = max(proc_status(proc.pid)["VmHWM"] / 1024, max(rss))
        out["sigterm_mid_pass_s"] = sigterm_mid_pass(proc)
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        out["failed"] = f"{type(exc).__name__}: {exc}; exit status {proc.poll()}; see {FENCING_LOG}"
        out.setdefault("rss_peak_mb", max(rss or [0.0]))
    finally:
        http.close()
        if proc.poll() is None:
            out["sigterm_s"] = stop(proc)
        log.close()
    return out


def fault_groups(by_node: dict[str, list[int]], pods: int, faults: int) -> list[list[str]]:
    """``faults`` groups of whole nodes, the nodes with most pods first, each group filled up to its
    share of ``pods`` (a node that would overfill every group is skipped)."""
    share = [pods // faults + (1 if k < pods % faults else 0) for k in range(faults)]
    groups: list[list[str]] = [[] for _ in range(faults)]
    held = [0] * faults
    for node in sorted(by_node, key=lambda n: (-len(by_node[n]), n)):
        for k in range(faults):
            if held[k] + len(by_node[node]) <= share[k]:
                groups[k].append(node)
                held[k] += len(by_node[node])
                break
    return [g for g in groups if g]


def fault(args: argparse.Namespace, doubles: subprocess.Popen, proc: subprocess.Popen, rss: list[float],
          read_s: list[float], http: httpx.Client) -> dict[str, Any]:
    """``--faults`` power failures, ``--fault-spacing`` seconds apart, of the nodes running
    ``--fault-pods`` labelled pods in all (the nodes with most pods first, split evenly); each
    deletion is timed from its own node's fault; any other deletion is a wrong one. Spaced so that
    fencing's rate limit (10 fail-overs a minute, a burst of 10) is not what is measured, and at an
    interval that is not a multiple of the poll, so the faults fall at different points of a pass."""
    from scale_cluster import fenced_pod_name, fenced_pod_nodes

    pods = fenced_pod_nodes(args.nodes, args.resources, min(args.pods, args.claims, args.resources))
    by_node: dict[str, list[int]] = {}
    for c, node in pods.items():
        by_node.setdefault(node, []).append(c)
    groups = fault_groups(by_node, args.fault_pods, max(1, args.faults))
    expected: dict[str, int] = {}  # object -> its fault's index
    for k, group in enumerate(groups):
        for v in group:
            for c in by_node[v]:
                expected[f"Pod default/{fenced_pod_name(c)}"] = k
                expected[f"VolumeAttachment csi-pvc-{c:06d}-{v}-linstor"] = k
    at: list[float] = []
    applied: list[float] = []
    first = time.monotonic()
    deadline = first + 300 + args.fault_spacing * len(groups)
    deleted: dict[str, float] = {}
    while len(at) < len(groups) or not expected.keys() <= deleted.keys():
        if time.monotonic() > deadline or proc.poll() is not None:
            break
        if len(at) < len(groups) and time.monotonic() >= first + args.fault_spacing * len(at):
            answer = command(doubles, {"op": "power_off", "nodes": groups[len(at)]})
            at.append(answer["at"])
            applied.append(answer["applied_s"])
        rss.append(proc_status(proc.pid)["VmRSS"] / 1024)
        read_s.append(metric(get(http, "/metrics").text, "linstor_scheduler_fencing_linstor_read_seconds"))
        time.sleep(0.2)  # sampling outside processes
        deleted = command(doubles, {"op": "deleted"})["deleted"]
    pod_times = sorted(deleted[o] - at[k] for o, k in expected.items() if o in deleted and o.startswith("Pod "))
    va_times = sorted(deleted[o] - at[k] for o, k in expected.items() if o in deleted and not o.startswith("Pod "))
    return {"faults": len(groups), "fault_nodes": sum(len(g) for g in groups),
            "fault_pods": sum(1 for o in expected if o.startswith("Pod ")),
            "fault_applied_in_emulator_max_s": max(applied, default=float("nan")),
            "fault_to_deletion_p50_s": percentile(pod_times, 50),
            "fault_to_deletion_max_s": max(pod_times) if pod_times else float("nan"),
            "fault_to_detach_max_s": max(va_times) if va_times else float("nan"),
            "missed_deletions": len(expected.keys() - deleted.keys()),
            "wrong_deletions": len(deleted.keys() - expected.keys())}


def sigterm_mid_pass(proc: subprocess.Popen) -> float:
    """Wait until the service burns CPU (a pass is running: it idles between passes), then SIGTERM."""
    before = cpu_seconds(proc.pid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)  # sampling an outside process
        now = cpu_seconds(proc.pid)
        if now - before >= 0.03:
            break
        before = now
    return stop(proc)


def stop(proc: subprocess.Popen) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--resources", type=int, default=33334, help="resource definitions (x 3 replicas)")
    p.add_argument("--claims", type=int, default=None,
                   help="PVCs bound to the first resources (default: every resource definition, a claim per volume)")
    p.add_argument("--pods", "--fenced-pods", type=int, default=2000,
                   help="running pods labelled for fencing, one per claim, each with its VolumeAttachment")
    p.add_argument("--polls", type=int, default=5, help="polls measured after ready")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="the extender's --poll-interval (short: polls back to back)")
    p.add_argument("--poll-min-factor", type=float, default=0.0,
                   help="the extender's --poll-min-factor (0: polls back to back, the worst case for stalls; "
                   "-1: leave the service's default)")
    p.add_argument("--probe-every", type=float, default=0.02, help="seconds between prioritize probes")
    p.add_argument("--churn", type=float, default=4.0,
                   help="informer updates per second while the probes run (claims' annotations, Nodes' status)")
    p.add_argument("--pool-changes", type=float, default=1.0,
                   help="storage pools whose free space LINSTOR reports changed, per second (0: LINSTOR "
                   "stays the same, every poll keeps the state)")
    p.add_argument("--fresh-volume", action="store_true", help="also time a volume bound before LINSTOR shows it")
    p.add_argument("--fencing", action="store_true", help="also measure the fencing controller")
    p.add_argument("--fencing-passes", type=int, default=3, help="fencing passes measured after ready")
    p.add_argument("--fault-pods", type=int, default=24,
                   help="with --fencing: power off the nodes running the most labelled pods until this many "
                   "are hit, over --faults faults (0: no fault)")
    p.add_argument("--faults", type=int, default=4, help="with --fencing: separate power failures")
    p.add_argument("--fault-spacing", type=float, default=41.0,
                   help="seconds between the faults (the rate limit refills 6 fail-overs in 36 s)")
    p.add_argument("--fencing-args", nargs="*", default=[], help="more flags for fencing (e.g. =--grace-period=30)")
    p.add_argument("--no-extender", action="store_true")
    p.add_argument("--extender-args", nargs=argparse.REMAINDER, default=[], help="more flags for the extender")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--serve-doubles", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.claims is None:
        args.claims = args.resources
    if args.poll_min_factor is not None and args.poll_min_factor < 0:
        args.poll_min_factor = None
    if args.serve_doubles:
        return serve_doubles(args)
    print(f"# scale bench: {args.nodes} nodes, {args.resources} resource definitions x 3 = "
          f"{args.resources * 3} replicas, {args.claims} bound claims, {args.pods} labelled pods; "
          f"python {platform.python_version()}, {os.cpu_count()} cpus", flush=True)
    doubles = subprocess.Popen(
        [sys.executable, __file__, "--serve-doubles", "--nodes", str(args.nodes), "--resources",
         str(args.resources), "--claims", str(args.claims), "--pods", str(args.pods)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        urls = json.loads(doubles.stdout.readline())
        print(f"# doubles up: /v1/view/resources body {urls['resources_body_bytes'] / 1e6:.1f} MB "
              f"(populated in {urls['populate_s']} s)", flush=True)
        results: dict[str, Any] = {}
        if not args.no_extender:
            load0 = os.getloadavg()[0]
            results["extender"] = run_extender(args, urls, doubles)
            results["extender"]["load_before"] = load0
            results["extender"]["load_after"] = os.getloadavg()[0]
            report("extender", results["extender"])
        if args.fencing:
            load0 = os.getloadavg()[0]
            results["fencing"] = run_fencing(args, urls, doubles)
            results["fencing"]["load_before"] = load0
            results["fencing"]["load_after"] = os.getloadavg()[0]
            report("fencing", results["fencing"])
        print("# json " + json.dumps(results), flush=True)
    finally:
        doubles.stdin.close()
        try:
            doubles.wait(30)
        except subprocess.TimeoutExpired:
            doubles.kill()
    return 0


def report(what: str, r: dict[str, Any]) -> None:
    print(f"\n## {what} (load average {r['load_before']:.2f} before, {r['load_after']:.2f} after)")
    for key, value in r.items():
        if key.startswith("load_"):
            continue
        print(f"  {key:38s} {value:.3f}" if isinstance(value, float) else f"  {key:38s} {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
