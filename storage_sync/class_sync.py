"""``sync-classes``: LINSTOR's storage pools -> StorageClasses, by the Lease holder only. The I/O side.

One pass: read ``/v1/view/storage-pools`` (one LINSTOR call) and list StorageClasses (one API
call), plan with ``classes.plan_classes``, then write. Reads failing -> no write. A recreate
deletes with UID + resourceVersion preconditions (never a class someone changed meanwhile) and
creates at once; if the create fails, the merged body is kept in memory and retried first on the
next pass, so the user's labels and annotations survive (only a crash in between loses them; the
Event written before the delete records them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube.client import describe_api_error
from linstor_scheduler.linstor.client import LinstorClient
from linstor_scheduler.linstor.errors import LinstorError
from linstor_scheduler.measured import age_since

from .classes import CONFLICT, CREATE, IN_SYNC, POOL_GONE, RECREATE, ClassAction, ClassConfig, plan_classes, pool_nodes
from .metrics import ClassMetrics

log = logging.getLogger("linstor_scheduler.sync_classes")


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
        """No conflict or pool-gone report, and every write done (not acting: nothing to write)."""
        if not self.ok or any(a.action in (CONFLICT, POOL_GONE) for a in self.actions):
            return False
        pending = [a for a in self.actions if a.action in (CREATE, RECREATE)]
        return len(self.applied) == len(pending) if self.acted else not pending


class ClassReconciler:
    def __init__(self, linstor: LinstorClient, api_client: k8s.ApiClient, *, config: ClassConfig | None = None,
                 dry_run: bool = False, events: Any = None, metrics: ClassMetrics | None = None,
                 repeat_seconds: float = 600.0, clock: Callable[[], float] = boottime) -> None:
        self.linstor = linstor
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
        self.metrics.bind_age(lambda: age_since(self.clock, self.read_at))

    def withdraw(self) -> None:
        """Not leading: no figures, no age (the Lease holder's are the cluster's)."""
        self.read_at = None
        self.metrics.withdraw()

    def _list_classes(self) -> list[dict[str, Any]]:
        resp = self.storage.list_storage_class(_preload_content=False)
        return list(orjson.loads(resp.data).get("items") or [])

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
            existing = await asyncio.to_thread(self._list_classes)
        except Exception as exc:  # ApiException, connection errors
            log.warning("listing StorageClasses failed, nothing done this pass: %s", describe_api_error(exc))
            return ClassPassResult(error=f"Kubernetes: {describe_api_error(exc)}")
        self.read_at = started
        self.metrics.pools.publish({(pool,): len(nodes) for pool, nodes in pool_nodes(pools).items()})
        actions = plan_classes(pools, existing, self.config)
        for name in list(self._pending):
            for i, action in enumerate(actions):
                if action.name == name and action.action == CREATE:
                    actions[i] = ClassAction(CREATE, name, action.pool, action.message + " (finishing a recreate)",
                                             self._pending[name])
        counts: dict[str, int] = {}
        for a in actions:
            counts[a.action] = counts.get(a.action, 0) + 1
        self.metrics.classes.publish({(state,): counts.get(state, 0)
                                      for state in (IN_SYNC, CREATE, RECREATE, CONFLICT, POOL_GONE)})
        result = ClassPassResult(actions=actions, acted=act)
        self._report(actions)
        if not act:
            return result
        for action in actions:
            if action.action not in (CREATE, RECREATE):
                continue
            try:
                created = await asyncio.to_thread(self._apply, action)
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

    def _apply(self, action: ClassAction) -> dict[str, Any]:
        assert action.body is not None
        if action.action == RECREATE:
            meta = (action.current or {}).get("metadata") or {}
            kept = {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}}
            self._event(action.current or {}, "Normal", "Recreating",
                        f"{action.message}; keeping labels and annotations {orjson.dumps(kept).decode()}")
            self._pending[action.name] = action.body
            try:
                self.storage.delete_storage_class(action.name, body=k8s.V1DeleteOptions(
                    preconditions=k8s.V1Preconditions(uid=meta.get("uid"),
                                                      resource_version=meta.get("resourceVersion"))))
            except ApiException as exc:
                if exc.status != 404:
                    self._pending.pop(action.name, None)
                    raise
        created = self.storage.create_storage_class(action.body)
        self._pending.pop(action.name, None)
        return self.api_client.sanitize_for_serialization(created)

    def _report(self, actions: list[ClassAction]) -> None:
        now = self.clock()
        current = set()
        for action in actions:
            if action.action not in (CONFLICT, POOL_GONE):
                continue
            key = (action.action, action.name)
            current.add(key)
            last = self._reported.get(key)
            if last is not None and now - last < self.repeat_seconds:
                continue
            self._reported[key] = now
            log.warning("%s", action.message)
            self._event(action.current or {}, "Warning", "NotManaged" if action.action == CONFLICT else "PoolGone",
                        action.message)
        for key in [k for k in self._reported if k not in current]:
            del self._reported[key]

    def _event(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        if self.events is None or self.dry_run or not obj:
            return
        self.events.record({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", **obj}, event_type, reason,
                           message[:1000])


async def run_as_leader(reconciler: ClassReconciler, elector: Any, stop: asyncio.Event, *, interval: float,
                        standby_poll: float = 1.0) -> None:
    """Passes every ``interval`` while ``elector`` says we lead; a standby only watches the Lease.

    The elector renews in its own thread; ``is_leader`` turns false by itself when renewals stop,
    so a leader cut off from the API server stops writing before another one can start.
    """
    while not stop.is_set():
        leading = elector.is_leader
        reconciler.metrics.leader.set(1 if leading else 0)
        if leading:
            reconciler.last_result = await reconciler.run_pass()
        else:
            reconciler.withdraw()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval if leading else standby_poll)
