"""Kubernetes Events on the objects we act on, so ``kubectl describe`` tells the operator why.

Repeats of the same (object, reason, message) within ten minutes bump ``count`` on the existing
Event instead of creating new ones, as kubelet's recorder does. Recording never raises: a failed
Event must not fail the action it describes (it is logged instead).

Events are best effort, as client-go's broadcaster makes them (k8s.io/client-go/tools/record,
``eventBroadcasterImpl``: a bounded channel, events dropped when it is full, "Event ... dropped"):
``record`` logs the line, puts the Event on a bounded queue and returns at once; one thread of the
recorder's own sends them, each call with the client's deadline. A hung API server therefore costs
the recorder's thread and its queue, never the caller's pass or another kind of call; what does
not fit is dropped and counted (``dropped``). ``flush`` waits for the queue (tests, shutdown).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import socket
import threading
import uuid
from collections import OrderedDict
from typing import Any

from kubernetes import client as k8s

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.kube import objects

log = logging.getLogger(__name__)
AGGREGATE_SECONDS = 600


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, api_client: k8s.ApiClient, component: str = "linstor-scheduler", *,
                 max_remembered: int = 1024, queue_size: int = 256) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.component = component
        self.instance = socket.gethostname()
        self._seen: OrderedDict[tuple[str, str, str], tuple[str, str, int, float]] = OrderedDict()
        self._max = max_remembered
        self._queue: queue.Queue[tuple[dict[str, Any], str, str, str]] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.dropped = 0  # Events that did not fit in the queue
        self.failed = 0  # Events the API server did not take (error or no answer)
        self.sent = 0

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """Log it, and queue the Event for the API server (dropped, counted, when the queue is full)."""
        level = logging.WARNING if event_type == "Warning" else logging.INFO
        log.log(level, "event %s %s/%s: %s: %s", event_type, obj.get("kind"), objects.name(obj), reason, message)
        self._ensure_thread()
        try:
            self._queue.put_nowait((obj, event_type, reason, message))
        except queue.Full:
            self.dropped += 1
            log.warning("event %s on %s/%s dropped: %d Events already wait for the API server", reason,
                        obj.get("kind"), objects.name(obj), self._queue.qsize())

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued Event was sent or failed; False if that took longer than ``timeout``."""
        deadline = boottime() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - boottime()
                if left <= 0 or not self._queue.all_tasks_done.wait(left):
                    return False
        return True

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._send_loop, name="kube-events", daemon=True)
                self._thread.start()

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                self._send(*item)
            finally:
                self._queue.task_done()

    def _send(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        # cluster-scoped objects: their Events in "default", like kubectl
        namespace = objects.namespace(obj, objects.DEFAULT_NAMESPACE)
        key = (str(objects.uid(obj) or f"{obj.get('kind')}/{objects.key(obj)}"), reason, message)
        try:
            seen = self._seen.get(key)
            if seen and boottime() - seen[3] < AGGREGATE_SECONDS:
                name, ns, count, _ = seen
                self.core.patch_namespaced_event(name, ns, {"count": count + 1, "lastTimestamp": _now()})
                self._remember(key, (name, ns, count + 1, seen[3]))
                self.sent += 1
                return
            name = f"{objects.name(obj, 'object')}.{uuid.uuid4().hex[:12]}"
            body = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {k: v for k, v in {
                    "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": objects.name(obj),
                    "namespace": objects.namespace(obj), "uid": objects.uid(obj),
                    "resourceVersion": objects.resource_version(obj)}.items() if v},
                "reason": reason, "message": message, "type": event_type, "count": 1,
                "firstTimestamp": _now(), "lastTimestamp": _now(),
                "source": {"component": self.component, "host": self.instance},
                "reportingComponent": self.component, "reportingInstance": self.instance,
            }
            self._create(namespace, body)
            self._remember(key, (name, namespace, 1, boottime()))
            self.sent += 1
        except Exception as exc:  # an Event must never fail the action it reports
            self.failed += 1
            log.warning("could not record event %s on %s/%s: %s", reason, obj.get("kind"), objects.name(obj), exc)

    def _create(self, namespace: str, body: dict[str, Any]) -> None:
        """Create the Event; after a transport error (no answer: the create may or may not have been
        done), once more under the same name, where a 409 AlreadyExists means the first one was
        done and only its answer was lost (client-go's recorder retries too, ``recordToSink``; a new
        name each time would make a lost answer a duplicate Event)."""
        from kubernetes.client.exceptions import ApiException

        from .calls import is_transport_error

        try:
            self.core.create_namespaced_event(namespace, body)
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            log.info("event %s: no answer (%s); sending it once more", objects.name(body), exc)
            try:
                self.core.create_namespaced_event(namespace, body)
            except ApiException as again:
                if again.status != 409:
                    raise

    def _remember(self, key: tuple[str, str, str], value: tuple[str, str, int, float]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
