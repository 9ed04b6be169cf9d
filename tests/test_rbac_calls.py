"""RBAC derived from the calls each component really makes.

Each component's own code runs against the Kubernetes API stand-in over HTTP in a scenario that
makes every kind of call it makes in production; the stand-in's request log becomes a set of
(apiGroup, resource, verb, namespace, name) and is checked against deploy/'s RBAC for that
component's ServiceAccount, both ways: every call is granted (resourceNames respected), and every
grant is used, but for the few listed in ``UNUSED_ON_PURPOSE`` with the reason.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devkit import kube_objects as k
from devkit.kube_standin import RESOURCES, KubeStandin
from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.kube.informer import KubeCaches
from linstor_scheduler.linstor.client import LinstorClient

from .test_deploy import objects
from .waiting import wait_for

NS = "linstor-scheduler"
GROUP_OF = {plural: (api.split("/")[0] if "/" in api else "") for plural, (_, api, _) in RESOURCES.items()}
PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/?]+)"
                  r"(?:/(?P<name>[^/?]+))?(?:/(?P<sub>[^/?]+))?$")
VERB = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Call:
    group: str
    resource: str  # with subresource: pods/eviction
    verb: str
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{' ' + self.name if self.name else ''}{where}"


def calls_of(requests: list[tuple[str, str]]) -> set[Call]:
    out = set()
    for method, url in requests:
        parts = urlsplit(url)
        m = PATH.match(parts.path)
        if not m or m["plural"] == "version":
            continue
        plural, name, sub = m["plural"], m["name"], m["sub"]
        resource = f"{plural}/{sub}" if sub else plural
        if method == "GET":
            query = parse_qs(parts.query)
            verb = "watch" if query.get("watch") == ["true"] else ("get" if name else "list")
            if not name:  # a list or watch of one object by name is authorised as that name
                # (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go, NewRequestInfo: the name of a
                # list/watch comes from a fieldSelector "metadata.name=<name>"), so resourceNames apply
                for term in (query.get("fieldSelector") or [""])[0].split(","):
                    key, _, value = term.partition("=")
                    if key.strip() == "metadata.name" and value:
                        name = value.lstrip("=").strip()
        else:
            verb = VERB[method]
        if method == "POST" and sub:  # a subresource create is on the named parent
            pass
        elif method == "POST":
            name = None
        out.add(Call(m["group"] or GROUP_OF.get(plural, ""), resource, verb, m["ns"], name))
    return out


# --- what deploy/ grants ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Grant:
    group: str
    resource: str
    verb: str
    namespace: str | None  # None: cluster-wide
    names: frozenset[str]  # empty: any name
    role: str

    def allows(self, call: Call) -> bool:
        return (self.group == call.group and self.resource == call.resource and self.verb == call.verb
                and (self.namespace is None or self.namespace == call.namespace)
                and (not self.names or (call.name in self.names)))

    def __str__(self) -> str:
        names = f" {sorted(self.names)}" if self.names else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{names} ({self.role})"


def grants_of(service_account: str, *, own_roles_only: bool = True) -> list[Grant]:
    objs = objects()
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs
             if o["kind"] in ("Role", "ClusterRole")}
    out = []
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s["name"] == service_account and s.get("namespace") == NS
                   for s in b.get("subjects") or []):
            continue
        ref = b["roleRef"]
        scope = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        role = roles.get((ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"]))
        if role is None:
            assert own_roles_only is False or ref["name"].startswith("system:") or ref["name"].startswith(
                "extension-apiserver"), f"{b['metadata']['name']} binds a role deploy/ does not define"
            continue
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups", [""]):
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.append(Grant(group, resource, verb, scope, frozenset(rule.get("resourceNames") or ()),
                                         ref["name"]))
    return out


# --- the components, each running its own code ---------------------------------------------------------
def run_informers(ks: KubeStandin, kinds: list[str], **kw: Any) -> None:
    caches = KubeCaches(ks.api, kinds, **kw)
    caches.start()
    try:
        assert caches.wait_synced(10)
        wait_for(lambda: all(ks.count("GET", "") and any("watch=true" in p for _, p in ks.requests)
                             for _ in [0]), what="watches open")
    finally:
        caches.stop()


def extender(ks: KubeStandin, emu: LinstorEmulator) -> None:
    """The live extender itself: its informers, its Pod informer, and a pod filtered then bound away
    from its replica (the NotPlacedLocally Event)."""
    import httpx

    from linstor_scheduler.httpserver import ServerThread
    from scheduler_extender.wiring import build_live_app

    emu.add_storage_pool("n1", "thindata", "LVM_THIN")
    emu.add_resource("pvc-db", "n1")
    ks.add(k.storage_class("r2"))
    for obj in k.bound_volume("data", "pvc-db", storage_class="r2"):
        ks.add(obj)
    pod = ks.add(k.pod("db-0", claims=["data"]))
    app = build_live_app(LinstorClient(emu.url, timeout=2.0, retries=1), ks.api, poll_interval=3600,
                         use_events=False, fencing_lease=f"{NS}/linstor-scheduler-fencing")
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        wait_for(lambda: http.get("/readyz").status_code == 200, what="first full sync")
        assert http.post("/filter", json={"Pod": pod, "NodeNames": ["n1", "n2"]}).json()["NodeNames"] == ["n1", "n2"]
        ks.patch("Pod", "db-0", {"spec": {"nodeName": "n2"}}, namespace="default")
        wait_for(lambda: ks.list("Event", "default"), what="the NotPlacedLocally Event")


def webhook(ks: KubeStandin, emu: LinstorEmulator) -> None:
    from admission.lookups import WEBHOOK_KINDS, kube_lookups
    from admission.tls import CaBundlePublisher, load_or_create, service_names

    from .test_webhook import webhook_configuration

    ks.add(webhook_configuration())
    bundle = load_or_create(ks.api, NS, "linstor-scheduler-webhook-tls", service_names("linstor-scheduler-webhook", NS))
    load_or_create(ks.api, NS, "linstor-scheduler-webhook-tls",  # a name it does not cover yet: replaced
                   [*service_names("linstor-scheduler-webhook", NS), "webhook.example"])
    assert CaBundlePublisher(ks.api, "linstor-scheduler", bundle.ca_pem).publish()
    # One CA per cluster: the Lease holder replaces the Secret (names it does not cover) and writes the
    # caBundle; every replica reads both.
    import tempfile
    from pathlib import Path

    from admission.sharedca import SharedCA
    from linstor_scheduler.kube.lease import LeaderElector

    elector = LeaderElector(ks.api, "linstor-scheduler-webhook-ca", NS, identity="a")
    assert elector.step() and elector.step()  # taken, then renewed
    shared = SharedCA(ks.api, namespace=NS, secret="linstor-scheduler-webhook-tls", config_name="linstor-scheduler",
                      names=[*service_names("linstor-scheduler-webhook", NS), "other.example"], elector=elector,
                      directory=Path(tempfile.mkdtemp()))
    shared.step()
    assert shared.verified
    ks.delete("Secret", "linstor-scheduler-webhook-tls", NS)
    shared.step()  # created again
    events = EventRecorder(ks.api, "linstor-scheduler-webhook")  # LinstorClaimsUnknown, and its repeat
    for _ in range(2):
        events.record({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default"}},
                      "Warning", "LinstorClaimsUnknown", "sent to scheduler linstor")
    assert events.flush() and events.sent == 2
    caches = KubeCaches(ks.api, list(WEBHOOK_KINDS))
    caches.start()
    try:
        assert caches.wait_synced(10)
        kube_lookups(caches, ks.api).for_review().get_pvc("default/created-a-moment-ago")  # not cached yet
        stale = kube_lookups(caches, ks.api, max_staleness=-1).for_review()  # every cache past its bound
        stale.get_pvc("default/data")
        stale.get_pv("pv-data")
        stale.get_sc("linstor-r2")
        stale.default_class()
    finally:
        caches.stop()


def sync_node(ks: KubeStandin, emu: LinstorEmulator) -> None:
    from storage_sync.agent import NodeAgent
    from storage_sync.lvm import LvmInventory, VolumeGroup

    class Lvm:
        def scan(self) -> LvmInventory:  # a duplicate tag: a Warning Event, then its repeat (patch)
            return LvmInventory((VolumeGroup("a", "ua", ("linstor-data",)), VolumeGroup("b", "ub", ("linstor-data",))))

    async def go() -> None:
        async with LinstorClient(emu.url) as client:
            agent = NodeAgent("n1", Lvm(), client, events=EventRecorder(ks.api), repeat_seconds=0)
            await agent.run_pass()
            await agent.run_pass()
    asyncio.run(go())


def sync_classes(ks: KubeStandin, emu: LinstorEmulator) -> None:
    from linstor_scheduler.kube.lease import LeaderElector
    from storage_sync.class_sync import ClassReconciler
    from storage_sync.classes import ClassConfig, desired_class

    elector = LeaderElector(ks.api, "linstor-scheduler-sync-classes", NS, identity="a")
    assert elector.step() and elector.step()  # creates the Lease, then renews it
    emu.add_storage_pool("n1", "data", "LVM")
    stale = desired_class("data", 1, ClassConfig())
    stale["parameters"]["linstor.csi.linbit.com/placementCount"] = "7"
    ks.add(stale)
    foreign = desired_class("data", 2, ClassConfig())
    foreign["metadata"]["labels"] = {}
    ks.add(foreign)
    emu.add_storage_pool("n2", "data", "LVM")
    emu.add_storage_pool("n1", "DfltStorPool", "LVM")  # no class can carry its name: an Event on the Lease
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "linstor-scheduler-sync-classes", "namespace": NS}}

    async def go() -> None:
        async with LinstorClient(emu.url) as client:
            reconciler = ClassReconciler(client, ks.api, events=EventRecorder(ks.api), repeat_seconds=0,
                                         report_object=lease)
            await reconciler.run_pass()
            await reconciler.run_pass()  # the unmanaged class is reported again: the Event's count is patched
    asyncio.run(go())


def fencing(ks: KubeStandin, emu: LinstorEmulator) -> None:
    from fencing.controller import Settings
    from fencing.kubeview import KINDS
    from fencing.observe import LABEL_SELECTOR
    from linstor_scheduler.kube.lease import LeaderElector

    from .fencing_rig import Rig

    run_informers(ks, list(KINDS), label_selectors={"Pod": LABEL_SELECTOR})
    # The fault matrix's rig talks to its own stand-in: its requests are this component's calls too.
    with Rig(settings=Settings(taint=True, taint_stable_seconds=10)) as rig:
        rig.pod("db-0", "n1", [rig.volume("pvc-a", ["n1", "n2"], in_use="n1")])
        rig.pod("web-0", "n3", [rig.volume("pvc-b", ["n3", "n4"], diskless=["n5"], in_use="n3")])
        rig.crash("n1")  # NotReady: grace-0 delete, then the VolumeAttachment, and the taint
        rig.run(45)
        rig.recover("n1")
        rig.run(20)  # the taint comes off
        rig.partition("n3")  # Ready, storage cut: the Eviction API
        rig.run(45)
        ks.requests.extend(rig.ks.requests)
    elector = LeaderElector(ks.api, "linstor-scheduler-fencing", NS, identity="a")  # its Lease, its namespace
    assert elector.step() and elector.step()


def locality(ks: KubeStandin, emu: LinstorEmulator) -> None:
    from linstor_scheduler.kube.lease import LeaderElector
    from locality.wiring import build_exporter

    elector = LeaderElector(ks.api, "linstor-scheduler-locality", NS, identity="a")
    assert elector.step() and elector.step()  # creates the Lease, then renews it
    service = build_exporter(LinstorClient(emu.url), ks.api, elector, poll_interval=0.2)

    async def go() -> None:
        await service.start()
        try:
            await asyncio.to_thread(lambda: wait_for(lambda: service.exporter.run_once() is not None,
                                                     what="a computation"))
        finally:
            await service.stop()
    asyncio.run(go())


def affinity_sync(ks: KubeStandin, emu: LinstorEmulator) -> None:
    """A stale PV replaced step by step, with its Events on the PV and the claim, and the Lease."""
    from devkit.pv_rules import PvRules
    from linstor_scheduler.kube.lease import LeaderElector
    from locality.affinity_sync import AffinitySync

    ks.pv_rules = PvRules()  # before 1.35: the patch is refused (422), the PV is replaced
    elector = LeaderElector(ks.api, "linstor-scheduler-affinity-sync", NS, identity="a")
    assert elector.step() and elector.step()
    emu.add_resource("pvc-1", "n2")
    ks.add(k.storage_class("strict", remote=False))
    claim, pv = k.bound_volume("data-1", "pvc-1", storage_class="strict", affinity_nodes=["n1"])
    claim["metadata"]["uid"] = pv["spec"]["claimRef"]["uid"]
    ks.add(claim)
    ks.add(pv)
    pod = k.pod("app-1", claims=["data-1"], node_name="n2")
    ks.add(pod)

    async def go() -> None:
        async with LinstorClient(emu.url) as client:
            events = EventRecorder(ks.api)
            worker = AffinitySync(client, ks.api, dry_run=False, min_age=0, events=events)
            await worker.run_pass()
            assert worker.last_result is None and events.flush(10)
    asyncio.run(go())
    assert ks.get("PersistentVolume", "pvc-1")["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
        "matchExpressions"][0]["values"] == ["n2"]


@dataclass(frozen=True)
class Component:
    name: str
    service_account: str
    run: Callable[[KubeStandin, LinstorEmulator], None]
    unused_on_purpose: dict[str, str]  # grant (as str(Grant) prefix) -> why no scenario uses it


COMPONENTS = [
    Component("extender", "linstor-scheduler", extender, {}),
    Component("webhook", "linstor-scheduler-webhook", webhook, {}),
    Component("sync-node", "linstor-scheduler-sync-node", sync_node, {}),
    Component("sync-classes", "linstor-scheduler-sync-classes", sync_classes, {}),
    Component("locality", "linstor-scheduler-locality", locality, {}),
    Component("affinity-sync", "linstor-scheduler-affinity-sync", affinity_sync, {
        "patch core/events": "the shared EventRecorder bumps the count of an Event repeated within 10 minutes; "
                             "each step here is said once"}),
    Component("fencing", "linstor-scheduler-fencing", fencing, {
        "patch core/events": "the shared EventRecorder bumps the count of an Event repeated within 10 minutes; "
                             "fencing throttles its own repeats (one Warning per fault), so no scenario here "
                             "repeats one: kept so a repeat never fails to be recorded"}),
]
# Grants of the scheduler's ServiceAccount that serve kube-scheduler itself, not the extender sidecar.
KUBE_SCHEDULER_ROLES = {"linstor-scheduler-leader-election"}


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_rbac_grants_exactly_the_calls_the_code_makes(component):
    ks, emu = KubeStandin(), LinstorEmulator()
    for node in ("n1", "n2"):
        emu.add_node(node)
        ks.add(k.node(node))
    with ks.serve() as ksrv, emu.serve() as lsrv:
        ks.api, emu.url = ks.api_client(ksrv.url), lsrv.url
        component.run(ks, emu)
    calls = calls_of(ks.requests)
    grants = [g for g in grants_of(component.service_account) if g.role not in KUBE_SCHEDULER_ROLES]
    table = "\n".join(sorted(str(c) for c in calls))
    ungranted = [c for c in calls if not any(g.allows(c) for g in grants)]
    assert not ungranted, (f"{component.name} makes calls its RBAC does not grant: "
                           f"{sorted(map(str, ungranted))}\nall its calls:\n{table}")
    unused = [g for g in grants if not any(g.allows(c) for c in calls)
              and not any(str(g).startswith(p) for p in component.unused_on_purpose)]
    assert not unused, (f"{component.name}'s RBAC grants what its code never calls: {sorted(map(str, unused))}"
                        f"\nall its calls:\n{table}")
