"""A cluster for the fencing fault matrix: the LINSTOR emulator and the Kubernetes API stand-in over
real HTTP, a fake clock, and the controller driven one pass at a time (``step``); and the service as
deployed (``FencingService``: ``wiring.serve`` on the real clock, probed over HTTP).

Used by the fencing tests (tests/test_fencing_*.py, tests/test_chaos_fencing.py; the ``rig`` fixture is in
tests/conftest.py) and bench/fencing_bench.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from devkit import kube_objects as k
from devkit.clock import FakeClock
from devkit.kube_standin import KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from fencing.actions import KubeActions
from fencing.controller import FencingController, PassReport, Settings
from fencing.kubeview import ListedKube
from fencing.metrics import FencingMetrics
from fencing.observe import LABEL, LABEL_VALUE
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.linstor.client import LinstorClient

NODES = ("n1", "n2", "n3", "n4", "n5", "n6")
START = 1000.0


class FakeLeader:
    def __init__(self, clock: FakeClock) -> None:
        self.is_leader = True
        self.leader_since: float | None = clock.now


async def _no_sleep(_: float) -> None:
    return None


class Rig:
    """``with Rig() as rig: rig.volume(...); rig.pod(...); rig.crash("n1"); rig.run(40)``."""

    def __init__(self, nodes: tuple[str, ...] = NODES, settings: Settings | None = None,
                 linstor_timeout: float = 2.0, linstor_events: bool = False) -> None:
        self.nodes = nodes
        self.settings = settings or Settings()
        self.linstor_timeout = linstor_timeout
        self.clock = FakeClock(START)
        self.emu = LinstorEmulator(supports_events=linstor_events)
        self.ks = KubeStandin()
        self._stack = contextlib.ExitStack()
        self.loop = asyncio.new_event_loop()
        self.reports: list[PassReport] = []
        self.fault_at: float | None = None
        self.controllers: list[FencingController] = []

    # --- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Rig:
        emu_srv = self._stack.enter_context(self.emu.serve())
        ks_srv = self._stack.enter_context(self.ks.serve())
        self._servers: tuple[ServerThread | None, ServerThread] = (emu_srv, ks_srv)
        self._first_linstor = emu_srv
        self.emu_url, self.ks_url = emu_srv.url, ks_srv.url
        self.api = self.ks.api_client(self.ks_url)
        self.emu.set_controller_props({"DrbdOptions/Resource/on-no-quorum": "suspend-io"})
        for name in self.nodes:
            self.emu.add_node(name)
            self.emu.add_storage_pool(name, "thindata", "LVM_THIN")
            self.ks.add(k.node(name))
        self.ctrl = self.controller()
        return self

    def __exit__(self, *exc: object) -> None:
        follower = getattr(self, "_follower", None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(BaseException):
                self.loop.run_until_complete(follower)
        for ctrl in self.controllers:
            self.loop.run_until_complete(ctrl.linstor.aclose())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
        for srv in self._servers:  # both stop at once: each takes a tick of uvicorn's main loop
            if srv is not None:
                srv._on_stop()
                srv.server.should_exit = True
        self._stack.close()
        if self._servers[0] not in (None, self._first_linstor):  # restarted by linstor_up
            self._servers[0].stop()

    def controller(self, leader: Any = None, settings: Settings | None = None) -> FencingController:
        """A new controller instance (a restart, or a second replica of the Deployment)."""
        client = LinstorClient(self.emu_url, timeout=self.linstor_timeout, connect_timeout=1.0, retries=1,
                               sleep=_no_sleep)
        api = self.ks.api_client(self.ks_url)
        settings = settings or self.settings
        ctrl = FencingController(client, ListedKube(api, timeout=5.0, clock=self.clock, select=settings.select),
                                 KubeActions(api, timeout=5.0),
                                 EventRecorder(api, "fencing-test"),
                                 leader=leader or FakeLeader(self.clock), settings=settings,
                                 metrics=FencingMetrics(), clock=self.clock, wall_clock=self.clock)
        self.controllers.append(ctrl)
        return ctrl

    # --- the cluster -----------------------------------------------------------------------------
    def volume(self, name: str, diskful: list[str], *, diskless: list[str] = (), in_use: str | None = None,
               claim: str | None = None, namespace: str = "default", tie_breaker: bool = True) -> str:
        """A LINSTOR resource with replicas, and its bound PVC/PV (claim name defaults to ``data-<name>``).

        Two diskful replicas get a diskless tie-breaker on another node, as LINSTOR adds one by default
        (``DrbdOptions/auto-add-quorum-tiebreaker``) when quorum is on; ``tie_breaker=False``: none.
        """
        if len(diskful) == 2 and not diskless and tie_breaker:
            diskless = [next(n for n in self.nodes if n not in diskful)]
        for node in diskful:
            self.emu.add_resource(name, node, in_use=node == in_use)
        for node in diskless:
            self.emu.add_resource(name, node, diskful=False, flags=["TIE_BREAKER"], in_use=node == in_use)
        for obj in k.bound_volume(claim or f"data-{name}", name, namespace=namespace):
            self.ks.add(obj)
        return claim or f"data-{name}"

    def pod(self, name: str, node: str | None, claims: list[str], *, labelled: bool | str = True,
            attach: bool = True, namespace: str = "default", annotations: dict[str, str] | None = None,
            extra_volumes: list[dict[str, Any]] | None = None,
            ephemeral: tuple[str, ...] = (), owner: str | None = "StatefulSet") -> dict[str, Any]:
        """A running pod (as a StatefulSet makes it) and, when ``attach``, its VolumeAttachments on its node.

        ``owner``: the kind of its controller (``ownerReferences`` with ``controller: true``, named after
        the pod's app); None: a bare pod, created by hand.

        ``ephemeral``: names of generic ephemeral volumes; Kubernetes names their PVC ``<pod>-<volume>``
        (make it first: ``rig.volume(resource, ..., claim=f"{pod}-{volume}")``)."""
        labels = {"app": name.rsplit("-", 1)[0]}
        if labelled:
            labels[LABEL] = LABEL_VALUE if labelled is True else str(labelled)
        templates = {vol_name: k.claim_template("linstor-thindata-r2") for vol_name in ephemeral}
        obj = k.pod(name, namespace=namespace, claims=claims, labels=labels, node_name=node,
                    extra_volumes=extra_volumes, ephemeral=templates)
        obj["status"] = {"phase": "Running" if node else "Pending"}
        if annotations:
            obj["metadata"]["annotations"] = annotations
        if owner:
            obj["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": labels["app"],
                                                   "uid": f"uid-{owner.lower()}-{labels['app']}", "controller": True}]
        stored = self.ks.add(obj)
        if attach and node:
            for claim in [*claims, *(f"{name}-{v}" for v in templates)]:
                pv = self.ks.get("PersistentVolumeClaim", claim, namespace)["spec"]["volumeName"]
                self.attach(pv, node)
        return stored

    def attach(self, pv: str, node: str, attacher: str | None = None) -> dict[str, Any]:
        kwargs = {"attacher": attacher} if attacher else {}
        va = k.volume_attachment(pv, node, **kwargs)
        if self.ks.get("VolumeAttachment", va["metadata"]["name"]) is None:
            return self.ks.add(va)
        return self.ks.get("VolumeAttachment", va["metadata"]["name"])

    def recreate(self, name: str, node: str | None, claims: list[str], **kw: Any) -> dict[str, Any]:
        """The StatefulSet controller's part: the pod of the same name comes back (a new UID)."""
        self.ks.delete("Pod", name, "default")
        return self.pod(name, node, claims, attach=False, **kw)

    def set_ready(self, node: str, ready: bool) -> None:
        obj = self.ks.get("Node", node)
        obj["status"] = k.node(node, ready=ready)["status"]
        self.ks.update(obj)

    # --- real-world events on the reachability matrix -------------------------------------------
    def power_off(self, node: str) -> None:
        """``node`` loses power: its satellite and DRBD are gone; the Node turns NotReady (here at once,
        in a cluster after the node-monitor grace period)."""
        self.fault_at = self.clock.now
        self.emu.power_off(node)
        self.set_ready(node, False)

    crash = power_off

    def recover(self, node: str) -> None:
        """Power and every link of ``node`` back; kubelet reports Ready."""
        self.emu.heal(node)
        self.set_ready(node, True)

    def partition(self, node: str, cut: bool = True) -> None:
        """``node`` cut from its peers: the replication network is down, LINSTOR and kubelet reach it."""
        if cut:
            self.fault_at = self.clock.now
        self.emu.cut_peers(node, cut=cut)

    def linstor_down(self) -> None:
        """The LINSTOR controller stops (its pod restarts): connections to it are refused."""
        emu_srv, ks_srv = self._servers
        self._linstor_port = emu_srv.port
        emu_srv.stop()
        self._servers = (None, ks_srv)

    def linstor_up(self) -> None:
        """The LINSTOR controller serves again on the same address, with the same state."""
        srv = ServerThread(self.emu.app, port=self._linstor_port, on_stop=self.emu.close_streams).start()
        self._servers = (srv, self._servers[1])

    def cut_controller(self, node: str, cut: bool = True) -> None:
        """The LINSTOR controller cut from ``node``'s satellite; DRBD and kubelet are fine."""
        if cut:
            self.fault_at = self.clock.now
        self.emu.cut_controller(node, cut=cut)

    # --- the promotion event stream ----------------------------------------------------------------
    def follow_promotions(self, ctrl: FencingController | None = None) -> None:
        """The controller follows LINSTOR's DRBD promotion stream (``Rig(linstor_events=True)``)."""
        ctrl = ctrl or self.ctrl
        self._follower = self.loop.create_task(ctrl.follow_promotions(ctrl.linstor))

        async def subscribed() -> None:
            while not self.emu._subscribers:
                await asyncio.sleep(0.01)  # yields to the follower's connection; bounded by wait_for

        self.loop.run_until_complete(asyncio.wait_for(subscribed(), 5))

    def wait_promotions(self, ctrl: FencingController | None = None) -> None:
        """Let the event loop run until the controller has received every promotion event emitted so far."""
        ctrl = ctrl or self.ctrl
        emitted = self.emu.emitted.get("may-promote-change", 0)

        async def received() -> None:
            while ctrl.promotion_events < emitted:
                await asyncio.sleep(0.01)

        self.loop.run_until_complete(asyncio.wait_for(received(), 5))

    # --- driving ---------------------------------------------------------------------------------
    def step(self, seconds: float | None = None, ctrl: FencingController | None = None) -> PassReport:
        self.clock.now += self.settings.poll_interval if seconds is None else seconds
        report = self.loop.run_until_complete((ctrl or self.ctrl).run_once())
        self.reports.append(report)
        return report

    def run(self, seconds: float, ctrl: FencingController | None = None) -> list[PassReport]:
        """Passes every poll interval for ``seconds`` of fake time."""
        reports = []
        end = self.clock.now + seconds
        while self.clock.now + self.settings.poll_interval <= end + 1e-9:
            reports.append(self.step(ctrl=ctrl))
        return reports

    # --- evidence --------------------------------------------------------------------------------
    def writes(self, method: str = "DELETE", fragment: str = "") -> list[tuple[str, str, Any]]:
        return [w for w in self.ks.writes if w[0] == method and fragment in w[1]]

    def pod_deletes(self) -> list[tuple[str, str, Any]]:
        return [w for w in self.ks.writes if (w[0] == "DELETE" and "/pods/" in w[1])
                or (w[0] == "POST" and w[1].endswith("/eviction"))]

    def evicted(self) -> list[str]:
        """Names of the pods deleted or evicted, in the order the API server saw the writes."""
        return [path.split("/")[6] for _, path, _ in self.pod_deletes()]

    def deleted_at(self, pod: str) -> float:
        """Fake-clock time of the one pass whose pod delete of ``pod`` (namespace/name) was done."""
        (at,) = [r.at for r in self.reports if ("pod_delete", pod, "done") in r.actions]
        return at

    def attachment_deletes(self) -> list[tuple[str, str, Any]]:
        return self.writes("DELETE", "/volumeattachments/")

    def events(self, reason: str | None = None, pod: str | None = None) -> list[dict[str, Any]]:
        """The Events in the API server, once every controller's queue of them was sent (Events are
        sent by the recorder's own thread: kube/events.py)."""
        for ctrl in self.controllers:
            assert ctrl.recorder.flush(10), "Events still queued after 10 s"
        return [e for e in self.ks.list("Event")
                if (reason is None or e.get("reason") == reason)
                and (pod is None or (e.get("involvedObject") or {}).get("name") == pod)]

    def deletion_times(self) -> list[float]:
        """Fake-clock seconds from the injected fault to each pass that deleted or evicted a pod."""
        assert self.fault_at is not None
        return [r.at - self.fault_at for r in self.reports
                for kind, _, outcome in r.actions if kind in ("pod_delete", "pod_evict") and outcome == "done"]


class HungLinstor:
    """A LINSTOR controller that accepts the resource read and never answers it."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()

    async def get_nodes_compact(self) -> list[Any]:
        return []

    async def iter_resource_batches(self, item_type: Any = None, **_sizes: Any) -> AsyncIterator[list[Any]]:
        self.reading.set()
        await asyncio.Event().wait()
        yield []

    async def get_resource_definitions_compact(self) -> list[Any]:
        return []

    async def get_resource_groups(self) -> list[Any]:
        return []

    async def get_controller_properties(self) -> dict[str, str]:
        return {}

    async def get_storage_pools_compact(self) -> list[Any]:
        return []


class NoKube:
    def objects(self) -> None:
        return None

    def age(self) -> None:
        return None

    def refresh(self) -> None:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Probe:
    """One look at the side port: when (time.monotonic), /readyz and /healthz (status, text)."""

    at: float
    ready: tuple[int, str]
    alive: tuple[int, str]


class FencingService:
    """``fencing`` as deployed: ``wiring.serve`` in a thread, with the production clients (every
    Kubernetes call with ``--api-timeout``, no urllib3 retries; the LINSTOR client from its flags),
    against the rig's servers on loopback, on the real clock. Small bounds: ``--max-staleness``
    ``bound`` (watches of a third of it), polls of 0.2 s. A thread looks at /readyz and /healthz
    every 50 ms (``probes``): the tests read what the kubelet would have seen."""

    def __init__(self, rig: Rig, *flags: str, bound: float = 3.0, api_timeout: float = 1.0,
                 grace: float = 1.0, lease: float = 2.0, agent: str = "", lead: bool = True) -> None:
        """``agent``: a name in this instance's User-Agent (the stand-in can break one instance's
        connections: ``silent_watches(agent=...)``); ``lead``: wait until it leads (else until ready)."""
        from fencing.wiring import settings_from_args
        from linstor_scheduler.cli import build_parser

        self.rig = rig
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.args = build_parser().parse_args([
            "fencing", "--controllers", rig.emu_url, "--kube-api-url", rig.ks_url, "--grace-period", str(grace),
            "--poll-interval", "0.2", "--max-staleness", str(bound), "--api-timeout", str(api_timeout),
            "--linstor-timeout", "1", "--lease-duration", str(lease), "--lease-namespace", "kube-system",
            "--listen-address", "127.0.0.1", "--port", str(self.port), "--no-promotion-events", *flags])
        self.settings = settings_from_args(self.args)
        self.bound = bound
        self.agent, self.lead = agent, lead
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=2.0)

    def __enter__(self) -> FencingService:
        from fencing.actions import KubeActions
        from fencing.wiring import serve
        from linstor_scheduler.kube.client import api_client_from_args
        from linstor_scheduler.linstor.options import make_linstor_client

        args, settings = self.args, self.settings
        api = api_client_from_args(args)
        if self.agent:
            api.user_agent = f"linstor-scheduler-fencing/{self.agent}"
        self.recorder = EventRecorder(api, component="linstor-scheduler-fencing")
        actions = KubeActions(api, timeout=settings.api_timeout)
        self.thread = threading.Thread(target=lambda: asyncio.run(serve(
            args, settings, api, self.recorder, make_linstor_client(args), actions, self._stop)), daemon=True)
        self.thread.start()
        self._prober = threading.Thread(target=self._probe_loop, daemon=True)
        self._prober.start()
        try:
            self.wait(lambda: (self.leading() or not self.lead) and self.ready()[0] == 200,
                      "leading and ready" if self.lead else "ready", 15)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.rig.ks.reset_faults()
        self.rig.ks.release_hangs()
        self.rig.emu.reset_faults()
        self._stop.set()
        self.thread.join(15)
        self._prober.join(5)
        self._http.close()
        assert not self.thread.is_alive(), "the service did not stop"

    # --- the side port ---------------------------------------------------------------------------
    def _get(self, path: str) -> tuple[int, str]:
        try:
            resp = self._http.get(self.base + path)
        except httpx.HTTPError as exc:
            return 0, repr(exc)
        return resp.status_code, resp.text.strip()

    def ready(self) -> tuple[int, str]:
        return self._get("/readyz")

    def alive(self) -> tuple[int, str]:
        return self._get("/healthz")

    def _probe_loop(self) -> None:
        while not self._stop.wait(0.05):
            self.probes.append(Probe(time.monotonic(), self.ready(), self.alive()))

    def probes_since(self, at: float) -> list[Probe]:
        return [p for p in list(self.probes) if p.at >= at]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) -> value; none while the port is not up."""
        code, text = self._get("/metrics")
        if code != 200:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def leading(self) -> bool:
        return self.metric("linstor_scheduler_fencing_leader") == 1.0

    def wait(self, predicate: Any, what: str, timeout: float = 10.0) -> float:
        """Seconds until ``predicate()`` held (polled every 10 ms; an AssertionError past ``timeout``)."""
        from .waiting import wait_for

        started = time.monotonic()
        wait_for(predicate, timeout=timeout, what=what)
        return time.monotonic() - started


def lease_leader(rig: Rig, identity: str) -> Any:
    from linstor_scheduler.kube.lease import LeaderElector

    return LeaderElector(rig.ks.api_client(rig.ks_url), "linstor-scheduler-fencing", "kube-system",
                         identity=identity, lease_seconds=15, renew_seconds=5, retry_seconds=2, clock=rig.clock,
                         wall_clock=rig.clock)


def skewed_leader_and_standby(rig: Rig, skew: float) -> tuple[Any, Any, Any, Any]:
    """Leader A, whose node's clock runs ``skew`` seconds behind (it lost NTP), holds the Lease over
    ``database(rig)``; B stands by on a right clock. (elector A, controller A, elector B, controller B)."""
    database(rig)
    rig.clock.now = round(rig.clock.now)
    elector_a = lease_leader(rig, "fencing-a")
    elector_a.wall_clock = lambda: rig.clock.now - skew
    ctrl_a = rig.controller(leader=elector_a)
    ctrl_a.wall_clock = lambda: rig.clock.now - skew
    assert elector_a.step()
    elector_b = lease_leader(rig, "fencing-b")
    ctrl_b = rig.controller(leader=elector_b)
    assert not elector_b.step(), "a standby while A renews"
    return elector_a, ctrl_a, elector_b, ctrl_b


__all__ = ["NODES", "FakeClock", "FakeLeader", "FencingService", "HungLinstor", "NoKube", "Probe", "Rig", "free_port",
           "k", "k8s", "lease_leader", "skewed_leader_and_standby"]


def database(rig: Rig, node: str = "n1", peers: tuple[str, ...] = ("n2",), name: str = "db-0") -> str:
    """A database pod ``name`` on ``node`` whose volume is diskful there and on ``peers``; its claim."""
    claim = rig.volume(f"pvc-{name}", [node, *peers], in_use=node)
    rig.pod(name, node, [claim])
    return claim


def taint_keys(rig: Rig, node: str) -> list[str]:
    """The keys of the taints on ``node``, sorted."""
    return sorted(t["key"] for t in (rig.ks.get("Node", node).get("spec") or {}).get("taints") or [])


def one_node_crashed(rig: Rig) -> None:
    """n1 crashed under the labelled ``db-0`` (its volume has an UpToDate replica on n2); ``web-0`` on n3
    is labelled ``keep``. ``fencing --once --dry-run`` judges it (tests/test_fencing_cli.py, image/tests)."""
    c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("db-0", "n1", [c2])
    c_b = rig.volume("pvc-b", ["n3", "n4"], in_use="n3")
    rig.pod("web-0", "n3", [c_b], labelled="keep")
    rig.crash("n1")


def assert_verdicts_of_one_node_crashed(out: str) -> None:
    """The verdict table of ``one_node_crashed``: db-0 waits out the grace period, web-0 is healthy."""
    lines = out.splitlines()
    assert lines[0].split() == ["POD", "NODE", "VERDICT", "REASON", "DETAIL"], out
    row = next(line for line in lines if line.startswith("default/db-0"))
    assert row.split()[1:4] == ["n1", "waiting", "GracePeriod"] and "satellite of node n1 is OFFLINE" in row
    assert next(line for line in lines if line.startswith("default/web-0")).split()[2] == "healthy"
