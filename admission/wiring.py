"""The running webhook, built from its options: informer caches -> lookups -> mutator -> HTTP app.

Used by the CLI and the end-to-end tests, so both run the same assembly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from linstor_scheduler.config import ConfigError, setting
from linstor_scheduler.kube import objects
from linstor_scheduler.kube.client import DEFAULT_TIMEOUT as DEFAULT_API_TIMEOUT
from linstor_scheduler.kube.client import api_client_from_args
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.kube.informer import RECORD_PAGE_SIZE, KubeCaches, bounded_by
from linstor_scheduler.kube.lease import LeaderElector
from linstor_scheduler.kube.metrics import KubeCollector
from linstor_scheduler.runtime import serve_asgi
from linstor_scheduler.servingtls import ServingTLS

from .cli import DEFAULT_MAX_STALENESS
from .http import DEFAULT_REVIEW_DEADLINE, DEFAULT_TIMEOUT_SECONDS, WebhookApp, create_app
from .lookups import WEBHOOK_KINDS, WEBHOOK_TRANSFORMS, kube_lookups
from .metrics import WebhookMetrics
from .review import SchedulerNameMutator
from .sharedca import SharedCA
from .tls import CaBundlePublisher, generate_bundle, service_names

log = logging.getLogger("linstor_scheduler.webhook")
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def build_webhook_app(api_client: k8s.ApiClient, *, scheduler_name: str = "linstor",
                      publisher: Any | None = None, metrics: Any | None = None,
                      read_timeout: float | None = None, max_staleness: float = DEFAULT_MAX_STALENESS,
                      api_timeout: float = DEFAULT_API_TIMEOUT, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                      review_deadline: float = DEFAULT_REVIEW_DEADLINE, lookup_workers: int = 8,
                      events: EventRecorder | bool | None = True) -> WebhookApp:
    """The live webhook: informer caches -> lookups -> mutator -> app. Used by the CLI and the
    end-to-end tests, so both run the same assembly. ``publisher`` (a ``SharedCA`` or a
    ``CaBundlePublisher``) is started with the app. ``max_staleness`` bounds the view it answers
    from: the informers are kept to it (``bounded_by``), an older kind is read directly instead
    (lookups.py), and ``/readyz`` fails saying why while the view is older, the certificate is not
    verified by the caBundle yet, or the process drains (``app.state.drain()``, after SIGTERM).
    ``review_deadline`` (below ``timeout_seconds``) bounds each review; ``events``: the recorder of
    the ``LinstorClaimsUnknown`` Warning Events (True: one of its own; None/False: none)."""
    if not review_deadline < timeout_seconds:
        raise ConfigError(f"{setting('--review-deadline')} ({review_deadline:g}) must be below "
                          f"{setting('--timeout-seconds')} ({timeout_seconds:g}): the API server stops waiting then")
    metrics = metrics or WebhookMetrics()
    caches = KubeCaches(api_client, list(WEBHOOK_KINDS), max_age=max_staleness, transforms=WEBHOOK_TRANSFORMS,
                        page_size=RECORD_PAGE_SIZE,
                        **bounded_by(max_staleness, api_timeout))
    lookups = kube_lookups(caches, api_client, read_timeout=read_timeout, max_staleness=max_staleness,
                           on_direct_read=lambda reason, outcome: metrics.direct_reads.labels(reason, outcome).inc(),
                           workers=lookup_workers)
    mutator = SchedulerNameMutator(lookups, scheduler_name)
    metrics.registry.register(KubeCollector(caches))
    recorder = EventRecorder(api_client, "linstor-scheduler-webhook") if events is True else (events or None)
    draining = threading.Event()

    def readiness() -> tuple[bool, str]:
        if draining.is_set():
            return False, "draining: SIGTERM received, answering for --drain-seconds before stopping"
        ok, text = caches.readiness(max_staleness)
        if ok and publisher is not None:
            if hasattr(publisher, "readiness"):
                return publisher.readiness()
            if not publisher.published.is_set():
                return False, "our CA is not in the caBundle yet" + (f": {publisher.last_error}"
                                                                     if publisher.last_error else "")
        return ok, text

    def details() -> dict[str, Any]:
        age = caches.age()
        return {"caches_synced": caches.synced, "cache_errors": caches.errors(),
                "kubernetes_age_seconds": None if age is None else round(age, 3),
                "max_staleness_seconds": max_staleness,
                "ca_bundle_published": None if publisher is None else publisher.published.is_set(),
                "ca_bundle_error": None if publisher is None else publisher.last_error,
                "draining": draining.is_set(),
                "scheduler_name": scheduler_name, "detail": readiness()[1]}

    def alive() -> tuple[bool, str]:
        """``/healthz``: the informers' loops turn, and the CA publisher's."""
        checks = [caches.liveness()] + ([publisher.liveness()] if publisher is not None else [])
        return all(ok for ok, _ in checks), "; ".join(text for _, text in checks)

    def on_unknown(pod: dict[str, Any], namespace: str | None, reason: str) -> None:
        """The Warning Event on the pod being created (named by its name, or its generateName when the
        API server has not generated one yet; no uid: it has none before it is stored)."""
        if recorder is None:
            return
        name = objects.name(pod) or objects.generate_name(pod, "unnamed")
        obj = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": str(name), "namespace": str(namespace or objects.DEFAULT_NAMESPACE)}}
        dropped = recorder.dropped
        recorder.record(obj, "Warning", "LinstorClaimsUnknown",
                        f"sent to scheduler {scheduler_name}: its claims could not be looked up within "
                        f"{review_deadline:g}s ({reason[:800]}); the {scheduler_name} profile schedules any pod "
                        "correctly (docs/install.md, the unknown-claims rule)")
        metrics.events.labels("dropped" if recorder.dropped > dropped else "queued").inc()

    async def startup() -> None:
        app.state.loop = asyncio.get_running_loop()
        caches.start()
        if publisher is not None:
            publisher.start()

    async def shutdown() -> None:
        if publisher is not None:
            await asyncio.to_thread(publisher.stop)
        await asyncio.to_thread(caches.stop)
        lookups.close()

    app = create_app(mutator, is_ready=lambda: readiness()[0], details=details, metrics=metrics, startup=startup,
                     shutdown=shutdown, alive=alive, timeout_seconds=timeout_seconds,
                     review_deadline=review_deadline, on_unknown=on_unknown)
    app.state.caches = caches
    app.state.mutator = mutator
    app.state.metrics = metrics
    app.state.events = recorder
    app.state.drain = draining.set
    return app


def own_namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    path = Path(SA_NAMESPACE_FILE)
    if path.exists():
        return path.read_text().strip()
    raise ConfigError(f"{setting('--namespace', 'POD_NAMESPACE')} is required outside a pod: the namespace of the "
                      "self-signed certificate's Service (or give --tls-cert-file and --tls-key-file)")


def run_webhook(args: argparse.Namespace) -> int:
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise ConfigError(f"{setting('--tls-cert-file')} and {setting('--tls-key-file')} go together: give both "
                          "or neither")
    api = api_client_from_args(args)
    publisher: Any = None
    if args.tls_cert_file:
        cert_file, key_file = args.tls_cert_file, args.tls_key_file
        log.info("serving certificate from %s (caBundle managed elsewhere)", cert_file)
    else:
        namespace = own_namespace(args.namespace)
        names = service_names(args.service_name, namespace)
        # A read-only root filesystem: the files go to $TMPDIR (an emptyDir in deploy/).
        directory = Path(tempfile.mkdtemp(prefix="webhook-tls-", dir=os.environ.get("TMPDIR")))
        if args.tls_secret:  # one CA per cluster: the Lease holder issues it, every replica serves it
            elector = LeaderElector(api, args.ca_lease_name, namespace, lease_seconds=15.0, renew_seconds=5.0,
                                    retry_seconds=2.0)
            publisher = SharedCA(api, namespace=namespace, secret=args.tls_secret, names=names,
                                 config_name=args.webhook_config_name or None, elector=elector,
                                 directory=directory, interval=args.ca_bundle_interval,
                                 call_timeout=args.api_timeout)
            cert_file, key_file = str(publisher.cert_file), str(publisher.key_file)
        else:  # a certificate for this process only (one replica)
            bundle = generate_bundle(names)
            _, cert_path, key_path = bundle.write(directory)
            cert_file, key_file = str(cert_path), str(key_path)
            if args.webhook_config_name:
                publisher = CaBundlePublisher(api, args.webhook_config_name, bundle.ca_pem,
                                              interval=args.ca_bundle_interval, call_timeout=args.api_timeout)
    app = build_webhook_app(api, scheduler_name=args.scheduler_name, publisher=publisher,
                            read_timeout=args.pvc_read_timeout, max_staleness=args.max_staleness,
                            api_timeout=args.api_timeout, timeout_seconds=args.timeout_seconds,
                            review_deadline=args.review_deadline, lookup_workers=args.lookup_workers)
    # Re-read when the files change (servingtls.py): cert-manager's renewal reaches the mounted files,
    # the shared CA's pair is written there, and new connections get it without a restart.
    return serve_asgi(app.mutate, host=args.listen_address, port=args.port, log_level=args.log_level,
                      tls=ServingTLS(cert_file, key_file),
                      ops=app.ops, ops_host=args.metrics_address, ops_port=args.metrics_port,
                      drain_seconds=args.drain_seconds, on_drain=app.state.drain)
