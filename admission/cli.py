"""The ``webhook`` subcommand: serve the scheduler-name mutating admission webhook over HTTPS."""

from __future__ import annotations

import argparse
from typing import Any

from linstor_scheduler.cli import deferred
from linstor_scheduler.config import PORT, add_option

DEFAULT_MAX_STALENESS = 60.0  # seconds: older PVC/PV/StorageClass caches are read around, /readyz fails


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "webhook", parents=[parent], help="serve the admission webhook that sets schedulerName on LINSTOR pods",
        description="A mutating admission webhook (AdmissionReview v1, POST /mutate): a pod that mounts a "
        "LINSTOR-backed claim and kept the default scheduler gets schedulerName set to the linstor profile. "
        "Pods or namespaces labelled linstor.csi.linbit.com/scheduler=disabled are left alone. Serves "
        "/healthz, /readyz and /metrics over plain HTTP on a separate port (--metrics-port).")
    add_option(p, "--listen-address", default="0.0.0.0", help="address of POST /mutate (HTTPS, TLS 1.2 or newer)")
    add_option(p, "--port", type=int, default=8443, range=PORT,
               help="HTTPS port of POST /mutate; every other path there is a 404")
    add_option(p, "--metrics-address", default="0.0.0.0", help="address of /healthz, /readyz, /metrics (plain HTTP)")
    add_option(p, "--metrics-port", type=int, default=8096, range=PORT, help="port of /healthz, /readyz, /metrics")
    add_option(p, "--scheduler-name", default="linstor", help="schedulerName given to LINSTOR pods")
    add_option(p, "--timeout-seconds", type=float, default=5.0, above=0,
               help="the MutatingWebhookConfiguration's timeoutSeconds: the API server admits the pod unchanged "
               "after it; an answer that took longer is counted late")
    add_option(p, "--review-deadline", type=float, default=3.5, above=0,
               help="seconds for one review, its direct reads included (they run in parallel); below "
               "--timeout-seconds. A pod whose claims could not be read by then is sent to the linstor profile "
               "(docs/install.md, the unknown-claims rule)")
    add_option(p, "--lookup-workers", type=int, default=8, minimum=1, maximum=256,
               help="threads of the webhook's own executor for direct reads (never the event loop's shared one)")
    add_option(p, "--pvc-read-timeout", type=float, default=5.0, above=0,
               help="seconds, a cap on each direct read; no read goes past --review-deadline either")
    add_option(p, "--drain-seconds", type=float, default=10.0, minimum=0, maximum=3600,
               help="after SIGTERM: /readyz fails at once and /mutate keeps answering for this long (the endpoint "
               "leaves the Service meanwhile), then the process stops; keep terminationGracePeriodSeconds above it "
               "plus 10 s")
    add_option(p, "--max-staleness", type=float, default=DEFAULT_MAX_STALENESS, above=0,
               help="seconds; a PVC/PV/StorageClass cache the API server has not confirmed for longer is not "
               "answered from (each look-up is read directly) and /readyz fails")
    tls = p.add_argument_group("TLS")
    add_option(tls, "--tls-cert-file", help="serving certificate (PEM), e.g. from cert-manager; with "
               "--tls-key-file, disables the self-signed certificate and caBundle publishing")
    add_option(tls, "--tls-key-file", help="key of --tls-cert-file (PEM)")
    add_option(tls, "--tls-secret", default="linstor-scheduler-webhook-tls",
               help="Secret (in --namespace) holding the self-signed CA and certificate shared by all replicas; "
               "empty: a certificate in memory for this process only (one replica)")
    add_option(tls, "--namespace", env="POD_NAMESPACE",
               help="namespace of the webhook's Service and Secret (default: the pod's own namespace)")
    add_option(tls, "--service-name", default="linstor-scheduler-webhook",
               help="Service the API server calls; its DNS names go into the certificate")
    add_option(tls, "--webhook-config-name", default="linstor-scheduler",
               help="MutatingWebhookConfiguration whose caBundle gets our CA (empty: do not publish)")
    add_option(tls, "--ca-bundle-interval", type=float, default=10.0, above=0,
               help="seconds between passes over the Secret and the caBundle: every replica serves the Secret's "
               "certificate and checks it against the caBundle; the Lease holder issues and publishes")
    add_option(tls, "--ca-lease-name", default="linstor-scheduler-webhook-ca",
               help="Lease (in --namespace) whose holder issues the self-signed CA into --tls-secret and writes "
               "the caBundle: one CA per cluster")
    from linstor_scheduler.kube.client import add_kube_options

    add_kube_options(p)
    p.set_defaults(func=deferred("admission.wiring:run_webhook"))
