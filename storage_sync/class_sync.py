"""``sync-classes``: LINSTOR's storage pools -> StorageClasses, by the Lease holder only. The I/O side.

One pass: read ``/v1/view/storage-pools`` (one LINSTOR call) and list StorageClasses (one API
call), plan with ``classes.plan_classes``, then write. Reads failing -> no write. A recreate
deletes with UID + resourceVersion preconditions (never a class someone changed meanwhile) and
creates at once; if the create fails, the merged body is kept in memory and retried first on the
next pass, so the user's labels and annotations survive (only a crash in between loses them; the
Event written before the delete records them).

Kubernetes calls go through ``KubeCalls`` (each with ``--api-timeout``): reads in the read pool,
retried once after a transport error; writes in the write pool, sent once. A write whose answer
never came (a cut connection, a deadline) or that met 409 AlreadyExists is settled by reading the
class back: the class we meant is there -> done (no error, no retry, no 409 next time); the old one
is still there -> the delete was not done. A 429 (API Priority and Fairness: nothing was done) is
tried once more after its ``Retry-After`` when that fits in the deadline; otherwise the pass fails
and the next one waits at least that long. As Lease holder, an instance blind past its bound (no
good LINSTOR and StorageClass read for ``max_staleness``) steps aside (``leader_view`` through the
core's ``StepAside``, the elector's ``eligible``) so that a standby that sees can lead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube import objects
from linstor_scheduler.kube.calls import KubeCalls, is_transport_error
from linstor_scheduler.kube.client import describe_api_error, retry_after_seconds
from linstor_scheduler.leader_worker import sees
from linstor_scheduler.linstor.client import LinstorClient
from linstor_scheduler.linstor.errors import LinstorError
from linstor_scheduler.measured import age_since

from .classes import (
    ALLOW_MIXING_PROP,
    CONFLICT,
    CREATE,
    MIXED_PROVIDERS,
    NO_CLASS,
    POOL_GONE,
    RECREATE,
    STATES,
    ClassAction,
    ClassConfig,
    as_wanted,
    mixed_pools,
    plan_classes,
    pool_nodes,
)
from .metrics import ClassMetrics

log = logging.getLogger("linstor_scheduler.sync_classes")

# Reported (log, Warning Event, metric); those that keep a pass from being "in sync" (--once exit 1).
# A pool that can have no class is not: every LINSTOR has DfltStorPool, and it is not ours to rename.
REPORTED = {CONFLICT: "NotManaged", POOL_GONE: "PoolGone", NO_CLASS: "PoolNameNotAClassName",
            MIXED_PROVIDERS: "MixedProviderKinds"}
UNSETTLED = (CONFLICT, POOL_GONE, MIXED_PROVIDERS)


@dataclass
class ClassPassResult:
    actions: list[ClassAction] = field(default_factory=list)
    applied: list[ClassAction] = field(default_factory=list)
    failed: list[tuple[ClassAction, str]] = field(default_factory=list)
    error: str | None = None
    acted: bool = False  # False: dry run or not the leader

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    @property
    def in_sync(self) -> bool:
        """No conflict, pool-gone or mixed-providers report, and every write done (not acting: nothing to
        write). A pool that can have no StorageClass is reported but does not count."""
        if not self.ok or any(a.action in UNSETTLED for a in self.actions):
            return False
        pending = [a for a in self.actions if a.action in (CREATE, RECREATE)]
        return len(self.applied) == len(pending) if self.acted else not pending


class ClassReconciler:
    def __init__(self, linstor: LinstorClient, api_client: k8s.ApiClient, *, config: ClassConfig | None = None,
                 dry_run: bool = False, events: Any = None, metrics: ClassMetrics | None = None,
                 repeat_seconds: float = 600.0, clock: Callable[[], float] = boottime,
                 calls: KubeCalls | None = None, report_object: dict[str, Any] | None = None) -> None:
        self.linstor = linstor
        # where reports about pools go (they have no StorageClass): the Lease, say; None: log and metric
        self.report_object = report_object
        self.calls = calls or KubeCalls()
        self.api_client = api_client
        self.storage = k8s.StorageV1Api(api_client)
        self.config = config or ClassConfig()
        self.dry_run = dry_run
        self.events = events
        self.metrics = metrics or ClassMetrics()
        self.repeat_seconds = repeat_seconds
        self.clock = clock
        self._pending: dict[str, dict[str, Any]] = {}  # deleted for a recreate, not yet created again
        self._reported: dict[tuple[str, str], float] = {}
        self.last_result: ClassPassResult | None = None
        self.read_at: float | None = None  # clock() at the start of the last pass whose reads worked
        self.retry_after = 0.0  # seconds the API server asked us to wait (429) before the next pass
        self.metrics.bind_age(lambda: age_since(self.clock, self.read_at))

    @property
    def last_error(self) -> str | None:
        """Why the last pass failed (a read, or the writes), None when it worked or none ran."""
        last = self.last_result
        if last is None or last.ok:
            return None
        return last.error or "; ".join(f"{action.action} {action.name}: {why}" for action, why in last.failed)

    def withdraw(self) -> None:
        """Not leading: no figures, no age (the Lease holder's are the cluster's)."""
        self.read_at = None
        self.metrics.withdraw()

    def _list_classes(self, field_selector: str | None = None) -> list[dict[str, Any]]:
        extra = {"field_selector": field_selector} if field_selector else {}
        resp = self.storage.list_storage_class(_preload_content=False, **extra)
        return list(orjson.loads(resp.data).get("items") or [])

    async def _read_class(self, name: str) -> dict[str, Any] | None:
        """The class as the API server has it now (a list by name: the Role grants list, not get)."""
        found = await self._call(self.calls.read, self._list_classes, f"metadata.name={name}")
        return found[0] if found else None

    async def _call(self, send: Callable[..., Any], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``send(fn, ...)`` (a read or a write of ``self.calls``); on 429, once more after ``Retry-After``
        when that fits in the deadline (APF refused before doing anything, so a write too may be sent
        again), else the 429 stands and the next pass waits for it."""
        try:
            return await send(fn, *args, **kwargs)
        except ApiException as exc:
            wait = retry_after(exc)
            if wait is None:
                raise
            self.retry_after = max(self.retry_after, wait)
            if wait > self.calls.timeout:
                raise
            log.info("Kubernetes asks us to wait %.0fs (429); trying once more then", wait)
            await asyncio.sleep(wait)  # the server's own Retry-After, not a synchronisation
            return await send(fn, *args, **kwargs)

    async def run_pass(self, *, act: bool = True) -> ClassPassResult:
        result = await self._pass(act and not self.dry_run)
        self.metrics.passes.labels("error" if result.error else ("failed" if result.failed else "ok")).inc()
        return result

    async def _pass(self, act: bool) -> ClassPassResult:
        started = self.clock()
        try:
            pools = await self.linstor.get_storage_pools()
        except LinstorError as exc:
            log.warning("LINSTOR read failed, nothing done this pass: %s", exc)
            return ClassPassResult(error=f"LINSTOR: {exc}")
        try:
            existing = await self._call(self.calls.read, self._list_classes)
        except Exception as exc:  # ApiException, connection errors, deadlines
            log.warning("listing StorageClasses failed, nothing done this pass: %s", describe_api_error(exc))
            return ClassPassResult(error=f"Kubernetes: {describe_api_error(exc)}")
        allow_mixing = False
        if mixed_pools(pools):
            try:
                props = await self.linstor.get_controller_properties()
            except LinstorError as exc:
                log.warning("reading LINSTOR's controller properties failed, nothing done this pass: %s", exc)
                return ClassPassResult(error=f"LINSTOR: {exc}")
            allow_mixing = str(props.get(ALLOW_MIXING_PROP, "")).lower() == "true"
        self.read_at = started
        self.metrics.pools.publish({(pool,): len(nodes) for pool, nodes in pool_nodes(pools).items()})
        actions = plan_classes(pools, existing, self.config, allow_mixing=allow_mixing)
        for name in list(self._pending):
            for i, action in enumerate(actions):
                if action.name == name and action.action == CREATE:
                    actions[i] = ClassAction(CREATE, name, action.pool, action.message + " (finishing a recreate)",
                                             self._pending[name])
        counts: dict[str, int] = {}
        for a in actions:
            counts[a.action] = counts.get(a.action, 0) + 1
        self.metrics.classes.publish({(state,): counts.get(state, 0) for state in STATES})
        result = ClassPassResult(actions=actions, acted=act)
        self._report(actions)
        if not act:
            return result
        for action in actions:
            if action.action not in (CREATE, RECREATE):
                continue
            try:
                created = await self._apply(action)
            except Exception as exc:
                reason = describe_api_error(exc)
                log.warning("%s failed: %s", action.message, reason)
                self.metrics.actions.labels(action.action, "error").inc()
                result.failed.append((action, str(reason)))
                continue
            self.metrics.actions.labels(action.action, "ok").inc()
            result.applied.append(action)
            log.info("%s", action.message)
            self._event(created, "Normal", "Recreated" if action.action == RECREATE else "Created", action.message)
        return result

    async def _apply(self, action: ClassAction) -> dict[str, Any]:
        assert action.body is not None
        if action.action == RECREATE:
            kept = {"labels": objects.labels(action.current), "annotations": objects.annotations(action.current)}
            self._event(action.current or {}, "Normal", "Recreating",
                        f"{action.message}; keeping labels and annotations {orjson.dumps(kept).decode()}")
            self._pending[action.name] = action.body
            try:
                await self._delete(action.name, action.current)
            except Exception:
                self._pending.pop(action.name, None)
                raise
        created = await self._create(action)
        self._pending.pop(action.name, None)
        return created

    async def _delete(self, name: str, current: dict[str, Any] | None) -> None:
        """Delete the class we read (UID and resourceVersion preconditions); gone already is done. No
        answer: read it back, and only the same object still there means the delete was not done."""
        options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(
            uid=objects.uid(current), resource_version=objects.resource_version(current)))
        try:
            await self._call(self.calls.write, self.storage.delete_storage_class, name, body=options)
        except ApiException as exc:
            if exc.status != 404:
                raise
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            now = await self._read_class(name)
            if now is not None and objects.uid(now) == objects.uid(current):
                raise
            log.info("deleting StorageClass %s: no answer (%s), but it is gone: going on", name,
                     describe_api_error(exc))

    async def _create(self, action: ClassAction) -> dict[str, Any]:
        """Create the class; no answer, or 409 AlreadyExists: read it back, and the class we meant
        being there is success (the answer was lost, or another instance made it first)."""
        assert action.body is not None
        try:
            created = await self._call(self.calls.write, self.storage.create_storage_class, action.body)
        except Exception as exc:
            if not (is_transport_error(exc) or (isinstance(exc, ApiException) and exc.status == 409)):
                raise
            now = await self._read_class(action.name)
            if not as_wanted(action.body, now):
                raise
            assert now is not None
            log.info("creating StorageClass %s: %s, but it is there as wanted: done", action.name,
                     describe_api_error(exc))
            return now
        return self.api_client.sanitize_for_serialization(created)

    def _report(self, actions: list[ClassAction]) -> None:
        now = self.clock()
        current = set()
        for action in actions:
            if action.action not in REPORTED:
                continue
            key = (action.action, action.name)
            current.add(key)
            last = self._reported.get(key)
            if last is not None and now - last < self.repeat_seconds:
                continue
            self._reported[key] = now
            log.warning("%s", action.message)
            self.metrics.reports.labels(REPORTED[action.action]).inc()
            self._event(action.current or self.report_object or {}, "Warning", REPORTED[action.action],
                        action.message)
        for key in [k for k in self._reported if k not in current]:
            del self._reported[key]

    def _event(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        if self.events is None or self.dry_run or not obj:
            return
        self.events.record({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", **obj}, event_type, reason,
                           message[:1000])  # obj's own apiVersion and kind win (the Lease's, for pool reports)


def retry_after(exc: ApiException) -> float | None:
    """The seconds of a 429's ``Retry-After`` (1 when it names none); None for any other answer."""
    if exc.status != 429:
        return None
    seconds = retry_after_seconds(exc)
    return 1.0 if seconds is None else seconds


def leader_view(leader_since: float | None, read_at: float | None, error: str | None, now: float,
                bound: float) -> tuple[bool, str]:
    """What sync-classes sees (``leader_worker.sees``): its reads are LINSTOR's and the StorageClasses."""
    return sees(leader_since, read_at, error, now, bound, reads="LINSTOR and StorageClass")


