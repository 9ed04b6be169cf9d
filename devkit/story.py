"""``make demo``: the whole system in one process, no cluster, told as it happens.

The LINSTOR controller emulator and the Kubernetes API stand-in run on loopback, seeded with three
nodes; every component of ours runs against them over HTTP, exactly as in a cluster:

1. tagged LVM objects become LINSTOR storage pools (``sync-node``, one agent per node) and
   StorageClasses ``linstor-<pool>-r1..r3`` (``sync-classes``);
2. a StatefulSet's pod with ``schedulerName: linstor`` is placed: the story plays kube-scheduler by
   calling the running extender's ``/filter`` and ``/prioritize``, then linstor-csi by creating the
   volume's replicas where the pod landed;
3. that node loses its storage; ``fencing`` removes the pod, then its VolumeAttachment, after the
   grace period (on a fast-forwarded clock: the story does not wait 30 s);
4. the StatefulSet controller's part: the pod comes back, and the extender places it next to the
   surviving replica;
5. locality all along: ``linstor-scheduler locality`` before the failure (local), during it (the
   pod's node is gone: not local), after the fail-over (local again), and ``linstor-scheduler drill``
   run before the failure, whose prediction (remove the pod, where it goes) the story checks.

``tests/test_story.py`` runs the same story and checks each step's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from devkit import kube_objects as k
from devkit.clock import FakeClock
from devkit.extender_demo import ask_yourself, serve_until, split_servers
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.kube import objects
from linstor_scheduler.linstor.client import LinstorClient

NODES = {"w1": "zone-a", "w2": "zone-b", "w3": "zone-c"}
FREE_GIB = {"w1": 120, "w2": 400, "w3": 250}
POOL, CLASS = "thindata", "linstor-thindata-r2"
FENCING_LABEL = "linstor.csi.linbit.com/on-storage-lost"


@dataclass
class StoryResult:
    pools: list[tuple[str, str, str]] = field(default_factory=list)  # (node, pool, kind) created
    classes: list[str] = field(default_factory=list)
    first_node: str = ""
    replicas: list[str] = field(default_factory=list)  # diskful replica nodes
    fenced: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, object, outcome)
    second_node: str = ""
    seconds_to_failover: float = 0.0  # fake-clock seconds from the fault to the pod's deletion
    bound_generation: int = 0  # the extender's first state generation that knew the claim's binding
    locality: list[tuple[str, int, int]] = field(default_factory=list)  # (moment, local pods, pods)
    drill: dict[str, Any] = field(default_factory=dict)  # the drill of the first node's failure, run before it
    next_drill: dict[str, Any] = field(default_factory=dict)  # the drill of the next failure, at the end


class Story:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        print(f"\n== {self.step_no}. {title}", file=self.out, flush=True)

    def say(self, text: str = "") -> None:
        print(f"   {text}" if text else "", file=self.out, flush=True)


def _lvm(node: str) -> Any:
    from storage_sync import LogicalVolume, LvmInventory, VolumeGroup

    class NodeLvm:  # what `vgs`/`lvs` report on the node after the operator's commands
        def scan(self) -> LvmInventory:
            return LvmInventory(
                (VolumeGroup("linstor_vg", f"{node}-vg-uuid", (), 500 << 30, 0),),
                (LogicalVolume(POOL, f"{node}-thin-uuid", "linstor_vg", f"{node}-vg-uuid", (f"linstor-{POOL}",),
                               "twi-aotz--", 480 << 30),))

    return NodeLvm()


def _ask_scheduler(http: httpx.Client, pod: dict[str, Any], names: list[str], story: Story) -> str:
    """kube-scheduler's part: filter, prioritize, pick the best node (first on a tie)."""
    from scheduler_extender import render_explain_table

    explained = http.post("/explain", json={"Pod": pod, "NodeNames": names}).json()
    story.say("the extender's verdicts (`linstor-scheduler explain` shows the same):")
    for line in render_explain_table(explained).splitlines():
        story.say("  " + line)
    passing = http.post("/filter", json={"Pod": pod, "NodeNames": names}).json()["NodeNames"]
    scores = http.post("/prioritize", json={"Pod": pod, "NodeNames": passing}).json()
    best = max(scores, key=lambda h: h["Score"])  # max keeps the first of equals
    story.say(f"kube-scheduler: filter kept {', '.join(passing)}; prioritize scored "
              + ", ".join(f"{h['Host']}={h['Score']}" for h in scores) + f"; the pod goes to {best['Host']}")
    return str(best["Host"])


def run(out: TextIO | None = None, *, port: int = 0, serve: bool = False, metrics_port: int = 0,
        stop: threading.Event | None = None) -> StoryResult:
    out = out or sys.stdout
    story = Story(out)
    result = StoryResult()
    emu, ks = LinstorEmulator(supports_events=False), KubeStandin()
    for name, zone in NODES.items():
        emu.add_node(name)
        ks.add(k.node(name, zone=zone, region="eu-1"))
    with contextlib.ExitStack() as stack:
        lsrv = stack.enter_context(emu.serve())
        ksrv = stack.enter_context(ks.serve())
        story.say(f"LINSTOR controller emulator on {lsrv.url}, Kubernetes API stand-in on {ksrv.url}")
        story.say(f"nodes: {', '.join(f'{n} ({z})' for n, z in NODES.items())}; no storage pools, no StorageClasses")
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        client = LinstorClient(lsrv.url, retries=2, backoff_base=0.05)
        stack.callback(lambda: loop.run_until_complete(client.aclose()))
        api = ks.api_client(ksrv.url)
        _storage(story, result, loop, client, api, emu)
        extender, ops = stack.enter_context(_extender(lsrv.url, api, port, metrics_port))
        http = stack.enter_context(httpx.Client(base_url=extender.url, timeout=10))
        ready = ops.url + "/readyz"
        story.say(f"the extender serves kube-scheduler's profile `linstor` on {extender.url} (its /readyz and "
                  f"/metrics on {ops.url})")
        pod = _place(story, result, emu, ks, http, ready)
        look = _Locality(story, result, loop, lsrv.url, api)
        look.report("before any failure")
        look.rehearse(result.first_node, "the next failure", into="drill")
        _fence(story, result, loop, client, api, emu, ks, during=lambda: look.report("during the failure"))
        _replace(story, result, emu, ks, http, ready, pod)
        story.step("Locality after the fail-over, and a rehearsal of the next failure")
        look.report("after the fail-over", table=True)
        predicted = (result.drill.get("pods") or [{}])[0].get("to") or ["?"]
        story.say(f"the drill run before the failure said db-0 would go to {predicted[0]}; it went to "
                  f"{result.second_node or '(not rescheduled)'}")
        if result.second_node:
            look.rehearse(result.second_node, "the next failure", into="next_drill")
        snapshot = f"linstor-scheduler snapshot --controllers {lsrv.url} --kube-api-url {ksrv.url} > snap.yaml"
        _serve_or_stop(story, serve, ask_yourself(extender.url, ops.url, Path("{body}")), pod, snapshot, stop)
    return result


def _storage(story: Story, result: StoryResult, loop: asyncio.AbstractEventLoop, client: LinstorClient,
             api: Any, emu: LinstorEmulator) -> None:
    from storage_sync import ClassReconciler, NodeAgent

    story.step("The operator tags LVM; sync-node registers the pools, sync-classes makes the StorageClasses")
    story.say(f"on each node: lvcreate -L 480G -T linstor_vg/{POOL} --add-tag linstor-{POOL}")
    for node in NODES:
        agent = NodeAgent(node, _lvm(node), client)
        outcome = loop.run_until_complete(agent.run_pass())
        for item in outcome.applied:
            result.pools.append((node, item.pool or "", item.provider_kind))
            story.say(f"sync-node on {node}: {item.message}")
    for node, free_gib in FREE_GIB.items():  # other volumes already use some of it
        emu.set_pool_free(node, POOL, free_gib * 1024**2, total_kib=480 * 1024**2)
    story.say("free space in the pool: " + ", ".join(f"{n} {g} GiB" for n, g in FREE_GIB.items()))
    # LINSTOR over-commits a thin pool 20 times by default, and the extender judges pools as LINSTOR
    # admits volumes (docs/extender.md "How much a pool takes"): this cluster allows no over-commit.
    emu.set_controller_props({"MaxOversubscriptionRatio": "1"})
    story.say("linstor controller set-property MaxOversubscriptionRatio 1   # no thin over-commit: "
              "a pool takes what is free")
    classes = loop.run_until_complete(ClassReconciler(client, api).run_pass())
    for action in classes.applied:
        result.classes.append(action.name)
        story.say(f"sync-classes: {action.message}")


@contextlib.contextmanager
def _extender(linstor_url: str, api: Any, port: int, metrics_port: int):  # type: ignore[no-untyped-def]
    from scheduler_extender import build_live_app

    app = build_live_app(LinstorClient(linstor_url), api, poll_interval=0.2, use_events=False)
    with split_servers(app, port, metrics_port) as (verbs, ops):
        _wait(lambda: httpx.get(ops.url + "/readyz").status_code == 200, "the extender's first sync")
        yield verbs, ops


def _wait(condition: Any, what: str, timeout: float = 15.0) -> None:
    done = threading.Event()
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        done.wait(0.05)
        waited += 0.05


def _wait_for_state(http: httpx.Client, ready: str, pod: dict[str, Any], accept: Any, what: str,
                    since: int = 0) -> int:
    """Wait for a state of the extender (generation ``since`` or later) whose verdicts for ``pod``
    ``accept`` takes; returns that generation. The generation is read before and after the verdicts:
    equal, they came from that state."""
    found: list[int] = []

    def judged_in_one_state() -> bool:
        before = http.get(ready).json()["generation"]
        rows = http.post("/explain", json={"Pod": pod, "NodeNames": list(NODES)}).json()["nodes"]
        after = http.get(ready).json()["generation"]
        if before == after >= since and accept(rows):
            found.append(after)
        return bool(found)

    _wait(judged_in_one_state, what)
    return found[0]


def _pod() -> dict[str, Any]:
    pod = k.pod("db-0", claims=["data-db-0"], labels={"app": "db", FENCING_LABEL: "remove"})
    objects.writable_meta(pod)["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                                           "uid": "statefulset-db", "controller": True}]
    pod["status"] = {"phase": "Pending"}
    return pod


def _place(story: Story, result: StoryResult, emu: LinstorEmulator, ks: KubeStandin, http: httpx.Client,
           ready: str) -> dict:
    story.step("A StatefulSet's pod with schedulerName: linstor and a new claim is scheduled")
    ks.add(k.pvc("data-db-0", storage_class=CLASS, size="20Gi"))
    pod = ks.add(_pod())
    story.say(f"pod default/db-0 (label {FENCING_LABEL}: remove) claims data-db-0 of {CLASS}, not bound yet "
              "(WaitForFirstConsumer)")
    def judged() -> bool:
        rows = http.post("/explain", json={"Pod": pod, "NodeNames": list(NODES)}).json()["nodes"]
        return all("not judged" not in " ".join(r["reasons"]) for r in rows)

    _wait(judged, "the extender to see the claim and its StorageClass")
    node = _ask_scheduler(http, pod, list(NODES), story)
    result.first_node = node
    # linstor-csi's part: two diskful replicas (one where the pod landed), a tie-breaker on the third
    others = sorted((n for n in NODES if n != node), key=lambda n: -FREE_GIB[n])  # LINSTOR's autoplace
    resource = "pvc-3f1e9c2a"
    emu.add_resource(resource, node, in_use=True, storage_pool=POOL, size_kib=20 * 1024**2)
    emu.add_resource(resource, others[0], storage_pool=POOL, size_kib=20 * 1024**2)
    emu.add_resource(resource, others[1], diskful=False, flags=["TIE_BREAKER"])
    emu.set_rd_props(resource, {"DrbdOptions/Resource/quorum": "majority",
                                "DrbdOptions/Resource/on-no-quorum": "suspend-io"})
    result.replicas = [node, others[0]]
    ks.add(k.pv(resource, claim=("default", "data-db-0"), storage_class=CLASS, size="20Gi"))
    ks.patch("PersistentVolumeClaim", "data-db-0", {"spec": {"volumeName": resource},
                                                    "status": {"phase": "Bound"}}, "default")
    ks.patch("Pod", "db-0", {"spec": {"nodeName": node}, "status": {"phase": "Running"}}, "default")
    ks.add(k.volume_attachment(resource, node))
    story.say(f"linstor-csi: volume {resource} with diskful replicas on {node} (in use) and {others[0]}, "
              f"a tie-breaker on {others[1]}; quorum majority, on-no-quorum suspend-io (the r2 class's parameters)")
    story.say(f"kubelet: db-0 runs on {node}; VolumeAttachment of {resource} to {node}")
    # The extender learns the binding from its informers, a moment later: the story goes on with the
    # state generation that knows it (every later state does too), never after a guessed delay.
    result.bound_generation = _wait_for_state(
        http, ready, pod, lambda rows: all(f"volume {resource}:" in " ".join(r["reasons"])
                                   and "not judged" not in " ".join(r["reasons"]) for r in rows),
        f"the extender's state that knows data-db-0 is bound to {resource}")
    return pod


class _Locality:
    """``linstor-scheduler locality`` and ``drill`` as an operator runs them: one live read of LINSTOR
    and Kubernetes (the snapshot path), the same report and drill code as the CLI."""

    def __init__(self, story: Story, result: StoryResult, loop: asyncio.AbstractEventLoop, url: str, api: Any):
        self.story, self.result, self.loop, self.url, self.api = story, result, loop, url, api

    def _document(self) -> dict[str, Any]:
        from linstor_scheduler.capture import capture

        return self.loop.run_until_complete(capture(LinstorClient(self.url), self.api, scheduler_name=None))

    def report(self, moment: str, *, table: bool = False) -> None:
        from locality.report import render_locality_table, render_summary, report_from_doc

        report = report_from_doc(self._document())
        summary = report["summary"]
        self.result.locality.append((moment, summary["local"], summary["pods"]))
        self.story.say(f"`linstor-scheduler locality` {moment}: {render_summary(report)}")
        lines = render_locality_table(report, show_all=True).splitlines()[1:] if table else [
            f"{p['pod']} on {p['node']}: {p['volumes'][0]['locality']} ({p['volumes'][0]['detail']})"
            for p in report["pods"] if not p["local"]]
        for line in lines:
            self.story.say("  " + line)

    def rehearse(self, node: str, what: str, *, into: str) -> None:
        from locality.drill import drill, render_drill_table

        result = drill(self._document(), [node])
        setattr(self.result, into, result)
        self.story.say(f"`linstor-scheduler drill --fail-node {node}` rehearses {what}:")
        for line in render_drill_table(result).splitlines():
            self.story.say("  " + line)


def _fence(story: Story, result: StoryResult, loop: asyncio.AbstractEventLoop, client: LinstorClient, api: Any,
           emu: LinstorEmulator, ks: KubeStandin, during: Any = None) -> None:
    from fencing import FencingController, KubeActions, ListedKube, Settings
    from linstor_scheduler.kube.events import EventRecorder
    from linstor_scheduler.kube.lease import AlwaysLeader

    node = result.first_node
    story.step(f"{node} loses power: its satellite goes OFFLINE, the Node NotReady")
    clock = FakeClock(1000.0)
    settings = Settings()
    leader = AlwaysLeader(clock)
    fencer = FencingController(client, ListedKube(api), KubeActions(api), EventRecorder(api, "linstor-scheduler"),
                               leader=leader, settings=settings, clock=clock)
    loop.run_until_complete(fencer.run_once())  # a healthy pass first: the controller has seen it all before
    emu.power_off(node)  # the reachability matrix: satellite OFFLINE, every DRBD peer loses it
    ks.patch("Node", node, {"status": k.node(node, ready=False)["status"]})
    if during is not None:
        during()
    fault_at = clock.now
    deleted_at = None
    while clock.now - fault_at <= settings.grace_period + 3 * settings.poll_interval:
        clock.now += settings.poll_interval
        report = loop.run_until_complete(fencer.run_once())
        for kind, obj, outcome in report.actions:
            result.fenced.append((kind, obj, outcome))
            story.say(f"fencing at +{clock.now - fault_at:.0f}s (fast-forwarded): {kind} {obj}: {outcome}")
            if kind in ("pod_delete", "pod_evict") and outcome == "done" and deleted_at is None:
                deleted_at = clock.now
        if deleted_at is not None and any(k_ == "attachment_delete" for k_, _, _ in result.fenced):
            break
    result.seconds_to_failover = (deleted_at - fault_at) if deleted_at is not None else float("nan")
    fencer.recorder.flush(10)  # Events are sent by the recorder's own thread: all of them, before they are told
    for event in ks.list("Event"):
        if (event.get("involvedObject") or {}).get("name") == "db-0":
            story.say(f"Event on pod db-0: {event['type']} {event['reason']}: {event['message']}")


def _replace(story: Story, result: StoryResult, emu: LinstorEmulator, ks: KubeStandin, http: httpx.Client,
             ready: str, old: dict[str, Any]) -> None:
    story.step("The StatefulSet controller recreates db-0; the extender places it next to the surviving replica")
    if ks.get("Pod", "db-0", "default") is not None:
        story.say("db-0 was not removed: nothing to reschedule")
        return
    pod = ks.add(_pod())
    story.say(f"pod default/db-0 is back (new UID {objects.uid(pod)[:8]}...), Pending")
    lost = result.first_node
    _wait_for_state(http, ready, pod, lambda rows: any(r["node"] == lost and r["verdict"] == "fail" for r in rows),
                    "the extender to see the lost node", since=result.bound_generation)
    result.second_node = _ask_scheduler(http, pod, list(NODES), story)
    # kubelet's and DRBD's part: the pod runs there and its replica there becomes Primary
    ks.patch("Pod", "db-0", {"spec": {"nodeName": result.second_node}, "status": {"phase": "Running"}}, "default")
    emu.set_in_use("pvc-3f1e9c2a", result.second_node, True)
    story.say(f"kubelet: db-0 runs on {result.second_node}; its replica there is Primary")


def _serve_or_stop(story: Story, serve: bool, commands: list[str], pod: dict[str, Any], snapshot: str,
                   stop: threading.Event | None) -> None:
    """While serving: the commands that ask the extender (``{body}``: a request body written for
    them) and the one that writes a snapshot of this cluster. Printed only then: without ``serve``
    the file and the ports are gone when the demo returns."""
    if not serve:  # no commands for a file and ports that are gone when the demo returns
        story.say("(`make demo` stops here; `linstor-scheduler demo --serve` keeps it running and prints the "
                  "commands to ask the extender yourself)")
        return
    story.step("Ask the running extender yourself")
    with tempfile.TemporaryDirectory(prefix="linstor-scheduler-demo-") as folder:  # removed when the demo ends
        body = Path(folder) / "db-0.json"
        body.write_text(json.dumps({"Pod": pod, "NodeNames": list(NODES)}, indent=1))
        for line in commands:
            story.say(line.replace("{body}", str(body)))
        story.say(f"a snapshot of this cluster, for `extender --snapshot`, `explain`, `locality`: {snapshot}")
        story.say("serving until Ctrl-C")
        serve_until(stop)
