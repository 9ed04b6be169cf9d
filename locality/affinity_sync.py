"""``linstor-scheduler affinity-sync``: PVs whose node affinity LINSTOR's replicas left behind get the
affinity LINSTOR CSI would write now. The I/O side; opt-in, Lease-held, dry run by default.

One pass (the Lease holder's): read LINSTOR (nodes, resources, resource definitions) and the
Kubernetes PVs, claims, StorageClasses and Nodes, all or nothing; finish every replacement a
resource definition's property says was begun (``affinity_plan.SAVED_PROP``: a worker that died
mid-way is finished by the next one, the guards aside: a half-done replacement is worse than any
of them); then judge every LINSTOR CSI PV (``affinity.judge``) and, for the stale ones that pass
the guards, within ``--max-per-pass`` and the rate limit, fix the affinity: a merge patch where the
API server allows it (Kubernetes 1.35+ with ``MutablePVNodeAffinity``; ``--mode auto`` learns which
from the first 422), else the crash-safe replacement of ``affinity_plan``, each step decided again
from the property and a fresh read of the PV.

Guards (a PV that fails one is held, with a Warning Event on the PV and the claim, at most every
``--repeat`` seconds, and ``..._held_total{reason}``): ``NotBound`` (the PV's phase is not Bound),
``ClaimGone`` (no claim with the claimRef's UID), ``ClaimDeleting``, ``Resizing`` (the claim asks
for more than it has, or carries a resize condition), ``Snapshotting`` (a VolumeSnapshot of the
claim is not readyToUse yet), ``TooYoung`` (created less than ``--min-age`` ago: CSI and the
provisioner may still be at work), ``PodWouldBeExcluded`` (a pod using the claim runs on a node the
new affinity would not admit). Not judged at all: PVs of other drivers, PVs whose policy or
replicas are unknown.

Every step is an Event on the PV and the claim and a count in ``..._steps_total{step,outcome}``.
Writes carry preconditions (the PV's UID on DELETE, its resourceVersion on patches), so a PV
someone changed between our read and our write is never overwritten; a write that fails ends that
PV's turn, and the next pass decides again from what is there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge

from linstor_scheduler.claims import CONTEXT_MARKER, CONTEXT_POLICY
from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube import objects
from linstor_scheduler.kube.calls import KubeCalls
from linstor_scheduler.kube.client import describe_api_error
from linstor_scheduler.linstor.client import LinstorClient
from linstor_scheduler.linstor.errors import LinstorError
from linstor_scheduler.linstor.models import PropsView, Resource, ResourceDefinition
from linstor_scheduler.quantity import parse_quantity
from linstor_scheduler.volumes import CSI_DRIVER, StorageClassInfo

from .affinity import AffinityVerdict, admits, deployed_diskfully, judge_objects, node_affinity, segments
from .affinity_plan import (
    ABANDON,
    CLEAR,
    CREATE,
    DELETE,
    RESTORE,
    RETAIN,
    RETAIN_STEP,
    SAVE,
    SAVED_PROP,
    UNPROTECT,
    BadIntent,
    Intent,
    intent_for,
    next_step,
)


class SavedProps(PropsView, rename={"intent": SAVED_PROP}):
    """Of a resource definition's properties, the replacement begun (affinity_plan.SAVED_PROP) only."""

    intent: str | None = None


# A ``/v1/resource-definitions`` item as this worker reads it: its name and the replacement its property
# says was begun (fencing's record of the same items keeps only the quorum options).
SavedIntentDefinition = ResourceDefinition.only("name", props=SavedProps, called="SavedIntentDefinition")

log = logging.getLogger("linstor_scheduler.affinity_sync")

NOT_BOUND, CLAIM_GONE, CLAIM_DELETING, RESIZING, SNAPSHOTTING, TOO_YOUNG, POD_EXCLUDED = (
    "NotBound", "ClaimGone", "ClaimDeleting", "Resizing", "Snapshotting", "TooYoung", "PodWouldBeExcluded")
MAX_PER_PASS, RATE_LIMITED = "MaxPerPass", "RateLimited"
GUARDS = (NOT_BOUND, CLAIM_GONE, CLAIM_DELETING, RESIZING, SNAPSHOTTING, TOO_YOUNG, POD_EXCLUDED)
RESIZE_CONDITIONS = frozenset({"Resizing", "FileSystemResizePending", "ControllerResizeError", "NodeResizeError",
                               "ControllerResizeInProgress", "NodeResizeInProgress", "NodeResizePending"})
PATCHED, REPLACED, ABANDONED, FAILED, WOULD = "patched", "replaced", "abandoned", "failed", "would-fix"
PAGE = 500  # items per list page


class AffinityMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.fixes = Counter("linstor_scheduler_affinity_sync_fixes", "PVs whose node affinity was fixed or "
                             "given up on, by outcome (patched, replaced, abandoned, failed)", ["outcome"], registry=r)
        self.steps = Counter("linstor_scheduler_affinity_sync_steps", "Steps of PV replacements and patches, by "
                             "step and outcome (ok, error)", ["step", "outcome"], registry=r)
        self.held = Counter("linstor_scheduler_affinity_sync_held", "Stale PVs held back by a guard or a limit, "
                            "per pass, by reason", ["reason"], registry=r)
        self.passes = Counter("linstor_scheduler_affinity_sync_passes", "Passes, by outcome (ok, failed, error)",
                              ["outcome"], registry=r)
        self.stale = Gauge("linstor_scheduler_affinity_sync_stale", "Stale PVs the last pass found", registry=r)
        self.leader = Gauge("linstor_scheduler_affinity_sync_leader", "1 while this instance holds the Lease",
                            registry=r)
        for outcome in (PATCHED, REPLACED, ABANDONED, FAILED):
            self.fixes.labels(outcome)
        for reason in (*GUARDS, MAX_PER_PASS, RATE_LIMITED):
            self.held.labels(reason)


@dataclass
class PassResult:
    verdicts: list[AffinityVerdict] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # {"pv", "claim", "outcome", "detail"}
    error: str | None = None
    acted: bool = False
    seconds: float = 0.0  # the pass's own duration (reads, judging, writes)

    @property
    def ok(self) -> bool:
        return self.error is None and not any(a["outcome"] == FAILED for a in self.actions)

    def doc(self) -> dict[str, Any]:
        return {"acted": self.acted, "error": self.error, "seconds": round(self.seconds, 3), "actions": self.actions,
                "stale": [v.as_dict() for v in self.verdicts if v.stale]}


class Crash(BaseException):
    """Raised by a test's ``on_step`` hook: the worker dies right after a step (not an Exception, so
    nothing in the worker catches it)."""


@dataclass
class View:
    """One pass's reads."""

    pvs: dict[str, dict[str, Any]]
    claims: dict[tuple[str, str], dict[str, Any]]
    classes: dict[str, StorageClassInfo]
    node_segments: dict[str, dict[str, str]]
    diskful: dict[str, set[str]]
    saved: dict[str, str]  # resource definition -> the property's text


def _age(obj: Mapping[str, Any], now: float) -> float | None:
    raw = objects.creation_timestamp(obj)
    try:
        return now - dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def resizing(claim: Mapping[str, Any]) -> bool:
    """A resize asked for and not finished (the claim's request above its capacity, or a resize condition)."""
    status = objects.status(claim)
    if any((c or {}).get("type") in RESIZE_CONDITIONS for c in status.get("conditions") or ()):
        return True
    asked = parse_quantity((objects.spec(claim).get("resources") or {}).get("requests", {}).get("storage"))
    has = parse_quantity((status.get("capacity") or {}).get("storage"))
    return asked is not None and has is not None and asked > has


# What a pass keeps of a ``/v1/view/resources`` item: where, and whether diskful (its flags).
Placed = Resource.only("name", "node_name", "flags", called="Placed")


def slim_pv(pv: dict[str, Any]) -> dict[str, Any] | None:
    """What a pass keeps of a PV of LINSTOR CSI (judging and the guards); None for other PVs."""
    spec = objects.spec(pv)
    csi = spec.get("csi") or {}
    if csi.get("driver") != CSI_DRIVER:
        return None
    meta = objects.meta(pv)
    attrs = {k: v for k, v in (csi.get("volumeAttributes") or {}).items() if k in (CONTEXT_MARKER, CONTEXT_POLICY)}
    return {"metadata": {k: meta[k] for k in ("name", "uid", "resourceVersion", "creationTimestamp",
                                              "deletionTimestamp") if k in meta},
            "spec": {"csi": {"driver": csi.get("driver"), "volumeHandle": csi.get("volumeHandle"),
                             "volumeAttributes": attrs},
                     **{k: spec[k] for k in ("storageClassName", "nodeAffinity", "claimRef") if k in spec}},
            "status": {"phase": objects.status(pv).get("phase")}}


def slim_claim(claim: dict[str, Any]) -> dict[str, Any]:
    meta, spec, status = objects.meta(claim), objects.spec(claim), objects.status(claim)
    return {"metadata": {"namespace": objects.namespace(claim, objects.DEFAULT_NAMESPACE),
                         **{k: meta[k] for k in ("name", "uid", "deletionTimestamp") if k in meta}},
            "spec": {"resources": spec.get("resources") or {}, "volumeName": spec.get("volumeName")},
            "status": {k: status[k] for k in ("phase", "capacity", "conditions") if k in status}}


def claim_volumes(pod: Mapping[str, Any]) -> set[str]:
    return {v["persistentVolumeClaim"]["claimName"] for v in objects.spec(pod).get("volumes") or ()
            if isinstance(v, dict) and (v.get("persistentVolumeClaim") or {}).get("claimName")}


class AffinitySync:
    def __init__(self, linstor: LinstorClient, api_client: k8s.ApiClient, *, dry_run: bool = True,
                 max_per_pass: int = 10, rate_per_minute: float = 10.0, min_age: float = 600.0, mode: str = "auto",
                 events: Any = None, metrics: AffinityMetrics | None = None, calls: KubeCalls | None = None,
                 repeat_seconds: float = 600.0, clock: Callable[[], float] = boottime,
                 wall: Callable[[], float] = time.time, on_step: Callable[[str, str], None] | None = None) -> None:
        self.linstor = linstor
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.storage = k8s.StorageV1Api(api_client)
        self.calls = calls or KubeCalls()
        self.dry_run, self.max_per_pass, self.rate, self.min_age = dry_run, max_per_pass, rate_per_minute, min_age
        self.mode = mode
        self.immutable = mode == "replace"  # learnt in auto mode from the API server's 422
        self.events = events
        self.metrics = metrics or AffinityMetrics()
        self.repeat_seconds = repeat_seconds
        self.clock, self.wall = clock, wall
        self.on_step = on_step  # tests: called after each step done
        self._started: deque[float] = deque()  # clock() of fixes begun (the rate limit)
        self._said: dict[tuple[str, str], float] = {}
        self.last_result: PassResult | None = None
        self.read_at: float | None = None
        self.retry_after = 0.0

    # --- the loop's interface (storage_sync.class_sync.run_as_leader) ------------------------------
    @property
    def last_error(self) -> str | None:
        last = self.last_result
        if last is None or last.ok:
            return None
        return last.error or "; ".join(f"{a['pv']}: {a['detail']}" for a in last.actions if a["outcome"] == FAILED)

    def withdraw(self) -> None:
        self.read_at = None

    async def run_pass(self, *, act: bool = True) -> PassResult:
        began = self.clock()
        try:
            result = await self._pass(act and not self.dry_run)
        except Exception as exc:  # a bad object must not end the loop
            log.exception("affinity-sync pass failed")
            result = PassResult(error=f"{type(exc).__name__}: {exc}")
        result.seconds = self.clock() - began
        self.metrics.passes.labels("error" if result.error else ("ok" if result.ok else "failed")).inc()
        return result

    # --- reads ---------------------------------------------------------------------------------------
    def _snapshots(self) -> list[dict[str, Any]]:
        try:
            return self._pages(self.custom.list_cluster_custom_object, lambda snap: snap,
                               group="snapshot.storage.k8s.io", version="v1", plural="volumesnapshots")
        except ApiException as exc:
            if exc.status == 404:  # no snapshot CRDs: no snapshot can be in progress
                return []
            raise

    def _get_pv(self, name: str) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.core.read_persistent_volume(name, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _pages(self, fn: Callable[..., Any], keep: Callable[[dict[str, Any]], Any], **kw: Any) -> list[Any]:
        """A list in pages of ``PAGE`` (as informers list), each item turned into what we keep at once:
        10,000 PVs as the API server sends them are ~100 MB of dicts, what a pass needs of them ~5 MB."""
        out: list[Any] = []
        token = None
        while True:
            extra = {"_continue": token} if token else {}
            doc = orjson.loads(fn(_preload_content=False, limit=PAGE, **kw, **extra).data)
            out += [kept for item in doc.get("items") or () if (kept := keep(item)) is not None]
            token = objects.continue_token(doc)
            if not token:
                return out

    async def _read(self) -> View:
        """LINSTOR (nodes, resources as compact records, definitions) and the PVs, StorageClasses and
        Nodes; claims come later, and only for the PVs that may be acted on."""
        nodes = await self.linstor.get_nodes()
        diskful: dict[str, set[str]] = {}
        async for batch in self.linstor.iter_resource_batches(Placed):
            for r in batch:
                nodes_of = diskful.setdefault(r.name, set())
                if deployed_diskfully(r.flags):
                    nodes_of.add(r.node_name)
        definitions = await self.linstor.get_resource_definitions_compact(SavedIntentDefinition)
        read = self.calls.read
        pvs = await read(self._pages, self.core.list_persistent_volume, slim_pv)
        classes = await read(self._pages, self.storage.list_storage_class, StorageClassInfo.from_object)
        labels = dict(await read(self._pages, self.core.list_node,
                                 lambda n: (objects.name(n), objects.labels(n))))
        return View(
            pvs={objects.name(p): p for p in pvs},
            claims={},
            classes={c.name: c for c in classes},
            node_segments={n.name: segments(n.name, n.props, labels.get(n.name)) for n in nodes},
            diskful=diskful,
            saved={d.name: d.props.intent for d in definitions if d.props.intent is not None})

    async def _read_claims(self, view: View, wanted: set[tuple[str, str]]) -> None:
        def keep(c: dict[str, Any]) -> dict[str, Any] | None:
            key = (objects.namespace(c, objects.DEFAULT_NAMESPACE), objects.name(c))
            return slim_claim(c) if key in wanted else None

        claims = await self.calls.read(self._pages, self.core.list_persistent_volume_claim_for_all_namespaces, keep)
        view.claims = {(objects.namespace(c), objects.name(c)): c for c in claims}

    # --- a pass --------------------------------------------------------------------------------------
    async def _pass(self, act: bool) -> PassResult:
        started = self.clock()
        try:
            view = await self._read()
        except LinstorError as exc:
            log.warning("LINSTOR read failed, nothing done this pass: %s", exc)
            return PassResult(error=f"LINSTOR: {exc}")
        except Exception as exc:
            log.warning("Kubernetes read failed, nothing done this pass: %s", describe_api_error(exc))
            return PassResult(error=f"Kubernetes: {describe_api_error(exc)}")
        self.read_at = started
        verdicts = judge_objects(view.pvs.values(), storage_classes=view.classes, resources=view.diskful,
                                 node_segments=view.node_segments)
        result = PassResult(verdicts=verdicts, acted=act)
        stale = [v for v in verdicts if v.stale and v.resource not in view.saved]
        self.metrics.stale.set(len([v for v in verdicts if v.stale]))
        wanted = {tuple(v.claim.split("/", 1)) for v in stale if v.claim}
        for text in view.saved.values():
            with contextlib.suppress(BadIntent):
                ref = Intent.decode(text).pv["spec"].get("claimRef") or {}
                wanted.add((ref.get("namespace") or "default", ref.get("name") or ""))
        if wanted:
            try:
                await self._read_claims(view, wanted)
            except Exception as exc:
                log.warning("listing claims failed, nothing done this pass: %s", describe_api_error(exc))
                return PassResult(verdicts=verdicts, error=f"Kubernetes: {describe_api_error(exc)}")
        for rd, text in sorted(view.saved.items()):  # begun before: finish first, whatever the guards say
            if act:
                result.actions.append(await self._resume(rd, text, view))
            else:
                result.actions.append({"pv": rd, "claim": None, "outcome": "would-resume",
                                       "detail": "a replacement was begun: it would be finished"})
        if not stale:
            return result
        try:
            pods, snapshots = await self._read_users({tuple(v.claim.split("/", 1)) for v in stale if v.claim})
        except Exception as exc:
            log.warning("listing pods or VolumeSnapshots failed, nothing done this pass: %s", describe_api_error(exc))
            return PassResult(verdicts=verdicts, error=f"Kubernetes: {describe_api_error(exc)}")
        budget = self.max_per_pass
        held: dict[str, int] = {}
        for verdict in stale:
            pv = view.pvs[verdict.pv]
            reason = self._guard(verdict, pv, view, pods, snapshots)
            if reason is None and budget <= 0:
                reason = (MAX_PER_PASS, f"--max-per-pass {self.max_per_pass} reached")
            if reason is None and act and not self._rate_allows():
                reason = (RATE_LIMITED, f"--rate {self.rate:g} per minute reached")
            if reason is not None:
                held[reason[0]] = held.get(reason[0], 0) + 1
                result.actions.append({"pv": verdict.pv, "claim": verdict.claim, "outcome": "held:" + reason[0],
                                       "detail": reason[1]})
                if reason[0] in GUARDS:
                    self._say(pv, view, "Warning", "AffinityFixHeld", f"node affinity stale ({verdict.reason}); "
                              f"not fixed: {reason[1]}", key=reason[0])
                continue
            budget -= 1
            if not act:
                result.actions.append({"pv": verdict.pv, "claim": verdict.claim, "outcome": WOULD,
                                       "detail": f"{verdict.reason}; would write {node_affinity(verdict.want)}"})
                continue
            self._started.append(self.clock())
            result.actions.append(await self._fix(verdict, pv, view))
        for reason, n in held.items():
            self.metrics.held.labels(reason).inc(n)
        return result

    async def _read_users(self, claims: set[tuple[str, str]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The pods (namespace, name, node, claims) and VolumeSnapshots that use these claims."""
        def keep(pod: dict[str, Any]) -> dict[str, Any] | None:
            ns = objects.namespace(pod, objects.DEFAULT_NAMESPACE)
            used = {c for c in claim_volumes(pod) if (ns, c) in claims}
            node = objects.spec(pod).get("nodeName")
            return {"namespace": ns, "name": objects.name(pod), "node": node, "claims": used} \
                if used and node else None

        pods = await self.calls.read(self._pages, self.core.list_pod_for_all_namespaces, keep,
                                     field_selector="status.phase!=Succeeded,status.phase!=Failed")
        return pods, await self.calls.read(self._snapshots)

    def _rate_allows(self) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        while self._started and now - self._started[0] > 60.0:
            self._started.popleft()
        return len(self._started) < self.rate

    def _guard(self, verdict: AffinityVerdict, pv: dict[str, Any], view: View, pods: list[dict[str, Any]],
               snapshots: list[dict[str, Any]]) -> tuple[str, str] | None:
        phase = objects.status(pv).get("phase")
        if phase != "Bound" or objects.deletion_timestamp(pv):
            return NOT_BOUND, f"the PV is {phase or 'without a phase'}" + (
                ", being deleted" if objects.deletion_timestamp(pv) else "")
        ref = objects.spec(pv).get("claimRef") or {}
        key = (ref.get("namespace") or objects.DEFAULT_NAMESPACE, ref.get("name") or "")
        claim = view.claims.get(key)
        named = objects.key_of(*key)
        if claim is None or objects.uid(claim) != ref.get("uid"):
            return CLAIM_GONE, f"claim {named} with UID {ref.get('uid')} not found"
        if objects.deletion_timestamp(claim):
            return CLAIM_DELETING, f"claim {named} is being deleted"
        if resizing(claim):
            return RESIZING, f"claim {named} is being resized"
        for snap in snapshots:
            src = objects.spec(snap).get("source") or {}
            if (objects.namespace(snap) == key[0]
                    and src.get("persistentVolumeClaimName") == key[1]
                    and objects.status(snap).get("readyToUse") is not True):
                return SNAPSHOTTING, (f"VolumeSnapshot {objects.key_of(key[0], objects.name(snap))} of the claim "
                                      "is not ready")
        age = _age(pv, self.wall())
        if age is not None and age < self.min_age:
            return TOO_YOUNG, f"created {age:.0f}s ago (--min-age {self.min_age:g}s)"
        new = node_affinity(verdict.want)
        from linstor_scheduler.claims import selector

        compact = selector((new or {}).get("required")) if new else None
        for pod in pods:
            node = pod["node"]
            if (pod["namespace"] == key[0] and key[1] in pod["claims"]
                    and not admits(compact, view.node_segments.get(node) or {}, node)):
                return POD_EXCLUDED, (f"pod {objects.key_of(key[0], pod['name'])} uses the claim on {node}, "
                                      "which the new affinity would not admit")
        return None

    # --- acting --------------------------------------------------------------------------------------
    def _done(self, step: str, pv: str) -> None:
        self.metrics.steps.labels(step, "ok").inc()
        if self.on_step is not None:
            self.on_step(step, pv)

    async def _fix(self, verdict: AffinityVerdict, slim: dict[str, Any], view: View) -> dict[str, Any]:
        row = {"pv": verdict.pv, "claim": verdict.claim}
        affinity = node_affinity(verdict.want)
        try:  # the whole PV: the replacement carries all of it over
            pv = await self.calls.read(self._get_pv, verdict.pv)
        except Exception as exc:
            return self._failed(row, "read", slim, view, exc)
        if pv is None or objects.resource_version(pv) != objects.resource_version(slim):
            return {**row, "outcome": "changed", "detail": "the PV changed since the pass read it: judged again "
                    "next pass"}
        if not self.immutable:
            try:
                patched = await self._patch_affinity(pv, affinity)
            except ApiException as exc:
                if exc.status == 422 and self.mode == "auto":
                    log.info("PV node affinity is immutable on this API server (%s): replacing PVs instead",
                             describe_api_error(exc))
                    self.immutable = True
                else:
                    return self._failed(row, "patch", pv, view, exc)
            except Exception as exc:
                return self._failed(row, "patch", pv, view, exc)
            else:
                self._done("patch", verdict.pv)
                self.metrics.fixes.labels(PATCHED).inc()
                self._say(patched, view, "Normal", "VolumeAffinityUpdated",
                          f"node affinity patched: {verdict.reason}")
                return {**row, "outcome": PATCHED, "detail": verdict.reason}
        intent = intent_for(pv, affinity)
        try:
            await self._save(verdict.resource, intent)
        except Exception as exc:
            return self._failed(row, SAVE, pv, view, exc)
        self._say(pv, view, "Normal", "ReplacingVolume", f"node affinity stale ({verdict.reason}): replacing the PV "
                  f"(saved to LINSTOR resource definition {verdict.resource}, property {SAVED_PROP})")
        self._done(SAVE, verdict.pv)
        return await self._advance(verdict.resource, intent, view, row)

    async def _resume(self, rd: str, text: str, view: View) -> dict[str, Any]:
        try:
            intent = Intent.decode(text)
        except BadIntent as exc:
            log.warning("resource definition %s: property %s: %s; left alone", rd, SAVED_PROP, exc)
            return {"pv": rd, "claim": None, "outcome": FAILED, "detail": f"property {SAVED_PROP}: {exc}"}
        ref = intent.pv["spec"].get("claimRef") or {}
        row = {"pv": intent.name, "claim": objects.key_of(ref.get("namespace"), ref.get("name")) if ref else None}
        log.info("finishing the replacement of PV %s begun earlier", intent.name)
        return await self._advance(rd, intent, view, row)

    async def _advance(self, rd: str, intent: Intent, view: View, row: dict[str, Any]) -> dict[str, Any]:
        current: dict[str, Any] | None = None
        for _ in range(8):  # six steps at most; a loop means someone works against us: the next pass decides
            step = None
            try:
                current = await self.calls.read(self._get_pv, intent.name)
                step = next_step(intent, current)
                await self._do(step.name, rd, intent, current)
            except Exception as exc:
                return self._failed(row, step.name if step else "read", current or intent.pv, view, exc)
            self._done(step.name, intent.name)
            if step.name == CLEAR:
                created = current or intent.pv
                self.metrics.fixes.labels(REPLACED).inc()
                self._say(created, view, "Normal", "VolumeAffinityUpdated",
                          "replaced with the node affinity LINSTOR CSI would write now")
                return {**row, "outcome": REPLACED, "detail": "replaced"}
            if step.name == ABANDON:
                self.metrics.fixes.labels(ABANDONED).inc()
                self._say(current or intent.pv, view, "Warning", "AffinityFixAbandoned", step.detail)
                return {**row, "outcome": ABANDONED, "detail": step.detail}
        return {**row, "outcome": FAILED, "detail": "no progress after 8 steps"}

    async def _do(self, step: str, rd: str, intent: Intent, current: dict[str, Any] | None) -> None:
        write = self.calls.write
        if step in (RETAIN_STEP, RESTORE):
            assert current is not None
            policy = RETAIN if step == RETAIN_STEP else intent.reclaim
            body = {"metadata": {"resourceVersion": objects.resource_version(current)},
                    "spec": {"persistentVolumeReclaimPolicy": policy}}
            await write(self.core.patch_persistent_volume, intent.name, body)
        elif step == DELETE:
            options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=intent.old_uid))
            try:
                await write(self.core.delete_persistent_volume, intent.name, body=options)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        elif step == UNPROTECT:
            assert current is not None
            body = {"metadata": {"resourceVersion": objects.resource_version(current), "finalizers": None}}
            try:
                await write(self.core.patch_persistent_volume, intent.name, body)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        elif step == CREATE:
            try:
                await write(self.core.create_persistent_volume, intent.pv)
            except ApiException as exc:
                if exc.status != 409:  # someone (or our lost answer) made it: the next step reads it
                    raise
        elif step in (CLEAR, ABANDON):
            await self.linstor.modify_resource_definition(rd, delete_props=[SAVED_PROP])

    async def _save(self, rd: str, intent: Intent) -> None:
        await self.linstor.modify_resource_definition(rd, override_props={SAVED_PROP: intent.encode()})

    async def _patch_affinity(self, pv: dict[str, Any], affinity: dict[str, Any] | None) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": objects.resource_version(pv)}, "spec": {"nodeAffinity": affinity}}
        await self.calls.write(self.core.patch_persistent_volume, objects.name(pv), body)
        return pv

    def _failed(self, row: dict[str, Any], step: str, pv: dict[str, Any], view: View,
                exc: BaseException) -> dict[str, Any]:
        why = describe_api_error(exc) if isinstance(exc, ApiException) else f"{type(exc).__name__}: {exc}"
        log.warning("PV %s: step %s failed: %s; the next pass decides again", row["pv"], step, why)
        self.metrics.steps.labels(step, "error").inc()
        self.metrics.fixes.labels(FAILED).inc()
        self._say(pv, view, "Warning", "AffinityFixFailed", f"step {step} failed: {why}; tried again next pass")
        return {**row, "outcome": FAILED, "detail": f"{step}: {why}"}

    # --- Events --------------------------------------------------------------------------------------
    def _say(self, pv: dict[str, Any], view: View, kind: str, reason: str, message: str, key: str = "") -> None:
        """An Event on the PV and on its claim; a hold is said again only after ``repeat_seconds``."""
        if self.events is None or self.dry_run:
            return
        name = objects.name(pv, "")
        if key:
            now = self.clock()
            last = self._said.get((name, key))
            if last is not None and now - last < self.repeat_seconds:
                return
            self._said[(name, key)] = now
        self.events.record({"apiVersion": "v1", "kind": "PersistentVolume", **pv}, kind, reason, message[:1000])
        ref = objects.spec(pv).get("claimRef") or {}
        claim = view.claims.get((ref.get("namespace") or objects.DEFAULT_NAMESPACE, ref.get("name") or ""))
        if claim is not None:
            self.events.record({"apiVersion": "v1", "kind": "PersistentVolumeClaim", **claim}, kind, reason,
                               f"PV {name}: {message}"[:1000])


def render(result: PassResult, *, dry_run: bool) -> str:
    stale = sum(1 for v in result.verdicts if v.stale)
    head = f"{stale} stale of {len(result.verdicts)} LINSTOR PVs" + (" (dry run: nothing changed)" if dry_run else "")
    if result.error:
        return f"affinity-sync: {result.error}"
    lines = [head]
    for a in result.actions:
        lines.append(f"  {a['pv']:<24} {a['claim'] or '-':<28} {a['outcome']:<22} {a['detail']}")
    return "\n".join(lines)

