"""Kubernetes Events on the objects we act on, so ``kubectl describe`` tells the operator why.

Repeats of the same (object, reason, message) within ten minutes bump ``count`` on the existing
Event instead of creating new ones, as kubelet's recorder does. Recording never raises: a failed
Event must not fail the action it describes (it is logged instead).
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
import uuid
from collections import OrderedDict
from typing import Any

from kubernetes import client as k8s

log = logging.getLogger(__name__)
AGGREGATE_SECONDS = 600


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, api_client: k8s.ApiClient, component: str = "linstor-scheduler", *,
                 max_remembered: int = 1024) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.component = component
        self.instance = socket.gethostname()
        self._seen: OrderedDict[tuple[str, str, str], tuple[str, str, int, float]] = OrderedDict()
        self._max = max_remembered

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"  # cluster-scoped objects: "default", like kubectl
        level = logging.WARNING if event_type == "Warning" else logging.INFO
        log.log(level, "event %s %s/%s: %s: %s", event_type, obj.get("kind"), meta.get("name"), reason, message)
        key = (str(meta.get("uid") or f"{obj.get('kind')}/{namespace}/{meta.get('name')}"), reason, message)
        try:
            seen = self._seen.get(key)
            if seen and time.monotonic() - seen[3] < AGGREGATE_SECONDS:
                name, ns, count, _ = seen
                self.core.patch_namespaced_event(name, ns, {"count": count + 1, "lastTimestamp": _now()})
                self._remember(key, (name, ns, count + 1, seen[3]))
                return
            name = f"{meta.get('name') or 'object'}.{uuid.uuid4().hex[:12]}"
            body = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {k: v for k, v in {
                    "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
                    "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion")}.items() if v},
                "reason": reason, "message": message, "type": event_type, "count": 1,
                "firstTimestamp": _now(), "lastTimestamp": _now(),
                "source": {"component": self.component, "host": self.instance},
                "reportingComponent": self.component, "reportingInstance": self.instance,
            }
            self.core.create_namespaced_event(namespace, body)
            self._remember(key, (name, namespace, 1, time.monotonic()))
        except Exception as exc:  # an Event must never fail the action it reports
            log.warning("could not record event %s on %s/%s: %s", reason, obj.get("kind"), meta.get("name"), exc)

    def _remember(self, key: tuple[str, str, str], value: tuple[str, str, int, float]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
